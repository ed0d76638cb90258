"""Command line: ``python -m sgim_nodes <command> [options]``.

Each command lives next to the code it drives and exposes ``main(argv) -> int``; this file only
dispatches, so that ``python -m sgim_nodes --help`` stays fast (nothing heavy is imported until
a command runs).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # name: (module, one-line help)
    "edit": ("sgim_nodes.pipeline", "sound/text-guided edit of a StyleGAN2 image (the main job)"),
    "animate": ("sgim_nodes.animate.cli", "a music video: a sound-driven W+ trajectory rendered into an .mp4"),
    "live": ("sgim_nodes.live.cli", "the picture follows a microphone or a playing track live, in a web page"),
    "project": ("sgim_nodes.project.cli", "project your own picture into a generator's W+ (optionally tune it)"),
    "embed-audio": ("sgim_nodes.audio.cli", "embed an audio file into CLIP space and print a summary"),
    "analyze": ("sgim_nodes.instant.cli", "analyse a generator once for instant edits (cached StyleSpace directions)"),
    "convert": ("sgim_nodes.convert", "convert a StyleGAN2/3 or audio-encoder checkpoint to our .safetensors"),
    "download": ("sgim_nodes.download", "download a known model file (or say how to get it offline)"),
    "train": ("sgim_nodes.train.__main__", "train an audio encoder into an open_clip model's space"),
    "evaluate": ("sgim_nodes.evaluate", "zero-shot / linear-probe evaluation of an audio encoder"),
    "make-synthetic-dataset": ("sgim_nodes.train.synthetic", "write a small synthetic sound-class dataset"),
    "make-demo-models": ("sgim_nodes.demo", "write tiny random-weight models to try every command and graph now"),
    "test": (None, "run the test suite (pytest; extra arguments go to pytest)"),
}


def _usage() -> str:
    from .models import launcher

    width = max(map(len, COMMANDS))
    lines = [f"usage: {launcher()} <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", f"'{launcher()} <command> --help' describes a command's options.",
              "Environment: SGIM_MODELS_DIR, SGIM_OFFLINE=1, SGIM_MODEL_BASE_URL, SGIM_MODEL_INDEX "
              "(sgim_nodes/models.py)."]
    return "\n".join(lines)


def _run_tests(argv: list[str]) -> int:
    """``test``: pytest on the pack's tests, from the pack's root (as ``./sgim test`` does)."""
    import os

    from .models import PACK_ROOT

    try:
        import pytest
    except ImportError:
        print("the test suite needs pytest: pip install -e '.[test]' (./sgim does this itself)", file=sys.stderr)
        return 1
    os.chdir(PACK_ROOT)
    return int(pytest.main(argv))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name == "test":
        return _run_tests(rest)
    from .cli_help import command_flags
    from .errors import run_command

    module = importlib.import_module(COMMANDS[name][0])
    return run_command(module.main, rest, command_flags(module))


def train_entry() -> int:
    """Console script ``sgim-train``."""
    return main(["train", *sys.argv[1:]])


def evaluate_entry() -> int:
    """Console script ``sgim-evaluate``."""
    return main(["evaluate", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
