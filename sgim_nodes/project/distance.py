"""How far a generated image is from the artist's picture: the distances projection can minimise.

=============  ===========================================  =============================================
name           needs                                        good for
=============  ===========================================  =============================================
``lpips``      VGG16 weights file (``models/sgim_vgg/``)    the standard (NVlabs' projector, PTI): matches
               and the ``lpips`` package's linear layers    what people see as the same picture: edges,
                                                            textures, layout; tolerant of small shifts.
``pixel``      nothing                                      exact colours; the PSNR it maximises is the
                                                            usual reconstruction score. Alone it gives
                                                            blurry fits of detail the generator cannot hit.
``multiscale`` nothing                                      pixel error on a pyramid (full, 1/2, 1/4 ...
                                                            down to 8 px): weighs layout and colour masses
                                                            as much as fine detail, so the coarse layers
                                                            settle first; a file-free stand-in for LPIPS.
``clip``       the loaded CLIP model                        the picture's content and style rather than its
                                                            exact layout (a loose fit; combine with
                                                            ``pixel_weight`` to hold the composition).
=============  ===========================================  =============================================

Every distance takes generator output and targets in [-1, 1], ``[B, 3, H, W]``, and returns one value
per image ``[B]`` (summed by the caller, so a batch of pictures is a batch of independent fits).

LPIPS (Zhang et al. 2018, v0.1) is computed here, not by the ``lpips`` package's module (which would
build torchvision's VGG and fetch ImageNet weights): the VGG16 convolution stack is ours, its weights
come from torchvision's ``vgg16-397923af.pth`` (read with ``torch.load(weights_only=True)``), and the
calibrated per-channel linear layers from the ``lpips`` package's ``weights/v0.1/vgg.pth``. As in
NVlabs' projector, images larger than 256 px are area-downsampled to 256 px first.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError, ParameterError

from .options import DISTANCES, VGG_FOLDER, VGG_FILENAME  # noqa: F401  (re-exported)
LPIPS_SIZE = 256  # NVlabs' projector measures LPIPS at 256 px at most
# VGG16 "D" configuration: conv widths, "M" = 2x2 max pool; torchvision's features.N indices follow it.
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices (after ReLU) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS v0.1 input scaling (the lpips package's ScalingLayer): (x - shift) / scale on [-1, 1] images.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to relu5_3, same indices, returning the five LPIPS taps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in LPIPS_TAPS:
                taps.append(x)
        return taps


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with a VGG16 trunk; ``features`` for a fixed target once, then ``distance_to``."""

    def __init__(self, vgg: VGG16Features, linear_weights: list[torch.Tensor]):
        super().__init__()
        self.vgg = vgg
        for k, weight in enumerate(linear_weights):
            self.register_buffer(f"lin{k}", weight.reshape(1, -1, 1, 1).float())
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def features(self, images_m11: torch.Tensor) -> list[torch.Tensor]:
        x = images_m11.float()
        if x.shape[-1] > LPIPS_SIZE:
            x = F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="area")
        taps = self.vgg((x - self.shift) / self.scale)
        # unit length over channels (the package's normalize_tensor, eps 1e-10)
        return [t / (t.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for t in taps]

    def distance_to(self, images_m11: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for k, (mine, theirs) in enumerate(zip(self.features(images_m11), target_features)):
            total = total + ((mine - theirs).square() * getattr(self, f"lin{k}")).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance_to(a, self.features(b))


def lpips_linear_weights() -> list[torch.Tensor]:
    """The calibrated LPIPS v0.1 VGG linear layers shipped inside the ``lpips`` package."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the 'lpips' distance needs the lpips package (its calibrated linear layers): "
                             "pip install lpips   (or choose the 'pixel', 'multiscale' or 'clip' distance)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: cannot read the lpips package's VGG linear layers ({exc})") from exc
    weights = []
    for k, channels in enumerate(LPIPS_CHANNELS):
        weight = state.get(f"lin{k}.model.1.weight")
        if not isinstance(weight, torch.Tensor) or weight.numel() != channels:
            raise ModelFileError(f"{path}: expected lin{k}.model.1.weight with {channels} values")
        weights.append(weight.flatten())
    return weights


def vgg16_missing_message(where: str | None = None) -> str:
    from ..models import KNOWN_MODELS, models_dir

    model = KNOWN_MODELS["vgg16"]
    folder = where or str(models_dir() / VGG_FOLDER)
    return (f"the 'lpips' distance needs the VGG16 weights file {VGG_FILENAME} (torchvision's ImageNet VGG16) in "
            f"{folder}/ (ComfyUI: models/{VGG_FOLDER}/). Get it with: python -m sgim_nodes download vgg16 "
            f"(from {model.url}), or choose the 'pixel', 'multiscale' or 'clip' distance, which need no file")


def load_vgg16_features(path: str | os.PathLike) -> VGG16Features:
    """VGG16's convolution stack from torchvision's ``vgg16-397923af.pth`` (or any state dict with its
    ``features.N.weight/bias`` keys, e.g. a file holding only those). Read with ``weights_only=True``
    and memory-mapped, so the 400 MB classifier in the file is never loaded."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(vgg16_missing_message(str(path.parent)) + f" (looked for {path})")
    from ..errors import UnsafeFileError, torch_message
    from ..limits import check_file_claims
    from ..safe_pickle import check_torch_file

    check_torch_file(path)  # no zip bomb, every declared storage within the file, before torch reads it
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file: a weights-only unpickler error, never code execution
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as second:  # the reason without mmap (a legacy file cannot be memory-mapped)
            message = torch_message(second)
            error = UnsafeFileError if "Weights only load failed" in str(second) else ModelFileError
            raise error(f"{path}: not a torchvision VGG16 weights file of plain tensors ({message[:200]}); "
                        "nothing from it was executed") from None
    check_file_claims(path, state)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: expected a state dict of tensors (torchvision's VGG16 layout)")
    model = VGG16Features()
    ours = model.state_dict()
    loaded = {}
    for key, expected in ours.items():
        tensor = state.get(key)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(expected.shape):
            got = "missing" if tensor is None else f"shape {list(getattr(tensor, 'shape', []))}"
            raise ModelFileError(f"{path}: not torchvision's VGG16 layout: {key} should have shape "
                                 f"{list(expected.shape)}, {got}")
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: {key} contains NaN or infinite values")
        loaded[key] = tensor.float().clone()
    model.load_state_dict(loaded)
    return model.requires_grad_(False).eval()


def load_lpips(path: str | os.PathLike, device: str | torch.device = "cpu") -> LPIPSVGG:
    """LPIPS-VGG16 from torchvision's VGG16 file plus the ``lpips`` package's linear layers."""
    from ..device import resolve_device

    with torch.inference_mode(False):
        return LPIPSVGG(load_vgg16_features(path), lpips_linear_weights()).to(resolve_device(device))


def multiscale_mse(images: torch.Tensor, targets: torch.Tensor, min_size: int = 8) -> torch.Tensor:
    """Mean squared error on an average-pooled pyramid (full, 1/2, ... down to ``min_size``), averaged over scales."""
    total, scales = 0, 0
    while True:
        total = total + (images - targets).square().mean(dim=(1, 2, 3))
        scales += 1
        if images.shape[-1] // 2 < min_size:
            break
        images, targets = F.avg_pool2d(images, 2), F.avg_pool2d(targets, 2)
    return total / scales


class Distance:
    """A distance to fixed targets: target features are computed once, ``__call__(images) -> [B]``.

    ``pixel_weight`` adds that much plain MSE (as PTI adds L2 to LPIPS).
    """

    def __init__(self, kind: str, targets: torch.Tensor, *, lpips: LPIPSVGG | None = None, clip=None,
                 pixel_weight: float = 0.0):
        if kind not in DISTANCES:
            raise ParameterError(f"distance: expected one of {DISTANCES}, got {kind!r}", parameter="distance")
        if kind == "lpips" and lpips is None:
            raise ModelFileError(vgg16_missing_message())
        if kind == "clip" and clip is None:
            raise ParameterError("distance 'clip' needs a CLIP model (connect Load CLIP, or pass --clip)",
                                 parameter="clip")
        self.kind, self.lpips, self.clip, self.pixel_weight = kind, lpips, clip, float(pixel_weight)
        self.targets = targets.detach()
        with torch.no_grad():
            if kind == "lpips":
                self.target_features = [f.detach() for f in lpips.features(self.targets.to(_device_of(lpips)))]
            elif kind == "clip":
                self.target_features = clip.image_features(self.targets, normalize_input=True).detach()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "lpips":
            value = self.lpips.distance_to(images.to(_device_of(self.lpips)), self.target_features).to(images.device)
        elif self.kind == "pixel":
            value = (images - self.targets).square().mean(dim=(1, 2, 3))
        elif self.kind == "multiscale":
            value = multiscale_mse(images, self.targets)
        else:
            features = self.clip.image_features(images, normalize_input=True)
            value = (1 - (features * self.target_features).sum(dim=-1)).to(images.device)
        if self.pixel_weight and self.kind != "pixel":
            value = value + self.pixel_weight * (images - self.targets).square().mean(dim=(1, 2, 3))
        return value


def _device_of(module: nn.Module) -> torch.device:
    return next(module.buffers()).device
