"""A StyleGAN2 generator (skip architecture) in plain PyTorch.

One implementation for every checkpoint format: rosinality ``.pt`` files and NVlabs
stylegan2-ada-pytorch pickles compute the same function and are mapped onto this module by
:mod:`.loaders`.

Design choices (this network is only ever *used*, never trained):

- **Gains folded into the weights.** Both originals store "equalised learning rate" weights and
  multiply them by ``lr_mul / sqrt(fan_in)`` on every call. We store the effective values (the
  products) once, at load time, so a forward pass does no per-layer rescaling copies. The raw
  layout is recovered by :func:`.loaders.rosinality_checkpoint`.
- **Modulated convolution, two interchangeable forms.** ``modulation="activation"`` (default)
  scales the input by the style, runs one ordinary convolution for the whole batch with the fixed
  weight and scales the output by the demodulation factors; its hand-written backward
  (:class:`_ActivationModulatedConv`) keeps only each layer's input and output and computes no
  weight gradient. ``modulation="weight"`` is the classic per-sample weight with a grouped
  convolution, differentiated by autograd (use it to train). Same function.
  ToRGB (1x1, 3 outputs) always modulates its tiny weight: that is the cheaper form there.
- **The last block in strips under autograd** (``SynthesisNetwork.last_block_strips``, 64-row
  strips from 512 px up): it holds the largest activations, so it is recomputed strip by strip in backward
  instead of being kept (one more forward of that block; same function and gradient).
- **Upsampling as in the originals:** a stride-2 transposed convolution followed by the
  ``[1,3,3,1]`` FIR (gain 4); the RGB skip path upsamples with the same FIR.
- ``channels_last=True`` runs NHWC (see :meth:`SynthesisNetwork.set_channels_last`).
- Parameters are frozen (``requires_grad=False``); gradients still flow to the ``ws`` input.
- Works when called under ``torch.inference_mode()``; device/dtype moves (``.to``) always make
  ordinary tensors, so a generator loaded inside inference mode can later be differentiated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import ParameterError

NOISE_MODES = ("const", "random", "none")
MODULATION_MODES = ("activation", "weight")
LABEL_MODES = ("embed", "concat")
SQRT2 = math.sqrt(2.0)


def standard_channels(resolution: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """The official StyleGAN2 channel table (rosinality ``channel_multiplier`` = NVlabs ``channel_base/res``)."""
    base = 16384 * channel_multiplier
    out, res = {}, 4
    while res <= resolution:
        out[res] = min(base // res, channel_max)
        res *= 2
    return out


@dataclass
class GeneratorConfig:
    """Everything needed to build a :class:`Generator`; round-trips through JSON (``to_dict``/``from_dict``)."""

    resolution: int
    z_dim: int = 512
    w_dim: int = 512
    n_mapping: int = 8
    mapping_lr_mul: float = 0.01
    mapping_hidden: int | None = None  # width of the inner mapping layers; None = w_dim
    channels: dict[int, int] = field(default_factory=dict)  # resolution -> feature channels
    conv_clamp: float | None = None  # NVlabs clamps activations and ToRGB outputs to +-conv_clamp
    blur_kernel: list[int] = field(default_factory=lambda: [1, 3, 3, 1])
    img_channels: int = 3
    c_dim: int = 0  # number of class labels; 0 = unconditional
    label_mode: str | None = None  # conditional only: "embed" (NVlabs / ADA) or "concat" (original TF LabelConcat)
    label_features: int | None = None  # width of the label embedding; None = w_dim ("embed") or z_dim ("concat")
    source_format: str = "random"

    def __post_init__(self) -> None:
        from ..limits import MAX_BLUR_TAPS, MAX_CHANNELS, MAX_MAPPING_LAYERS, MAX_RESOLUTION, check_float, check_int

        # Types and ranges before anything is derived from them: a config may come from a file's metadata.
        self.resolution = check_int("resolution", self.resolution, 4, MAX_RESOLUTION, "a power of two")
        if self.resolution & (self.resolution - 1):
            raise ParameterError(f"resolution: expected a power of two >= 4, got {self.resolution}",
                                 parameter="resolution")
        for name in ("z_dim", "w_dim"):
            setattr(self, name, check_int(name, getattr(self, name), 1, MAX_CHANNELS))
        self.n_mapping = check_int("n_mapping", self.n_mapping, 1, MAX_MAPPING_LAYERS, "a number of mapping layers")
        self.mapping_lr_mul = check_float("mapping_lr_mul", self.mapping_lr_mul, 0.0, 1e3, exclusive_minimum=True)
        if self.mapping_hidden is not None:
            self.mapping_hidden = check_int("mapping_hidden", self.mapping_hidden, 1, MAX_CHANNELS)
        if self.conv_clamp is not None:
            self.conv_clamp = check_float("conv_clamp", self.conv_clamp, 0.0, 1e9, exclusive_minimum=True,
                                          what="null or a positive number")
        self.img_channels = check_int("img_channels", self.img_channels, 1, 4)
        if not isinstance(self.channels, dict):
            raise ParameterError(f"channels: expected a mapping resolution -> channels, got {self.channels!r}",
                                 parameter="channels")
        if not isinstance(self.blur_kernel, (list, tuple)) or not 2 <= len(self.blur_kernel) <= MAX_BLUR_TAPS \
                or len(self.blur_kernel) % 2:
            raise ParameterError(f"blur_kernel: expected an even number (2 to {MAX_BLUR_TAPS}) of taps, "
                                 f"got {self.blur_kernel!r}", parameter="blur_kernel")
        self.blur_kernel = [check_int("blur_kernel", t, 0, 1_000_000, "non-negative integer taps")
                            for t in self.blur_kernel]
        if sum(self.blur_kernel) == 0:
            raise ParameterError(f"blur_kernel: the taps {self.blur_kernel} sum to 0 (the filter would divide by "
                                 "zero)", parameter="blur_kernel")
        self.channels = {check_int("channels", k, 4, MAX_RESOLUTION, "resolutions"):
                         check_int("channels", v, 1, MAX_CHANNELS, "channel counts") for k, v in
                         ((int(k) if isinstance(k, str) and k.isascii() and k.isdigit() and len(k) < 8 else k, v)
                          for k, v in self.channels.items())}
        if not isinstance(self.source_format, str):
            raise ParameterError(f"source_format: expected a string, got {self.source_format!r}",
                                 parameter="source_format")
        if self.mapping_hidden == self.w_dim or self.n_mapping == 1:
            self.mapping_hidden = None  # one spelling for the default, so configs compare equal
        if not self.channels:
            self.channels = standard_channels(self.resolution)
        missing = [r for r in self.block_resolutions if r not in self.channels]
        if missing:
            raise ParameterError(f"channels: no channel count for resolutions {missing}", parameter="channels")
        self._normalise_labels()

    def _normalise_labels(self) -> None:
        """One spelling per label setup, so configs compare equal: unconditional has no mode or width, a
        conditional one defaults to "embed", and a width equal to its mode's default is None."""
        from ..limits import MAX_CLASSES, check_int

        self.c_dim = check_int("c_dim", self.c_dim, 0, MAX_CLASSES, "0 (unconditional) or a number of classes")
        if self.c_dim == 0:
            self.label_mode = self.label_features = None
            return
        self.label_mode = self.label_mode or "embed"
        if self.label_mode not in LABEL_MODES:
            raise ParameterError(f"label_mode: expected one of {LABEL_MODES}, got {self.label_mode!r}")
        default_width = self.w_dim if self.label_mode == "embed" else self.z_dim
        if self.label_mode == "concat" and self.label_features not in (None, self.z_dim):
            raise ParameterError(f"label_features: the 'concat' label mode projects labels to z_dim "
                                 f"({self.z_dim}), got {self.label_features}")
        if self.label_features == default_width:
            self.label_features = None

    @property
    def label_width(self) -> int:
        """Width of the projected labels that join z at the mapping input (0 when unconditional)."""
        if not self.c_dim:
            return 0
        return self.label_features or (self.w_dim if self.label_mode == "embed" else self.z_dim)

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 2

    @classmethod
    def stylegan2(cls, resolution: int = 1024, z_dim: int = 512, w_dim: int = 512, n_mapping: int = 8,
                  channel_multiplier: int = 2, channel_max: int = 512, **kwargs: Any) -> "GeneratorConfig":
        """The official configuration (e.g. FFHQ 1024: 18 W+ layers; LSUN 256: 14)."""
        return cls(resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mapping=n_mapping,
                   channels=standard_channels(resolution, channel_multiplier, channel_max), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = {str(k): v for k, v in self.channels.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        known = set(cls.__dataclass_fields__)
        if not isinstance(data, dict):
            raise ParameterError(f"generator config: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"generator config: unknown keys {sorted(map(str, unknown))}")
        if "resolution" not in data:
            raise ParameterError("generator config: 'resolution' is missing", parameter="resolution")
        return cls(**data)


def _blur_kernel(taps: list[int], gain: float) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def _leaky_relu_gain(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """lrelu(x, 0.2) * sqrt(2), then the NVlabs clamp; the caller already multiplied x by sqrt(2)
    (lrelu is positively homogeneous), which saves one full-size pass."""
    x = F.leaky_relu(x, 0.2, inplace=True)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """(z, class labels) -> w: pixel norm, then ``n_mapping`` (linear + bias -> lrelu*sqrt2) layers.

    Conditional generators (``c_dim`` > 0) project the label vector c [B, c_dim] and join it to z,
    in one of two ways (the trained weights only fit the way they were trained with):

    - ``"embed"`` (NVlabs PyTorch code, StyleGAN2-ADA TF ``LabelEmbed``): y = c·Eᵀ + e; z and y are
      pixel-normed separately; the first layer reads [z, y].
    - ``"concat"`` (original TF StyleGAN2 ``LabelConcat``): y = c·L (no bias, no gain); the first
      layer reads pixel_norm([z, y]) over all values together.

    Reads ``c_dim``/``label_mode``/``label_features`` from ``config`` when present (other families'
    configs may lack them: unconditional).
    """

    def __init__(self, config):
        super().__init__()
        self.c_dim = int(getattr(config, "c_dim", 0) or 0)
        self.label_mode = getattr(config, "label_mode", None) if self.c_dim else None
        label_width = 0
        if self.c_dim:
            label_width = getattr(config, "label_features", None) or (
                config.w_dim if self.label_mode == "embed" else config.z_dim)
            # Effective weight [label_width, c_dim] (the original's 1/sqrt(c_dim) gain folded in for "embed";
            # "concat" uses its raw matrix); bias only in "embed" mode.
            self.label_weight = nn.Parameter(torch.randn(label_width, self.c_dim) / math.sqrt(self.c_dim))
            if self.label_mode == "embed":
                self.label_bias = nn.Parameter(torch.zeros(label_width))
        hidden = config.mapping_hidden or config.w_dim
        dims = [config.z_dim + label_width] + [hidden] * (config.n_mapping - 1) + [config.w_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            # Original init: raw N(0,1)/lr_mul scaled at run time by lr_mul/sqrt(fan_in); bias 0.
            self.weights.append(nn.Parameter(torch.randn(fan_out, fan_in) / math.sqrt(fan_in)))
            self.biases.append(nn.Parameter(torch.zeros(fan_out)))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if not self.c_dim:
            x = _pixel_norm(z)
        elif self.label_mode == "embed":
            y = torch.addmm(self.label_bias, c, self.label_weight.t())
            x = torch.cat([_pixel_norm(z), _pixel_norm(y)], dim=1)
        else:
            x = _pixel_norm(torch.cat([z, c @ self.label_weight.t()], dim=1))
        for weight, bias in zip(self.weights, self.biases):
            x = F.leaky_relu(torch.addmm(bias, x, weight.t()), 0.2) * SQRT2
        return x


def check_class_labels(generator, c: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """The class labels ``c`` a generator's mapping reads, checked against its ``c_dim`` (every family):
    [batch, c_dim] on its device and dtype (a batch of 1 broadcast), or None for an unconditional one."""
    c_dim = generator.c_dim
    if not c_dim:
        if c is not None and c.numel() > 0:
            raise ParameterError(f"c: generator '{generator.name}' is unconditional (c_dim 0); it takes no class "
                                 "labels", parameter="c")
        return None
    if c is None:
        raise ParameterError(f"c: generator '{generator.name}' is conditional ({c_dim} classes); give class "
                             f"labels [batch, {c_dim}] (one-hot or soft)", parameter="c")
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != c_dim or c.shape[0] not in (1, batch):
        shape = list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise ParameterError(f"c: expected class labels of shape [{batch}, {c_dim}] (or [1, {c_dim}]) "
                             f"for generator '{generator.name}', got {shape}", parameter="c")
    if not torch.isfinite(c).all():
        raise ParameterError("c: class labels contain NaN or infinite values", parameter="c")
    return c.to(generator.device, generator.dtype).expand(batch, -1)


@torch.no_grad()
def mean_mapping_output(generator, n_samples: int, seed: int, batch_size: int) -> torch.Tensor:
    """Mean of ``generator.mapping_network`` over ``n_samples`` z ~ N(0,1) drawn on CPU from ``seed`` (what
    rosinality's ``mean_latent`` does); the w_avg of a file that carries none (every family). Conditional
    generators: each z gets a uniformly random one-hot class from the same seed (as the originals'
    training-time average sees the classes of the data set)."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(generator.w_dim, dtype=torch.float64)
    device, dtype = generator.device, generator.dtype
    for start in range(0, n_samples, batch_size):
        count = min(batch_size, n_samples - start)
        z = torch.randn(count, generator.z_dim, generator=gen)
        c = None
        if generator.c_dim:
            c = F.one_hot(torch.randint(generator.c_dim, (count,), generator=gen), generator.c_dim).float()
            c = c.to(device, dtype)
        total += generator.mapping_network(z.to(device, dtype), c).double().sum(0).cpu()
    return (total / n_samples).float()


class ModulatedConv(nn.Module):
    """A 3x3 demodulated style convolution (optionally upsampling 2x) + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, upsample: bool,
                 blur_kernel: list[int], conv_clamp: float | None, modulation: str):
        super().__init__()
        self.upsample = upsample
        self.conv_clamp = conv_clamp
        self.modulation = modulation
        self.affine_weight = nn.Parameter(torch.randn(in_channels, w_dim) / math.sqrt(w_dim))
        self.affine_bias = nn.Parameter(torch.ones(in_channels))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3) / math.sqrt(in_channels * 9))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if upsample:  # FIR after the transposed conv; gain 4 keeps the signal level after zero insertion
            blur = _blur_kernel(blur_kernel, gain=4.0)
            self.register_buffer("blur", blur.expand(out_channels, 1, *blur.shape).clone(), persistent=False)
            self.blur_pad = (blur.shape[0] - 2) // 2  # as in both originals; [1,3,3,1] -> 1

    def affine(self, w: torch.Tensor) -> torch.Tensor:
        """This layer's style vector s = A w + b, [B, in_channels] (its StyleSpace coordinates)."""
        return torch.addmm(self.affine_bias, w, self.affine_weight.t())

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, noise: torch.Tensor | None,
                owns_output_grad: bool = False, styles: torch.Tensor | None = None) -> torch.Tensor:
        """From the W+ row ``w`` [B, w_dim], or from the given ``styles`` (then ``w`` is unused)."""
        return self.modulated(x, self.affine(w) if styles is None else styles, noise, owns_output_grad)

    def modulated(self, x: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None,
                  owns_output_grad: bool = False) -> torch.Tensor:
        """The layer from its style vector ``styles`` [B, in_channels] (see :meth:`affine`).

        ``owns_output_grad``: the caller guarantees that the gradient arriving at the output is read by
        this layer only (true inside :class:`SynthesisNetwork`), so the activation form's backward may
        overwrite it instead of allocating another full-size buffer."""
        noise_term = None if noise is None else noise * (self.noise_strength * SQRT2)
        if self.modulation == "activation":
            if torch.is_grad_enabled() and any(p.requires_grad for p in (self.weight, self.bias, self.noise_strength)):
                raise ParameterError("modulation='activation' differentiates only with respect to ws and the "
                                     "input (the generator is frozen); use modulation='weight' for weight gradients")
            # Demodulation factors without building per-sample weights: sum_{i,k} (W[o,i,k] s[i])^2,
            # in float32 (squared styles can overflow float16) and without a matmul, which autocast
            # would run in half precision again. The [B, O, I] temporary is small.
            precise = torch.promote_types(x.dtype, torch.float32)
            weight_sq = self.weight.to(precise).square().sum(dim=(2, 3))  # [O, I]
            demod = (styles.to(precise).square()[:, None, :] * weight_sq).sum(dim=2)
            scale = (torch.rsqrt(demod + 1e-8) * SQRT2).to(x.dtype)  # [B, O]
            blur = self.blur if self.upsample else None
            return _ActivationModulatedConv.apply(x, styles, scale, self.weight, blur, self.bias * SQRT2, noise_term,
                                                  self.blur_pad if self.upsample else 0, self.conv_clamp,
                                                  owns_output_grad)
        batch, in_ch, height, width = x.shape
        weight = self.weight[None] * styles[:, None, :, None, None]  # [B, O, I, 3, 3]
        precise = torch.promote_types(x.dtype, torch.float32)
        demod = torch.rsqrt(weight.to(precise).square().sum(dim=(2, 3, 4)) + 1e-8)  # [B, O], >= float32 as above
        weight = weight * demod.to(weight.dtype)[:, :, None, None, None]
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, -1, 3, 3)
            x = F.conv_transpose2d(x, weight, stride=2, groups=batch)
        else:
            x = F.conv2d(x, weight.reshape(-1, in_ch, 3, 3), padding=1, groups=batch)
        x = x.reshape(batch, -1, *x.shape[2:])
        if self.upsample:
            x = F.conv2d(x, self.blur, padding=self.blur_pad, groups=x.shape[1])
        # Epilogue in as few full-size passes as possible: (x + bias)*sqrt2 + noise*strength*sqrt2.
        x = torch.add((self.bias * SQRT2)[None, :, None, None], x, alpha=SQRT2)
        if noise_term is not None:
            x = x.add_(noise_term)
        return _leaky_relu_gain(x, self.conv_clamp)


def _spatial_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over H, W of a * b, per (batch, channel): [B, C, H, W] x 2 -> [B, C], without a full-size temporary."""
    batch, channels = a.shape[:2]
    if a.dtype != b.dtype:  # under autocast a layer's input and its output gradient can differ
        common = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(common), b.to(common)
    if a.is_contiguous() and b.is_contiguous():
        return torch.bmm(a.view(batch * channels, 1, -1), b.view(batch * channels, -1, 1)).view(batch, channels)
    return (a * b).sum(dim=(2, 3))


class _ActivationModulatedConv(torch.autograd.Function):
    """The activation form of a modulated conv layer, with a hand-written backward.

    Forward: ``y = lrelu(scale * conv(x * styles) + bias + noise)`` (``conv`` is the 3x3 conv, or the
    stride-2 transposed conv followed by the FIR for up-layers; ``scale`` = demodulation * sqrt2,
    ``bias`` and ``noise`` already carry the sqrt2 gain, lrelu slope 0.2, then the optional clamp).
    Autograd would keep about six full-size tensors per layer for backward (the scaled input, the
    conv and FIR outputs, the epilogue's inputs...); at 1024 px that is ~1.8 GB. This backward keeps
    only ``x`` and ``y``, which are the previous and this layer's outputs and live anyway, and
    recovers what it needs from them:

    * lrelu is invertible and sign-preserving, so its derivative is read off ``y``, and
      ``grad_pre * pre == grad_y * y`` element-wise (pre = the lrelu input);
    * hence ``d/dscale = sum_hw grad_pre * conv_out = (sum grad_y*y - bias*sum grad_pre - sum grad_pre*noise) / scale``;
    * the convolutions' input gradients are their adjoints (transposed conv <-> strided conv), so no
      weight gradient is ever computed (the network is frozen; ``ModulatedConv`` refuses otherwise).
    Checked against autograd of the same expression in float64 (tests/test_stylegan.py).
    """

    @staticmethod
    def forward(ctx, x, styles, scale, weight, blur, bias, noise, blur_pad: int, clamp: float | None,
                owns_output_grad: bool):
        out = x * styles[:, :, None, None]
        if blur is not None:
            out = F.conv_transpose2d(out, weight.transpose(0, 1), stride=2)
            out = F.conv2d(out, blur, padding=blur_pad, groups=out.shape[1])
        else:
            out = F.conv2d(out, weight, padding=1)
        out = out.mul_(scale[:, :, None, None]).add_(bias[None, :, None, None])
        if noise is not None:
            out = out.add_(noise)
        out = F.leaky_relu(out, 0.2, inplace=True)
        if clamp is not None:
            out = out.clamp_(-clamp, clamp)
        ctx.save_for_backward(x, styles, scale, weight, blur, bias, noise, out)
        ctx.blur_pad, ctx.clamp, ctx.owns_output_grad = blur_pad, clamp, owns_output_grad
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, styles, scale, weight, blur, bias, noise, y = ctx.saved_tensors
        layout = _memory_format(y)
        writable = ctx.owns_output_grad and grad_y.is_contiguous(memory_format=layout)
        grad_y = grad_y.contiguous(memory_format=layout)
        if ctx.clamp is not None:  # the clamp passes gradient only where it did not clip
            grad_y = grad_y.mul_(y.abs() < ctx.clamp) if writable else grad_y * (y.abs() < ctx.clamp)
            writable = True
        grad_y_dot_y = _spatial_dot(grad_y, y) if ctx.needs_input_grad[2] else None
        # lrelu's slope read off the output's sign; written over grad_y when nobody else reads it
        grad_pre = torch.ops.aten.leaky_relu_backward.grad_input(
            grad_y, y, 0.2, True, grad_input=grad_y if writable else torch.empty_like(grad_y))
        del grad_y
        # The noise is added before the lrelu: its gradient is grad_pre summed over the dims it was broadcast on.
        grad_noise = None
        if ctx.needs_input_grad[6]:
            grad_noise = grad_pre.sum(dim=(0, 1)) if noise.dim() == 2 else grad_pre.sum(dim=1, keepdim=True)
            grad_noise = grad_noise.to(noise.dtype)
        grad_scale = None
        if grad_y_dot_y is not None:
            numerator = grad_y_dot_y - bias * grad_pre.sum(dim=(2, 3))
            if noise is not None:
                numerator = numerator - (grad_pre * noise).sum(dim=(2, 3))
            grad_scale = (numerator / scale).to(scale.dtype)
        grad = grad_pre.mul_(scale[:, :, None, None])
        del grad_pre
        weight = weight.to(grad.dtype)
        if blur is not None:  # adjoints in reverse order: the FIR, then the stride-2 transposed conv
            grad = F.conv_transpose2d(grad, blur.to(grad.dtype), padding=ctx.blur_pad, groups=grad.shape[1])
            grad = F.conv2d(grad, weight.transpose(0, 1), stride=2)
        else:
            grad = F.conv_transpose2d(grad, weight, padding=1)
        grad_styles = _spatial_dot(grad, x).to(styles.dtype) if ctx.needs_input_grad[1] else None
        grad_x = grad.mul_(styles[:, :, None, None]) if ctx.needs_input_grad[0] else None
        return grad_x, grad_styles, grad_scale, None, None, None, grad_noise, None, None, None


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias; the skip image is added by the caller."""

    def __init__(self, in_channels: int, w_dim: int, img_channels: int, conv_clamp: float | None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine_weight = nn.Parameter(torch.randn(in_channels, w_dim) / math.sqrt(w_dim))
        self.affine_bias = nn.Parameter(torch.ones(in_channels))
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels) / math.sqrt(in_channels))
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def affine(self, w: torch.Tensor) -> torch.Tensor:
        """This layer's style vector s = A w + b, [B, in_channels]."""
        return torch.addmm(self.affine_bias, w, self.affine_weight.t())

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, styles: torch.Tensor | None = None) -> torch.Tensor:
        return self.modulated(x, self.affine(w) if styles is None else styles)

    def modulated(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        weight = self.weight[None] * styles[:, None, :]  # [B, 3, I]: tiny, so modulate the weight
        batch, in_ch, height, width = x.shape
        if x.is_contiguous():  # NCHW: [B, 3, I] @ [B, I, HW]
            out = torch.baddbmm(self.bias[None, :, None], weight, x.reshape(batch, in_ch, height * width))
            out = out.reshape(batch, -1, height, width)
        else:  # channels_last: [HW, I] @ [I, 3] per sample, no layout copy of x. (A bmm over the
            # batch is 2-3x slower in backward on CPU for this long-and-thin NHWC shape.)
            pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_ch)
            # unbind, not pixels[b]: its backward stacks the B gradients into one tensor, where indexing
            # would allocate a zero-filled full-size gradient per sample.
            out = torch.stack([torch.addmm(self.bias, rows, weight[b].t()) for b, rows in enumerate(pixels.unbind(0))])
            out = out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        if self.conv_clamp is not None:
            out = out.clamp(-self.conv_clamp, self.conv_clamp)
        return out


