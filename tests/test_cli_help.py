"""Every command's --help: each option explains itself, and states its default once."""

import importlib
import re

import pytest

from sgim_nodes.__main__ import COMMANDS

PARSED = [name for name, (module, _) in COMMANDS.items()
          if module and hasattr(importlib.import_module(module), "_parser")]


def test_the_commands_with_parsers_are_found():
    assert {"edit", "animate", "project", "convert", "embed-audio"} <= set(PARSED)


@pytest.mark.parametrize("name", PARSED)
def test_every_option_has_help_and_one_default(name):
    parser = importlib.import_module(COMMANDS[name][0])._parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        text = formatter._get_help_string(action) % dict(vars(action), prog=parser.prog)
        assert len(re.findall(r"\(default", text)) <= 1, f"{name} {action.option_strings[0]}: {text}"
        assert "(default: True)" not in text and "(default: False)" not in text, text


def test_project_steps_default_is_stated_once():
    parser = importlib.import_module(COMMANDS["project"][0])._parser()
    text = parser.format_help()
    assert "default 1000)" in text and "(default: 1000)" not in text
    assert "--seed" in text and "Load Latent" not in text
