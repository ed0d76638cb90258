"""``./sgim``'s first-run setup of torch, torchaudio and torchvision in ``.venv`` (standard library only).

The three must come from one build: a torchaudio built for another CUDA version (or torch release)
than the torch it sits beside fails at import or at run time. So:

- no torch yet: install all three together, letting pip pick one consistent set;
- torch already there (e.g. CI's or a CUDA build the user chose): keep it, pin it exactly, and fetch
  only the missing companions, each pinned to the release made for that torch release (``COMPANIONS``)
  *with the same local version tag* (``+cu130``, ``+cpu``, ``+rocm6.2``), from the index that tag names.
  Pinning the tag matters: PyTorch's per-CUDA indexes also list companions built for other CUDA
  versions, and the newest torchaudio no longer requires one exact torch, so an unpinned request got
  ``torchaudio 2.11.1+cu132`` beside ``torch 2.14.1+cu130``.
- a torch release missing from ``COMPANIONS``: the companions are left to pip, then checked; a local tag
  that differs from torch's is reported as an error with the command that fixes it.

Run as ``python -m sgim_nodes.bootstrap`` (the launcher does, before the pack is installed); it prints
what it does and returns pip's exit status.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

PACKAGES = ("torch", "torchaudio", "torchvision")
PYTORCH_INDEX = "https://download.pytorch.org/whl"

# torch release -> (torchaudio, torchvision) released for it. torchvision follows torch's minor + 15
# with the same patch; torchaudio followed torch exactly from 2.1 to 2.9, since then it has its own numbers.
COMPANIONS = {
    **{f"2.{minor}.{patch}": (f"2.{minor}.{patch}", f"0.{minor + 15}.{patch}")
       for minor in range(1, 10) for patch in range(0, 4)},
    "2.0.0": ("2.0.1", "0.15.1"), "2.0.1": ("2.0.2", "0.15.2"),  # 2.0's companions were re-released
    "2.14.1": ("2.11.0", "0.29.1"),  # the set CI pins
}


def companion_pins(torch_version: str) -> dict[str, str] | None:
    """{"torchaudio": "==2.11.0+cu130", ...} for an installed ``torch.__version__``, or None for a torch
    release not in ``COMPANIONS``. The local tag (``+cu130``) is torch's own: the same build."""
    public, _, local = torch_version.partition("+")
    pair = COMPANIONS.get(public)
    if pair is None:
        return None
    tag = f"+{local}" if local else ""
    return {"torchaudio": f"=={pair[0]}{tag}", "torchvision": f"=={pair[1]}{tag}"}


def install_command(torch_version: str | None, missing: list[str]) -> list[str] | None:
    """pip arguments (after ``pip install``) for the ``missing`` packages, or None when nothing is missing.

    ``torch_version`` is the installed ``torch.__version__`` (None when torch is missing).
    """
    if not missing:
        return None
    if torch_version is None:
        return ["torch", "torchaudio", "torchvision"]
    public, _, local = torch_version.partition("+")
    pins = companion_pins(torch_version) or {}
    args = [f"{name}{pins.get(name, '')}" for name in PACKAGES[1:] if name in missing]
    args.append(f"torch=={torch_version}")  # keeps the installed torch: pip may not replace it
    if local:  # a build from PyTorch's own index: its companions live on the same index
        args += ["--index-url", f"{PYTORCH_INDEX}/{local}"]
    return args


def mismatched_builds(versions: dict[str, str]) -> list[str]:
    """Companions whose build does not match torch's: another local tag (CUDA version), or another
    release than ``COMPANIONS`` pairs with it. ``versions``: {package: installed version}."""
    torch_version = versions.get("torch")
    if torch_version is None:
        return []
    _, _, local = torch_version.partition("+")
    pins = companion_pins(torch_version)
    wrong = []
    for name in PACKAGES[1:]:
        version = versions.get(name)
        if version is None:
            continue
        if version.partition("+")[2] != local or (pins and f"=={version}" != pins[name]):
            wrong.append(f"{name} {version}")
    return wrong


def main() -> int:
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    torch_version = None
    if "torch" not in missing:
        import torch

        torch_version = torch.__version__
    args = install_command(torch_version, missing)
    if args is None:
        return 0
    which = "torch, torchaudio and torchvision" if torch_version is None else \
        f"{', '.join(m for m in missing if m != 'torch')} matching torch {torch_version}"
    print(f"[sgim] installing {which}", file=sys.stderr)
    status = subprocess.call([sys.executable, "-m", "pip", "install", "-q", *args])
    if status or torch_version is None:
        return status
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    wrong = mismatched_builds(versions)
    if wrong:
        print(f"[sgim] error: {', '.join(wrong)} is not the build of torch {torch_version}; install the "
              f"matching companions (e.g. from {PYTORCH_INDEX}/{torch_version.partition('+')[2] or 'cpu'}) "
              "or remove .venv to start over", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
