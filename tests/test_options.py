"""One table of option bounds (sgim_nodes.options): the nodes' widgets, the command line's flags and the
library's jobs refuse the same values, and the command line refuses them before any model is looked for."""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from sgim_nodes import options
from sgim_nodes.errors import ParameterError

REPO = Path(__file__).resolve().parents[1]
PACK_MODULE = "custom_nodes_x_comfyui_sgim_options_test"

# The job whose rows a node's inputs use (sgim_nodes.options.option_key); the others use the plain rows.
NODE_JOB = {"SGIMAudioFeatures": "music", "SGIMMusicKeyframes": "music", "SGIMMusicTrajectory": "music",
            "SGIMDecodeFrames": "music", "SGIMRenderMusicVideo": "music", "SGIMMusicFolder": "music", "SGIMTempoBeats": "music",
            "SGIMProjectImage": "project"}
NOT_IN_TABLE = {"seed", "class_index", "init_seed"}  # seeds and indices: no shared meaning to bound

COMMANDS = {  # command -> (module with main, the required arguments)
    "edit": ("sgim_nodes.pipeline", ["--out", "OUT/x.png", "--text", "a"]),
    "animate": ("sgim_nodes.animate.cli", ["--audio", "a.wav", "--out", "OUT/x.mp4"]),
    "project": ("sgim_nodes.project.cli", ["a.png", "--out", "OUT/x.safetensors"]),
    "embed-audio": ("sgim_nodes.audio.cli", ["a.wav", "--encoder", "e.pth"]),
}


@pytest.fixture(scope="module")
def node_classes():
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    yield module.NODE_CLASS_MAPPINGS
    for name in [n for n in sys.modules if n == PACK_MODULE or n.startswith(PACK_MODULE + ".")]:
        sys.modules.pop(name)


def test_every_numeric_node_input_has_the_tables_bounds_and_default(node_classes):
    checked = 0
    for node_id, cls in node_classes.items():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                if entry[0] not in ("INT", "FLOAT") or name in NOT_IN_TABLE:
                    continue
                key = options.option_key(name, NODE_JOB.get(node_id))
                assert key is not None, f"{node_id}.{name}: a numeric input without a row in sgim_nodes.options"
                row = options.OPTIONS[key]
                widget = entry[1]
                assert (widget["min"], widget["max"], widget["default"]) == (row.minimum, row.maximum, row.default), \
                    f"{node_id}.{name} differs from row {key}"
                assert entry[0] == ("INT" if row.kind is int else "FLOAT")
                checked += 1
    assert checked >= 40  # every node's numbers, not a few


def test_node_defaults_are_the_released_ones(node_classes):
    """The table keeps the defaults saved workflows were made with (widget values are positional)."""
    spec = node_classes["SGIMMusicKeyframes"].INPUT_TYPES()["required"]
    assert [spec[n][1]["default"] for n in ("keyframe_seconds", "steps", "keyframe_steps", "lr", "lambda_sim")] == \
        [4.0, 100, 30, 0.1, 0.002]
    assert node_classes["SGIMProjectImage"].INPUT_TYPES()["required"]["steps"][1]["default"] == 1000
    assert node_classes["SGIMOptimizeLatent"].INPUT_TYPES()["required"]["steps"][1]["default"] == 300
    assert list(node_classes["SGIMOptimizeLatent"].INPUT_TYPES()["required"])[4:] == \
        ["steps", "lr", "lambda_sim", "lambda_id", "adaptive_mask", "preview_every"]


def _table_flags(parser):
    return [(action.option_strings[0], action.option) for action in parser._actions
            if isinstance(getattr(action, "option", None), options.Option)]


def _beyond(row) -> list[str]:
    above = int(row.maximum) + 1 if row.kind is int else row.maximum * 2 + 1
    below = int(row.minimum) - 1 if row.kind is int else row.minimum - abs(row.minimum) - 1
    return [str(above), str(below)]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_table_flag_refuses_a_value_beyond_its_bounds_before_any_model_lookup(command, monkeypatch, tmp_path):
    import sgim_nodes.models
    from sgim_nodes.__main__ import main

    def no_lookup(*args, **kwargs):
        raise AssertionError("a model was looked for before the options were checked")

    monkeypatch.setattr(sgim_nodes.models, "find_model_file", no_lookup)
    module = importlib.import_module(COMMANDS[command][0])
    required = [a.replace("OUT", str(tmp_path)) for a in COMMANDS[command][1]]
    flags = _table_flags(module._parser())
    assert len(flags) >= {"edit": 10, "animate": 20, "project": 7, "embed-audio": 3}[command]
    for name, row in flags:
        for value in [*_beyond(row), "x1"]:
            stderr = io.StringIO()
            with redirect_stderr(stderr):
                code = main([command, *required, f"{name}={value}"])
            assert code == 1
            lines = stderr.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {name}: expected "), lines  # one line, the flag
            low, high = (f"{row.minimum:g}", f"{row.maximum:g}") if row.kind is float else (row.minimum, row.maximum)
            assert f"{low}" in lines[0] and f"{high}" in lines[0], lines  # the bounds are said


