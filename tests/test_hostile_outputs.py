"""Hostile inputs, class 6: every output of ``animate`` and ``project`` is checked before any work.

A folder, a name the file system refuses, or an existing file (without ``--overwrite``) under any of the
files a command writes (the W+ code, ``_projection.png``, ``_generator.safetensors``, the video, the keyframe
cache and segments folders, a folder render's videos and summary) is refused in one ``error:`` line before
a model is looked for: each case below names a generator that does not exist, so a refusal that came after
the model lookup would say "file not found" instead. Nothing of the user's is changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sgim_nodes.__main__ import main as cli
from sgim_nodes.limits import MAX_FILENAME_BYTES

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REFUSAL_SECONDS = 5.0  # nothing is loaded: a refusal is immediate
USER_BYTES = b"the user's own file, not to be lost"


def _run(argv: list[str], capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = cli(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    return code, err, seconds


def _refused(argv: list[str], capsys, *expected: str) -> str:
    code, err, seconds = _run(argv, capsys)
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Errno" not in err, err
    assert "file not found" not in err, err  # refused before the model was looked for
    assert all(text in err for text in expected), err
    assert seconds < REFUSAL_SECONDS
    return err


@pytest.fixture
def picture(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)
    return path


def _project(picture: Path, out: Path, *extra: str) -> list[str]:
    return ["project", str(picture), "--out", str(out), "--generator", str(out.parent / "no_such_generator.pt"),
            "--distance", "pixel", "--steps", "2", "--device", "cpu", *extra]


def _user_file(path: Path) -> Path:
    path.write_bytes(USER_BYTES)
    return path


# ------------------------------------------------------------------------------------ project

@pytest.mark.parametrize("existing, extra", [
    ("code.safetensors", []),
    ("code_projection.png", []),
    ("code_generator.safetensors", ["--tune"]),
    ("code_generator.safetensors", ["--noise", "on"]),
    ("mine.safetensors", ["--tune", "--tuned-generator", "{dir}/mine.safetensors"]),
])
def test_project_refuses_to_overwrite_any_output(tmp_path, picture, capsys, existing, extra):
    kept = _user_file(tmp_path / existing)
    flag = "--tuned-generator" if "--tuned-generator" in extra else "--out"
    extra = [e.format(dir=tmp_path) for e in extra]
    _refused(_project(picture, tmp_path / "code.safetensors", *extra), capsys, flag, str(kept), "exists already",
             "--overwrite")
    assert kept.read_bytes() == USER_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([existing, picture.name])
    # with --overwrite the command goes on, to the model lookup (the generator named does not exist)
    code, err, _ = _run(_project(picture, tmp_path / "code.safetensors", *extra, "--overwrite"), capsys)
    assert code == 1 and "--generator: file not found" in err, err
    assert kept.read_bytes() == USER_BYTES  # still: nothing is replaced before the work has succeeded


def test_project_batch_renderings_checked_each(tmp_path, picture, capsys):
    """Two pictures write ``code_projection_0.png`` and ``_1.png``; the second one exists."""
    kept = _user_file(tmp_path / "code_projection_1.png")
    argv = _project(picture, tmp_path / "code.safetensors")
    argv.insert(2, str(picture))
    _refused(argv, capsys, str(kept), "exists already")
    assert kept.read_bytes() == USER_BYTES


@pytest.mark.parametrize("make, flag, expected", [
    (lambda d: (d / "code_projection.png").mkdir(), "--out", "is an existing folder"),
    (lambda d: (d / "code_generator.safetensors").mkdir(), "--out", "is an existing folder"),
    (lambda d: None, "--out", f"keep it under {MAX_FILENAME_BYTES}"),
    (lambda d: None, "--tuned-generator", "does not exist"),
])
def test_project_outputs_that_cannot_be_written(tmp_path, picture, capsys, make, flag, expected):
    make(tmp_path)
    out = tmp_path / "code.safetensors"
    extra = ["--tune"]
    if expected.startswith("keep it under"):  # the code's name fits, its rendering's does not
        out = tmp_path / ("c" * (MAX_FILENAME_BYTES - len(".safetensors")) + ".safetensors")
    if flag == "--tuned-generator":
        extra += ["--tuned-generator", str(tmp_path / "missing_folder" / "g.safetensors")]
    _refused(_project(picture, out, *extra), capsys, flag, expected)
    assert not any(p.is_file() and p.suffix == ".safetensors" for p in tmp_path.iterdir())


def test_project_overwrite_replaces_the_outputs_of_a_finished_run(tmp_path, picture, capsys):
    """A real (tiny) projection: the second run is refused, with --overwrite it writes new files."""
    import torch

    from sgim_nodes.latents import load_wplus
    from sgim_nodes.stylegan import save_generator
    from test_project import tiny_generator

    save_generator(tiny_generator(16), tmp_path / "g.safetensors")
    argv = ["project", str(picture), "--out", str(tmp_path / "code.safetensors"), "--generator",
            str(tmp_path / "g.safetensors"), "--distance", "pixel", "--steps", "2", "--device", "cpu"]
    assert cli(argv) == 0
    first = load_wplus(tmp_path / "code.safetensors")[0]
    capsys.readouterr()
    _refused(argv + ["--seed", "1"], capsys, "code.safetensors", "exists already")
    assert torch.equal(load_wplus(tmp_path / "code.safetensors")[0], first)
    assert cli(argv + ["--overwrite", "--steps", "4"]) == 0
    assert not torch.equal(load_wplus(tmp_path / "code.safetensors")[0], first)
    assert (tmp_path / "code_projection.png").is_file()


# ------------------------------------------------------------------------------------ animate

def _wav(path: Path, seconds: float = 1.0) -> Path:
    from test_animate import click_track, write_wav

    return write_wav(path, click_track(seconds, clicks=[0.5]))


def _animate(audio: Path, out: Path, *extra: str) -> list[str]:
    return ["animate", "--audio", str(audio), "--out", str(out), "--generator", str(out.parent / "no_such.pt"),
            "--device", "cpu", *extra]


def test_animate_refuses_an_existing_video_and_goes_on_with_overwrite(tmp_path, capsys):
    track = _wav(tmp_path / "song.wav")
    kept = _user_file(tmp_path / "song.mp4")
    _refused(_animate(track, kept), capsys, "--out", str(kept), "exists already", "--overwrite")
    assert kept.read_bytes() == USER_BYTES
    code, err, _ = _run(_animate(track, kept, "--overwrite"), capsys)
    assert code == 1 and "--generator: file not found" in err, err
    assert kept.read_bytes() == USER_BYTES


def test_animate_resumes_without_overwrite(tmp_path, capsys):
    """An interrupted render left its keyframe cache and segments (the video is only renamed into place at
    the end): running again needs no flag."""
    track = _wav(tmp_path / "song.wav")
    out = tmp_path / "song.mp4"
    (tmp_path / "song.mp4.keyframes" / "abc").mkdir(parents=True)
    (tmp_path / "song.mp4.segments" / "abc").mkdir(parents=True)
    code, err, _ = _run(_animate(track, out), capsys)
    assert code == 1 and "--generator: file not found" in err, err


@pytest.mark.parametrize("case, flag, expected", [
    ("out-folder", "--out", "is an existing folder"),
    ("long-name", "--out", f"keep it under {MAX_FILENAME_BYTES}"),
    ("segments-a-file", "--out", "is a file, but a folder is needed there"),
    ("keyframes-a-file", "--out", "is a file, but a folder is needed there"),
    ("cache-dir-a-file", "--cache-dir", "is a file, but a folder is needed there"),
    ("missing-folder", "--out", "does not exist"),
])
def test_animate_outputs_that_cannot_be_written(tmp_path, capsys, case, flag, expected):
    track = _wav(tmp_path / "song.wav")
    out, extra = tmp_path / "song.mp4", []
    if case == "out-folder":
        out.mkdir()
    elif case == "long-name":  # the video's name fits the file system, its segments folder's would not
        out = tmp_path / ("v" * (MAX_FILENAME_BYTES - 4) + ".mp4")
    elif case == "segments-a-file":
        _user_file(tmp_path / "song.mp4.segments")
    elif case == "keyframes-a-file":
        _user_file(tmp_path / "song.mp4.keyframes")
    elif case == "cache-dir-a-file":
        extra = ["--cache-dir", str(_user_file(tmp_path / "cache"))]
    elif case == "missing-folder":
        out = tmp_path / "nowhere" / "song.mp4"
    _refused(_animate(track, out, *extra), capsys, flag, expected)
    for path in tmp_path.iterdir():
        assert path.is_dir() or path.name == "song.wav" or path.read_bytes() == USER_BYTES
    assert not out.is_file()


def test_animate_folder_mode_checks_every_track_and_skips_finished_ones(tmp_path, capsys):
    songs, videos = tmp_path / "songs", tmp_path / "videos"
    songs.mkdir(), videos.mkdir()
    _wav(songs / "a.wav")
    _wav(songs / ("b" * (MAX_FILENAME_BYTES - 4) + ".wav"))  # its video's segments folder name would be too long
    _refused(_animate(songs, videos), capsys, "--out", f"keep it under {MAX_FILENAME_BYTES}")
    (songs / ("b" * (MAX_FILENAME_BYTES - 4) + ".wav")).unlink()
    # a finished video is done, not an error; a folder in a video's place is
    done = _user_file(videos / "a.mp4")
    code, err, _ = _run(_animate(songs, videos), capsys)
    assert code == 1 and "--generator: file not found" in err, err
    assert done.read_bytes() == USER_BYTES
    _refused(_animate(songs, videos, "--overwrite"), capsys, "--overwrite", "delete the videos")
    done.unlink()
    (videos / "a.mp4").mkdir()
    _refused(_animate(songs, videos), capsys, "--out", "is an existing folder")
    (videos / "a.mp4").rmdir()
    (videos / "summary.json").mkdir()
    _refused(_animate(songs, videos), capsys, "summary.json", "is an existing folder")


def test_animate_overwrite_help_says_how_resuming_works(capsys):
    with pytest.raises(SystemExit):
        cli(["animate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "resumes from <out>.keyframes and <out>.segments" in text
    assert "already there is done and skipped" in text


def test_one_overwrite_rule_in_the_library(tmp_path):
    from sgim_nodes.errors import ParameterError
    from sgim_nodes.fileio import check_output_file

    path = _user_file(tmp_path / "x.png")
    assert check_output_file(path, "out") == path  # edit and the nodes' savers keep their behaviour
    with pytest.raises(ParameterError, match="give --overwrite to replace it"):
        check_output_file(path, "--out", overwrite=False)
    assert check_output_file(tmp_path / "new.png", "--out", overwrite=False).name == "new.png"
