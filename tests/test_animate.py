"""Music videos (sgim_nodes.animate): frame counts, sync, smoothness, determinism, cancel, the CLI
(with resume after a kill) and streamed features of a one-hour track, on tiny models."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sgim_nodes.animate import (Keyframes, Trajectory, features_of_file, features_of_waveform, hermite_path,
                                iter_frames, keyframe_times, make_timeline, parse_prompt_schedule, prompt_at,
                                trim_audio)
from sgim_nodes.animate.features import FEATURE_NAMES
from sgim_nodes.animate.render import video_frame_count
from sgim_nodes.errors import Cancelled, ParameterError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from tiny_models import write_tiny_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 44100
CLICKS = [0.5, 1.23, 2.0, 3.61, 4.4, 5.92, 6.8]


def click_track(seconds: float = 7.3, clicks=CLICKS, rate: int = RATE, channels: int = 2) -> torch.Tensor:
    """Quiet noise with short loud bursts starting at ``clicks`` (seconds): ``[channels, T]``."""
    g = torch.Generator().manual_seed(0)
    wave = 0.02 * torch.randn(channels, int(round(seconds * rate)), generator=g)
    for t in clicks:
        i = int(round(t * rate))
        wave[:, i:i + 200] += 0.8 * torch.randn(200, generator=g)
    return wave.clamp(-1, 1)


def write_wav(path: Path, wave: torch.Tensor, rate: int = RATE) -> Path:
    import av

    layout = "mono" if wave.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        pcm = (wave.T.reshape(1, -1) * 32767).round().short().numpy()
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def synthetic_keyframes(times, num_ws=8, w_dim=16, seed=0, offset=None) -> Keyframes:
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(1, num_ws, w_dim, generator=g)
    if offset is None:
        codes = source + torch.randn(len(times), num_ws, w_dim, generator=g)
    else:
        codes = (source + offset).expand(len(times), -1, -1).clone()
    return Keyframes(times=list(times), codes=codes, source=source)


# ------------------------------------------------------------------------------ timeline and frame counts

@pytest.mark.parametrize("seconds, fps, start, end, frames", [
    (7.3, 24.0, None, None, 175),      # 175.2 frames
    (10.0, 29.97, None, None, 300),    # 299.7 frames
    (7.3, 24.0, 1.3, 5.05, 90),        # 3.75 s range
])
def test_frame_counts_agree_between_features_trajectory_and_audio(seconds, fps, start, end, frames):
    wave = click_track(seconds)
    timeline = make_timeline(seconds, fps, start, end)
    assert timeline.frames == frames == round(((end or seconds) - (start or 0.0)) * fps)
    features = features_of_waveform(wave, RATE, timeline)
    assert all(len(features.values[name]) == frames for name in FEATURE_NAMES)
    times = keyframe_times(timeline, 2.0)
    trajectory = Trajectory(synthetic_keyframes(times), features)
    assert trajectory.codes().shape == (frames, 8, 16)
    audio = trim_audio(wave, RATE, timeline)
    assert audio.shape[-1] == round(frames / fps * RATE)  # the audio lasts exactly frames / fps
    first = int(round((start or 0.0) * RATE))
    assert torch.equal(audio[:, :100], wave[:, first:first + 100])
    # chunks tile the whole: codes and audio of two chunks are the whole's
    half = frames // 2
    assert torch.equal(torch.cat([trajectory.codes(0, half), trajectory.codes(half)]), trajectory.codes())
    pieces = [trim_audio(wave, RATE, timeline, 0, half), trim_audio(wave, RATE, timeline, half)]
    assert torch.equal(torch.cat(pieces, dim=-1), audio)


def test_timeline_rejects_bad_ranges():
    with pytest.raises(ParameterError, match="fps"):
        make_timeline(5.0, 0)
    with pytest.raises(ParameterError, match="end"):
        make_timeline(5.0, 24, 3.0, 2.0)
    with pytest.raises(ParameterError, match="start"):
        make_timeline(5.0, 24, 6.0)
    with pytest.raises(ParameterError, match="frame_offset"):
        make_timeline(5.0, 24).check_range(120)
    padded = trim_audio(torch.ones(1, 100), 100, make_timeline(1.0, 3.0))  # 3 frames = 1 s = 100 samples
    assert padded.shape[-1] == 100


# ------------------------------------------------------------------------------ features and sync

def test_reactive_displacement_peaks_on_each_click_within_one_frame():
    fps = 24.0
    timeline = make_timeline(7.3, fps)
    features = features_of_waveform(click_track(), RATE, timeline)
    keyframes = synthetic_keyframes(keyframe_times(timeline, 2.0), offset=0.5)  # a constant path off the source
    trajectory = Trajectory(keyframes, features, reactivity=1.0, band_layers=False)
    displacement = (trajectory.codes() - trajectory.path()).flatten(1).norm(dim=1).numpy()
    for click in CLICKS:
        expected = click * fps
        lo, hi = int(round(expected - 0.3 * fps)), int(round(expected + 0.3 * fps))
        peak = lo + int(np.argmax(displacement[lo:hi]))
        assert abs(peak - expected) <= 1.0, (click, peak, expected)
    # the onsets the features detect are the clicks (keyframes may snap to them)
    assert len(features.onset_times) == len(CLICKS)
    assert all(abs(t - c) <= 1 / fps for t, c in zip(features.onset_times, CLICKS))
    snapped = keyframe_times(timeline, 2.0, features.onset_times, snap_to_onsets=True)
    assert snapped[0] == 0 and any(abs(t - 2.0) < 1e-9 for t in snapped) and abs(snapped[1] - 2.0) < 1e-9
    assert all(min(abs(t - o) for o in features.onset_times) < 1e-6 for t in snapped[1:-1])


def test_features_follow_the_bands_and_stay_in_range():
    t = torch.arange(int(4 * RATE)) / RATE
    bass = torch.sin(2 * math.pi * 80 * t) * (t < 2)  # bass in the first half, treble in the second
    treble = torch.sin(2 * math.pi * 5000 * t) * (t >= 2)
    features = features_of_waveform((0.5 * (bass + treble))[None], RATE, make_timeline(4.0, 10.0))
    low, high, centroid = (np.array(features.values[n]) for n in ("low", "high", "centroid"))
    assert low[2:17].min() > 0.9 and low[23:38].max() < 0.05
    assert high[23:38].min() > 0.9 and high[2:17].max() < 0.05
    assert centroid[25:38].mean() > 5 * centroid[2:17].mean()
    for name in FEATURE_NAMES:
        values = np.array(features.values[name])
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1


def test_features_of_a_file_equal_those_of_its_waveform(tmp_path):
    wave = click_track(3.0, clicks=[0.5, 1.5, 2.5])
    path = write_wav(tmp_path / "clicks.wav", wave)
    timeline = make_timeline(3.0, 24.0, 0.4, 2.9)
    from_file = features_of_file(path, timeline)
    from_memory = features_of_waveform(wave, RATE, timeline)
    for name in FEATURE_NAMES:  # FFmpeg's and torchaudio's resamplers differ slightly
        assert np.abs(np.array(from_file.values[name]) - np.array(from_memory.values[name])).max() < 0.05, name
    expected = [(c - 0.4) * 24 for c in (0.5, 1.5, 2.5)]  # frames, relative to the 0.4 s start
    assert len(from_file.onset_times) == 3
    assert all(abs(t * 24 - e) <= 1.0 for t, e in zip(from_file.onset_times, expected)), from_file.onset_times


# ------------------------------------------------------------------------------ trajectory

def test_no_jump_at_keyframe_boundaries():
    fps = 24.0
    times = [0.0, 1.5, 2.5, 5.0, 6.0, 8.0]  # uneven spacing
    keyframes = synthetic_keyframes(times, seed=3)
    codes = keyframes.codes
    frame_times = torch.arange(0, int(8 * fps) + 1, dtype=torch.float64) / fps
    path = hermite_path(torch.tensor(times, dtype=torch.float64), codes, frame_times)
    for k, t in enumerate(times):  # passes through every keyframe
        assert torch.allclose(path[round(t * fps)], codes[k], atol=1e-5)
    steps = (path[1:] - path[:-1]).flatten(1).norm(dim=1)
    key_frames = [round(t * fps) for t in times]
    for k in range(1, len(times) - 1):
        j = key_frames[k]
        boundary = max(steps[j - 1], steps[j])  # the steps into and out of the keyframe
        inside = torch.cat([steps[key_frames[k - 1] + 1:j - 1], steps[j + 1:key_frames[k + 1] - 1]]).max()
        assert boundary <= inside * 1.0001, (k, float(boundary), float(inside))
    # a piecewise-linear path would fail the same check (the test can tell a kink)
    linear = torch.stack([torch.from_numpy(np.stack([np.interp(frame_times.numpy(), times, codes[:, r, c].numpy())
                                                     for c in range(codes.shape[2])], axis=-1))
                          for r in range(codes.shape[1])], dim=1)
    linear_steps = (linear[1:] - linear[:-1]).flatten(1).norm(dim=1)
    accel = (steps[1:] - steps[:-1]).abs()
    linear_accel = (linear_steps[1:] - linear_steps[:-1]).abs()
    assert linear_accel[[j - 1 for j in key_frames[1:-1]]].max() > 3 * accel.max()


def test_band_layers_map_bass_to_coarse_and_highs_to_fine():
    from sgim_nodes.animate import layer_drive

    t = torch.arange(int(4 * RATE)) / RATE
    wave = (0.5 * torch.sin(2 * math.pi * 80 * t) * (t < 2) + 0.5 * torch.sin(2 * math.pi * 5000 * t) * (t >= 2))[None]
    features = features_of_waveform(wave, RATE, make_timeline(4.0, 10.0))
    drive = layer_drive(features, 14, band_layers=True)  # a 256 px generator: 4 coarse, 4 middle, 6 fine rows
    assert drive[5, :4].mean() > drive[5, 8:].mean() + 0.3  # bass passage: coarse rows move more
    assert drive[30, 8:].mean() > drive[30, :4].mean() + 0.3  # treble passage: fine rows move more
    same = layer_drive(features, 14, band_layers=False)
    assert torch.equal(same[:, 0], same[:, 13])


class FakeStyleGAN3(torch.nn.Module):
    """A StyleGAN3-shaped generator: W+ -> image, plus the input transform it renders with."""

    family = "stylegan3"
    resolution, num_ws, w_dim = 8, 8, 16

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.transforms = []
        self.current = torch.eye(3)

    def set_input_transform(self, matrix):
        self.current = matrix.clone()
        self.transforms.append(self.current)

    def synthesis(self, ws, noise_mode="const"):
        shift = self.current[0, 2] + self.current[1, 0]
        return (ws.mean(dim=(1, 2))[:, None, None, None] + shift).expand(-1, 3, 8, 8).tanh()


def test_stylegan3_frames_get_a_slow_transform_following_the_music():
    timeline = make_timeline(4.0, 12.0)
    t = torch.arange(int(4 * RATE)) / RATE
    wave = (torch.sin(2 * math.pi * 220 * t) * (0.05 + 0.9 * (t > 2)))[None]  # quiet, then loud
    features = features_of_waveform(wave, RATE, timeline)
    trajectory = Trajectory(synthetic_keyframes(keyframe_times(timeline, 2.0)), features, rotation_degrees=6.0,
                            translation=0.1)
    generator = FakeStyleGAN3()
    frames = [images for _, images in iter_frames(generator, trajectory, batch_size=8)]
    assert len(frames) == timeline.frames and all(f.shape[0] == 1 for f in frames)  # one transform per frame
    assert len(generator.transforms) == timeline.frames + 1 and torch.equal(generator.transforms[-1], torch.eye(3))
    matrices = trajectory.transforms()
    assert torch.equal(torch.stack(generator.transforms[:-1]), matrices)
    angles = torch.rad2deg(torch.atan2(-matrices[:, 0, 1], matrices[:, 0, 0]))  # inverse rotation matrix
    assert angles.abs().max() <= 6.0 + 1e-4
    assert angles[-1] - angles[0] > 3.0  # rotated as the music got loud
    # slowly: a sudden change of loudness (quiet -> loud) turns into a turn of about a second
    assert (angles[1:] - angles[:-1]).abs().max() * timeline.fps < 12.0  # degrees per second
    # a StyleGAN2 generator gets no transform and batched frames
    generator.family = "stylegan2"
    generator.transforms.clear()
    assert [f.shape[0] for _, f in iter_frames(generator, trajectory, batch_size=20)] == [20, 20, 8]  # 48 frames
    assert generator.transforms == []


def test_a_real_stylegan3_renders_each_frame_with_its_transform():
    """The same on the real StyleGAN3 network: each frame equals a render with that frame's input transform,
    the transform moves the image, and the generator is left with the identity transform."""
    from sgim_nodes.stylegan import StyleGAN3Config, StyleGAN3Generator

    timeline = make_timeline(2.0, 6.0)
    t = torch.arange(int(2 * RATE)) / RATE
    features = features_of_waveform((torch.sin(2 * math.pi * 220 * t) * (0.05 + 0.9 * (t > 1)))[None], RATE,
                                    timeline)
    torch.manual_seed(0)
    generator = StyleGAN3Generator(StyleGAN3Config(resolution=16, z_dim=16, w_dim=16, channel_base=256,
                                                   channel_max=16, num_layers=3))
    keyframes = synthetic_keyframes(keyframe_times(timeline, 1.0), num_ws=generator.num_ws, w_dim=16)
    trajectory = Trajectory(keyframes, features, rotation_degrees=20.0, translation=0.2)
    frames = torch.cat([images for _, images in iter_frames(generator, trajectory, batch_size=4)])
    codes, matrices = trajectory.codes(), trajectory.transforms()
    assert torch.equal(generator.synthesis_network.input.transform, torch.eye(3))
    with torch.no_grad():
        for i in (0, timeline.frames - 1):
            generator.set_input_transform(matrices[i])
            assert torch.allclose(frames[i], generator.synthesis(codes[i:i + 1])[0], atol=1e-5)
        generator.set_input_transform(torch.eye(3))
        still = generator.synthesis(codes[-1:])[0]
    assert not torch.allclose(frames[-1], still, atol=1e-3)  # the last, loud frame is turned and shifted


def test_prompt_schedule():
    schedule = parse_prompt_schedule("0: a calm sea | 12.5: a storm at sea")
    assert schedule == [(0.0, "a calm sea"), (12.5, "a storm at sea")]
    assert prompt_at(schedule, 3.0) == "a calm sea" and prompt_at(schedule, 12.5) == "a storm at sea"
    assert parse_prompt_schedule("a red sky") == [(0.0, "a red sky")] and parse_prompt_schedule("  ") == []
    with pytest.raises(ParameterError, match="prompt_schedule"):
        parse_prompt_schedule("0: a | soon: b")


# ------------------------------------------------------------------------------ with tiny models

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared):
    root = tmp_path_factory.mktemp("animate")
    names = write_tiny_models(root / "models", shared)
    models = root / "models"
    track = write_wav(root / "clicks.wav", click_track(7.3))
    return {"generator": models / "stylegan" / names["generator"], "clip": models / "sgim_clip" / names["clip"],
            "encoder": models / "sgim_audio_encoders" / names["encoder"], "track": track, "root": root}


FAST = ("--keyframe-seconds", "2.5", "--steps", "4", "--keyframe-steps", "2")


def cli_args(tiny, out: Path, *extra: str, speed=FAST) -> list[str]:
    return ["animate", "--audio", str(tiny["track"]), "--out", str(out), "--generator", str(tiny["generator"]),
            "--clip", str(tiny["clip"]), "--encoder", str(tiny["encoder"]), "--device", "cpu", *speed, *extra]


def decoded_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def test_cli_video_has_the_frames_and_audio_of_the_range_and_is_deterministic(tiny, tmp_path):
    from sgim_nodes.__main__ import main as cli

    outs = {}
    for name, extra in {"a": ("--seed", "5"), "b": ("--seed", "5"), "c": ("--seed", "6")}.items():
        outs[name] = tmp_path / f"{name}.mp4"
        args = cli_args(tiny, outs[name], "--fps", "29.97", "--start", "1.3", "--end", "5.05", "--size", "48", *extra)
        assert cli(args) == 0
    frames, video_seconds, audio_seconds = video_frame_count(outs["a"])
    expected = round(3.75 * 29.97)  # 112 frames
    assert frames == expected
    assert abs(video_seconds - expected / 29.97) < 1e-3
    assert abs(audio_seconds - expected / 29.97) < 0.005  # AAC: within a fraction of a frame
    pixels = decoded_frames(outs["a"])
    assert pixels.shape == (expected, 48, 48, 3)
    assert np.abs(pixels[1:].astype(int) - pixels[:-1].astype(int)).mean() > 0.1  # it moves
    assert np.array_equal(pixels, decoded_frames(outs["b"]))  # same seed: same video
    assert not np.array_equal(pixels, decoded_frames(outs["c"]))  # another seed: another source image
    assert len(list(Path(str(outs["a"]) + ".keyframes").rglob("keyframe_*.safetensors"))) == 2  # 0 and 3.72 s


def test_cli_resumes_after_a_kill_with_the_same_frames(tiny, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "sgim_nodes"]
    slow = ("--keyframe-seconds", "3.0", "--steps", "3", "--keyframe-steps", "12")  # keyframes at 0, 3, 7.29 s
    whole, resumed, cache = tmp_path / "whole.mp4", tmp_path / "resumed.mp4", tmp_path / "cache"
    command = base + cli_args(tiny, resumed, "--cache-dir", str(cache), speed=slow)
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.rglob("keyframe_0000.safetensors")):
            assert process.poll() is None and time.monotonic() < deadline, "the first keyframe never appeared"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # killed while optimising keyframe 1
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    cached = sorted(p.name for p in cache.rglob("keyframe_*.safetensors"))
    assert cached[0] == "keyframe_0000.safetensors" and len(cached) < 3, cached
    assert not resumed.exists()  # nothing half-written where the video goes
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run(base + cli_args(tiny, whole, "--cache-dir", str(tmp_path / "fresh"), speed=slow), cwd=REPO,
                   env=env, check=True, capture_output=True)
    frames = decoded_frames(whole)
    assert len(frames) == 175
    assert np.array_equal(decoded_frames(resumed), frames)


def test_keyframes_are_deterministic_warm_started_and_cancellable(tiny):
    from sgim_nodes.animate import optimize_keyframes, KeyframeSettings
    from sgim_nodes.clip import load_clip
    from sgim_nodes.optimize import sample_source_ws
    from sgim_nodes.stylegan import load_generator

    generator = load_generator(tiny["generator"])
    clip = load_clip(tiny["clip"])
    source = sample_source_ws(generator, 1, seed=1)
    g = torch.Generator().manual_seed(0)
    targets = torch.nn.functional.normalize(torch.randn(3, clip.embed_dim, generator=g), dim=-1)
    settings = KeyframeSettings(steps=4, keyframe_steps=3, seed=2)
    seen = []
    first = optimize_keyframes(generator, clip, targets, source, [0.0, 1.0, 2.0], settings,
                               callback=lambda k, info: seen.append((k, info.step)))
    assert seen == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    again = optimize_keyframes(generator, clip, targets, source, [0.0, 1.0, 2.0], settings)
    assert torch.equal(first.codes, again.codes)
    assert (first.codes[1] - first.codes[0]).abs().max() > 0  # each keyframe has its own target
    calls = {"n": 0}

    def cancel_on_fifth_check():
        calls["n"] += 1
        return calls["n"] >= 5

    with pytest.raises(Cancelled):
        optimize_keyframes(generator, clip, targets, source, [0.0, 1.0, 2.0], settings,
                           should_cancel=cancel_on_fifth_check)
    assert calls["n"] == 5  # stopped at the first step of keyframe 1, not at its end
    features = features_of_waveform(click_track(2.0, clicks=[1.0]), RATE, make_timeline(2.0, 12.0))
    trajectory = Trajectory(first, features)
    batches = []
    with pytest.raises(Cancelled):
        for _, images in iter_frames(generator, trajectory, batch_size=4, should_cancel=lambda: len(batches) >= 2):
            batches.append(images)
    assert len(batches) == 2  # stopped within one batch


def test_warm_start_begins_at_init_ws_but_stays_anchored_to_the_source(tiny):
    from sgim_nodes.clip import load_clip
    from sgim_nodes.optimize import optimize_latent, sample_source_ws
    from sgim_nodes.stylegan import load_generator

    generator = load_generator(tiny["generator"])
    clip = load_clip(tiny["clip"])
    source = sample_source_ws(generator, 1, seed=1)
    init = source + 0.3 * torch.randn(source.shape, generator=torch.Generator().manual_seed(5))
    target = torch.nn.functional.normalize(torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(6)),
                                           dim=-1)
    result = optimize_latent(generator, clip, target, source_ws=source, init_ws=init, steps=2, return_images=False)
    # step 1 has lr 0 (the warm-up ramp): it measures the distance of the starting point to the source
    assert result.history["similarity"][0].item() == pytest.approx((init - source).square().sum().item(), rel=1e-5)
    assert torch.equal(result.source_ws, source)
    assert (result.ws - init).abs().max() < (result.ws - source).abs().max()  # it moved from init, not from source
    with pytest.raises(ParameterError, match="init_ws"):
        optimize_latent(generator, clip, target, source_ws=None, init_ws=init, steps=1)


# ------------------------------------------------------------------------------ an hour of music

WRITE_TRACK = r"""
import sys, numpy as np, av
path, seconds, rate = sys.argv[1], float(sys.argv[2]), 8000
with av.open(path, "w") as out:  # written one minute at a time
    stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
    rng = np.random.default_rng(0)
    for minute in range(int(seconds // 60)):
        pcm = (rng.standard_normal(60 * rate) * 2000).astype(np.int16)
        pcm[::rate // 2] = 30000  # a click every half second
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
"""
MEASURE_FEATURES = r"""
import resource, sys
sys.path.insert(0, sys.argv[2])
from sgim_nodes.animate import features_of_file, make_timeline
from sgim_nodes.animate.stream import probe
track = probe(sys.argv[1])
features = features_of_file(sys.argv[1], make_timeline(track.seconds, 24.0))
print(len(features.values["loudness"]), len(features.onset_times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_an_hour_of_music_is_analysed_in_bounded_memory(tmp_path):
    """Peak memory for one hour equals that for one minute (the track is streamed, never held)."""
    peaks = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for seconds in (60, 3600):
        path = str(tmp_path / f"{seconds}.wav")
        subprocess.run([sys.executable, "-c", WRITE_TRACK, path, str(seconds)], env=env, check=True, timeout=300)
        out = subprocess.run([sys.executable, "-c", MEASURE_FEATURES, path, str(REPO)], env=env, capture_output=True,
                             text=True, check=True, timeout=600)
        frames, onsets, peak = (int(v) for v in out.stdout.split())
        assert frames == seconds * 24 and onsets >= seconds * 2 * 0.9
        peaks[seconds] = peak
    # an hour at the analysis rate alone would be 317 MB of float32; the peak grows by far less
    assert peaks[3600] - peaks[60] < 40 * 1024, peaks  # ru_maxrss is in KiB
