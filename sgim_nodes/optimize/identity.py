"""Identity loss with the ArcFace IR-SE50 network used by StyleCLIP and the paper.

The network follows the layout of ``model_ir_se50.pth`` (TreB1eN's InsightFace_Pytorch
"Backbone(112, 50, 'ir_se')"), so that file's state dict loads key for key:

    input_layer.{0 conv3x3 3->64, 1 BN, 2 PReLU}
    body.{n}.shortcut_layer   subsampling (a 1x1 max pool) when the width is unchanged, else {0 conv1x1, 1 BN}
    body.{n}.res_layer.{0 BN, 1 conv3x3, 2 PReLU, 3 conv3x3 (stride), 4 BN, 5 SE(fc1, fc2 1x1 convs, /16)}
    output_layer.{0 BN2d, 1 Dropout, 2 Flatten, 3 Linear(512*7*7 -> 512), 4 BN1d}

with 3, 4, 14 and 3 units of widths 64, 128, 256, 512 (the first unit of each stage has stride 2),
and an L2-normalised 512-d output. :class:`IRSEConfig` can shrink it for tests.

Face crop (StyleCLIP's ``IDLoss.extract_feats``): images that are not 256 px are average-pooled to
256x256, rows 35:223 and columns 32:220 are kept, and the crop is average-pooled to 112x112.
The generator's [-1, 1] output goes in as it is.

Loss per sample: ``1 - <f(edited), f(source)>``. The source features are computed once, without
gradient (the constant side, as in StyleCLIP); the edited image's features stay in the graph so the
term reaches ``w``. The released SGSIM loop passes the images the other way round, which detaches
the edited side, so its identity term never moves the latent; we do not copy that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError

FACE_POOL_SIZE = 256
FACE_CROP_ROWS = (35, 223)
FACE_CROP_COLS = (32, 220)
FACE_INPUT_SIZE = 112


@dataclass(frozen=True)
class IRSEConfig:
    units: tuple[int, ...] = (3, 4, 14, 3)  # IR-SE50
    widths: tuple[int, ...] = (64, 128, 256, 512)
    embed_dim: int = 512
    se_reduction: int = 16
    dropout: float = 0.6  # as StyleCLIP builds it; inactive in eval mode


IRSE50 = IRSEConfig()
TINY_IRSE = IRSEConfig(units=(1, 1, 1, 1), widths=(16, 16, 32, 32), embed_dim=32)


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))


class Subsample(nn.Module):
    """The file's ``MaxPool2d(1, stride)`` shortcut: keep every ``stride``-th pixel (no parameters)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSEBackbone(nn.Module):
    """ArcFace IR-SE backbone for 112x112 faces; returns L2-normalised embeddings ``[B, embed_dim]``."""

    def __init__(self, config: IRSEConfig = IRSE50):
        super().__init__()
        self.config = config
        stem = config.widths[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        units, in_channels = [], stem
        for count, depth in zip(config.units, config.widths):
            for k in range(count):
                units.append(BottleneckIRSE(in_channels, depth, 2 if k == 0 else 1, config.se_reduction))
                in_channels = depth
        self.body = nn.Sequential(*units)
        side = FACE_INPUT_SIZE // 2 ** len(config.units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(in_channels), nn.Dropout(config.dropout), Flatten(),
                                          nn.Linear(in_channels * side * side, config.embed_dim),
                                          nn.BatchNorm1d(config.embed_dim))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(faces))), dim=-1)


def load_id_model(path: str | os.PathLike, device: str | torch.device = "cpu",
                  config: IRSEConfig = IRSE50) -> IRSEBackbone:
    """Load ``model_ir_se50.pth`` (a plain state dict; read with ``weights_only=True``), frozen, in eval mode."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: identity model file not found (the ArcFace IR-SE50 'model_ir_se50.pth' "
                             "used by StyleCLIP; it is needed only when lambda_id > 0)")
    from ..errors import torch_message
    from ..safe_pickle import check_torch_file

    check_torch_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, or a pickle that needs code
        raise ModelFileError(f"{path}: not a readable weights-only torch file ({type(exc).__name__}: "
                             f"{torch_message(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected an IR-SE50 state dict (name -> tensor), got {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model = IRSEBackbone(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("wrong shape", wrong)) if keys)
        raise ModelFileError(f"{path}: not an ArcFace IR-SE50 ('model_ir_se50.pth') state dict ({details})")
    model.load_state_dict(state)
    from ..limits import check_finite_weights

    check_finite_weights(model, str(path), "identity model")
    return model.to(device).eval().requires_grad_(False)


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's face crop: pool to 256, keep [35:223, 32:220], pool to 112x112."""
    if images.shape[-1] != FACE_POOL_SIZE or images.shape[-2] != FACE_POOL_SIZE:
        images = F.adaptive_avg_pool2d(images, FACE_POOL_SIZE)
    crop = images[:, :, FACE_CROP_ROWS[0]:FACE_CROP_ROWS[1], FACE_CROP_COLS[0]:FACE_CROP_COLS[1]]
    return F.adaptive_avg_pool2d(crop, FACE_INPUT_SIZE)


def identity_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Unit ArcFace features ``[B, E]`` of generator images (differentiable in the images)."""
    return model(face_crop(images))


def identity_loss(model: nn.Module, edited_images: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
    """``1 - <f(edited), f(source)>`` per sample ``[B]``; ``source_features`` is a constant."""
    return 1 - (identity_features(model, edited_images) * source_features.detach()).sum(dim=-1)
