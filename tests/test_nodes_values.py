"""Rules about node values that need no ComfyUI: file numbering beside Save Image, preview sizes,
the mean of an image batch as one target."""

from __future__ import annotations

import torch
from PIL import ImageOps

from sgim_nodes.jobs.edit import embed_image
from sgim_nodes.node_values import paired_wplus_name, preview_image, save_path_without_comfyui


def core_counter(folder, name):
    """The number core's Save Image gives the next image (folder_paths.get_save_image_path's rule)."""
    numbers = []
    for entry in folder.iterdir():
        head = entry.name[:len(name) + 1]
        try:
            digits = int(entry.name[len(name) + 1:].split("_")[0])
        except ValueError:
            digits = 0
        if head == name + "_":
            numbers.append(digits)
    counter = max(numbers, default=0) + 1
    assert save_path_without_comfyui(name, str(folder))[2] == counter  # the nodes' rule outside ComfyUI
    return counter


def save_image(folder, name):
    path = folder / f"{name}_{core_counter(folder, name):05}_.png"
    path.write_bytes(b"png")
    return path.name


def save_code(folder, name):
    file_name = paired_wplus_name(str(folder), name, core_counter(folder, name))
    assert not (folder / file_name).exists()
    (folder / file_name).write_bytes(b"code")
    return file_name


def test_code_and_image_of_one_prefix_get_the_same_number_in_either_order(tmp_path):
    assert save_code(tmp_path, "upscaled") == "upscaled_00001.safetensors"  # the code first ...
    assert save_image(tmp_path, "upscaled") == "upscaled_00001_.png"  # ... the image is not pushed on
    assert save_image(tmp_path, "upscaled") == "upscaled_00002_.png"  # the image first ...
    assert save_code(tmp_path, "upscaled") == "upscaled_00002.safetensors"  # ... the code pairs with it
    assert save_code(tmp_path, "upscaled") == "upscaled_00003.safetensors"  # codes alone count on
    assert save_code(tmp_path, "upscaled") == "upscaled_00004.safetensors"
    assert save_image(tmp_path, "other") == "other_00001_.png"  # prefixes are separate


def test_a_code_never_takes_an_existing_name(tmp_path):
    (tmp_path / "x_00001.safetensors").write_bytes(b"old")
    (tmp_path / "x_00001_.safetensors").write_bytes(b"older naming")
    name = paired_wplus_name(str(tmp_path), "x", 1)
    assert name == "x_00002.safetensors"
    (tmp_path / "x_00007_.png").write_bytes(b"png")  # an image without a code: the code pairs with it
    assert paired_wplus_name(str(tmp_path), "x", 8) == "x_00007.safetensors"


def test_small_previews_are_sent_at_their_real_size():
    for side in (32, 64, 1024):
        picture, largest = preview_image(torch.zeros(2, 3, side, side))
        shown = ImageOps.contain(picture, (largest, largest))  # what ComfyUI's server sends
        assert shown.size == (min(side, 512),) * 2
    picture, largest = preview_image(torch.zeros(1, 3, 32, 64))
    assert ImageOps.contain(picture, (largest, largest)).size == (64, 32)


class FakeClip:
    def encode_image(self, images):  # [B, H, W, 3] -> unit vectors, one per picture
        return torch.nn.functional.normalize(images.mean(dim=(1, 2)), dim=-1)


def test_embed_image_mean_gives_one_unit_target_for_a_batch():
    frames = torch.zeros(3, 4, 4, 3)
    frames[0, ..., 0] = 1
    frames[1, ..., 1] = 1
    frames[2, ..., 1] = 1
    each = embed_image(FakeClip(), frames)
    mean = embed_image(FakeClip(), frames, "mean")
    assert each.shape == (3, 3) and mean.shape == (1, 3)
    expected = torch.tensor([[1.0, 2.0, 0.0]]) / 5 ** 0.5
    assert torch.allclose(mean, expected, atol=1e-6)
    import pytest

    from sgim_nodes.errors import ParameterError

    with pytest.raises(ParameterError, match="combine: expected one of"):
        embed_image(FakeClip(), frames, "median")
