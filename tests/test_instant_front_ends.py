"""Instant edits, one code path: the Instant Edit node and ``edit --instant`` give the same codes."""

from __future__ import annotations

import torch

from sgim_nodes.__main__ import main as cli
from sgim_nodes.latents import load_wplus
from test_front_ends import model_path
from test_nodes import PACK_MODULE, comfy_base, fake_comfy, models, nodes, pack, run  # noqa: F401  (fixtures)


def test_instant_edit_node_and_command_line_give_the_same_codes(nodes, models, comfy_base, fake_comfy, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=1)
    rain, = run("SGIMEmbedText", nodes, clip=models.clip, text="a rainy night")
    node, report = run("SGIMInstantEdit", nodes, generator=g, clip=models.clip, target=rain, source=source,
                       alpha=1.0, beta=0.1, reference="source", space="wplus")
    assert '"cache_hit": false' in report
    out = tmp_path / "instant.png"
    assert cli(["edit", "--text", "a rainy night", "--seed", "7", "--instant", "--alpha", "1", "--beta", "0.1",
                "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--device", "cpu", "--out", str(out)]) == 0
    ws, _, source_ws = load_wplus(tmp_path / "instant_wplus.safetensors")
    assert torch.equal(source_ws, source["ws"])
    torch.testing.assert_close(ws, node["ws"], atol=1e-6, rtol=1e-6)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one analysis, shared by both front ends


def test_optimize_latent_init_instant_node_and_command_line_give_the_same_codes(nodes, models, comfy_base, fake_comfy,
                                                                                tmp_path, monkeypatch):
    """Optimize Latent's ``init = instant`` and ``edit --init instant`` start from the same warm start (one
    cached analysis) and end at the same codes, which are not the cold start's."""
    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=1)
    storm, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm at sea")
    common = dict(generator=g, clip=models.clip, target=storm, source=source, steps=4, lr=0.1, lambda_sim=0.0005,
                  lambda_id=0.0, adaptive_mask=False, preview_every=0)
    warm, _ = run("SGIMOptimizeLatent", nodes, init="instant", **common)
    cold, _ = run("SGIMOptimizeLatent", nodes, init="source", **common)
    assert not torch.equal(warm["ws"], cold["ws"])  # the warm start moved off the source
    out = tmp_path / "warm.png"
    assert cli(["edit", "--text", "a storm at sea", "--seed", "7", "--init", "instant", "--steps", "4",
                "--lambda-sim", "0.0005", "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--device", "cpu", "--out", str(out)]) == 0
    ws, _, source_ws = load_wplus(tmp_path / "warm_wplus.safetensors")
    assert torch.equal(source_ws, source["ws"])
    assert torch.equal(ws, warm["ws"])
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one analysis, shared by both front ends


def test_music_keyframes_follow_instant_node_and_command_line_give_the_same_codes_and_frames(
        nodes, models, comfy_base, fake_comfy, tmp_path, monkeypatch):
    """Music Keyframes' ``follow = instant`` (then Trajectory and Decode Frames) and ``animate --follow instant``
    give the same keyframe codes and frames, on a track long enough for the encoder's window to move."""
    import sgim_nodes.animate.render as render
    import sgim_nodes.jobs.music_video as music_video
    from sgim_nodes.animate.stream import iter_samples
    from test_instant_commands import RATE, busy_track

    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    path = busy_track(tmp_path / "clicks.wav")
    waveform = torch.cat(list(iter_samples(path)), dim=1)
    audio = {"waveform": waveform[None], "sample_rate": RATE}
    g = models.generator
    features, *_ = run("SGIMAudioFeatures", nodes, audio=audio, fps=4.0, start_seconds=0.0, end_seconds=0.0,
                       smoothing_seconds=0.1)
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=0, truncation_psi=0.7, mode="random", batch_size=1)
    keyframes, _ = run("SGIMMusicKeyframes", nodes, generator=g, clip=models.clip, audio_encoder=models.encoder,
                       features=features, source=source, keyframe_seconds=4.0, snap_to_onsets=False, steps=100,
                       keyframe_steps=30, lr=0.1, lambda_sim=0.002, prompt_schedule="a storm", text_weight=0.3,
                       preview_every=0, follow="instant", follow_seconds=0.25, alpha=1.5, beta=0.1)
    codes = keyframes.keyframes.codes
    assert codes.shape[0] == 65  # a keyframe every 0.25 s of the 16 s track
    assert (codes[1:] - codes[:-1]).flatten(1).norm(dim=1).max() > 1e-3  # they follow the sound
    wplus, _ = run("SGIMMusicTrajectory", nodes, keyframes=keyframes, reactivity=0.5, band_layers=True,
                   rotation_degrees=4.0, translation=0.05, frame_offset=0, frame_count=0)
    node_frames, _, _ = run("SGIMDecodeFrames", nodes, generator=g, wplus=wplus, batch_size=8, size=0)

    recorded, rendered = [], []
    real_run_keyframes, real_to_uint8 = music_video.run_keyframes, render.to_uint8

    def recording_keyframes(request, run_):
        result = real_run_keyframes(request, run_)
        recorded.append(result.keyframes.codes.clone())
        return result

    def recording_frames(images):
        rendered.append(images.clone())
        return real_to_uint8(images)

    monkeypatch.setattr(music_video, "run_keyframes", recording_keyframes)
    monkeypatch.setattr(render, "to_uint8", recording_frames)
    out = tmp_path / "video.mp4"
    assert cli(["animate", "--audio", str(path), "--out", str(out), "--fps", "4", "--text", "a storm",
                "--follow", "instant", "--alpha", "1.5", "--seed", "0", "--batch", "8",
                "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"),
                "--encoder", model_path(comfy_base, "sgim_audio_encoders", "encoder"), "--device", "cpu"]) == 0
    assert len(recorded) == 1 and torch.equal(recorded[0], codes)
    frames = torch.cat(rendered)
    assert frames.shape[0] == node_frames.shape[0] == 64
    assert torch.equal(((frames + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), node_frames)
    assert len(list((tmp_path / "cache").iterdir())) == 1
