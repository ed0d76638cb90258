"""The music-video nodes without ComfyUI: features -> keyframes -> trajectory -> frames, with the frame
count equal between codes, images and the handed-on audio, chunked rendering, progress, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_animate import RATE, click_track
from test_nodes import (FakeInterrupt, comfy_base, errors, fake_comfy, models, nodes, pack, run, same,  # noqa: F401
                        snapshot)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def track():
    return {"waveform": click_track(7.3)[None], "sample_rate": RATE}  # core AUDIO [1, 2, T]


def keyframes_of(nodes, models, track, fps=24.0, start=0.0, end=0.0, source_seed=4, **options):
    features, *curves, plot, frames, text = run("SGIMAudioFeatures", nodes, audio=track, fps=fps, start_seconds=start,
                                                end_seconds=end, smoothing_seconds=0.1)
    source, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=source_seed, truncation_psi=0.7,
                  mode="random", batch_size=1)
    settings = dict(keyframe_seconds=2.5, snap_to_onsets=False, steps=3, keyframe_steps=2, lr=0.1, lambda_sim=0.002,
                    prompt_schedule="", text_weight=0.3, preview_every=2, unique_id="31")
    settings.update(options)
    keyframes, log = run("SGIMMusicKeyframes", nodes, generator=models.generator, clip=models.clip,
                         audio_encoder=models.encoder, features=features, source=source, **settings)
    return features, curves, plot, frames, text, keyframes, log


@pytest.mark.parametrize("fps, start, end, frames", [(24.0, 0.0, 0.0, 175), (29.97, 0.0, 0.0, 219),
                                                     (24.0, 1.3, 5.05, 90)])
def test_chain_frame_counts_agree_and_audio_is_cut_to_the_frames(nodes, models, track, fake_comfy, fps, start, end,
                                                                 frames):
    before = snapshot(track)
    features, curves, plot, count, text, keyframes, log = keyframes_of(nodes, models, track, fps, start, end)
    assert count == frames == round(((end or 7.3) - start) * fps)
    assert all(len(c) == frames and all(isinstance(v, float) and 0 <= v <= 1 for v in c) for c in curves)
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and 0 <= float(plot.min()) and float(plot.max()) <= 1
    assert json.loads(text)["frames"] == frames
    wplus, chunk = run("SGIMMusicTrajectory", nodes, keyframes=keyframes, reactivity=0.5, band_layers=True,
                       rotation_degrees=4.0, translation=0.05, frame_offset=0, frame_count=0)
    assert chunk == frames and wplus["ws"].shape == (frames, 8, 64)
    images, audio, rate = run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=wplus, batch_size=16,
                              size=0, unique_id="40")
    assert images.shape == (frames, 32, 32, 3) and rate == pytest.approx(fps)
    assert audio["sample_rate"] == RATE and audio["waveform"].shape[:2] == (1, 2)
    assert audio["waveform"].shape[-1] == round(frames / fps * RATE)  # video and sound end together
    first = round(start * RATE)
    assert torch.equal(audio["waveform"][0, :, :50], track["waveform"][0, :, first:first + 50])
    assert same(snapshot(track), before)
    decode_progress = [p for p in fake_comfy.progress if p[2] == "40"]
    assert [p[0] for p in decode_progress] == list(range(16, frames, 16)) + [frames]
    assert len(fake_comfy.previews) >= len(decode_progress)


def test_chunks_equal_the_whole_and_seed_decides(nodes, models, track, fake_comfy):
    *_, keyframes, log = keyframes_of(nodes, models, track, prompt_schedule="0: a calm sea | 4: a storm at sea")
    assert [k["target"] for k in json.loads(log)["keyframes"]] == [
        "0.00s + 'a calm sea'", "2.50s + 'a calm sea'", "5.00s + 'a storm at sea'", "7.25s + 'a storm at sea'"]
    common = dict(keyframes=keyframes, reactivity=0.5, band_layers=True, rotation_degrees=4.0, translation=0.05)
    whole, _ = run("SGIMMusicTrajectory", nodes, frame_offset=0, frame_count=0, **common)
    head, n1 = run("SGIMMusicTrajectory", nodes, frame_offset=0, frame_count=100, **common)
    tail, n2 = run("SGIMMusicTrajectory", nodes, frame_offset=100, frame_count=0, **common)
    assert (n1, n2) == (100, 75)
    assert torch.equal(torch.cat([head["ws"], tail["ws"]]), whole["ws"])
    frames = {}
    for name, value in (("whole", whole), ("head", head), ("tail", tail)):
        frames[name] = run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=value, batch_size=7, size=0)
    # (batches start at other frames, so float sums may differ in the last bits)
    assert torch.allclose(torch.cat([frames["head"][0], frames["tail"][0]]), frames["whole"][0], atol=1e-5)
    assert torch.equal(torch.cat([frames["head"][1]["waveform"], frames["tail"][1]["waveform"]], dim=-1),
                       frames["whole"][1]["waveform"])
    # same inputs and seeds, same video; another source seed, another video
    *_, again, _ = keyframes_of(nodes, models, track, prompt_schedule="0: a calm sea | 4: a storm at sea")
    assert torch.equal(again.keyframes.codes, keyframes.keyframes.codes)
    *_, other, _ = keyframes_of(nodes, models, track, prompt_schedule="0: a calm sea | 4: a storm at sea",
                                 source_seed=5)
    assert not torch.equal(other.keyframes.codes, keyframes.keyframes.codes)
    # downscaled frames
    small, _, _ = run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=head, batch_size=50, size=16)
    assert small.shape == (100, 16, 16, 3)


def test_keyframes_and_decode_stop_on_cancel(nodes, models, track, fake_comfy):
    features, *_ = run("SGIMAudioFeatures", nodes, audio=track, fps=24.0, start_seconds=0.0, end_seconds=0.0,
                       smoothing_seconds=0.1)
    source, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=4, truncation_psi=0.7, mode="random",
                  batch_size=1)
    fake_comfy.interrupt_at = 3
    with pytest.raises(FakeInterrupt):
        run("SGIMMusicKeyframes", nodes, generator=models.generator, clip=models.clip, audio_encoder=models.encoder,
            features=features, source=source, keyframe_seconds=2.5, snap_to_onsets=False, steps=50, keyframe_steps=20,
            lr=0.1, lambda_sim=0.002, prompt_schedule="", text_weight=0.3, preview_every=0, unique_id="8")
    assert [p[0] for p in fake_comfy.progress] == [1, 2]  # stopped within one step
    fake_comfy.interrupt_at = None
    *_, keyframes, _ = keyframes_of(nodes, models, track)
    wplus, _ = run("SGIMMusicTrajectory", nodes, keyframes=keyframes, reactivity=0.5, band_layers=True,
                   rotation_degrees=4.0, translation=0.05, frame_offset=0, frame_count=0)
    fake_comfy.progress.clear()
    fake_comfy.checks, fake_comfy.interrupt_at = 0, 3
    with pytest.raises(FakeInterrupt):
        run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=wplus, batch_size=10, size=0, unique_id="9")
    assert [p[0] for p in fake_comfy.progress] == [10, 20]  # stopped before the third batch


def test_music_nodes_name_the_input_at_fault(nodes, models, track, errors, fake_comfy):
    with pytest.raises(errors.ParameterError, match="Audio Features, input 'end_seconds'"):
        run("SGIMAudioFeatures", nodes, audio=track, fps=24.0, start_seconds=5.0, end_seconds=2.0,
            smoothing_seconds=0.1)
    with pytest.raises(errors.ParameterError, match="Audio Features, input 'audio'"):
        run("SGIMAudioFeatures", nodes, audio={"waveform": torch.zeros(1, 1, 0), "sample_rate": RATE}, fps=24.0,
            start_seconds=0.0, end_seconds=0.0, smoothing_seconds=0.1)
    *_, keyframes, _ = keyframes_of(nodes, models, track)
    with pytest.raises(errors.ParameterError, match="Music Trajectory, input 'frame_offset'"):
        run("SGIMMusicTrajectory", nodes, keyframes=keyframes, reactivity=0.5, band_layers=True, rotation_degrees=4.0,
            translation=0.05, frame_offset=175, frame_count=0)
    plain, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=4, truncation_psi=0.7, mode="random",
                 batch_size=1)
    with pytest.raises(errors.ParameterError, match="Decode Frames, input 'wplus'.*Music Trajectory"):
        run("SGIMDecodeFrames", nodes, generator=models.generator, wplus=plain, batch_size=4, size=0)
    features, *_ = run("SGIMAudioFeatures", nodes, audio=track, fps=24.0, start_seconds=0.0, end_seconds=0.0,
                       smoothing_seconds=0.1)
    with pytest.raises(errors.ParameterError, match="Music Keyframes, input 'clip'"):
        run("SGIMMusicKeyframes", nodes, generator=models.generator, clip=models.clip,
            audio_encoder=models.wide_encoder, features=features, source=plain, keyframe_seconds=2.5,
            snap_to_onsets=False, steps=2, keyframe_steps=1, lr=0.1, lambda_sim=0.002, prompt_schedule="",
            text_weight=0.3, preview_every=0)
    with pytest.raises(errors.ParameterError, match="Music Keyframes, input 'prompt_schedule'"):
        run("SGIMMusicKeyframes", nodes, generator=models.generator, clip=models.clip, audio_encoder=models.encoder,
            features=features, source=plain, keyframe_seconds=2.5, snap_to_onsets=False, steps=2, keyframe_steps=1,
            lr=0.1, lambda_sim=0.002, prompt_schedule="0: sea | later: storm", text_weight=0.3,
            preview_every=0)
    assert np.isfinite(keyframes.keyframes.codes.numpy()).all()
