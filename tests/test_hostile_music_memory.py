"""Hostile inputs, class 15: the music-video nodes' defaults on an ordinary song stay within memory.

Music Trajectory's codes are computed a chunk of frames at a time (the float64 temporaries of a whole song
were 3.7 GB for 10 minutes); Decode Frames, which hands on every frame as one IMAGE, estimates those bytes
before rendering and refuses beyond the budget (``limits.check_held_frames``), naming the node inputs to
lower and the file-backed render node. The sizes are claimed, not allocated: the refusals come first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sgim_nodes import limits
from sgim_nodes.animate import AudioFeatures, Keyframes, Trajectory
from sgim_nodes.animate.timeline import make_timeline
from sgim_nodes.errors import ParameterError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
GIB = 2 ** 30


def song(seconds: float, fps: float = 24.0, num_ws: int = 8, w_dim: int = 16, beats: bool = False) -> Trajectory:
    """Keyframes every 4 s and varied feature curves over ``seconds`` of a song (no audio decoded)."""
    import numpy as np

    timeline = make_timeline(seconds, fps)
    frames = timeline.frames
    g = torch.Generator().manual_seed(0)
    source = torch.randn(1, num_ws, w_dim, generator=g)
    times = [float(t) for t in np.arange(0.0, seconds, 4.0)]
    codes = source + torch.randn(len(times), num_ws, w_dim, generator=g)
    phase = np.arange(frames) / fps
    values = {name: list(0.5 + 0.5 * np.sin(phase * (k + 1))) for k, name in
              enumerate(("loudness", "onset", "centroid", "low", "mid", "high"))}
    features = AudioFeatures(timeline=timeline, values=values, tempo=120.0 if beats else None,
                             beat_times=[float(t) for t in np.arange(0.0, seconds, 0.5)] if beats else [])
    return Trajectory(Keyframes(times=times, codes=codes, source=source), features, reactivity=0.8,
                      beat_weight=0.3 if beats else 0.0)


@pytest.mark.parametrize("offset, count", [(0, None), (5, 1000), (1200, 7), (0, 256), (0, 257)])
def test_trajectory_codes_in_chunks_equal_the_whole(monkeypatch, offset, count):
    path = song(60.0, beats=True)
    monkeypatch.setattr(limits, "TRAJECTORY_CHUNK_FRAMES", 10 ** 9)
    whole = path.codes(offset, count)
    monkeypatch.setattr(limits, "TRAJECTORY_CHUNK_FRAMES", 256)
    chunked = path.codes(offset, count)
    assert chunked.dtype == torch.float32 and chunked.shape == whole.shape
    assert torch.equal(chunked, whole)


def test_trajectory_never_builds_more_than_a_chunk_in_float64(monkeypatch):
    """Ten minutes at 30 fps (18,000 frames): every float64 step sees at most one chunk of frames."""
    from sgim_nodes.animate import trajectory

    seen = []
    original = trajectory.hermite_path

    def spy(times, codes, at):
        seen.append(at.shape[0])
        return original(times, codes, at)

    monkeypatch.setattr(trajectory, "hermite_path", spy)
    codes = song(600.0, fps=30.0, num_ws=2, w_dim=4).codes()
    assert codes.shape == (18_000, 2, 4) and codes.dtype == torch.float32
    assert max(seen) == limits.TRAJECTORY_CHUNK_FRAMES and sum(seen) == 18_000


MEASURE = textwrap.dedent("""
    import sys, json
    sys.path.insert(0, "tests")
    import torch
    torch.set_num_threads(1)
    from test_hostile_music_memory import song

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    path = song(600.0, num_ws=18, w_dim=64)   # 10 minutes at 24 fps, 18 rows of 64 values
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
    codes = path.codes()
    print(json.dumps({"growth": status("VmHWM") - before, "bytes": codes.numel() * 4, "finite": bool(torch.isfinite(codes).all())}))
