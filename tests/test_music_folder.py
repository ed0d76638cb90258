"""Music-video jobs (sgim_nodes.jobs.music_render) on tiny models: beat keyframes through the whole
pipeline, a folder of songs with a broken one, resume after a kill at the folder level, and the whole
pipeline (keyframe chains and frames) shared by two torchrun processes giving the one-process video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sgim_nodes.errors import ParameterError
from sgim_nodes.jobs.music_render import (MusicFolderRequest, MusicRenderRequest, run_music_folder,
                                          run_music_render, video_names)
from sgim_nodes.jobs.run import QuietRun
from test_animate import click_track, decoded_frames, write_wav
from test_music_beats import clicks_at

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from tiny_models import write_tiny_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = dict(steps=3, keyframe_steps=2, fps=12.0, batch=4, segment_seconds=2.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared):
    root = tmp_path_factory.mktemp("music")
    names = write_tiny_models(root / "models", shared)
    m = root / "models"
    return dict(generator=m / "stylegan" / names["generator"], clip=m / "sgim_clip" / names["clip"],
                encoder=m / "sgim_audio_encoders" / names["encoder"])


def request(models, audio, out, **options) -> MusicRenderRequest:
    return MusicRenderRequest(audio=audio, out=out, **models, **{**FAST, **options})


def test_beat_keyframes_through_the_whole_pipeline(models, tmp_path):
    from sgim_nodes.animate.render import video_frame_count

    clicks = clicks_at(128, 12.0, first=0.5)
    track = write_wav(tmp_path / "beat.wav", click_track(12.0, clicks=clicks))
    result = run_music_render(request(models, track, tmp_path / "beat.mp4", keyframes="beats:4", beat_weight=0.5))
    assert abs(result.tempo - 128) / 128 < 0.02
    click_frames = np.round(np.array(clicks) * 12)
    inner = np.array(result.keyframe_times[1:-1]) * 12
    assert len(inner) >= 4 and all(np.abs(click_frames - f).min() <= 1 for f in inner)  # on the beats
    assert video_frame_count(result.path)[0] == result.frames == 144
    with pytest.raises(ParameterError, match="keyframes"):
        run_music_render(request(models, track, tmp_path / "x.mp4", keyframes="beats:two"))
    with pytest.raises(ParameterError, match="out"):
        run_music_render(request(models, track, tmp_path / "x.avi"))


def album(folder: Path) -> Path:
    folder.mkdir()
    write_wav(folder / "a_first.wav", click_track(4.0, clicks=[0.5, 1.5, 2.5, 3.5]))
    (folder / "b_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    write_wav(folder / "c_third.wav", click_track(6.0, clicks=[1.0, 2.0, 3.0, 4.0, 5.0]))
    (folder / "notes.txt").write_text("not a track")
    return folder


def test_a_folder_gives_a_video_per_track_and_reports_the_broken_one(models, tmp_path):
    from sgim_nodes.animate.render import video_frame_count

    songs, out = album(tmp_path / "songs"), tmp_path / "videos"
    folder = MusicFolderRequest(songs, out, request(models, None, None))
    summary = run_music_folder(folder, QuietRun("cpu"))
    assert [(t.track, t.status) for t in summary.tracks] == [("a_first.wav", "rendered"), ("b_broken.wav", "failed"),
                                                             ("c_third.wav", "rendered")]
    assert "b_broken.wav" in summary.failed[0].message and "audio" in summary.failed[0].message
    assert video_frame_count(out / "a_first.mp4")[0] == 48 and video_frame_count(out / "c_third.mp4")[0] == 72
    assert not (out / "b_broken.mp4").exists()
    text = summary.describe()
    assert text.splitlines()[0] == "3 tracks: 2 rendered, 0 skipped (video already there), 1 failed"
    assert "failed   b_broken.wav -> b_broken.mp4: " in text
    saved = json.loads((out / "summary.json").read_text())
    assert (saved["rendered"], saved["failed"]) == (2, 1) and saved["tracks"][1]["status"] == "failed"
    again = run_music_folder(folder, QuietRun("cpu"))  # a rerun renders nothing twice
    assert [t.status for t in again.tracks] == ["skipped", "failed", "skipped"]
    assert video_names([Path("x/a.wav"), Path("x/a.mp3"), Path("x/b.flac")]) == ["a_wav.mp4", "a_mp3.mp4", "b.mp4"]
    with pytest.raises(ParameterError, match="no audio files"):
        run_music_folder(MusicFolderRequest(tmp_path / "videos" / ".keyframes", out, folder.options))


FOLDER_SCRIPT = r"""
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/tests"]
import torch
torch.set_num_threads(1)
from sgim_nodes.jobs.music_render import MusicFolderRequest, MusicRenderRequest, run_music_folder
from sgim_nodes.jobs.run import QuietRun
gen, clip, enc = sys.argv[4:7]
options = MusicRenderRequest(None, None, Path(gen), Path(clip), Path(enc), steps=3, keyframe_steps=12, fps=12.0,
                             batch=4, segment_seconds=1.0, keyframes="seconds:1.5")
