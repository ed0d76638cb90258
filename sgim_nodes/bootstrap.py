"""``./sgim``'s first-run setup of torch, torchaudio and torchvision in ``.venv`` (standard library only).

The three must come from one build: a torchaudio built for another CUDA version (or torch release)
than the torch it sits beside fails at import or at run time. So:

- no torch yet: install all three together, letting pip pick one consistent set;
- torch already there (e.g. CI's or a CUDA build the user chose): keep it, pin it exactly, and fetch
  only the missing companions from the index that build came from (the local version tag ``+cu130``,
  ``+cpu``, ``+rocm6.2`` names it), so pip can only choose companions built for that torch.

Run as ``python -m sgim_nodes.bootstrap`` (the launcher does, before the pack is installed); it prints
what it does and returns pip's exit status.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

PACKAGES = ("torch", "torchaudio", "torchvision")
PYTORCH_INDEX = "https://download.pytorch.org/whl"


def install_command(torch_version: str | None, missing: list[str]) -> list[str] | None:
    """pip arguments (after ``pip install``) for the ``missing`` packages, or None when nothing is missing.

    ``torch_version`` is the installed ``torch.__version__`` (None when torch is missing).
    """
    if not missing:
        return None
    if torch_version is None:
        return ["torch", "torchaudio", "torchvision"]
    public, _, local = torch_version.partition("+")
    args = [name for name in PACKAGES[1:] if name in missing]
    args.append(f"torch=={torch_version}")  # keeps the installed torch: pip may not replace it
    if local:  # a build from PyTorch's own index: its companions live on the same index
        args += ["--index-url", f"{PYTORCH_INDEX}/{local}"]
    return args


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
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *args])


if __name__ == "__main__":
    raise SystemExit(main())
