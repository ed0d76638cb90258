"""One job, two front ends: the nodes and the command line run the same code of ``sgim_nodes.jobs``.

- Inside ComfyUI no long-running node touches glibc's process-wide allocator settings (its run
  never asks), while the command line still gets its faster memory policy.
- The same inputs give the same codes, images and frames from a node graph and from a command.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgim_nodes.__main__ import main as cli
from sgim_nodes.latents import load_wplus
from test_animate import click_track, write_wav
from test_nodes import PACK_MODULE, comfy_base, fake_comfy, models, nodes, pack, run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRACK_RATE = 22050  # the analysis rate: features of a file and of the same samples in memory agree exactly


class RecordingLibc:
    """Stands in for glibc in ``sgim_nodes.memory``: records mallopt / malloc_trim calls."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def model_path(comfy_base, folder: str, key: str) -> str:
    base, names = comfy_base
    return str(base / "models" / folder / names[key])


@pytest.fixture()
def track_file(tmp_path) -> tuple[Path, dict]:
    """A mono 22.05 kHz WAV and the core AUDIO a loader gives for it (decoded by the same decoder)."""
    from sgim_nodes.animate.stream import iter_samples

    path = write_wav(tmp_path / "track.wav", click_track(5.2, clicks=[0.5, 1.23, 2.0, 3.61, 4.4], rate=TRACK_RATE, channels=1), rate=TRACK_RATE)
    waveform = torch.cat(list(iter_samples(path)), dim=1)
    return path, {"waveform": waveform[None], "sample_rate": TRACK_RATE}


@pytest.fixture()
def picture(tmp_path) -> tuple[Path, torch.Tensor]:
    """A PNG and the IMAGE core's Load Image makes of it ([1, H, W, 3] in [0, 1])."""
    g = torch.Generator().manual_seed(5)
    pixels = (torch.rand(40, 48, 3, generator=g) * 255).round().to(torch.uint8).numpy()
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB")).astype(np.float32) / 255.0)[None]
    return path, image


def music_video_nodes(nodes, models, audio, keyframe_seconds=2.0, steps=3, keyframe_steps=2, seed=0):
    features, *_ = run("SGIMAudioFeatures", nodes, audio=audio, fps=12.0, start_seconds=0.0, end_seconds=0.0,
                       smoothing_seconds=0.1)
    source, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=seed, truncation_psi=0.7,
                  mode="random", batch_size=1)
    keyframes, _ = run("SGIMMusicKeyframes", nodes, generator=models.generator, clip=models.clip,
                       audio_encoder=models.encoder, features=features, source=source,
                       keyframe_seconds=keyframe_seconds, snap_to_onsets=False, steps=steps,
                       keyframe_steps=keyframe_steps, lr=0.1, lambda_sim=0.002, prompt_schedule="a storm",
                       text_weight=0.3, preview_every=0, unique_id="5")
    wplus, _ = run("SGIMMusicTrajectory", nodes, keyframes=keyframes, reactivity=0.5, band_layers=True,
                   rotation_degrees=4.0, translation=0.05, frame_offset=0, frame_count=0)
    images, _, _ = run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=wplus, batch_size=8, size=0,
                       unique_id="6")
    return keyframes, images


def test_long_running_nodes_never_touch_the_allocator(nodes, models, fake_comfy, monkeypatch, track_file, picture):
    libc = RecordingLibc()
    monkeypatch.setattr(importlib.import_module(PACK_MODULE + ".sgim_nodes.memory"), "_LIBC", libc)
    g = models.generator
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=text, source=source, steps=2, lr=0.1,
        lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=1, unique_id="1")
    assert libc.calls == []
    keyframes, frames = music_video_nodes(nodes, models, track_file[1])  # Music Keyframes and Decode Frames
    assert frames.shape[0] == 62 and libc.calls == []
    wplus, tuned, image, report = run("SGIMProjectImage", nodes, image=picture[1], generator=g, distance="multiscale",
                                      steps=2, tune_steps=2, fit="crop", space="wplus", lr=0.1, pixel_weight=0.0,
                                      optimize_noise="auto", init_seed=0, preview_every=1, unique_id="7")
    assert tuned is not g and libc.calls == []
    # every job reported each unit of work: 2 steps, 4 keyframes (3 + 3 x 2 steps), 8 batches, 2 + 2 steps
    assert len(fake_comfy.progress) == 2 + 9 + 8 + 4


def test_instant_and_file_backed_music_nodes_never_touch_the_allocator(nodes, models, fake_comfy, comfy_base,
                                                                       monkeypatch, tmp_path):
    """The nodes added since: Instant Edit (with its analysis), Optimize Latent from an instant warm start,
    Render Music Video and Music Videos from a Folder run their jobs with ComfyUI's run, which never asks."""
    from test_music_render_nodes import FOLDER, album, render, trajectory_of

    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    libc = RecordingLibc()
    monkeypatch.setattr(importlib.import_module(PACK_MODULE + ".sgim_nodes.memory"), "_LIBC", libc)
    g = models.generator
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    edited, report = run("SGIMInstantEdit", nodes, generator=g, clip=models.clip, target=text, source=source,
                         alpha=1.0, beta=0.1, reference="source", space="wplus")
    assert '"cache_hit": false' in report and not torch.equal(edited["ws"], source["ws"])
    run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=text, source=source, steps=2, lr=0.1,
        lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=1, init="instant", unique_id="1")
    song = {"waveform": click_track(3.0, clicks=[0.5, 1.5, 2.5], rate=TRACK_RATE)[None], "sample_rate": TRACK_RATE}
    wplus, count = trajectory_of(nodes, models, song)
    video, name, frames = render(nodes, models, wplus)["result"]
    assert frames == count == 72
    base, _ = comfy_base
    album(base / "input" / "album_alloc")
    report, videos = run("SGIMMusicFolder", nodes, generator=g, clip=models.clip, audio_encoder=models.encoder,
                         folder="album_alloc", output_folder="sgim/album_alloc", **FOLDER)["result"]
    assert report.splitlines()[0].startswith("3 tracks: 2 rendered")
    assert libc.calls == []


