"""The `edit` command end to end on tiny random-weight models saved in the real file formats."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgim_nodes.__main__ import main as cli
from sgim_nodes.audio import build_audio_encoder, save_audio_encoder
from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
from sgim_nodes.latents import load_wplus, save_wplus, style_mix
from sgim_nodes.errors import ParameterError
from sgim_nodes.stylegan import Generator, GeneratorConfig, rosinality_checkpoint

EMBED = 32  # the tiny CLIP's width


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(resolution=32, z_dim=32, w_dim=32, n_mapping=2,
                                    channels={4: 16, 8: 16, 16: 16, 32: 16}))
    with torch.no_grad():
        gen.w_avg.copy_(gen.estimate_w_avg(256))
    torch.save(rosinality_checkpoint(gen), root / "tiny.pt")
    save_open_clip_state_dict(build_tiny_clip(embed_dim=EMBED, seed=0), root / "tiny_clip.safetensors",
                              config=tiny_clip_config(EMBED))
    torch.manual_seed(1)
    save_audio_encoder(build_audio_encoder("resnet18", embed_dim=EMBED, clip_model="sgim-tiny-clip"),
                       root / "enc.safetensors")
    return {"generator": root / "tiny.pt", "clip": root / "tiny_clip.safetensors", "encoder": root / "enc.safetensors"}


def test_edit_command_writes_images_and_codes(model_files, audio_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "edit.png"
    code = cli(["edit", "--audio", str(audio_dir / "raining.wav"), "--text", "a rainy night",
                "--weights", "0.7,0.3", "--generator", str(model_files["generator"]),
                "--clip", str(model_files["clip"]), "--clip-model", "sgim-tiny-clip",
                "--encoder", str(model_files["encoder"]), "--out", str(out), "--steps", "12", "--seed", "3",
                "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    start, end = (float(v) for v in printed.split("(mean per edit): ")[1].split()[0:3:2])
    assert end < start  # the edit moved toward the mixed target
    edited = np.asarray(Image.open(out))
    source = np.asarray(Image.open(tmp_path / "edit_source.png"))
    assert edited.shape == source.shape == (32, 32, 3)
    assert np.abs(edited.astype(int) - source.astype(int)).mean() > 0.5
    ws, generator_name, source_ws = load_wplus(tmp_path / "edit_wplus.safetensors")
    assert ws.shape == source_ws.shape == (1, 8, 32)
    assert generator_name == "tiny"
    assert not torch.equal(ws, source_ws)


def test_lean_memory_flag_reaches_the_optimiser_and_changes_no_result(model_files, tmp_path: Path, monkeypatch):
    import sgim_nodes.memory as memory

    seen = []
    real_hook = memory.reuse_freed_memory

    def recording(enabled=True):  # records the flag and still runs the real allocator setting
        seen.append(enabled)
        return real_hook(enabled)

    monkeypatch.setattr(memory, "reuse_freed_memory", recording)
    codes = {}
    for flag in ([], ["--lean-memory"]):
        out = tmp_path / f"edit{len(flag)}.png"
        assert cli(["edit", "--text", "a rainy night", "--generator", str(model_files["generator"]),
                    "--clip", str(model_files["clip"]), "--clip-model", "sgim-tiny-clip", "--out", str(out),
                    "--steps", "5", "--seed", "3", "--device", "cpu"] + flag) == 0
        codes[len(flag)] = load_wplus(tmp_path / f"edit{len(flag)}_wplus.safetensors")[0]
    assert seen[0] is True and seen.count(True) == 1  # default keeps freed CPU memory; --lean-memory never does
    assert torch.equal(codes[0], codes[1])  # an allocator setting, not a change of the mathematics


def test_edit_offline_prints_download_commands_that_work_as_typed(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SGIM_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("SGIM_LAUNCHER", "./sgim")
    (tmp_path / "x.wav").write_bytes(b"")  # only has to exist: the command stops before reading it
    code = cli(["edit", "--audio", str(tmp_path / "x.wav"), "--out", str(tmp_path / "o.png"), "--offline"])
    err = capsys.readouterr().err
    assert code == 1
    assert "landscape.pt" in err and "resnet18_57.pth" in err and "ViT-B-32.pt" in err
    commands = [line.strip() for line in err.splitlines() if "download" in line and line.strip().startswith("./")]
    assert sorted(commands) == ["./sgim download audio-encoder", "./sgim download clip-vit-b-32",
                                "./sgim download landscape"]
    assert not (tmp_path / "empty").exists()  # nothing was written offline

    monkeypatch.delenv("SGIM_LAUNCHER")  # run without the launcher: the printed command names this interpreter
    monkeypatch.setenv("SGIM_OFFLINE", "1")
    assert cli(["edit", "--text", "x", "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert f"{sys.executable} -m sgim_nodes download landscape" in err


def test_style_mix_takes_layers_from_b():
    a, b = torch.zeros(2, 6, 4), torch.ones(1, 6, 4)
    mixed = style_mix(a, b, torch.tensor([0, 0, 0.5, 1, 1, 1.0]))
    assert mixed.shape == (2, 6, 4)
    assert mixed[:, :2].eq(0).all() and mixed[:, 2].eq(0.5).all() and mixed[:, 3:].eq(1).all()
    with pytest.raises(ParameterError, match="blend"):
        style_mix(a, b, torch.ones(5))


def test_wplus_round_trip(tmp_path: Path):
    ws = torch.randn(3, 14, 16)
    save_wplus(tmp_path / "w.safetensors", ws, "landscape")
    loaded, name, source = load_wplus(tmp_path / "w.safetensors")
    assert torch.equal(loaded, ws) and name == "landscape" and source is None
