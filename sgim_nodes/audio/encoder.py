"""The paper's audio encoder: a 3x3 conv stem feeding a timm ResNet, mapping spectrogram images to CLIP space.

Architecture of the released code (``soundclip/models.py``): ``conv`` = Conv2d(1, 3, 3x3, no padding, bias)
then ``feature_extractor`` = ``timm.create_model(backbone, num_classes=embed_dim)``; input [B, 1, 128, 512],
output [B, embed_dim], not normalised.

Files:

* the official ``.pth`` (``resnet18_57.pth``): a plain state dict, possibly saved from ``DataParallel``
  (keys prefixed ``module.``). Read with ``torch.load(weights_only=True)``; the backbone is inferred from
  the keys. The official loader's ``copyStateDict`` rule is reproduced (see :func:`_strip_module_prefix`).
* our ``.safetensors`` (``sgim_kind = "audio_encoder"``), whose config records the backbone, embedding
  size, the preprocessing settings and the CLIP model the encoder was aligned to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AudioError, ModelFileError, ParameterError
from ..fileio import load_model_file, read_safetensors_metadata, save_model_file
from ..limits import check_finite_weights
from .features import PAPER_SETTINGS, FeatureSettings, check_sample_rate, count_windows, iter_windows

KIND = "audio_encoder"

# timm ResNet block counts per stage -> model name (basic blocks have no conv3, bottlenecks do).
_RESNETS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
BACKBONES = tuple(name for name in _RESNETS.values())


class AudioEncoder(nn.Module):
    """Official layout (state-dict keys ``conv.*`` and ``feature_extractor.*``) plus a ``config`` dict."""

    def __init__(self, backbone: str = "resnet18", embed_dim: int = 512, clip_model: str | None = None,
                 settings: FeatureSettings = PAPER_SETTINGS):
        super().__init__()
        import timm

        if backbone not in BACKBONES:
            raise ParameterError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
        from ..limits import MAX_EMBED_DIM, check_int

        embed_dim = check_int("embed_dim", embed_dim, 1, MAX_EMBED_DIM, "an embedding width")
        self.conv = nn.Conv2d(1, 3, kernel_size=3)
        self.feature_extractor = timm.create_model(backbone, pretrained=False, num_classes=int(embed_dim))
        self.config: dict[str, Any] = {"backbone": backbone, "embed_dim": int(embed_dim), "clip_model": clip_model,
                                       "preprocessing": settings.to_dict()}

    @property
    def settings(self) -> FeatureSettings:
        return FeatureSettings.from_dict(self.config["preprocessing"])

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def device(self) -> torch.device:
        return self.conv.weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(self.conv(x))


def build_audio_encoder(backbone: str = "resnet18", embed_dim: int = 512, clip_model: str | None = None,
                        settings: FeatureSettings = PAPER_SETTINGS, device: str | torch.device = "cpu") -> AudioEncoder:
    """A randomly initialised encoder (for training), in train mode, usable for autograd even when called
    inside ``torch.inference_mode()``."""
    from ..device import resolve_device

    with torch.inference_mode(False):
        return AudioEncoder(backbone, embed_dim, clip_model, settings).to(resolve_device(device))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ``copyStateDict``: if the FIRST key starts with ``module``, drop the first dot-separated
    component of every key (one level); otherwise keep the keys. Order is kept."""
    keys = list(state)
    if not keys or not keys[0].startswith("module"):
        return dict(state)
    return {".".join(k.split(".")[1:]): v for k, v in state.items()}


def infer_backbone(state: dict[str, torch.Tensor], source: str = "state dict") -> tuple[str, int]:
    """(timm backbone name, embedding size) of an official-layout state dict."""
    prefix = "feature_extractor."
    if "conv.weight" not in state or prefix + "fc.weight" not in state:
        found = ", ".join(list(state)[:4]) or "no keys"
        raise ModelFileError(f"{source}: not a SoundCLIP audio encoder (expected keys 'conv.weight' and "
                             f"'feature_extractor.fc.weight'; found {found}, ...)")
    if tuple(state["conv.weight"].shape) != (3, 1, 3, 3):
        raise ModelFileError(f"{source}: 'conv.weight' has shape {list(state['conv.weight'].shape)}, "
                             "expected [3, 1, 3, 3] (the official 3x3 stem)")
    counts = []
    for stage in range(1, 5):
        blocks = {k.split(".")[2] for k in state if k.startswith(f"{prefix}layer{stage}.")}
        counts.append(len(blocks))
    block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state else "basic"
    backbone = _RESNETS.get((block, tuple(counts)))
    if backbone is None:
        raise ModelFileError(f"{source}: unsupported ResNet layout ({block} blocks {counts}); "
                             f"supported backbones: {', '.join(BACKBONES)}")
    return backbone, int(state[prefix + "fc.weight"].shape[0])


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    from ..errors import torch_message
    from ..safe_pickle import check_torch_file

    check_torch_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign pickles, RuntimeError for zip garbage, ...
        raise ModelFileError(f"{path}: not a readable PyTorch checkpoint of plain tensors "
                             f"({type(exc).__name__}: {torch_message(exc)})") from None
    from ..limits import check_file_claims

    check_file_claims(path, obj)  # views claim no more than the file stores, before any is materialised
    for wrapper in ("state_dict", "model", "audio_encoder"):  # training scripts often nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = f"keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(f"{path}: not a SoundCLIP audio encoder (expected a state dict of tensors as in the "
                             f"official .pth; found {found})")
    return _strip_module_prefix(obj)