def test_command_line_keeps_its_memory_policy(comfy_base, monkeypatch, tmp_path, picture):
    import sgim_nodes.memory as memory

    libc = RecordingLibc()
    monkeypatch.setattr(memory, "_LIBC", libc)
    assert cli(["edit", "--text", "a storm", "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--steps", "2", "--device", "cpu",
                "--out", str(tmp_path / "edit.png")]) == 0
    assert [c[0] for c in libc.calls] == ["mallopt", "mallopt", "mallopt", "mallopt", "mallopt", "malloc_trim"]
    libc.calls.clear()
    assert cli(["project", str(picture[0]), "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--distance", "pixel", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "p.safetensors")]) == 0
    assert libc.calls and libc.calls[-1][0] == "malloc_trim"
    libc.calls.clear()
    assert cli(["edit", "--text", "a storm", "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--steps", "2", "--device", "cpu",
                "--lean-memory", "--out", str(tmp_path / "lean.png")]) == 0
    assert libc.calls == []  # --lean-memory: the allocator is left as it is


def test_edit_node_and_command_line_give_the_same_codes_and_images(nodes, models, comfy_base, fake_comfy, tmp_path):
    g = models.generator
    source, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=1)
    rain, = run("SGIMEmbedText", nodes, clip=models.clip, text="a rainy night")
    sun, = run("SGIMEmbedText", nodes, clip=models.clip, text="a sunny day")
    mixed, = run("SGIMMixEmbeddings", nodes, embedding_a=rain, weight_a=0.7, embedding_b=sun, weight_b=0.3)
    node, _ = run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=mixed, source=source, steps=5,
                  lr=0.1, lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=0)
    image, = run("SGIMStyleGANDecode", nodes, generator=g, wplus=node, noise_mode="const")
    out = tmp_path / "edit.png"
    assert cli(["edit", "--text", "a rainy night", "--text", "a sunny day", "--weights", "0.7,0.3", "--seed", "7",
                "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"), "--steps", "5", "--device", "cpu",
                "--out", str(out)]) == 0
    ws, _, source_ws = load_wplus(tmp_path / "edit_wplus.safetensors")
    assert torch.equal(source_ws, source["ws"])
    assert torch.equal(ws, node["ws"])
    written = np.asarray(Image.open(out)).astype(int)
    assert np.abs(written - (image[0].numpy() * 255).round().astype(int)).max() <= 1  # the PNG rounds once


def test_music_video_node_and_command_line_give_the_same_keyframes_and_frames(nodes, models, comfy_base, fake_comfy,
                                                                              tmp_path, track_file, monkeypatch):
    import sgim_nodes.animate.render as render

    keyframes, node_frames = music_video_nodes(nodes, models, track_file[1])
    rendered = []
    real_to_uint8 = render.to_uint8

    def recording(images):  # the frames the command line encodes, before they become uint8
        rendered.append(images.clone())
        return real_to_uint8(images)

    monkeypatch.setattr(render, "to_uint8", recording)
    out = tmp_path / "video.mp4"
    assert cli(["animate", "--audio", str(track_file[0]), "--out", str(out), "--fps", "12", "--text", "a storm",
                "--keyframe-seconds", "2", "--steps", "3", "--keyframe-steps", "2", "--seed", "0", "--batch", "8",
                "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--clip", model_path(comfy_base, "sgim_clip", "clip"),
                "--encoder", model_path(comfy_base, "sgim_audio_encoders", "encoder"), "--device", "cpu"]) == 0
    cached = sorted(Path(str(out) + ".keyframes").rglob("keyframe_*.safetensors"))
    cli_codes = torch.cat([load_wplus(path)[0] for path in cached])
    assert len(cached) == 4 and torch.equal(cli_codes, keyframes.keyframes.codes)
    frames = torch.cat(rendered)
    assert frames.shape[0] == node_frames.shape[0] == 62
    assert torch.equal(((frames + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), node_frames)


def test_projection_node_and_command_line_give_the_same_code(nodes, models, comfy_base, fake_comfy, tmp_path,
                                                             picture):
    wplus, _, image, _ = run("SGIMProjectImage", nodes, image=picture[1], generator=models.generator,
                             distance="pixel", steps=6, tune_steps=0, fit="crop", space="wplus", lr=0.1,
                             pixel_weight=0.0, optimize_noise="auto", init_seed=0, preview_every=0)
    out = tmp_path / "code.safetensors"
    assert cli(["project", str(picture[0]), "--generator", model_path(comfy_base, "stylegan", "generator"),
                "--distance", "pixel", "--steps", "6", "--seed", "0", "--device", "cpu", "--out", str(out)]) == 0
    ws, _, _ = load_wplus(out)
    assert torch.equal(ws, wplus["ws"])
    written = np.asarray(Image.open(tmp_path / "code_projection.png")).astype(int)
    assert np.abs(written - (image[0].numpy() * 255).round().astype(int)).max() <= 1