print(run_music_folder(MusicFolderRequest(Path(sys.argv[1]), Path(sys.argv[2]), options), QuietRun("cpu")).describe())
"""


def test_a_killed_folder_render_resumes_where_it_stopped(models, tmp_path):
    songs, out = album(tmp_path / "songs"), tmp_path / "videos"
    command = [sys.executable, "-c", FOLDER_SCRIPT, str(songs), str(out), str(REPO), str(models["generator"]),
               str(models["clip"]), str(models["encoder"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((out / ".keyframes" / "c_third").rglob("keyframe_0001.safetensors")):
            assert process.poll() is None and time.monotonic() < deadline, "the third track never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # killed inside the third track, after its first keyframes
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    first = out / "a_first.mp4"
    stamp = first.stat().st_mtime_ns
    assert not (out / "c_third.mp4").exists() and not list(out.glob(".c_third.mp4.*"))  # no half video
    partial = json.loads((out / "summary.json").read_text())  # written after each track
    assert [t["status"] for t in partial["tracks"]] == ["rendered", "failed"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == "3 tracks: 1 rendered, 1 skipped (video already there), 1 failed"
    assert first.stat().st_mtime_ns == stamp  # the finished track was not rendered again
    fresh = tmp_path / "fresh"
    subprocess.run(command[:3] + [str(songs), str(fresh)] + command[5:], env=env, check=True, capture_output=True,
                   timeout=300)
    assert np.array_equal(decoded_frames(out / "c_third.mp4"), decoded_frames(fresh / "c_third.mp4"))


TORCHRUN = r"""
import os, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3]]
import torch
torch.set_num_threads(1)
from sgim_nodes.animate.distributed import ranks_from_environment
from sgim_nodes.jobs.music_render import MusicRenderRequest, run_music_render
ranks = ranks_from_environment("cpu")
gen, clip, enc = sys.argv[4:7]
request = MusicRenderRequest(Path(sys.argv[1]), Path(sys.argv[2]), Path(gen), Path(clip), Path(enc), steps=3,
                             keyframe_steps=2, fps=12.0, batch=4, segment_seconds=2.0, keyframes="seconds:1.5",
                             chain_length=2)
result = run_music_render(request, ranks=ranks)
print("rank", ranks.rank, result.path)
ranks.close()
sys.stdout.flush()
os._exit(0)  # gloo's threads may abort a normal interpreter teardown on a loaded machine
"""


def test_two_torchrun_processes_share_keyframe_chains_and_frames_and_match_one(models, tmp_path):
    track = write_wav(tmp_path / "t.wav", click_track(7.3))
    script = tmp_path / "job.py"
    script.write_text(TORCHRUN)
    videos = {}
    for n in (1, 2):
        videos[n] = tmp_path / f"n{n}.mp4"
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 str(n), str(script), str(track), str(videos[n]), str(REPO), str(models["generator"]),
                                 str(models["clip"]), str(models["encoder"])], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    frames = decoded_frames(videos[1])
    assert frames.shape[0] == 88 and np.array_equal(frames, decoded_frames(videos[2]))
    assert videos[1].read_bytes() == videos[2].read_bytes()
    # 6 keyframes in chains of 2: rank 0 optimised keyframes 0-3, rank 1 keyframes 4-5, into one cache
    cached = sorted(p.name for p in Path(str(videos[2]) + ".keyframes").rglob("*.safetensors"))
    assert cached == [f"keyframe_{k:04d}.safetensors" for k in range(6)]
