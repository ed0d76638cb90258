"""Hostile inputs, class 1 (claims against the config): where a loader knows the architecture, every
tensor's shape must be the one the config derives, so a file can claim no more than that architecture
holds. These tests show it for the formats that carry or imply a config; a safetensors header cannot claim
more bytes than the file stores (its offsets must cover the data exactly), so there a claim is storage."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hostile_files import _tiny_generator, _tiny_rosinality  # noqa: E402

from sgim_nodes.errors import ModelFileError  # noqa: E402
from sgim_nodes.stylegan import load_generator, save_generator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _our_file(tmp_path: Path, grow: int) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    save_generator(_tiny_generator(), tmp_path / "g.safetensors")
    with safe_open(str(tmp_path / "g.safetensors"), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(tmp_path / "g.safetensors"))
    name = "mapping_network.biases.0"
    tensors[name] = torch.zeros(tensors[name].shape[0] + grow)
    save_file(tensors, str(tmp_path / "wrong.safetensors"), metadata=metadata)
    return tmp_path / "wrong.safetensors"


@pytest.mark.parametrize("grow", [1, 100_000])
def test_our_generator_file_tensor_shapes_must_be_the_configs(tmp_path, grow):
    with pytest.raises(ModelFileError, match=r"do not match the generator config in the metadata "
                                             r"\('mapping_network.biases.0' is \[\d+\], the config needs \[8\]\)"):
        load_generator(_our_file(tmp_path, grow))


def test_a_safetensors_header_cannot_claim_more_than_the_file_stores(tmp_path):
    save_generator(_tiny_generator(), tmp_path / "g.safetensors")
    data = (tmp_path / "g.safetensors").read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [40_000, 40_000]  # 6.4 GB claimed over the same few bytes
    raw = json.dumps(header).encode()
    (tmp_path / "claims.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size:])
    with pytest.raises(ModelFileError, match="claims.safetensors"):
        load_generator(tmp_path / "claims.safetensors")


def test_rosinality_shapes_must_agree_with_the_architecture_they_imply(tmp_path):
    checkpoint = _tiny_rosinality()
    state = checkpoint["g_ema"]
    name = next(k for k in state if k.endswith("weight") and state[k].dim() == 2)
    state[name] = torch.zeros(state[name].shape[0] + 3, state[name].shape[1])
    torch.save(checkpoint, tmp_path / "wrong.pt")
    with pytest.raises(ModelFileError, match="wrong.pt"):
        load_generator(tmp_path / "wrong.pt")