def _noise_rows(noise: torch.Tensor | None, top: int, bottom: int) -> torch.Tensor | None:
    """Rows [top, bottom) of a noise map: [H, W] (stored) or [B, 1, H, W] (random)."""
    if noise is None:
        return None
    return noise[top:bottom] if noise.dim() == 2 else noise[:, :, top:bottom]


class _StripwiseLastBlock(torch.autograd.Function):
    """The last synthesis block as one node: forward and backward strip by strip (see SynthesisNetwork)."""

    @staticmethod
    def forward(ctx, x, s_up, s_conv, s_rgb, network, noise_up, noise_conv):
        plan = network._strip_plan(x.shape[2])
        styles3 = (s_up, s_conv, s_rgb)
        rgb = torch.cat([network._last_block_rows(x[:, :, strip.first:strip.last], strip, styles3, noise_up,
                                                  noise_conv) for strip in plan], dim=2)
        ctx.save_for_backward(x, s_up, s_conv, s_rgb)
        ctx.network, ctx.noise, ctx.plan = network, (noise_up, noise_conv), plan
        device = x.device.type  # backward recomputes under the forward's autocast state
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        return rgb

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rgb):
        x, *styles3 = ctx.saved_tensors
        want_x = ctx.needs_input_grad[0]
        grad_x = torch.zeros_like(x) if want_x else None
        grad_styles = [torch.zeros_like(s) for s in styles3]
        device, dtype, enabled = ctx.autocast
        for strip in ctx.plan:  # recompute one strip with autograd, differentiate it, free it
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                slab = x[:, :, strip.first:strip.last].detach().requires_grad_(want_x)
                style_leaves = [s.detach().requires_grad_(True) for s in styles3]
                rgb = ctx.network._last_block_rows(slab, strip, style_leaves, *ctx.noise)
                grads = torch.autograd.grad(rgb, style_leaves + ([slab] if want_x else []),
                                            grad_rgb[:, :, strip.top:strip.bottom])
            for total, grad in zip(grad_styles, grads[:3]):
                total += grad
            if want_x:
                grad_x[:, :, strip.first:strip.last] += grads[3]
        return (grad_x, *grad_styles, None, None, None)


