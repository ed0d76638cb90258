"""Command-line errors name the flags the user typed, not the library's parameters."""

import pytest

from sgim_nodes.__main__ import COMMANDS
from sgim_nodes.animate import cli as animate_cli
from sgim_nodes.animate.keyframes import keyframe_times, parse_prompt_schedule
from sgim_nodes.animate.timeline import make_timeline
from sgim_nodes.cli_help import command_flags
from sgim_nodes.errors import SGIMError, run_command, with_flags
from sgim_nodes import pipeline


def _stderr_of(call, flags, capsys) -> str:
    def main(argv):
        call()
    assert run_command(main, [], flags) == 1
    return capsys.readouterr().err


def test_animate_errors_name_its_flags(capsys):
    flags = command_flags(animate_cli)
    assert flags["keyframe_seconds"] == "--keyframe-seconds" and flags["prompt_schedule"] == "--prompts"
    assert flags["rotation_degrees"] == "--rotation"
    err = _stderr_of(lambda: make_timeline(10.0, 0), flags, capsys)
    assert err.startswith("error: --fps: ") and "fps:" not in err.replace("--fps:", "")
    err = _stderr_of(lambda: keyframe_times(make_timeline(10.0, 24), 0), flags, capsys)
    assert err.startswith("error: --keyframe-seconds: ")
    err = _stderr_of(lambda: parse_prompt_schedule("-3: a storm"), flags, capsys)
    assert err.startswith("error: --prompts: ")


def test_edit_names_start_and_end():
    flags = command_flags(pipeline)
    message = "start_seconds/end_seconds: the selection [5.0, 1.0] s is empty for audio of 3.000 s"
    assert with_flags(message, flags) == "--start/--end: the selection [5.0, 1.0] s is empty for audio of 3.000 s"


def test_messages_without_a_known_parameter_are_kept():
    assert with_flags("source_ws: wrong shape", {"fps": "--fps"}) == "source_ws: wrong shape"
    assert with_flags("no colon here", {"fps": "--fps"}) == "no colon here"


def test_every_command_module_gets_a_table():
    import importlib
    for name, (module, _) in COMMANDS.items():
        if module:
            assert isinstance(command_flags(importlib.import_module(module)), dict), name
