"""Rendering a trajectory straight to an .mp4 (sgim_nodes.animate.segments): every frame and the cut audio,
cancel leaves nothing under the final name and resumes at the first missing segment, memory stays flat
over a 10-minute track, and two torchrun processes (gloo) write the same video as one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sgim_nodes.animate import Trajectory, features_of_file, iter_frames, keyframe_times, make_timeline, to_uint8
from sgim_nodes.animate.render import video_frame_count
from sgim_nodes.animate.segments import plan_segments, render_to_file, segment_length
from sgim_nodes.errors import Cancelled, ParameterError
from sgim_nodes.jobs.run import QuietRun, Run
from test_animate import click_track, decoded_frames, synthetic_keyframes, write_wav

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from tiny_models import write_tiny_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared):
    from sgim_nodes.stylegan import load_generator

    root = tmp_path_factory.mktemp("render")
    names = write_tiny_models(root / "models", shared)
    path = root / "models" / "stylegan" / names["generator"]
    return {"generator": load_generator(path), "generator_path": path, "root": root,
            "track": write_wav(root / "clicks.wav", click_track(7.3))}


def trajectory_of(track: Path, generator, fps: float = 12.0, start=None, end=None) -> Trajectory:
    from sgim_nodes.animate.stream import probe

    timeline = make_timeline(probe(track).seconds, fps, start, end)
    keyframes = synthetic_keyframes(keyframe_times(timeline, 2.0), num_ws=generator.num_ws, w_dim=generator.w_dim)
    return Trajectory(keyframes, features_of_file(track, timeline))


def decoded_audio(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1)


class Recorder(Run):
    """A host that wants previews and may cancel after some progress calls."""

    def __init__(self, cancel_after=None):
        super().__init__("cpu")
        self.calls, self.cancel_after = [], cancel_after

    def progress(self, done, total, preview=None, text=None):
        self.calls.append((done, total, None if preview is None else tuple(preview.shape)))

    def cancel_requested(self):
        return self.cancel_after is not None and len(self.calls) >= self.cancel_after

    def wants_previews(self):
        return True


def test_segments_are_whole_batches():
    assert segment_length(24.0, 8, 10.0) == 240 and segment_length(29.97, 8, 10.0) == 296
    assert segment_length(12.0, 5, 0.1) == 5  # at least one batch
    assert plan_segments(100, 24) == [(0, 24), (24, 24), (48, 24), (72, 24), (96, 4)]
    with pytest.raises(ParameterError, match="segment_seconds"):
        segment_length(24.0, 8, 0)


def test_the_file_has_every_frame_and_the_audio_cut_to_the_frames(tiny, tmp_path):
    generator = tiny["generator"]
    trajectory = trajectory_of(tiny["track"], generator, fps=29.97, start=1.3, end=5.05)
    run = Recorder()
    out = render_to_file(generator, trajectory, tmp_path / "v.mp4", audio_path=tiny["track"], batch_size=4,
                         segment_seconds=1.0, run=run)
    frames, video_seconds, audio_seconds = video_frame_count(out)
    assert frames == trajectory.frames == 112
    assert abs(video_seconds - 112 / 29.97) < 1e-3 and abs(audio_seconds - 112 / 29.97) < 0.005
    assert [c[0] for c in run.calls] == list(range(4, 113, 4)) and all(c[1] == 112 for c in run.calls)
    assert all(c[2] == (1, 3, 32, 32) for c in run.calls)  # a preview with each batch
    pixels = decoded_frames(out)
    rendered = np.concatenate([to_uint8(images) for _, images in iter_frames(generator, trajectory, batch_size=4)])
    assert pixels.shape == rendered.shape
    # as close to the frames as one H.264 stream of the whole (VideoWriter; 32 px noise loses much to 4:2:0)
    from sgim_nodes.animate import VideoWriter

    writer = VideoWriter(tmp_path / "plain.mp4", trajectory.timeline, 32, 32)
    writer.write(rendered)
    writer.close()
    error = np.abs(pixels.astype(int) - rendered.astype(int)).mean()
    plain_error = np.abs(decoded_frames(tmp_path / "plain.mp4").astype(int) - rendered.astype(int)).mean()
    assert error < 1.1 * plain_error, (error, plain_error)
    (tmp_path / "plain.mp4").unlink()
    assert not (tmp_path / "v.mp4.segments").exists()  # segments are removed once joined
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_cancel_leaves_no_file_under_the_final_name_and_resumes_at_the_first_missing_segment(tiny, tmp_path):
    generator = tiny["generator"]
    trajectory = trajectory_of(tiny["track"], generator)  # 88 frames, segments of 24
    out = tmp_path / "v.mp4"
    with pytest.raises(Cancelled):
        render_to_file(generator, trajectory, out, audio_path=tiny["track"], batch_size=4, segment_seconds=2.0,
                       run=Recorder(cancel_after=14))  # during the third segment
    assert not out.exists() and not list(tmp_path.glob(".v.mp4.*"))  # no half file, no temporary left
    done = sorted(p.name for p in (tmp_path / "v.mp4.segments").rglob("*.mp4"))
    assert done == ["segment_00000.mp4", "segment_00001.mp4"]  # the finished segments are kept
    segments = tmp_path / "v.mp4.segments"
    kept = [data for name in done for _, data in _packets(next(segments.rglob(name)), "video")]
    resumed = Recorder()
    render_to_file(generator, trajectory, out, audio_path=tiny["track"], batch_size=4, segment_seconds=2.0,
                   run=resumed)
    assert resumed.calls[0][0] == 24 and resumed.calls[1][0] == 48  # segment 0 and 1 were not rendered again
    # the kept segments' packets are in the file as they were encoded (stream copy, not re-encoded)
    joined = [data for _, data in _packets(out, "video")]
    assert len(joined) == 88 and joined[:len(kept)] == kept
    fresh = render_to_file(generator, trajectory, tmp_path / "fresh.mp4", audio_path=tiny["track"], batch_size=4,
                           segment_seconds=2.0)
    # resumed = uninterrupted: the same pictures and the same sound. Compared decoded, not as bytes: under a
    # loaded full-suite run the re-rendered segments once differed from the first render in a few encoded
    # packets (a rounding flip of the frames' uint8 values is enough), and AAC is encoded afresh at each join.
    assert _first_difference(_packets(out, "video"), _packets(fresh, "video")) is None or \
        np.abs(decoded_frames(out).astype(int) - decoded_frames(fresh).astype(int)).mean() < 0.5
    assert decoded_frames(out).shape == decoded_frames(fresh).shape
    resumed_audio, fresh_audio = decoded_audio(out), decoded_audio(fresh)
    assert resumed_audio.shape == fresh_audio.shape
    assert np.abs(resumed_audio - fresh_audio).max() < 1e-3
    with pytest.raises(ParameterError, match="out"):
        render_to_file(generator, trajectory, tmp_path / "v.mov")


TEN_MINUTES = r"""
import os, sys, numpy as np, av, psutil, torch
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/tests"]
torch.set_num_threads(1)
path = sys.argv[1]
with av.open(path, "w") as out:  # 10 minutes, a click every half second, written a minute at a time
    stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
    rng = np.random.default_rng(0)
    for minute in range(10):
        pcm = (rng.standard_normal(60 * 8000) * 2000).astype(np.int16)
        pcm[::4000] = 30000
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
from sgim_nodes.stylegan import load_generator
from sgim_nodes.animate.segments import render_to_file
from sgim_nodes.jobs.run import Run
from test_music_render import trajectory_of
generator = load_generator(sys.argv[2])
trajectory = trajectory_of(path, generator, fps=8.0)
process = psutil.Process()
class Measure(Run):
    rss = []
    def progress(self, done, total, preview=None, text=None):
        if done in (trajectory.frames // 10, total):
            self.rss.append(process.memory_info().rss)
out = render_to_file(generator, trajectory, path[:-4] + ".mp4", audio_path=path, batch_size=8, run=Measure("cpu"))
from sgim_nodes.animate.render import video_frame_count
frames, video_s, audio_s = video_frame_count(out)
print(trajectory.frames, frames, round(video_s, 3), round(audio_s, 3), *Measure.rss)
"""


def test_a_ten_minute_track_renders_with_flat_memory(tiny, tmp_path):
    out = subprocess.run([sys.executable, "-c", TEN_MINUTES, str(tmp_path / "ten.wav"), str(tiny["generator_path"]),
                          str(REPO)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    expected, frames, video_s, audio_s, rss_early, rss_end = (float(v) for v in out.stdout.split())
    assert expected == frames == 4800 and abs(video_s - 600) < 1e-3 and abs(audio_s - 600) < 0.05
    # all frames at once would be 4800 x 32 x 32 x 3 floats = 59 MB; the render grows by far less
    assert rss_end - rss_early < 15e6, (rss_early, rss_end)


TORCHRUN = r"""
import os, sys, torch
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/tests"]
torch.set_num_threads(1)
from sgim_nodes.stylegan import load_generator
from sgim_nodes.animate.distributed import ranks_from_environment
from sgim_nodes.animate.segments import render_to_file
from test_music_render import trajectory_of
ranks = ranks_from_environment("cpu")
generator = load_generator(sys.argv[2])
trajectory = trajectory_of(sys.argv[1], generator)
render_to_file(generator, trajectory, sys.argv[3], audio_path=sys.argv[1], batch_size=4, segment_seconds=2.0,
               ranks=ranks, private_segments=os.environ.get("PRIVATE") == "1")
print("rank", ranks.rank, "of", ranks.world_size)
ranks.close()
sys.stdout.flush()
os._exit(0)  # gloo's threads may abort a normal interpreter teardown on a loaded machine
"""


@pytest.mark.parametrize("private", [False, True], ids=["shared-folder", "segments-sent-to-rank-0"])
def test_two_torchrun_processes_write_the_same_video_as_one(tiny, tmp_path, private):
    script = tmp_path / "render.py"
    script.write_text(TORCHRUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRIVATE": "1" if private else "0"}
    videos = {}
    for n in (1, 2):
        videos[n] = tmp_path / f"n{n}.mp4"
        # --standalone: a rendezvous on a free local port (other test sessions may hold fixed ones)
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 str(n), str(script), str(tiny["track"]), str(tiny["generator_path"]), str(videos[n]),
                                 str(REPO)],
                                env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("rank") == n
    one, two = decoded_frames(videos[1]), decoded_frames(videos[2])
    assert one.shape == (88, 32, 32, 3) and np.array_equal(one, two)  # frame-identical
    assert np.array_equal(decoded_audio(videos[1]), decoded_audio(videos[2]))
    assert videos[1].read_bytes() == videos[2].read_bytes()  # and in fact the same file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.mp4", "n2.mp4", "render.py"]  # segments removed


def test_flicker_follows_the_code_change_and_finds_a_flash(tiny, tmp_path):
    from sgim_nodes.animate.flicker import flicker_of_video, measure_flicker, plot_flicker

    generator = tiny["generator"]
    trajectory = trajectory_of(tiny["track"], generator)  # keyframes every 2 s at 12 fps
    frames = np.concatenate([to_uint8(images) for _, images in iter_frames(generator, trajectory, batch_size=8)])
    stats = measure_flicker([frames[:40], frames[40:]], trajectory)
    assert stats.pixel.shape == stats.code.shape == (87,)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(ranks(stats.pixel), ranks(stats.code))[0, 1] > 0.5  # frames change as the codes do
    assert stats.at_keyframe[[0, 23, 24, 47, 48, 86]].all() and stats.at_keyframe.sum() == 8  # 0, 24, 48, 72, 87
    flashed = frames.copy()
    flashed[30] = 255 - flashed[30]
    spiky = measure_flicker([flashed], trajectory)
    assert set(spiky.spikes()) >= {29, 30} and spiky.summary()["spikes"] >= 2
    assert spiky.summary()["pixel_max"] > 5 * stats.summary()["pixel_p95"]
    figure = plot_flicker(spiky)
    assert figure.shape == (300, 900, 3) and figure.std() > 5
    out = render_to_file(generator, trajectory, tmp_path / "v.mp4", batch_size=8)
    encoded = flicker_of_video(out, trajectory)
    # the encoder adds a little change of its own but keeps the same shape over time
    assert np.corrcoef(encoded.pixel, stats.pixel)[0, 1] > 0.8


def _packets(path, kind: str):
    import av

    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(packet.pts, bytes(packet)) for packet in container.demux(stream) if packet.size]


def _first_difference(ours, theirs):
    """None, or a short account of where two packet lists part (pytest would print every byte)."""
    if len(ours) != len(theirs):
        return f"{len(ours)} packets against {len(theirs)}"
    for index, ((pts, data), (their_pts, their_data)) in enumerate(zip(ours, theirs)):
        if pts != their_pts or data != their_data:
            return f"packet {index}: pts {pts} / {their_pts}, {len(data)} / {len(their_data)} bytes"
    return None