@pytest.mark.parametrize("argv", [["--keyframe-seconds", "1e-9"], ["--smoothing", "1e9"], ["--batch", "1e9"],
                                  ["--reactivity", "1e30"]])
def test_animate_refuses_the_unbounded_values_that_were_found(argv, tmp_path):
    from sgim_nodes.animate import cli

    with pytest.raises(options.FlagError, match=f"^{argv[0]}: expected") as info:
        cli.main(["--audio", "a.wav", "--out", str(tmp_path / "x.mp4"), *argv])
    assert info.value.parameter == argv[0][2:].replace("-", "_")


def test_animate_steps_0_is_refused_before_a_missing_generator_is_noticed(tmp_path):
    from sgim_nodes.animate import cli
    from sgim_nodes.errors import SGIMError

    start = time.monotonic()
    with pytest.raises(options.FlagError, match="^--steps: expected a number of steps from 1 to 1000000, got 0$"):
        cli.main(["--audio", "a.wav", "--out", str(tmp_path / "x.mp4"), "--generator", "no_such.pkl", "--steps", "0"])
    # an option the job checks itself (the tempo) also comes before the models
    with pytest.raises(SGIMError, match="bpm"):
        cli.request_from_args(cli._parser().parse_args(
            ["--audio", "a.wav", "--out", str(tmp_path / "x.mp4"), "--generator", "no_such.pkl", "--bpm", "1e9",
             "--keyframes", "beats:4"]))
    assert time.monotonic() - start < 5


def test_edit_refuses_before_a_missing_generator_is_noticed(tmp_path):
    from sgim_nodes import pipeline

    with pytest.raises(options.FlagError, match=r"^--lr: expected a learning rate in \[0.0001, 100\], got 0.0$"):
        pipeline.main(["--text", "a", "--out", str(tmp_path / "x.png"), "--generator", "no_such.pkl", "--lr", "0"])


def test_the_library_jobs_refuse_the_same_bounds_naming_the_parameter():
    from sgim_nodes.jobs import project
    from sgim_nodes.jobs.edit import LatentEdit, run_latent_edit
    from sgim_nodes.jobs.music_render import MusicRenderRequest, check_request
    from sgim_nodes.jobs.run import Run

    with pytest.raises(ParameterError, match=r"^steps: expected a number of steps from 1 to") as info:
        run_latent_edit(LatentEdit(None, None, None, None, steps=0), Run("cpu"))
    assert info.value.parameter == "steps"
    for field, value in (("reactivity", 1e30), ("smoothing", 1e9), ("keyframe_seconds", 1e-9), ("batch", 10 ** 9)):
        with pytest.raises(ParameterError, match=f"^{field}: expected") as info:
            check_request(MusicRenderRequest(None, Path("x.mp4"), None, None, None, **{field: value}), per_track=False)
        assert info.value.parameter == field
    with pytest.raises(ParameterError, match="^lr: expected a learning rate") as info:
        project.check_request(project.ProjectRequest(None, None, distance="pixel", lr=1e9))
    # values within the bounds pass
    check_request(MusicRenderRequest(None, Path("x.mp4"), None, None, None, reactivity=5.0), per_track=False)


def test_flag_help_states_bounds_and_default_once():
    from sgim_nodes.animate import cli

    text = " ".join(cli._parser().format_help().split())
    assert "(0..5, default 0.5)" in text  # --reactivity
    assert "(default: 0.5)" not in text


def test_check_names_the_parameter_and_accepts_the_bounds():
    assert options.check("reactivity", 5.0) == 5.0
    assert options.check("steps", 300) == 300
    with pytest.raises(ParameterError, match=r"^strength: expected a reactivity in \[0, 5\]"):
        options.check("reactivity", 5.01, name="strength")
    with pytest.raises(ParameterError, match="steps"):
        options.check("steps", 2.5, "music")
