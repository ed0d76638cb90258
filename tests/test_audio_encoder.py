"""The official audio encoder layout, its file formats, embed_audio and the bounded-memory long-audio path."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from sgim_nodes.audio import (build_audio_encoder, check_compatible, embed_audio, load_audio, load_audio_encoder,
                              paper_input, save_audio_encoder)
from sgim_nodes.audio.encoder import _strip_module_prefix, infer_backbone
from sgim_nodes.errors import AudioError, ModelFileError, ParameterError

WEIGHTS_SHA256 = "454fbc1e9029d72e86a9d82a22fba559cced0990a6753d139b2525ec7a7b0b2e"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def deterministic_state(keys_json) -> dict[str, torch.Tensor]:
    """The fixture README's deterministic-weights recipe, in official_encoder_keys.json order."""
    state = {}
    for entry in json.loads(keys_json.read_text())["keys"]:
        index, key, shape = entry["index"], entry["key"], entry["shape"]
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        g = torch.Generator().manual_seed(1000 + index)
        if leaf == "running_mean":
            value = torch.randn(shape, generator=g) * 0.1
        elif leaf == "running_var":
            value = torch.rand(shape, generator=g) + 0.5
        elif leaf == "weight" and len(shape) >= 2:
            value = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif leaf == "weight":
            value = torch.randn(shape, generator=g) * 0.1 + 1.0
        elif leaf == "bias":
            value = torch.randn(shape, generator=g) * 0.1
        else:
            raise AssertionError(f"unexpected key {key}")
        state[key] = value
    return state


@pytest.fixture(scope="module")
def official_state(fixtures_dir):
    state = deterministic_state(fixtures_dir / "audio" / "official_encoder_keys.json")
    digest = hashlib.sha256()
    for tensor in state.values():
        digest.update(tensor.contiguous().numpy().tobytes())
    assert digest.hexdigest() == WEIGHTS_SHA256
    return state


