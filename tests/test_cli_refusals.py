"""Typos a new user makes are refused before any model is looked for, naming what to fix."""

import pytest

from sgim_nodes import pipeline
from sgim_nodes.animate import cli as animate_cli
from sgim_nodes.errors import ParameterError
from sgim_nodes.fileio import check_output_file
from sgim_nodes.project import cli as project_cli


@pytest.fixture(autouse=True)
def no_models(monkeypatch, tmp_path):
    """No model may be looked for or fetched: any lookup fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was looked for before the options were checked")
    monkeypatch.setenv("SGIM_OFFLINE", "1")
    monkeypatch.setattr("sgim_nodes.models.find_model_file", forbidden)
    monkeypatch.setattr("sgim_nodes.pipeline.fetch_missing_models", forbidden)
    monkeypatch.chdir(tmp_path)


def test_missing_output_folder_is_named(tmp_path):
    with pytest.raises(ParameterError, match=r"--out: the folder .*typo does not exist"):
        check_output_file(tmp_path / "typo" / "deeper" / "x.png", "--out", create_folders=False)
    assert check_output_file(tmp_path / "new" / "x.png", "out").name == "x.png"  # nodes' savers still create


def test_edit_refuses_empty_text_and_missing_folder(tmp_path):
    args = pipeline._parser().parse_args(["--text", "  ", "--out", str(tmp_path / "x.png")])
    with pytest.raises(ParameterError, match="--text: a prompt is empty"):
        pipeline.request_from_args(args)
    args = pipeline._parser().parse_args(["--text", "a storm", "--out", str(tmp_path / "missing_dir" / "x.png")])
    with pytest.raises(ParameterError, match="missing_dir does not exist"):
        pipeline.request_from_args(args)


def test_animate_refuses_empty_text_and_missing_folder(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    args = animate_cli._parser().parse_args(["--audio", str(tmp_path / "a.wav"), "--text", "", "--out", str(tmp_path / "v.mp4")])
    with pytest.raises(ParameterError, match="--text: the prompt is empty"):
        animate_cli.request_from_args(args)
    args = animate_cli._parser().parse_args(["--audio", str(tmp_path / "a.wav"), "--out", str(tmp_path / "nowhere" / "v.mp4")])
    with pytest.raises(ParameterError, match="nowhere does not exist"):
        animate_cli.request_from_args(args)


def test_project_checks_its_outputs_first(tmp_path):
    with pytest.raises(ParameterError, match="nowhere does not exist"):
        project_cli.main(["missing.png", "--out", str(tmp_path / "nowhere" / "c.safetensors")])
    (tmp_path / "c.safetensors").mkdir()
    with pytest.raises(ParameterError, match="--out: .*existing folder"):
        project_cli.main(["missing.png", "--out", str(tmp_path / "c.safetensors")])
    (tmp_path / "d_projection.png").mkdir()  # the rendered projection's name is checked too
    with pytest.raises(ParameterError, match="d_projection.png is an existing folder"):
        project_cli.main(["missing.png", "--out", str(tmp_path / "d.safetensors")])
