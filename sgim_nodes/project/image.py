"""The artist's picture as a generator target: any size, any mode, one stated policy.

Policy (``fit``):

- ``"crop"`` (default): the centred square of side min(H, W) is cut out, then resized to the
  generator's resolution. Nothing is distorted; the long side loses its ends.
- ``"pad"``: the whole picture is resized so that its long side is the resolution, then centred on
  a square canvas whose border repeats the picture's edge pixels (a flat colour border would
  have to be reproduced by the generator, an edge replica is closer to what it can make).

Resizing is bicubic with antialiasing (area-like when shrinking), clamped to [0, 1]. Grey images are
repeated to RGB; alpha (LA, RGBA) is ignored, as are extra channels. A batch gives a batch of targets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError

from .options import FIT_MODES  # noqa: F401  (re-exported)
# Bounded memory for absurd inputs: one side may be long, but the picture may not exceed this many pixels.
MAX_PIXELS = 1 << 27


def _is_pil(image) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(image, Image.Image)


def image_to_tensor(image) -> torch.Tensor:
    """A picture as float [B, C, H, W] in [0, 1]: a PIL image, a numpy array ([H, W], [H, W, C] or
    [B, H, W, C]; uint8 or float in [0, 1]) or a tensor in ComfyUI's IMAGE layout [B, H, W, C]."""
    if _is_pil(image):  # any mode (P, I;16, CMYK, ...)
        mode = image.mode
        if mode in ("LA", "RGBA", "RGBa", "La", "PA"):
            image = image.convert("RGBA")
        elif mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            array = torch.from_numpy(np.array(image, copy=True)).float() / 255.0
        elif image.dtype == np.uint16:
            array = torch.from_numpy(image.astype(np.float32)) / 65535.0
        elif np.issubdtype(image.dtype, np.floating) or image.dtype == bool:
            array = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        else:
            raise ParameterError(f"image: unsupported pixel type {image.dtype} (expected uint8, uint16 or float)",
                                 parameter="image")
        image = array
    if not isinstance(image, torch.Tensor):
        raise ParameterError(f"image: expected a picture (PIL image, array or IMAGE tensor), got {type(image).__name__}",
                             parameter="image")
    x = image.detach().float()
    if x.dim() == 2:  # [H, W] grey
        x = x[None, :, :, None]
    elif x.dim() == 3:  # [H, W, C]
        x = x[None]
    if x.dim() != 4:
        raise ParameterError(f"image: expected [H, W], [H, W, C] or [B, H, W, C], got shape {list(image.shape)}",
                             parameter="image")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ParameterError(f"image: empty picture of shape {list(image.shape)}", parameter="image")
    if x.shape[1] * x.shape[2] > MAX_PIXELS:
        raise ParameterError(f"image: {x.shape[2]}x{x.shape[1]} pixels is more than the {MAX_PIXELS} accepted; "
                             "shrink it first", parameter="image")
    if x.shape[3] > 4:
        raise ParameterError(f"image: expected 1 to 4 channels (grey, grey+alpha, RGB, RGBA) in the last axis, "
                             f"got shape {list(image.shape)}", parameter="image")
    if not torch.isfinite(x).all():
        raise ParameterError("image: the picture contains NaN or infinite values", parameter="image")
    channels = x.shape[3]
    if channels <= 2:  # grey (+ alpha, ignored)
        x = x[..., :1].expand(-1, -1, -1, 3)
    else:  # RGB (+ alpha, ignored)
        x = x[..., :3]
    return x.permute(0, 3, 1, 2).clamp(0, 1).contiguous()


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if (x.shape[2], x.shape[3]) == (height, width):
        return x
    if x.shape[2] == 1 and x.shape[3] == 1:  # bicubic of a single pixel is that pixel
        return x.expand(-1, -1, height, width).contiguous()
    antialias = height < x.shape[2] or width < x.shape[3]
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=antialias).clamp(0, 1)


def prepare_target(image, resolution: int, fit: str = "crop") -> torch.Tensor:
    """``image`` (see :func:`image_to_tensor`, or a list of such pictures) as generator targets ``[B, 3, resolution, resolution]`` in
    [-1, 1], the generator's output range, following the module's policy."""
    if fit not in FIT_MODES:
        raise ParameterError(f"fit: expected one of {FIT_MODES}, got {fit!r}", parameter="fit")
    if isinstance(image, (list, tuple)):  # pictures of different sizes: each fitted on its own
        if not image:
            raise ParameterError("image: empty list of pictures", parameter="image")
        return torch.cat([prepare_target(one, resolution, fit) for one in image])
    x = image_to_tensor(image)
    height, width = x.shape[2:]
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        x = _resize(x[:, :, top:top + side, left:left + side], resolution, resolution)
    else:
        scale = resolution / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        x = _resize(x, new_h, new_w)
        top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
        padding = (left, resolution - new_w - left, top, resolution - new_h - top)
        x = F.pad(x, padding, mode="replicate")
    return x * 2 - 1
