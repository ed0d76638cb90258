"""Instant edits through the commands, on tiny random model files: ``edit --init instant`` (the optimiser
warm-started from the instant edit) and ``animate --follow instant`` (a music video with no optimisation)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sgim_nodes.jobs.edit import EditRequest, run_edit
from sgim_nodes.jobs.run import QuietRun

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from test_animate import click_track, write_wav  # noqa: E402
from tiny_models import write_tiny_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 22050  # the encoder's rate: no resampling in the test
TRACK_SECONDS = 16.0
QUIET_UNTIL = 8.0  # the click track is quiet noise before this second, clicks every 0.3 s after it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared):
    root = tmp_path_factory.mktemp("instant_commands")
    names = write_tiny_models(root / "models", shared)
    models = root / "models"
    return {"generator": models / "stylegan" / names["generator"], "clip": models / "sgim_clip" / names["clip"],
            "encoder": models / "sgim_audio_encoders" / names["encoder"], "root": root}


def edit_request(tiny, out: Path, cache: Path, init: str, seed: int) -> EditRequest:
    # lambda_sim light enough that the line search of the warm start leaves the source (it would keep the
    # source when the similarity term outweighs the first-order CLIP gain; see the test below)
    return EditRequest(generator=tiny["generator"], clip=tiny["clip"], text=["a storm at sea"], steps=4,
                       lambda_sim=0.0005, seed=seed, init=init, analysis_cache=cache, analysis_samples=8,
                       out=out, device="cpu")


def test_edit_init_instant_starts_from_the_instant_edit_below_the_cold_start(tiny, tmp_path):
    """``edit --init instant``: the first step is taken at the warm start that the instant directions give
    (the same codes as :func:`sgim_nodes.instant.warm_start_codes` on the cached analysis), its objective is
    below the cold start's for the same seed, and the result is finite and reproducible."""
    from sgim_nodes.clip import load_clip
    from sgim_nodes.instant import InstantEditor, cached_directions, warm_start_codes
    from sgim_nodes.optimize.objective import similarity_terms
    from sgim_nodes.stylegan import load_generator

    cache = tmp_path / "analysis.safetensors"
    generator = load_generator(tiny["generator"], device="cpu")
    clip = load_clip(tiny["clip"], device="cpu")
    target = clip.encode_text(["a storm at sea"])
    below = 0
    for seed in (0, 1, 2):
        cold = run_edit(edit_request(tiny, tmp_path / f"cold{seed}.png", cache, "source", seed), QuietRun("cpu"))
        warm = run_edit(edit_request(tiny, tmp_path / f"warm{seed}.png", cache, "instant", seed), QuietRun("cpu"))
        source = cold.result.source_ws
        assert torch.equal(warm.result.source_ws, source)  # same seed, same source image
        # the warm start, independently: the cached analysis (written by the first run), the same line search
        directions, hit = cached_directions(generator, clip, generator_file=str(tiny["generator"]), cache=cache)
        assert hit
        init, alpha = warm_start_codes(generator, clip, InstantEditor(generator, directions), target, source,
                                       lambda_sim=0.0005)
        with torch.no_grad():
            start_distance = 1 - (clip.image_features(generator.synthesis(init, noise_mode="const")) * target).sum(-1)
            start_similarity = similarity_terms(init, source, torch.ones(generator.num_ws)).sum(-1)
        # step 1 of the warm run is evaluated at the warm start (its CLIP term and its distance from the source)
        torch.testing.assert_close(warm.result.history["clip"][0], start_distance, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(warm.result.history["similarity"][0], start_similarity, atol=1e-5, rtol=1e-5)
        cold_first, warm_first = float(cold.result.history["total"][0]), float(warm.result.history["total"][0])
        assert float(cold.result.history["similarity"][0]) == 0.0  # the cold run starts at the source
        assert warm_first <= cold_first + 1e-6  # the source is one of the warm start's candidates
        if float(alpha) > 0:
            assert warm_first < cold_first - 1e-4
            below += 1
        assert torch.isfinite(warm.result.ws).all() and all(torch.isfinite(v).all()
                                                            for v in warm.result.history.values())
        assert not torch.equal(warm.result.ws, cold.result.ws)
    assert below >= 2  # the instant direction was taken for most seeds
    again = run_edit(edit_request(tiny, tmp_path / "again.png", cache, "instant", 2), QuietRun("cpu"))
    assert torch.equal(again.result.ws, warm.result.ws)  # reproducible
    assert torch.equal(again.result.history["total"], warm.result.history["total"])


def busy_track(path: Path) -> Path:
    """16 s mono: quiet noise until 8 s, then a click every 0.3 s."""
    clicks = [QUIET_UNTIL + 0.3 * k for k in range(int((TRACK_SECONDS - QUIET_UNTIL) / 0.3))]
    return write_wav(path, click_track(TRACK_SECONDS, clicks=clicks, rate=RATE, channels=1), rate=RATE)


def test_animate_follow_instant_writes_a_video_that_moves_with_the_sound(tiny, tmp_path, monkeypatch):
    """``animate --follow instant`` end to end: the mp4 has the frames and the audio of the track; with the
    loudness reaction off, the picture changes only where the encoder's window (10 s, centred, kept inside the
    track) slides over a change in the sound: between frames while it moves from the quiet part into the
    clicks, and not at all (or far less) where the window is held at either end of the track, or for a
    steady tone."""
    import sgim_nodes.animate.render as render
    from sgim_nodes.__main__ import main as cli
    from sgim_nodes.animate.render import video_frame_count

    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    rendered = []
    real_to_uint8 = render.to_uint8

    def recording(images):  # the frames before 8-bit rounding: the tiny generator's changes are small
        rendered.append(images.detach().double().clone())
        return real_to_uint8(images)

    monkeypatch.setattr(render, "to_uint8", recording)
    fps = 4.0
    t = torch.arange(int(TRACK_SECONDS * RATE)) / RATE
    tracks = {"clicks": busy_track(tmp_path / "clicks.wav"),
              "tone": write_wav(tmp_path / "tone.wav", (0.3 * torch.sin(2 * torch.pi * 440 * t))[None], rate=RATE)}
    change = {}
    for name, track in tracks.items():
        rendered.clear()
        out = tmp_path / f"{name}.mp4"
        assert cli(["animate", "--audio", str(track), "--out", str(out), "--follow", "instant", "--fps", str(fps),
                    "--reactivity", "0", "--size", "32", "--seed", "3", "--generator", str(tiny["generator"]),
                    "--clip", str(tiny["clip"]), "--encoder", str(tiny["encoder"]), "--device", "cpu"]) == 0
        frames, video_seconds, audio_seconds = video_frame_count(out)
        assert frames == int(TRACK_SECONDS * fps) == 64
        assert abs(video_seconds - TRACK_SECONDS) < 1e-3
        assert abs(audio_seconds - TRACK_SECONDS) < 0.05  # AAC: within a fraction of a frame
        pixels = torch.cat(rendered)
        assert pixels.shape[0] == frames and torch.isfinite(pixels).all()
        change[name] = (pixels[1:] - pixels[:-1]).abs().mean(dim=(1, 2, 3)).numpy()
    clicks = change["clicks"]
    # frame k -> k+1 spans (k/4, (k+1)/4] s; the window starts move between 5 s and 11 s (16 s track, 10 s
    # window), the Hann smoothing (0.5 s) and the 0.25 s keyframes widen that by under a second
    held = np.r_[clicks[:16], clicks[48:]]  # frames before 4 s and after 12 s
    sliding = clicks[22:42]  # 5.5 .. 10.5 s: the window takes in more and more clicks
    assert held.max() < 1e-6, held
    assert (sliding > 1e-5).mean() >= 0.8 and sliding.mean() > 1e-4, sliding
    assert change["tone"].mean() < 0.2 * clicks.mean()  # a steady sound barely moves it