@pytest.fixture(scope="module")
def official_pth(official_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "resnet18_57.pth"
    torch.save({f"module.{k}": v for k, v in official_state.items()}, path)
    return path


@pytest.fixture(scope="module")
def encoder(official_pth):
    return load_audio_encoder(official_pth)


@pytest.fixture(scope="module")
def expected(fixtures_dir):
    from safetensors.torch import load_file

    inputs = load_file(str(fixtures_dir / "audio" / "official_inference_preprocess.safetensors"))
    outputs = load_file(str(fixtures_dir / "audio" / "official_encoder_expected.safetensors"))
    return {stem: (inputs[stem], outputs[stem]) for stem in outputs}


def _relative_error(got, want):
    return float((got - want).abs().max() / want.abs().max())


def test_official_pth_with_and_without_module_prefix(official_state, encoder, expected, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(official_state, plain)
    without_prefix = load_audio_encoder(plain)
    assert encoder.config["backbone"] == "resnet18" and encoder.embed_dim == 512
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    stems = sorted(expected)
    inputs = torch.cat([expected[s][0] for s in stems])
    outputs = torch.cat([expected[s][1] for s in stems])
    with torch.no_grad():
        got = encoder(inputs)
        errors = {s: _relative_error(got[i], outputs[i]) for i, s in enumerate(stems)}
        print("encoder relative error per clip:", {s: f"{e:.1e}" for s, e in errors.items()})
        assert max(errors.values()) <= 1e-3
        assert _relative_error(without_prefix(inputs[:2]), outputs[:2]) <= 1e-3
        assert _relative_error(encoder(inputs[3:4]), outputs[3:4]) <= 1e-3  # batch of one too


def test_copy_state_dict_semantics():
    t = torch.zeros(1)
    assert list(_strip_module_prefix({"module.a.b": t, "c.d": t})) == ["a.b", "d"]  # every key, one level
    assert list(_strip_module_prefix({"modulex.a": t, "module.b": t})) == ["a", "b"]  # 'module' needs no dot
    assert list(_strip_module_prefix({"a.b": t, "module.c": t})) == ["a.b", "module.c"]  # only the first key counts


def test_safetensors_round_trip_is_exact(encoder, expected, tmp_path):
    path = tmp_path / "enc.safetensors"
    save_audio_encoder(encoder, path, clip_model="ViT-B-32")
    again = load_audio_encoder(path)
    assert again.config["clip_model"] == "ViT-B-32" and again.config["preprocessing"] == encoder.config["preprocessing"]
    for (k1, v1), (k2, v2) in zip(encoder.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    inputs = expected["fire"][0]
    with torch.no_grad():
        assert torch.equal(encoder(inputs), again(inputs))


def test_bare_safetensors_state_dict_loads(official_state, tmp_path):
    from safetensors.torch import save_file

    save_file({f"module.{k}": v.contiguous() for k, v in official_state.items()}, str(tmp_path / "bare.safetensors"))
    assert load_audio_encoder(tmp_path / "bare.safetensors").config["backbone"] == "resnet18"


def test_wrong_files_are_clear_errors(fixtures_dir, tmp_path):
    with pytest.raises(ModelFileError, match="not a SoundCLIP audio encoder"):
        load_audio_encoder(fixtures_dir / "stylegan2" / "rosinality_tiny.pt")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 100)
    with pytest.raises(ModelFileError, match="garbage.pth"):
        load_audio_encoder(garbage)
    with pytest.raises(ModelFileError, match="not found"):
        load_audio_encoder(tmp_path / "missing.pth")
    truncated = tmp_path / "bad.safetensors"
    truncated.write_bytes(b"12345678")
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_audio_encoder(truncated)


def test_resnet50_backbone_is_recognised():
    encoder = build_audio_encoder("resnet50", embed_dim=512)
    assert infer_backbone(dict(encoder.state_dict())) == ("resnet50", 512)
    with pytest.raises(ParameterError, match="backbone"):
        build_audio_encoder("vgg11")


def test_embed_audio_matches_the_paper_path_and_is_normalised(encoder, audio_dir):
    waveform, rate = load_audio(audio_dir / "drill.wav")
    got = embed_audio(encoder, waveform, rate)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(encoder(paper_input(waveform, rate)), dim=-1)
    assert got.shape == (1, 512)
    assert torch.allclose(got.norm(dim=-1), torch.ones(1), atol=1e-6)
    assert float((got - direct).abs().max()) < 1e-6
    batch = embed_audio(encoder, torch.stack([waveform, waveform.flip(0)]), rate)  # ComfyUI [B, C, T]
    assert batch.shape == (2, 512) and float((batch[0] - got[0]).abs().max()) < 1e-5


def test_embed_audio_windows_hop_and_selection(encoder):
    rate = 16000
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(rate * 14) / rate
    wave = (0.3 * torch.sin(2 * math.pi * 500 * t * (1 + t / 14)) + 0.01 * torch.randn(len(t), generator=gen))[None]
    per_window = embed_audio(encoder, wave, rate, pool="none", hop_seconds=5.0)
    frames = 1 + (14 * 44100) // 512
    assert per_window.shape == (1, 1 + math.ceil((frames - 864) / round(5 * 44100 / 512)), 512)
    assert torch.allclose(per_window.norm(dim=-1), torch.ones(per_window.shape[:2]), atol=1e-5)
    pooled = embed_audio(encoder, wave, rate, hop_seconds=5.0)
    mean = torch.nn.functional.normalize(per_window.mean(dim=1), dim=-1)
    assert float((pooled - mean).abs().max()) < 1e-6
    first = embed_audio(encoder, wave, rate, pool="first", hop_seconds=5.0)
    assert first.shape == (1, 512) and float((first - per_window[:, 0]).abs().max()) < 1e-6
    part = embed_audio(encoder, wave, rate, start_seconds=2.0, end_seconds=6.0)
    assert float((part - embed_audio(encoder, wave[:, 2 * rate:6 * rate], rate)).abs().max()) < 1e-6
    with pytest.raises(ParameterError, match="empty"):
        embed_audio(encoder, wave, rate, start_seconds=20.0)
    with pytest.raises(ParameterError, match="window_seconds"):
        embed_audio(encoder, wave, rate, window_seconds=3.0)
    with pytest.raises(ParameterError, match="pool"):
        embed_audio(encoder, wave, rate, pool="max")


def test_embed_audio_bad_audio(encoder):
    silent = embed_audio(encoder, torch.zeros(2, 44100), 44100)
    assert torch.isfinite(silent).all() and abs(float(silent.norm()) - 1) < 1e-5
    one = embed_audio(encoder, torch.full((1, 1), 0.5), 8000)
    assert torch.isfinite(one).all()
    bad = torch.zeros(1, 4410)
    bad[0, 3] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        embed_audio(encoder, bad, 44100)
    with pytest.raises(AudioError, match="empty"):
        embed_audio(encoder, torch.zeros(1, 0), 44100)


def test_works_inside_inference_mode_and_training_encoder_is_trainable(encoder):
    with torch.inference_mode():
        got = embed_audio(encoder, torch.randn(1, 22050) * 0.1, 22050)
        trainable = build_audio_encoder("resnet18", embed_dim=16)
    assert not got.is_inference()
    trainable.train()
    out = trainable(torch.rand(2, 1, 128, 512))
    out.square().mean().backward()
    assert trainable.conv.weight.grad is not None and torch.isfinite(trainable.conv.weight.grad).all()


def test_check_compatible_rejects_other_clip_widths(encoder):
    class FakeClip:
        name, embed_dim = "ViT-L-14", 768

    with pytest.raises(ParameterError, match="768"):
        check_compatible(encoder, FakeClip())
    FakeClip.embed_dim = 512
    check_compatible(encoder, FakeClip())
