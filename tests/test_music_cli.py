"""``animate`` with beats, a folder of tracks and torchrun, on tiny models (the jobs are tested in
test_music_folder.py; here the flags, what is printed and the exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sgim_nodes.__main__ import main as cli
from test_animate import click_track, decoded_frames, write_wav
from test_music_beats import clicks_at
from test_music_folder import album, models  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = ["--fps", "12", "--steps", "3", "--keyframe-steps", "2", "--batch", "4", "--device", "cpu"]


def model_args(models) -> list[str]:
    return ["--generator", str(models["generator"]), "--clip", str(models["clip"]), "--encoder", str(models["encoder"])]


def test_animate_on_the_beat_prints_the_tempo(models, tmp_path, capsys):
    track = write_wav(tmp_path / "beat.wav", click_track(10.0, clicks=clicks_at(128, 10.0, first=0.5)))
    out = tmp_path / "beat.mp4"
    assert cli(["animate", "--audio", str(track), "--out", str(out), "--keyframes", "bars:1", *FAST,
                *model_args(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    tempo = float(lines[0].split()[1])
    assert lines[0].startswith("tempo ") and lines[0].endswith(" BPM") and abs(tempo - 128) / 128 < 0.02
    assert lines[1].startswith("120 frames at 12 fps") and lines[-1] == f"wrote {out}"
    with pytest.raises(SystemExit):  # argparse: a correction that does not exist
        cli(["animate", "--audio", str(track), "--out", str(out), "--tempo-correction", "triple"])


def test_animate_a_folder_prints_a_summary_and_fails_when_a_track_did(models, tmp_path, capsys):
    songs, videos = album(tmp_path / "songs"), tmp_path / "videos"
    code = cli(["animate", "--audio", str(songs), "--out", str(videos), *FAST, *model_args(models)])
    text = capsys.readouterr().out
    assert code == 1  # one track failed (the others were rendered)
    assert text.startswith("3 tracks: 2 rendered, 0 skipped (video already there), 1 failed")
    assert (videos / "a_first.mp4").is_file() and (videos / "c_third.mp4").is_file()


def test_torchrun_animate_with_two_processes_writes_the_one_process_video(models, tmp_path):
    track = write_wav(tmp_path / "t.wav", click_track(7.3))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    videos = {}
    for n in (1, 2):
        videos[n] = tmp_path / f"n{n}.mp4"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                   "-m", "sgim_nodes", "animate", "--audio", str(track), "--out", str(videos[n]), "--keyframes",
                   "seconds:1.5", "--chain-length", "2", "--segment-seconds", "2", *FAST, *model_args(models)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("wrote ") == 1  # rank 0 speaks for all
    assert videos[1].read_bytes() == videos[2].read_bytes()
    assert decoded_frames(videos[2]).shape[0] == 88
