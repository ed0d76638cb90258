"""Argument parsers of the commands: one look, defaults shown, no reStructuredText markup in help.

Torch-free on purpose: ``--help`` must print before any heavy import.
"""

from __future__ import annotations

import argparse
import re

from .models import launcher


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends every option's default (when it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # A help that already states its default, or a flag (store_true/false: its "default" is only
        # the absence of the flag, "(default: True)" for --no-x misleads), gets nothing appended.
        if ("%(default)" in text or "default" in text or not action.option_strings or default is None
                or isinstance(default, bool) or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)".strip()


def plain(text: str) -> str:
    """Docstring text for a terminal: ``code`` -> code, :func:`name` -> name, \\\\ -> \\."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("\\\\", "\\")


def command_parser(command: str, doc: str, *, epilog: str | None = None, full_doc: bool = False
                   ) -> argparse.ArgumentParser:
    """A parser for ``<launcher> <command>``; the description is the docstring's first paragraph
    (or all of it), without markup."""
    description = doc.strip() if full_doc else doc.strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"{launcher()} {command}", description=plain(description),
                                   epilog=plain(epilog) if epilog else None, formatter_class=HelpFormatter)


def command_flags(module) -> dict[str, str]:
    """The one parameter -> flag table of a command module: every option's destination names its
    long flag (``keyframe_seconds`` -> ``--keyframe-seconds``), then the module's
    ``FLAG_FOR_PARAMETER`` adds library parameters named otherwise (``prompt_schedule`` -> ``--prompts``)."""
    flags: dict[str, str] = {}
    parser = getattr(module, "_parser", None)
    if parser is not None:
        for action in parser()._actions:
            long = [o for o in action.option_strings if o.startswith("--")]
            if long and action.dest != "help":
                flags[action.dest] = long[0]
    flags.update(getattr(module, "FLAG_FOR_PARAMETER", {}))
    return flags
