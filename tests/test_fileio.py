"""Atomic writes and our safetensors model files."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from sgim_nodes.errors import ModelFileError
from sgim_nodes.fileio import atomic_path, load_model_file, save_model_file


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o644


def test_kind_is_checked(tmp_path):
    save_model_file(tmp_path / "a.safetensors", {"x": torch.arange(3.0)}, kind="audio_encoder", config={"k": 1})
    tensors, config, _ = load_model_file(tmp_path / "a.safetensors", "audio_encoder")
    assert torch.equal(tensors["x"], torch.arange(3.0)) and config == {"k": 1}
    with pytest.raises(ModelFileError, match="expected a comfyui-sgim 'stylegan2_generator' file"):
        load_model_file(tmp_path / "a.safetensors", "stylegan2_generator")
    (tmp_path / "b.safetensors").write_text("not safetensors")
    with pytest.raises(ModelFileError, match="b.safetensors"):
        load_model_file(tmp_path / "b.safetensors", "audio_encoder")
