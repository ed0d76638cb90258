"""Exception types shared by the whole library.

Every error a user can cause (a wrong file, a bad parameter) is an ``SGIMError`` whose message
names the file or parameter and says what was expected. ComfyUI shows the message as it is, so
it must make sense to an artist, not only to a developer.
"""

from __future__ import annotations


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


class Cancelled(SGIMError):
    """Long work stopped because the caller asked for it (see ``optimize`` callbacks)."""


def run_command(main, argv=None) -> int:
    """Run a command's ``main(argv)``: user-caused errors become one clear line and exit code 1."""
    import sys

    try:
        return int(main(argv) or 0)
    except SGIMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