def _build_loaded(state: dict[str, torch.Tensor], config: dict[str, Any], source: str,
                  device: torch.device) -> AudioEncoder:
    with torch.inference_mode(False), torch.no_grad():
        try:  # the config may come from a file's metadata: checked (types, ranges) before anything is built
            if not isinstance(config.get("preprocessing") or {}, dict):
                raise ParameterError("preprocessing: expected a JSON object of settings")
            encoder = AudioEncoder(config["backbone"], config["embed_dim"], config.get("clip_model"),
                                   FeatureSettings.from_dict(config.get("preprocessing")))
        except (ParameterError, TypeError) as exc:
            raise ModelFileError(f"{source}: the audio encoder config is invalid ({exc})") from None
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{source}: weights do not fit a {config['backbone']} audio encoder "
                                 f"({str(exc).splitlines()[0]} ...)") from None
        check_finite_weights(encoder, source, "audio encoder")
        encoder.requires_grad_(False)
        return encoder.to(device).eval()


def load_audio_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> AudioEncoder:
    """Load an official ``.pth`` or one of our ``.safetensors`` encoder files, in eval mode with frozen weights."""
    from ..device import resolve_device

    path = Path(path)
    device = resolve_device(device)
    if not path.is_file():
        raise ModelFileError(f"{path}: audio encoder file not found")
    if path.suffix.lower() == ".safetensors":
        if read_safetensors_metadata(path).get("sgim_kind") is None:  # a bare state dict saved as safetensors
            from safetensors.torch import load_file

            state = _strip_module_prefix(load_file(str(path)))
            backbone, embed_dim = infer_backbone(state, str(path))
            return _build_loaded(state, {"backbone": backbone, "embed_dim": embed_dim}, str(path), device)
        state, config, _ = load_model_file(path, KIND)
        for key in ("backbone", "embed_dim"):
            if key not in config:
                raise ModelFileError(f"{path}: the encoder config lacks '{key}'")
        return _build_loaded(state, config, str(path), device)
    state = _read_official(path)
    backbone, embed_dim = infer_backbone(state, str(path))
    return _build_loaded(state, {"backbone": backbone, "embed_dim": embed_dim, "clip_model": None}, str(path), device)


def save_audio_encoder(encoder: AudioEncoder, path: str | os.PathLike, clip_model: str | None = None) -> None:
    """Write ``encoder`` as our ``.safetensors`` (atomic); ``clip_model`` overrides the recorded CLIP name."""
    config = dict(encoder.config)
    if clip_model is not None:
        config["clip_model"] = clip_model
    save_model_file(path, dict(encoder.state_dict()), KIND, config)


# ----------------------------------------------------------------------------------------------
# Embedding audio
# ----------------------------------------------------------------------------------------------

def _as_batch(waveform: torch.Tensor) -> torch.Tensor:
    if not isinstance(waveform, torch.Tensor):
        raise ParameterError(f"waveform: expected a torch tensor, got {type(waveform).__name__}", parameter="waveform")
    if waveform.dim() == 1:
        return waveform[None, None]
    if waveform.dim() == 2:
        return waveform[None]
    if waveform.dim() == 3:
        return waveform
    raise ParameterError(f"waveform: expected [channels, samples] or [batch, channels, samples], "
                         f"got shape {list(waveform.shape)}", parameter="waveform")


def _check_samples(batch: torch.Tensor) -> None:
    """Finite samples within ``MAX_AUDIO_ABS``: larger values overflow the power spectrogram to NaN."""
    from ..limits import MAX_AUDIO_ABS

    if not batch.is_floating_point():
        raise AudioError(f"waveform: expected float samples, got {batch.dtype}", parameter="waveform")
    if not bool(torch.isfinite(batch).all()):
        raise AudioError("waveform: the audio contains NaN or infinite samples", parameter="waveform")
    peak = float(batch.abs().max())
    if peak > MAX_AUDIO_ABS:
        raise AudioError(f"waveform: samples reach {peak:.3g}; audio is expected within about +-1 (at most "
                         f"+-{MAX_AUDIO_ABS:g}): rescale it (e.g. divide by its peak)", parameter="waveform")


