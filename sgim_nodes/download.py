"""``download NAME``: fetch a known model from its original publisher.

Resumable (an interrupted download leaves ``<file>.part``; the next run asks the server for the
rest with an HTTP Range request), shows a tqdm progress bar, verifies the publisher's sha256 when
one is published, and only then moves the file into place, so a broken download never sits where
a model is expected. Without a network it prints exactly what to fetch by hand and where to put it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .errors import ModelFileError, ParameterError
from .models import FOLDERS, KNOWN_MODELS, KnownModel, model_source, models_dir, offline

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manual_instructions(model: KnownModel, dest: Path) -> str:
    how = f"download {model.url}" if model.url else model.manual
    lines = [f"To install '{model.name}' by hand: {how}",
             f"  and save it as {dest}"]
    if model.sha256:
        lines.append(f"  its sha256 must be {model.sha256}")
    lines.append(f"  (source: {model.source})")
    return "\n".join(lines)


def download(model: KnownModel, dest: Path | None = None, *, url: str | None = None, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Download ``model`` to ``dest`` (default: its folder under :func:`models_dir`) and return the path.

    ``url`` overrides the address (default: the registry's, or the environment's, see ``models.py``).
    Raises ``ModelFileError`` on a checksum mismatch (the partial file is removed), ``ParameterError``
    when ``$SGIM_OFFLINE`` forbids the network, and ``urllib.error.URLError``/``OSError`` when offline.
    """
    from tqdm import tqdm

    if url is None:
        model = model_source(model)
        url = model.url
    dest = Path(dest) if dest else model.default_path
    if url is None:
        raise ParameterError(f"'{model.name}' has no direct download address.\n{manual_instructions(model, dest)}")
    if offline():
        raise ParameterError(f"'{model.name}': SGIM_OFFLINE is set, so nothing is downloaded.\n"
                             f"{manual_instructions(model, dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0

    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # we already have every byte
            response = None
        else:
            raise
    if response is not None:
        with response:
            resumed = response.status == 206
            if have and not resumed:  # server ignored the Range header: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if progress:
                size = "size unknown" if total is None else f"{total / 1e6:.1f} MB"
                resuming = f", resuming at {have / 1e6:.1f} MB" if resumed and have else ""
                print(f"downloading {model.name} ({size}{resuming}) from {url}\n  to {dest}", file=sys.stderr)
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))

    if model.sha256:
        digest = sha256_of(part)
        if not digest.startswith(model.sha256):
            part.unlink()
            raise ModelFileError(f"{dest}: checksum mismatch (expected sha256 {model.sha256}, got {digest}); "
                                 "the download was removed, run the command again")
    os.replace(part, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    names = ", ".join(KNOWN_MODELS)
    from .cli_help import command_parser

    parser = command_parser("download", __doc__, epilog=f"known models: {names}. Environment: SGIM_MODELS_DIR, SGIM_OFFLINE=1, "
                                            "SGIM_MODEL_BASE_URL, SGIM_MODEL_INDEX (see sgim_nodes/models.py)")
    parser.add_argument("names", nargs="*", help="model names (see --list)")
    parser.add_argument("--list", action="store_true", help="list known models and where they go")
    parser.add_argument("--dir", type=Path, help=f"models root (default {models_dir()}; env SGIM_MODELS_DIR)",
                        default=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true", help="download even if the file exists")
    args = parser.parse_args(argv)
    args.dir = getattr(args, "dir", None)

    if args.list or not args.names:
        for m in map(model_source, KNOWN_MODELS.values()):
            where = (args.dir / m.folder / m.filename) if args.dir else m.default_path
            how = "direct" if m.url else "by hand"
            print(f"{m.name:<16} {how:<8} -> {where}\n{'':<16} {m.description}")
        print("\nfolders: " + "; ".join(f"{k}: {v}" for k, v in FOLDERS.items()))
        return 0

    status = 0
    for name in args.names:
        if name not in KNOWN_MODELS:
            raise ParameterError(f"unknown model {name!r}; known models: {names}")
        model = model_source(KNOWN_MODELS[name])
        dest = (args.dir / model.folder / model.filename) if args.dir else model.default_path
        if dest.exists() and not args.force:
            print(f"{name}: already present at {dest}")
            continue
        if model.url is None:
            print(manual_instructions(model, dest))
            status = 1
            continue
        try:
            path = download(model, dest)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"{name}: could not download ({reason}).\n{manual_instructions(model, dest)}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: saved {path}" + (" (sha256 verified)" if model.sha256 else " (no published checksum)"))
    return status


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