@dataclass(frozen=True)
class _Strip:
    """One strip of the last block: the RGB rows it produces, the rows of the up-conv output the 3x3
    conv reads for them (one-row halo), and the rows of the block input the up-conv reads."""

    top: int
    bottom: int
    conv_top: int
    conv_bottom: int
    first: int
    last: int


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image, skip architecture.

    Layer order (= W+ index): ``convs[0]`` is the 4 px conv (w0); for each resolution 8..R the
    up-conv and the second conv follow (w 2k+1, 2k+2). ``torgbs[k]`` (resolution 2^(k+2)) reads
    w[2k+1], the same row as the next up-conv.
    """

    def __init__(self, config: GeneratorConfig, modulation: str):
        super().__init__()
        res = config.block_resolutions
        ch = config.channels
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        convs = [ModulatedConv(ch[4], ch[4], config.w_dim, 4, False, config.blur_kernel, config.conv_clamp, modulation)]
        torgbs = [ToRGB(ch[4], config.w_dim, config.img_channels, config.conv_clamp)]
        for prev, cur in zip(res[:-1], res[1:]):
            convs.append(ModulatedConv(ch[prev], ch[cur], config.w_dim, cur, True, config.blur_kernel,
                                       config.conv_clamp, modulation))
            convs.append(ModulatedConv(ch[cur], ch[cur], config.w_dim, cur, False, config.blur_kernel,
                                       config.conv_clamp, modulation))
            torgbs.append(ToRGB(ch[cur], config.w_dim, config.img_channels, config.conv_clamp))
        self.convs = nn.ModuleList(convs)
        self.torgbs = nn.ModuleList(torgbs)
        self.channels_last = False
        # Strips of 64 rows (8 MB per image at 1024 px: measured, smaller strips lowered the peak down to
        # this size at no cost in speed); below 512 px the whole image is cheap.
        self.last_block_strips = config.resolution // 64 if config.resolution >= 512 else 1
        # Skip path: zero insertion + FIR(gain 4) with padding (2, 1) == transposed conv, stride 2, padding 1.
        skip = _blur_kernel(config.blur_kernel, gain=4.0)
        self.register_buffer("skip_kernel", skip.expand(config.img_channels, 1, *skip.shape).clone(),
                             persistent=False)
        self.skip_pad = (skip.shape[0] - 2) // 2

    def style_modules(self) -> list[tuple[str, nn.Module, int, str]]:
        """(name, layer, W+ row, kind) of every modulated layer in StyleSpace order, the order they run in:
        conv0, torgb0, then per resolution the up-conv, the second conv and its ToRGB. Conv ``i`` reads
        W+ row ``i``; ``torgbs[k]`` row ``2k + 1``."""
        out = []
        for index, conv in enumerate(self.convs):
            out.append((f"conv{index}", conv, index, "conv"))
            if index % 2 == 0:
                out.append((f"torgb{index // 2}", self.torgbs[index // 2], index + 1, "torgb"))
        return out

    def styles_from_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """The style vectors [B, channels] of every modulated layer (StyleSpace, :meth:`style_modules` order)."""
        return [layer.affine(ws[:, row]) for _, layer, row, _ in self.style_modules()]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                noise_generator: torch.Generator | None = None,
                noise_maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.forward_styles(self.styles_from_ws(ws), noise_mode, noise_generator, noise_maps)

    def forward_styles(self, styles: list[torch.Tensor], noise_mode: str = "const",
                       noise_generator: torch.Generator | None = None,
                       noise_maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The image from the style vectors (:meth:`styles_from_ws`); W+ rendering goes through here too."""
        batch = styles[0].shape[0]
        x = self.const[None].expand(batch, -1, -1, -1)
        if self.channels_last and self.convs[0].modulation == "activation":  # grouped convs are slower in NHWC
            x = x.contiguous(memory_format=torch.channels_last)
        img = None
        last_up = len(self.convs) - 2
        k = 0  # position in ``styles``
        for index, conv in enumerate(self.convs):
            noise = noise_maps[index] if noise_maps is not None else self._noise(conv, batch, noise_mode,
                                                                                 noise_generator)
            if index == last_up and self._use_strips(x, styles[k:k + 3], noise_maps):
                noise_last = noise_maps[-1] if noise_maps is not None else self._noise(
                    self.convs[-1], batch, noise_mode, noise_generator)
                rgb = _StripwiseLastBlock.apply(x, *styles[k:k + 3], self, noise, noise_last)
                img = rgb.add_(self._upsample_skip(img))
                break
            # Each conv output feeds only the next conv and a ToRGB, whose backward passes return fresh
            # gradients: the sum arriving at the conv is its own to overwrite.
            x = conv(x, None, noise, owns_output_grad=True, styles=styles[k])
            k += 1
            if index % 2 == 0:  # after the 4 px conv and after every second conv: ToRGB + skip
                rgb = self.torgbs[index // 2](x, None, styles=styles[k])
                k += 1
                if img is not None:
                    rgb = rgb.add_(self._upsample_skip(img))
                img = rgb
        return img.contiguous()

    def _upsample_skip(self, img: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(img, self.skip_kernel, stride=2, padding=self.skip_pad, groups=img.shape[1])

    # --- the last block in horizontal strips (memory) -------------------------------------------------
    # Under autograd the last block (up-conv, conv, ToRGB at full resolution) holds the largest tensors:
    # at 1024 px each of its activations is 128 MB per image, and its backward needs several at once.
    # With ``last_block_strips`` > 1 it runs as one autograd node that keeps only its input (the
    # previous block's output, alive anyway) and recomputes the block strip by strip in backward, so no
    # full-resolution activation is ever held. Same function (each strip reads the rows it depends
    # on, halos included); costs one more forward of the last block.

    def _use_strips(self, x: torch.Tensor, styles3: list[torch.Tensor],
                    noise_maps: list[torch.Tensor] | None = None) -> bool:
        if self.last_block_strips <= 1 or not torch.is_grad_enabled() or not (
                x.requires_grad or any(s.requires_grad for s in styles3)):
            return False
        if noise_maps is not None and any(n is not None and n.requires_grad for n in noise_maps[-2:]):
            return False  # the strip recomputation differentiates only x and the styles
        layers = (self.convs[-2], self.convs[-1], self.torgbs[-1])
        # the recomputation differentiates only x and the styles: parameters that want gradients take the plain path
        return not any(p.requires_grad for layer in layers for p in layer.parameters())

    def _strip_plan(self, in_rows: int) -> list[_Strip]:
        """The last block's output rows (twice ``in_rows``) cut into ``last_block_strips`` strips of at least
        8 rows. The up-conv (3-tap transposed conv, stride 2, then the k-tap FIR with padding p) reads input
        rows from (row - p - 1) / 2 to (row - p + k - 3) / 2; the image border is real zero padding, so no
        halo is needed there."""
        rows = 2 * in_rows
        count = max(1, min(self.last_block_strips, rows // 8))
        edges = [round(k * rows / count) for k in range(count + 1)]
        taps, pad = self.convs[-2].blur.shape[-1], self.convs[-2].blur_pad
        plan = []
        for top, bottom in zip(edges[:-1], edges[1:]):
            conv_top, conv_bottom = max(top - 1, 0), min(bottom + 1, rows)
            first = max(0, (conv_top - pad - 1) // 2)
            last = min(in_rows, -(-(conv_bottom - pad + taps - 3) // 2) + 1)
            plan.append(_Strip(top, bottom, conv_top, conv_bottom, first, last))
        return plan

    def _last_block_rows(self, slab: torch.Tensor, strip: _Strip, styles3, noise_up, noise_conv
                         ) -> torch.Tensor:
        """RGB rows ``strip.top:strip.bottom`` of the last block (before the skip) from ``slab``, the block
        input's rows ``strip.first:strip.last``; ``styles3``: the block's three style vectors (up-conv,
        conv, ToRGB)."""
        up, conv, torgb = self.convs[-2], self.convs[-1], self.torgbs[-1]
        # Strip outputs are sliced before use: the gradient arriving at each conv is a fresh tensor.
        u = up(slab, None, _noise_rows(noise_up, 2 * strip.first, 2 * strip.last), owns_output_grad=True,
               styles=styles3[0])
        u = u[:, :, strip.conv_top - 2 * strip.first:strip.conv_bottom - 2 * strip.first]
        v = conv(u, None, _noise_rows(noise_conv, strip.conv_top, strip.conv_bottom), owns_output_grad=True,
                 styles=styles3[1])
        v = v[:, :, strip.top - strip.conv_top:strip.bottom - strip.conv_top]
        v = v.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return torgb(v, None, styles=styles3[2])

    def set_channels_last(self, enabled: bool) -> None:
        """NHWC activations and conv weights (activation modulation only). Measured on a 2-core CPU
        (synthesis + backward): within 5 % of NCHW at 256 and 1024 px, so it is off by default; try it
        on GPUs (tensor cores prefer NHWC)."""
        self.channels_last = bool(enabled)
        layout = torch.channels_last if enabled else torch.contiguous_format
        for conv in self.convs:
            conv.weight.data = conv.weight.data.contiguous(memory_format=layout)

    @staticmethod
    def _noise(conv: ModulatedConv, batch: int, noise_mode: str, generator: torch.Generator | None):
        if noise_mode == "const":
            return conv.noise_const
        if noise_mode == "random":
            size = conv.noise_const.shape
            return torch.randn((batch, 1, *size), generator=generator, device=conv.noise_const.device,
                               dtype=conv.noise_const.dtype)
        return None


class MappedGenerator(nn.Module):
    """What every generator family shares: the mapping network (with class labels for conditional
    ones), truncation toward ``w_avg``, the mean latent, and device moves that keep the weights usable
    by autograd. Subclasses set ``mapping_network``, ``w_avg``, ``num_ws``, ``z_dim``, ``c_dim`` and
    provide ``synthesis``, ``device`` and ``dtype``."""

    def _init_mapping(self, config, name: str) -> None:
        """The attributes and modules every family has (called inside ``torch.inference_mode(False)``)."""
        self.config = config
        self.name = name
        self.resolution = config.resolution
        self.num_ws = config.num_ws
        self.w_dim = config.w_dim
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.class_names: list[str] | None = None  # set by loaders when the file names its classes
        self.source_file: str | None = None  # set by loaders: the file the weights came from
        self.mapping_network = MappingNetwork(config)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() under inference mode would otherwise create inference tensors,
        # which autograd refuses to save; the generator must stay differentiable w.r.t. ws.
        with torch.inference_mode(False):
            return super()._apply(fn, *args, **kwargs)

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None, *,
                c: torch.Tensor | None = None) -> torch.Tensor:
        """z [B, z_dim] (+ class labels c [B, c_dim] for a conditional generator) -> ws [B, num_ws, w_dim].

        ``c``: one-hot or soft label vectors (a batch of 1 is broadcast); required when ``c_dim`` > 0,
        refused otherwise. Truncation lerps toward the single global ``w_avg`` (first ``cutoff`` rows),
        for conditional generators too, as the originals do.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ParameterError(f"z: expected shape [batch, {self.z_dim}], got {list(z.shape)}", parameter="z")
        labels = check_class_labels(self, c, z.shape[0])
        w = self.mapping_network(z.to(self.device, self.dtype), labels)
        ws = w[:, None, :].expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            truncated = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws.contiguous()

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const",
                truncation_cutoff: int | None = None, *, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff, c=c), noise_mode)

    # StyleSpace (see :mod:`.stylespace`) ---------------------------------------------------------
    def style_layers(self):
        """One :class:`.stylespace.StyleLayer` per modulated layer (name, kind, W+ row, channels, offset)."""
        from .stylespace import style_table

        return style_table(self)

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """ws [B, num_ws, w_dim] -> the style vectors [B, C_l] of every modulated layer, in the order they run."""
        from .stylespace import styles_from_ws

        return styles_from_ws(self, ws)

    def synthesis_styles(self, styles, noise_mode: str = "const", **kwargs) -> torch.Tensor:
        """float32 images from style vectors (a list as :meth:`styles` gives, or one flat tensor);
        ``synthesis(ws)`` equals ``synthesis_styles(styles(ws))``. Keyword options as :meth:`synthesis`."""
        from .stylespace import check_styles

        if noise_mode not in NOISE_MODES:
            raise ParameterError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}",
                                 parameter="noise_mode")
        return self.synthesis_network.forward_styles(check_styles(self, styles), noise_mode, **kwargs).float()

    @torch.no_grad()
    def estimate_w_avg(self, n_samples: int = 4096, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
        """Mean mapping output (see :func:`mean_mapping_output`), for checkpoints without an average latent."""
        return mean_mapping_output(self, n_samples, seed, batch_size)


class Generator(MappedGenerator):
    """StyleGAN2 generator: ``mapping`` (z -> ws) and ``synthesis`` (ws -> image in about [-1, 1]).

    Attributes: ``resolution``, ``num_ws``, ``w_dim``, ``z_dim``, ``w_avg`` (buffer [w_dim], the
    checkpoint's mean latent), ``config``, ``name``, ``modulation``.
    """

    family = "stylegan2"

    def __init__(self, config: GeneratorConfig, modulation: str = "activation", name: str = "stylegan2",
                 channels_last: bool = False):
        super().__init__()
        with torch.inference_mode(False):  # parameters must stay usable by autograd later
            self._init_mapping(config, name)
            self.synthesis_network = SynthesisNetwork(config, modulation)
            self.modulation = modulation
            self.synthesis_network.set_channels_last(channels_last)
            self.requires_grad_(False)
            self.eval()

    @property
    def modulation(self) -> str:
        return self._modulation

    @modulation.setter
    def modulation(self, mode: str) -> None:
        if mode not in MODULATION_MODES:
            raise ParameterError(f"modulation: expected one of {MODULATION_MODES}, got {mode!r}")
        self._modulation = mode
        for conv in self.synthesis_network.convs:
            conv.modulation = mode

    @property
    def dtype(self) -> torch.dtype:
        return self.synthesis_network.const.dtype

    @property
    def device(self) -> torch.device:
        return self.synthesis_network.const.device

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const",
                  noise_generator: torch.Generator | None = None,
                  noise_maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> float32 images [B, 3, H, W] (about [-1, 1], not clamped).

        ``noise_mode``: "const" (the checkpoint's stored noise), "random" (fresh N(0,1), from
        ``noise_generator`` if given; it must live on the generator's device) or "none".
        ``noise_maps``: explicit noise, one map per conv layer ([H, W] or [B, 1, H, W], shaped like
        :meth:`noise_buffers`), overriding ``noise_mode``; differentiable (projection optimises it).
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ParameterError(f"ws: expected shape [batch, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ParameterError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}")
        if noise_maps is not None:
            shapes = [tuple(b.shape) for b in self.noise_buffers()]
            if len(noise_maps) != len(shapes) or any(tuple(n.shape[-2:]) != s for n, s in zip(noise_maps, shapes)):
                raise ParameterError(f"noise_maps: expected {len(shapes)} maps of sizes {shapes}, got "
                                     f"{[tuple(n.shape) for n in noise_maps]}")
        img = self.synthesis_network(ws.to(self.device, self.dtype), noise_mode, noise_generator, noise_maps)
        return img.float()

    def noise_buffers(self) -> list[torch.Tensor]:
        """The stored ("const") noise map of every conv layer, [H, W] each, in layer order."""
        return [conv.noise_const for conv in self.synthesis_network.convs]

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, resolution={self.resolution}, num_ws={self.num_ws}, c_dim={self.c_dim}, "
                f"w_dim={self.w_dim}, modulation={self.modulation!r}")
