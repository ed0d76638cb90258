"""``download NAME``: fetch a known model from its original publisher.

Resumable (an interrupted download leaves ``<file>.part``; the next run asks the server for the
rest with an HTTP Range request), shows a tqdm progress bar, verifies the publisher's sha256 when
one is published, and only then moves the file into place, so a broken download never sits where
a model is expected. Without a network it prints exactly what to fetch by hand and where to put it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
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


class DownloadError(ModelFileError):
    """The server's reply cannot give a complete, trustworthy file (malformed, too large, too slow, short).
    ``remove``: the partial file is useless (not a prefix of the model) and is deleted."""

    def __init__(self, *args, remove: bool = False):
        super().__init__(*args)
        self.remove = remove


def _declared_int(text: str | None, what: str, url: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise DownloadError(f"{url}: the server sent an invalid {what} ({text[:40]!r})")
    return int(text)


def _content_range(text: str | None, url: str) -> tuple[int | None, int | None]:
    """(first byte, total) of a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    import re

    if text is None:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d{1,18})-(\d{1,18})|\*)/(\d{1,18}|\*)\s*", text)
    if not match:
        raise DownloadError(f"{url}: the server sent an invalid Content-Range ({text[:60]!r})")
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _check_size(total: int | None, model: KnownModel, url: str) -> None:
    from .limits import MAX_DOWNLOAD_BYTES

    if total is not None and total > MAX_DOWNLOAD_BYTES:
        raise DownloadError(f"{url}: the server announces {total:,} bytes, more than any model file "
                            f"(limit {MAX_DOWNLOAD_BYTES:,}); nothing was kept")
    if total is not None and model.size is not None and total != model.size:
        raise DownloadError(f"{url}: the server announces {total:,} bytes, but '{model.name}' is {model.size:,} "
                            "bytes as published; nothing was kept")


def download(model: KnownModel, dest: Path | None = None, *, url: str | None = None, timeout: float = 30.0,
             progress: bool = True, deadline: float | None = None) -> Path:
    """Download ``model`` to ``dest`` (default: its folder under :func:`models_dir`) and return the path.

    ``url`` overrides the address (default: the registry's, or the environment's, see ``models.py``).
    ``timeout``: seconds one read may wait; ``deadline``: seconds for the whole transfer (default: none,
    but after ``MIN_DOWNLOAD_SECONDS`` the average rate must stay above ``MIN_DOWNLOAD_RATE``, so a
    server that drips a byte now and then cannot hold the command forever). The bytes go to
    ``<file>.part`` and are moved under the final name only once complete (the size the server or the
    registry states) and verified. Raises ``DownloadError`` (a ``ModelFileError``) for a reply that
    cannot give that (too large, too slow, short, malformed), ``ModelFileError`` on a checksum mismatch
    (the partial file is removed), ``ParameterError`` when ``$SGIM_OFFLINE`` forbids the network, and
    ``urllib.error.URLError``/``OSError`` when offline.
    """
    import http.client
    import time

    from tqdm import tqdm

    from .limits import MAX_DOWNLOAD_BYTES, MIN_DOWNLOAD_RATE, MIN_DOWNLOAD_SECONDS

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
    have = part.stat().st_size if part.is_file() else 0
    started = time.monotonic()

    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    total: int | None = model.size
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not have:
                raise
            # "Range not satisfiable": complete only if the server's total is exactly what we hold
            _, stated = _content_range(exc.headers.get("Content-Range"), url)
            known = stated if stated is not None else model.size
            if known is None or known != have:
                part.unlink()
                raise DownloadError(f"{url}: the server refused to resume the partial download ({have:,} bytes kept "
                                    f"so far{'' if known is None else f', the file has {known:,}'}); the partial file "
                                    "was removed, run the command again") from None
            response, total = None, known
        if response is not None:
            with response:
                length = _declared_int(response.headers.get("Content-Length"), "Content-Length", url)
                first, stated = _content_range(response.headers.get("Content-Range"), url)
                if response.status == 206:
                    if first is None:
                        raise DownloadError(f"{url}: a partial reply (206) without a usable Content-Range")
                    if first not in (0, have):
                        raise DownloadError(f"{url}: the server resumed at byte {first:,}, not at {have:,} as asked")
                    have = first  # a 206 from byte 0 is a fresh start
                    total = stated if stated is not None else (None if length is None else first + length)
                else:
                    have = 0  # the server ignored the Range header: start over
                    total = length
                if model.size is not None and total is None:
                    total = model.size
                _check_size(total, model, url)
                limit = MAX_DOWNLOAD_BYTES if total is None else total
                first_byte = have
                if progress:
                    size = "size unknown" if total is None else f"{total / 1e6:.1f} MB"
                    resuming = f", resuming at {have / 1e6:.1f} MB" if have else ""
                    print(f"downloading {model.name} ({size}{resuming}) from {url}\n  to {dest}", file=sys.stderr)
                received = have
                with open(part, "ab" if have else "wb") as out, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress) as bar:
                    while True:
                        block = response.read1(CHUNK)  # whatever has arrived: a slow drip meets the deadline
                        if not block:
                            break
                        received += len(block)
                        if received > limit:
                            raise DownloadError(
                                f"{url}: the server sent more than the {limit:,} bytes "
                                + ("it announced" if total is not None else "any model file has")
                                + "; the download was stopped and the partial file removed", remove=True)
                        out.write(block)
                        bar.update(len(block))
                        elapsed = time.monotonic() - started
                        if deadline is not None and elapsed > deadline:
                            raise DownloadError(f"{url}: the transfer took more than {deadline:g} s "
                                                f"({received:,} bytes so far); stopped, run the command again to "
                                                "resume")
                        rate = (received - first_byte) / elapsed if elapsed > 0 else math.inf
                        if deadline is None and elapsed > MIN_DOWNLOAD_SECONDS and rate < MIN_DOWNLOAD_RATE:
                            raise DownloadError(f"{url}: {rate:,.0f} bytes/s after {elapsed:.0f} s, too slow to be a "
                                                f"working transfer (at least {MIN_DOWNLOAD_RATE:,} on average); "
                                                "stopped, run the command again to resume")
                if total is not None and received != total:
                    raise DownloadError(f"{url}: the connection ended after {received:,} of {total:,} bytes; the "
                                        "partial file is kept for resuming, run the command again")
    except DownloadError as exc:
        if getattr(exc, "remove", False) and part.exists():
            part.unlink()
        raise
    except (http.client.HTTPException, ValueError) as exc:  # malformed status line, headers, chunked body, ...
        raise DownloadError(f"{url}: the server's reply is malformed ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); the partial file is kept, run the command again") from None
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, urllib.error.URLError) and not part.exists():
            raise
        what = f"no data for {timeout:g} s" if isinstance(exc, TimeoutError) else "the transfer failed"
        raise DownloadError(f"{url}: {what} ({type(exc).__name__}: {getattr(exc, 'reason', exc)}); the partial "
                            "file is kept, run the command again") from None

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
        except (urllib.error.URLError, OSError, TimeoutError, DownloadError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"{name}: could not download ({reason}).\n{manual_instructions(model, dest)}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: saved {path}" + (" (sha256 verified)" if model.sha256 else " (no published checksum)"))
    return status


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
