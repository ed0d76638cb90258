"""``python -m sgim_nodes embed-audio``: summary, prompt ranking, saved embedding, clear errors."""

from __future__ import annotations

import pytest
import torch

from sgim_nodes.__main__ import main
from sgim_nodes.audio import build_audio_encoder, save_audio_encoder
from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
from sgim_nodes.fileio import load_model_file


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_audio_encoder(build_audio_encoder(embed_dim=32, clip_model="sgim-tiny-clip"), folder / "enc.safetensors")
    save_open_clip_state_dict(build_tiny_clip(), folder / "clip.safetensors", config=tiny_clip_config())
    yield folder
    torch.set_num_threads(previous)


def test_summary_prompts_and_saved_embedding(models, audio_dir, tmp_path, capsys):
    out = tmp_path / "drill_embedding.safetensors"
    code = main(["embed-audio", str(audio_dir / "drill.wav"), "--encoder", str(models / "enc.safetensors"),
                 "--clip", str(models / "clip.safetensors"), "--text", "a drill", "rain", "--out", str(out),
                 "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "4.000 s, 48000 Hz, 2 channel(s)" in printed and "windows:    1 x 10.03 s" in printed
    assert "L2 norm 1.0000" in printed and "a drill" in printed and "rain" in printed
    tensors, config, _ = load_model_file(out, "embedding")
    assert tensors["embedding"].shape == (1, 32) and config["pool"] == "mean" and config["windows"] == 1
    assert abs(float(tensors["embedding"].norm()) - 1) < 1e-5


def test_per_window_with_hop(models, tmp_path, capsys):
    import wave

    import numpy as np

    sound = tmp_path / "long.wav"  # 15 s at 16 kHz: 1292 frames at 44.1 kHz, two windows 5 s apart
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(16000 * 15) / 16000
        w.writeframes((np.sin(2 * np.pi * 330 * t) * 8000).astype("<i2").tobytes())
    out = tmp_path / "windows.safetensors"
    assert main(["embed-audio", str(sound), "--encoder", str(models / "enc.safetensors"),
                 "--per-window", "--hop", "5", "--out", str(out)]) == 0
    tensors, config, _ = load_model_file(out, "embedding")
    assert tensors["embedding"].shape == (1, 2, 32) and config["windows"] == 2 and "2 x 10.03 s" in capsys.readouterr().out


def test_errors_are_one_clear_line(models, tmp_path, capsys):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    assert main(["embed-audio", str(text), "--encoder", str(models / "enc.safetensors")]) == 1
    assert "error: " in capsys.readouterr().err
    assert main(["embed-audio", str(text), "--encoder", str(models / "enc.safetensors"), "--text", "x"]) == 1
    assert "--text needs --clip" in capsys.readouterr().err


def test_near_silent_and_very_short_sound_warn_with_the_measured_level(models, tmp_path, capsys):
    import wave

    import numpy as np

    def write(path, seconds, amplitude):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            t = np.arange(int(16000 * seconds)) / 16000
            w.writeframes((np.sin(2 * np.pi * 330 * t) * amplitude).astype("<i2").tobytes())

    write(tmp_path / "quiet.wav", 3.0, 3)  # a 330 Hz tone at 3 / 32768 of full scale: about -83 dBFS RMS
    assert main(["embed-audio", str(tmp_path / "quiet.wav"), "--encoder", str(models / "enc.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "near-silent: RMS level -8" in captured.err and "dBFS" in captured.err
    assert "level:      RMS -8" in captured.out
    write(tmp_path / "loud.wav", 3.0, 8000)
    assert main(["embed-audio", str(tmp_path / "loud.wav"), "--encoder", str(models / "enc.safetensors")]) == 0
    assert "warning" not in capsys.readouterr().err
    write(tmp_path / "click.wav", 0.1, 8000)
    assert main(["embed-audio", str(tmp_path / "click.wav"), "--encoder", str(models / "enc.safetensors")]) == 0
    assert "very short: 0.10 s" in capsys.readouterr().err