""")


def test_ten_minutes_of_codes_cost_about_their_float32_size():
    """The codes are 66 MB of float32; the float64 whole-song path peaked at about 8 times that."""
    done = subprocess.run([sys.executable, "-c", MEASURE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["finite"]
    assert figures["growth"] < 1.5 * figures["bytes"] + (32 << 20), figures


# ------------------------------------------------------------------------------------ Decode Frames

@pytest.mark.parametrize("frames, side, available, refused", [
    (4320, 1024, 128 * GIB, True),  # 3 minutes at 24 fps, 1024 px: 81 GiB counted, beyond the 16 GiB cap
    (4320, 256, 128 * GIB, False),  # the same at 256 px: 5 GiB
    (4320, 256, 8 * GIB, True),  # ... but not on a machine with 8 GiB free (budget: half of it)
    (240, 1024, 128 * GIB, False),  # ten seconds at 1024 px: 5.6 GiB
    (1, 8192, 4 * GIB, False),  # one 8192 px frame: 1.5 GiB, within half of 4 GiB free
    (1, 8192, 2 * GIB, True),  # ... not within half of 2 GiB
])
def test_held_frames_budget(frames, side, available, refused):
    claimed = 2 * frames * side * side * 3 * 4
    budget = min(limits.MAX_HELD_FRAMES_BYTES, available // 2)
    assert refused == (claimed > budget)  # the table's own arithmetic
    if refused:
        with pytest.raises(ParameterError, match=r"would hold [\d.]+ GiB in memory as one IMAGE"):
            limits.check_held_frames(frames, side, side, available=available)
    else:
        assert limits.check_held_frames(frames, side, side, available=available) == claimed


def test_the_budget_follows_the_available_memory():
    assert limits.held_frames_budget(4 * GIB) == 2 * GIB
    assert limits.held_frames_budget(1024 * GIB) == limits.MAX_HELD_FRAMES_BYTES
    measured = limits.available_memory_bytes()
    assert measured is None or measured > 0
    assert 0 < limits.held_frames_budget() <= limits.MAX_HELD_FRAMES_BYTES


class _Run:
    def __init__(self):
        self.rendered = 0

    def check_cancel(self):
        pass

    def progress(self, *args, **kwargs):
        pass

    def cpu_memory(self):
        import contextlib

        return contextlib.nullcontext()


class _Generator:
    """Counts what it is asked to render: a refusal must come before any frame."""

    resolution = 1024
    family = "stylegan2"
    num_ws = 8

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        raise AssertionError(f"the generator was used ({name}) before the refusal")


def test_decode_frames_of_a_three_minute_song_at_1024_px_refused_before_rendering():
    from sgim_nodes.jobs.music_video import FramesRequest, TrajectoryRequest, iter_video_frames, plan_trajectory

    path = song(180.0)
    chunk = plan_trajectory(TrajectoryRequest(path.keyframes, path.features, reactivity=0.5))
    assert chunk.count == 4320
    with pytest.raises(ParameterError) as info:
        next(iter_video_frames(FramesRequest(_Generator(), chunk, 8, 0), _Run()))
    message = str(info.value)
    assert info.value.parameter == "frames"
    assert "4,320 frames of 1024 x 1024 px" in message and "GiB" in message
    for advice in ("start_seconds", "end_seconds", "frame_count", "size", '"Render Music Video (SGIM)"'):
        assert advice in message, message
    # the same chunk, scaled to 64 px, is within the budget: it reaches the generator
    with pytest.raises(AssertionError, match="the generator was used"):
        next(iter_video_frames(FramesRequest(_Generator(), chunk, 8, 64), _Run()))
    # a caller that streams the frames (hold_all=False) is not budgeted
    with pytest.raises(AssertionError, match="the generator was used"):
        next(iter_video_frames(FramesRequest(_Generator(), chunk, 8, 0, hold_all=False), _Run()))


def test_music_trajectory_codes_are_budgeted_before_they_are_computed(monkeypatch):
    """An hour at 24 fps of 18 x 512 codes claims 5.9 GiB (codes + a copy): refused against a 4 GiB budget
    before any code is computed, naming frame_count and the chunking advice; a chunk within it is the codes."""
    from sgim_nodes.jobs.music_video import TrajectoryChunk, chunk_codes

    hour = song(3600.0, num_ws=18, w_dim=512)
    monkeypatch.setattr(Trajectory, "_codes", lambda *a: pytest.fail("codes computed before the budget check"))
    with pytest.raises(ParameterError, match=r"frame_count: 86,400 frames' W\+ codes would hold 5\.9 GiB") as err:
        chunk_codes(TrajectoryChunk(hour, 0, hour.timeline.frames), available=8 * GIB)
    assert err.value.parameter == "frame_count" and "Render Music Video" in str(err.value)
    monkeypatch.undo()
    part = TrajectoryChunk(hour, 1000, 48)
    assert torch.equal(chunk_codes(part, available=8 * GIB), hour.codes(1000, 48))
