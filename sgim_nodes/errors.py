"""Exception types shared by the whole library.

Every error a user can cause (a wrong file, a bad parameter) is an ``SGIMError`` whose message
names the file or parameter and says what was expected. ComfyUI shows the message as it is, so
it must make sense to an artist, not only to a developer.
"""

from __future__ import annotations

import re


class SGIMError(Exception):
    """Base class of every error this library raises on purpose.

    ``parameter`` names the library parameter at fault (``"lr"``, ``"source_ws"``, ...) when there is
    one, so that a front end (a ComfyUI node, the command line) can name its own input or option
    for it instead of guessing.
    """

    def __init__(self, *args, parameter: str | None = None):
        super().__init__(*args)
        self.parameter = parameter


class ModelFileError(SGIMError, ValueError):
    """A model file is missing, truncated, of another network, or of an unsupported kind."""


class UnsafeFileError(ModelFileError):
    """A pickle asked for something outside the allow-list (code execution, arbitrary imports)."""


class AudioError(SGIMError, ValueError):
    """Audio could not be decoded or is unusable (empty, NaN, ...)."""


class ParameterError(SGIMError, ValueError):
    """A parameter is out of range or inconsistent with the models it is used with."""


class NonFiniteError(SGIMError, ValueError):
    """Numbers went NaN or infinite (or beyond what the format can hold): refused instead of passed on."""


class Cancelled(SGIMError):
    """Long work stopped because the caller asked for it (see ``optimize`` callbacks)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_ADVICE = re.compile(r"weights_only|trust|add_safe_globals|safe_globals|allowlist|Check the documentation|"
                           r"recommended steps|This file can still be loaded|Please file an issue", re.I)


def torch_message(exc: BaseException) -> str:
    """The useful part of an error torch raised while reading a file, on one line.

    torch's safe loader wraps its refusals in advice to re-run ``torch.load`` with
    ``weights_only=False`` (which would run code from the file) or to allow-list the class: those
    sentences are dropped, never passed on to a user; the reason itself is kept.
    """
    text = _ANSI.sub("", str(exc))
    reason = re.search(r"WeightsUnpickler error:\s*(.*)", text)
    if reason:
        text = reason.group(1)
    kept = []
    for line in text.splitlines():
        sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", line.strip()) if s.strip()]
        sentences = [s for s in sentences if not _TORCH_ADVICE.search(s)]
        if sentences:
            kept.append(" ".join(sentences).rstrip("."))
    return "; ".join(kept[:2]) if kept else type(exc).__name__


def with_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with its leading library parameter(s) ("end: ...", "start_seconds/end_seconds: ...")
    named as the flags that set them ("--end: ..."), so a terminal user reads what they typed."""
    head, sep, rest = message.partition(": ")
    names = head.split("/")
    if not sep or not all(name in flags for name in names):
        return message
    return "/".join(flags[name] for name in names) + sep + rest


def run_command(main, argv=None, flags: dict[str, str] | None = None) -> int:
    """Run a command's ``main(argv)``: user-caused errors become one clear line and exit code 1.
    ``flags`` maps library parameters to the command's flags (see :func:`with_flags`)."""
    import sys

    try:
        return int(main(argv) or 0)
    except SGIMError as exc:
        print(f"error: {with_flags(str(exc), flags or {})}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