def _seconds_to_samples(value: float | None, sample_rate: int, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        raise ParameterError(f"{name}: expected a non-negative, finite number of seconds, got {value!r}",
                             parameter=name)
    return int(round(value * sample_rate))


def embed_audio(encoder: AudioEncoder, waveform: torch.Tensor, sample_rate: int, *,
                window_seconds: float | None = None, hop_seconds: float | None = None, pool: str = "mean",
                start_seconds: float | None = None, end_seconds: float | None = None,
                batch_size: int = 8) -> torch.Tensor:
    """L2-normalised CLIP-space embeddings of ``[C, T]`` or ``[B, C, T]`` audio.

    Each clip is cut into windows of the model length (``settings.frames`` spectrogram frames, about
    10 s) every ``hop_seconds`` (default: the window length, no overlap); a clip shorter than a window
    is zero-padded after its end, as the official inference code does. ``pool="mean"`` returns one
    embedding per clip, ``[B, D]`` (the mean of the normalised window embeddings, renormalised);
    ``pool="none"`` returns ``[B, W, D]``, one per window (W is the same for every clip of a batch);
    ``pool="first"`` returns ``[B, D]`` from the first window only (the paper's inference, cheapest).
    ``start_seconds``/``end_seconds`` select a part of the clip first. ``window_seconds`` may only be
    None or the model's window length (the network and its preprocessing fix it).
    """
    settings = encoder.settings
    sample_rate = check_sample_rate(sample_rate)
    if pool not in ("mean", "none", "first"):
        raise ParameterError(f"pool: expected 'mean', 'none' or 'first', got {pool!r}", parameter="pool")
    if window_seconds is not None and abs(window_seconds - settings.window_seconds) > 1e-3:
        raise ParameterError(f"window_seconds: this encoder's window is fixed at {settings.window_seconds:.3f} s "
                             f"({settings.frames} frames); got {window_seconds}", parameter="window_seconds")
    hop_frames = None
    if hop_seconds is not None:
        if isinstance(hop_seconds, bool) or not isinstance(hop_seconds, (int, float)) or not 0 < hop_seconds < 1e9:
            raise ParameterError(f"hop_seconds: expected a positive, finite number of seconds, got {hop_seconds!r}",
                                 parameter="hop_seconds")
        hop_frames = max(1, int(round(hop_seconds * settings.sample_rate / settings.hop_length)))
    batch = _as_batch(waveform)
    if batch.numel() == 0:
        raise AudioError(f"waveform: the audio is empty (shape {list(waveform.shape)}); need at least one sample",
                         parameter="waveform")
    _check_samples(batch)
    start = _seconds_to_samples(start_seconds, sample_rate, "start_seconds") or 0
    end = _seconds_to_samples(end_seconds, sample_rate, "end_seconds")
    end = batch.shape[-1] if end is None else min(end, batch.shape[-1])
    if end <= start:
        raise ParameterError(f"start_seconds/end_seconds: the selection [{start_seconds}, {end_seconds}] s is "
                             f"empty for audio of {batch.shape[-1] / sample_rate:.3f} s", parameter="end_seconds")
    batch = batch[..., start:end]
    device = encoder.device
    results = []
    with torch.inference_mode():
        for clip in batch:
            windows = iter_windows(clip, sample_rate, settings, hop_frames=hop_frames,
                                   batch_size=1 if pool == "first" else batch_size)
            if pool == "first":  # the paper's inference: only the window at offset 0, nothing else computed
                windows = [next(windows)]
            per_window = [encoder(inputs.to(device)).float() for inputs in windows]
            results.append(torch.nn.functional.normalize(torch.cat(per_window), dim=-1))
        embeddings = torch.stack(results)  # [B, W, D]
        if not bool(torch.isfinite(embeddings).all()):
            raise AudioError(f"audio encoder {encoder.config.get('backbone')!r}: the embedding came out NaN or "
                             "infinite although the audio is finite; the encoder's weights overflow (a damaged or "
                             "wrongly scaled encoder file)", parameter="audio_encoder")
        if pool == "mean":
            embeddings = torch.nn.functional.normalize(embeddings.mean(dim=1), dim=-1)
        elif pool == "first":
            embeddings = embeddings[:, 0]
    with torch.inference_mode(False):  # a normal tensor even when called inside inference mode, so that an
        return embeddings.clone()       # optimiser can use it as a constant target under autograd


def windows_for(encoder: AudioEncoder, num_samples: int, sample_rate: int, hop_seconds: float | None = None) -> int:
    """How many windows :func:`embed_audio` uses for a clip of ``num_samples``."""
    settings = encoder.settings
    hop_frames = None if hop_seconds is None else max(1, int(round(hop_seconds * settings.sample_rate /
                                                                     settings.hop_length)))
    return count_windows(num_samples, sample_rate, settings, hop_frames)


def check_compatible(encoder: AudioEncoder, clip: Any) -> None:
    """ParameterError if the encoder's embedding size differs from the CLIP model's (or it was aligned to
    another CLIP model whose name is known to differ in width)."""
    clip_dim = int(getattr(clip, "embed_dim", -1))
    if encoder.embed_dim != clip_dim:
        aligned = encoder.config.get("clip_model")
        raise ParameterError(
            f"audio encoder and CLIP model do not match: the encoder outputs {encoder.embed_dim}-d embeddings"
            f"{f' (aligned to {aligned})' if aligned else ''} but the CLIP model "
            f"{getattr(clip, 'name', '?')} has {clip_dim}-d embeddings; load the CLIP model the encoder was trained with",
            parameter="clip")
