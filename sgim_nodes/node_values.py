"""Values the nodes pass and show, and the rules about them that need no ComfyUI (tested without it).

The ComfyUI side (comfy_nodes/host.py) imports these; nothing here imports ComfyUI.
"""

from __future__ import annotations

import os
import re

import torch

PREVIEW_MAX_SIDE = 512  # ComfyUI's usual preview size; smaller results are sent at their own size


def to_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """Generator output [B,3,H,W] in [-1,1] -> ComfyUI IMAGE [B,H,W,3] in [0,1] on the CPU."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def preview_image(images: torch.Tensor):
    """``(PIL image, largest side)`` of the first image of a [B,3,H,W] batch in [-1,1]. The largest side is
    never above the image's own: ComfyUI fits previews into it, scaling small ones up, and the frontend
    captions the preview with the size it receives (a 32 px result read "512 x 512")."""
    from PIL import Image

    array = (to_comfy_image(images[:1])[0].numpy() * 255).round().astype("uint8")
    return Image.fromarray(array), min(PREVIEW_MAX_SIDE, max(array.shape[:2]))


def wplus_value(ws: torch.Tensor, generator_name: str, ws_resolutions=None) -> dict:
    """An SGIM_WPLUS value. ``ws_resolutions``: the generator's nominal resolution per W+ row when it has
    its own layer grouping (StyleGAN3), so that Style Mix presets pick the same rows as the Layer Mask."""
    value = {"ws": ws.detach().to("cpu", torch.float32).clone(), "generator": generator_name}
    if ws_resolutions is not None:
        value["ws_resolutions"] = list(ws_resolutions)
    return value


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:,]+/)+([^\s'\"/:,]+)")


def short_paths(text: str) -> str:
    """Absolute paths in a message reduced to their file names (what the user picked in a combo)."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


WPLUS_SUFFIX = ".safetensors"
IMAGE_SUFFIXES = (".png", ".webp", ".jpg")


def _counters(folder: str, name: str) -> dict[int, set[str]]:
    """``{counter: {suffixes}}`` of the files ``<name>_<counter>[_]<suffix>`` in ``folder``."""
    found: dict[int, set[str]] = {}
    pattern = re.compile(re.escape(name) + r"_(\d+)_?(\.[A-Za-z0-9]+)$")
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(entry)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2).lower())
    return found


def save_path_without_comfyui(filename_prefix: str, out_dir: str):
    """``(folder, file name, next image counter, subfolder, prefix)`` by core's saver rule (which counts
    every ``<name>_<N>_...`` file), for the nodes outside ComfyUI; no %date% variables."""
    prefix = os.path.normpath(filename_prefix)
    folder = os.path.join(out_dir, os.path.dirname(prefix))
    if os.path.commonpath((os.path.abspath(out_dir), os.path.abspath(folder))) != os.path.abspath(out_dir):
        raise ValueError("saving outside the output folder is not allowed")
    name = os.path.basename(prefix)
    taken = [int(f[len(name) + 1:].split("_")[0]) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
             if f.startswith(name + "_") and f[len(name) + 1:].split("_")[0].isdigit()]
    return folder, name, max(taken, default=0) + 1, os.path.dirname(prefix), filename_prefix


def paired_wplus_name(folder: str, name: str, image_counter: int) -> str:
    """The file name of a W+ code saved under the prefix ``name``, numbered as the image saved beside it.

    ``image_counter`` is the number core's Save Image gives the next image of that prefix (it counts
    ``<name>_<N>_.png`` files, and not our ``<name>_<N>.safetensors``, so our files never push its
    numbers on). The code takes the number of the newest image that has no code yet (Save Image ran
    first in this run), else the number the next image will get (it runs after), else the next number
    after our own codes; never the name of an existing file.
    """
    counters = _counters(folder, name)
    newest_image = max((n for n, suffixes in counters.items() if suffixes & set(IMAGE_SUFFIXES)), default=0)
    own = max((n for n, suffixes in counters.items() if WPLUS_SUFFIX in suffixes), default=0)
    if newest_image and WPLUS_SUFFIX not in counters[newest_image] and newest_image > own:
        counter = newest_image
    else:
        counter = max(image_counter, own + 1)
    while os.path.exists(os.path.join(folder, f"{name}_{counter:05}{WPLUS_SUFFIX}")):
        counter += 1
    return f"{name}_{counter:05}{WPLUS_SUFFIX}"


def generator_layout(generator) -> dict:
    """num_ws, resolution, width, family and the preset layer groups of a generator (the Layer Mask editor)."""
    from .optimize.rules import preset_freedom

    groups = {preset: preset_freedom(preset, generator.num_ws, getattr(generator, "ws_resolutions", None))
              for preset in ("coarse", "middle", "fine")}
    return {"num_ws": generator.num_ws, "resolution": generator.resolution, "w_dim": generator.w_dim,
            "family": getattr(generator, "family", "stylegan2"), "groups": groups}
