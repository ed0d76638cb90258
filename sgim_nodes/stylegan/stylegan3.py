"""A StyleGAN3 (alias-free) generator, configs T and R, in plain PyTorch.

Same generator interface as the StyleGAN2 :class:`.network.Generator` (``mapping``, ``synthesis``,
``num_ws``, ``w_dim``, ``w_avg``, truncation with cutoff), plus ``set_input_transform`` for the
Fourier-feature input's user transform (camera motion). The mapping network is StyleGAN2's
(:class:`.network.MappingNetwork`): NVlabs' StyleGAN3 mapping computes the same function, for
conditional generators (``c_dim`` > 0) too (StyleGAN2-ADA's class embedding, ``label_mode`` "embed").

Structure (N = ``num_layers``, default 14; ``num_ws`` = N + 2):

- ``input``: Fourier features ``sin(2 pi (f . xy + phase))`` of ``C_0`` frequencies on a
  ``size_0`` x ``size_0`` grid, rotated and translated per sample by ``ws[:, 0]`` and by the user
  transform, then mixed by a ``C_0 x C_0`` matrix;
- layers ``L0 .. L{N-1}``: modulated conv (3x3 for T, 1x1 for R) followed by a *filtered leaky
  ReLU*: upsample with a low-pass FIR, ``lrelu * sqrt2``, clamp, low-pass FIR and downsample. Each
  layer lowers the alias-free band limit (cutoff) geometrically from ``first_cutoff`` to
  ``resolution / 2``; the last ``num_critical`` layers are critically sampled;
- ``L{N}``: ToRGB (1x1 modulated conv without demodulation), then ``* output_scale``.
Layer ``L{i}`` reads ``ws[:, i + 1]``.

Every design value (channels, sizes, sampling rates, cutoffs, filter taps, padding) derives from
the few numbers in :class:`StyleGAN3Config` by :func:`design_layers`, and the filters by
:func:`lowpass_filter` (a Kaiser-window FIR as ``scipy.signal.firwin``; for R a radial "jinc"
filter where not critically sampled). The filters are stored as buffers, so a loaded file's own
filters are used; loaders check them against the design.

Speed: where the original's reference path inserts zeros and convolves at the upsampled rate,
:func:`filtered_lrelu` upsamples with a strided transposed 1-D convolution per axis (no products
with inserted zeros) and downsamples with a strided convolution (only the kept outputs are
computed); the modulated conv scales activations instead of building per-sample weights, and
the activation keeps only its output for backward. Parameters are frozen; gradients flow to ws.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .network import NOISE_MODES, MappedGenerator

SQRT2 = math.sqrt(2.0)
FAMILY = "stylegan3"


# ----------------------------------------------------------------------------------------- configuration

@dataclass
class StyleGAN3Config:
    """The numbers a StyleGAN3 generator is built from (NVlabs' init kwargs); JSON round trip via
    ``to_dict``/``from_dict``. Defaults are NVlabs' (config T); :meth:`stylegan3_r` gives R."""

    resolution: int
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    n_mapping: int = 2
    mapping_lr_mul: float = 0.01
    mapping_hidden: int | None = None  # StyleGAN3's mapping layers are all w_dim wide
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3
    use_radial_filters: bool = False
    filter_size: int = 6
    lrelu_upsampling: int = 2
    conv_clamp: float | None = 256.0
    source_format: str = "random"

    def __post_init__(self) -> None:
        from ..limits import MAX_CHANNELS, MAX_CLASSES, MAX_MAPPING_LAYERS, MAX_RESOLUTION, check_float, check_int

        # Types and ranges before anything is derived from them: a config may come from a file's metadata.
        self.resolution = check_int("resolution", self.resolution, 4, MAX_RESOLUTION, "a power of two")
        for name, low, high in (("z_dim", 1, MAX_CHANNELS), ("w_dim", 1, MAX_CHANNELS), ("c_dim", 0, MAX_CLASSES),
                                ("n_mapping", 1, MAX_MAPPING_LAYERS), ("img_channels", 1, 4),
                                ("channel_base", 1, 1 << 22), ("channel_max", 1, MAX_CHANNELS), ("num_layers", 1, 64),
                                ("num_critical", 0, 64), ("margin_size", 0, 1024), ("conv_kernel", 1, 15),
                                ("filter_size", 1, 64), ("lrelu_upsampling", 1, 16)):
            setattr(self, name, check_int(name, getattr(self, name), low, high))
        if self.mapping_hidden is not None:
            self.mapping_hidden = check_int("mapping_hidden", self.mapping_hidden, 1, MAX_CHANNELS)
        for name, low, high in (("mapping_lr_mul", 0.0, 1e3), ("first_cutoff", 0.0, 1e4), ("first_stopband", 0.0, 1e4),
                                ("last_stopband_rel", 0.0, 1e2), ("output_scale", 0.0, 1e3)):
            setattr(self, name, check_float(name, getattr(self, name), low, high, exclusive_minimum=True))
        if self.conv_clamp is not None:
            self.conv_clamp = check_float("conv_clamp", self.conv_clamp, 0.0, 1e9, exclusive_minimum=True,
                                          what="null or a positive number")
        if not isinstance(self.use_radial_filters, bool) or not isinstance(self.source_format, str):
            raise ParameterError("use_radial_filters: expected true/false; source_format: a string",
                                 parameter="use_radial_filters")
        log2 = math.log2(self.resolution)
        if log2 != int(log2):
            raise ParameterError(f"resolution: expected a power of two >= 4, got {self.resolution}")
        if self.num_layers < 1 or not 0 <= self.num_critical < self.num_layers:
            raise ParameterError(f"num_layers/num_critical: expected num_layers >= 1 and 0 <= num_critical < "
                                 f"num_layers, got {self.num_layers}/{self.num_critical}")
        if self.conv_kernel < 1 or self.filter_size < 1 or self.lrelu_upsampling < 1 or self.n_mapping < 1:
            raise ParameterError("conv_kernel, filter_size, lrelu_upsampling and n_mapping must be >= 1")
        if self.mapping_hidden == self.w_dim or self.n_mapping == 1:
            self.mapping_hidden = None
        check_render_cost(self)

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    # Class labels as :class:`.network.MappingNetwork` reads them: NVlabs' StyleGAN3 embeds c with a
    # FullyConnectedLayer c_dim -> w_dim (StyleGAN2-ADA's embedding), the only way it has.
    @property
    def label_mode(self) -> str | None:
        return "embed" if self.c_dim else None

    @property
    def label_features(self) -> int | None:
        return None  # the embedding is w_dim wide

    @property
    def label_width(self) -> int:
        """Width of the embedded labels that join z at the mapping input (0 when unconditional)."""
        return self.w_dim if self.c_dim else 0

    @classmethod
    def stylegan3_t(cls, resolution: int = 1024, **kwargs: Any) -> "StyleGAN3Config":
        """NVlabs ``--cfg=stylegan3-t`` (cbase 32768, cmax 512, 14 layers, 3x3 convs)."""
        return cls(resolution=resolution, **kwargs)

    @classmethod
    def stylegan3_r(cls, resolution: int = 1024, **kwargs: Any) -> "StyleGAN3Config":
        """NVlabs ``--cfg=stylegan3-r``: 1x1 convs, radial filters, channel base and max doubled."""
        kwargs = {"channel_base": 65536, "channel_max": 1024, **kwargs}
        return cls(resolution=resolution, conv_kernel=1, use_radial_filters=True, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StyleGAN3Config":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ParameterError(f"StyleGAN3 config: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class InputDesign:
    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerDesign:
    """Design values of one synthesis layer (names as NVlabs' layer attributes)."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # x_lo, x_hi, y_lo, y_hi (negative = crop)

    @property
    def nominal_resolution(self) -> float:
        """The resolution whose Nyquist limit equals this layer's band limit: ``2 * out_cutoff``."""
        return 2.0 * self.out_cutoff


def design_layers(config: StyleGAN3Config) -> tuple[InputDesign, list[LayerDesign]]:
    """The input layer and the N + 1 synthesis layers' design values, computed in float64 exactly
    as the original computes them (so sizes, channel counts and filters match its files)."""
    n, res = config.num_layers, config.resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * config.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - config.num_critical), 1)
    cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
    stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config.margin_size * 2
    sizes[-2:] = res  # the last two layers run at the output size, without margins
    channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    channels[-1] = config.img_channels

    inp = InputDesign(int(channels[0]), int(sizes[0]), float(sampling_rates[0]), float(cutoffs[0]))
    layers = []
    for i in range(n + 1):
        prev = max(i - 1, 0)
        is_torgb = i == n
        critical = i >= n - config.num_critical
        in_sr, out_sr = int(sampling_rates[prev]), int(sampling_rates[i])
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else config.lrelu_upsampling)
        kernel = 1 if is_torgb else config.conv_kernel
        up, down = int(np.rint(tmp_sr / in_sr)), int(np.rint(tmp_sr / out_sr))
        up_taps = config.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = config.filter_size * down if down > 1 and not is_torgb else 1
        in_size, out_size = int(sizes[prev]), int(sizes[i])
        # Padding that makes (upsample, pad, up-FIR, down-FIR, keep every down-th) map in_size + k - 1
        # conv outputs onto exactly out_size samples.
        pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        layers.append(LayerDesign(
            name=f"L{i}_{out_size}_{int(channels[i])}", is_torgb=is_torgb, is_critically_sampled=critical,
            in_channels=int(channels[prev]), out_channels=int(channels[i]), in_size=in_size, out_size=out_size,
            in_sampling_rate=in_sr, out_sampling_rate=out_sr, tmp_sampling_rate=tmp_sr,
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[i]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[i]), conv_kernel=kernel, up_factor=up, down_factor=down,
            up_taps=up_taps, down_taps=down_taps, down_radial=config.use_radial_filters and not critical,
            padding=(pad_lo, pad_hi, pad_lo, pad_hi)))
    return inp, layers


def check_render_cost(config: StyleGAN3Config) -> None:
    """The design a config derives, checked before anything is built: every sampling rate and channel
    count at least 1 (tiny stopbands or cutoffs derive rate 0, huge cutoffs channel count 0), and no
    layer's activation for one image (channels x its upsampled grid) beyond ``MAX_LAYER_ACTIVATION``,
    so a design within every single field's range cannot ask for tens of gigabytes at render time."""
    from ..limits import MAX_LAYER_ACTIVATION

    n, res = config.num_layers, config.resolution
    with np.errstate(all="ignore"):
        last_cutoff = res / 2
        exponents = np.minimum(np.arange(n + 1) / (n - config.num_critical), 1)
        cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
        last_stopband = last_cutoff * config.last_stopband_rel
        stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
        rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
        channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    if not (np.isfinite(rates).all() and np.isfinite(cutoffs).all() and np.isfinite(channels).all()):
        raise ParameterError("first_cutoff/first_stopband/last_stopband_rel: the design they derive is not finite",
                             parameter="first_stopband")
    if rates.min() < 1:
        raise ParameterError(f"first_stopband: the design derives a sampling rate of {rates.min():g} (below 1) "
                             f"from stopband {config.first_stopband:g}; the layers would divide by zero",
                             parameter="first_stopband")
    if channels[:-1].min() < 1:
        layer = int(np.argmin(channels[:-1]))
        raise ParameterError(f"channel_base: layer {layer} derives 0 channels (channel_base {config.channel_base} / "
                             f"2 / cutoff {cutoffs[layer]:g}); raise channel_base or lower the cutoffs",
                             parameter="channel_base")
    _, layers = design_layers(config)
    for design in layers:
        for taps, cutoff, width in ((design.up_taps, design.in_cutoff, 2 * design.in_half_width),
                                    (design.down_taps, design.out_cutoff, 2 * design.out_half_width)):
            check_filter_design(design.name, taps, cutoff, width, design.tmp_sampling_rate)
        grid = max(design.in_size * design.up_factor + design.up_taps, design.out_size * design.down_factor
                   + design.down_taps) + design.conv_kernel
        elements = max(design.in_channels, design.out_channels) * grid * grid
        if elements > MAX_LAYER_ACTIVATION:
            raise ParameterError(
                f"StyleGAN3 design: layer {design.name} would compute {elements:,} activation values per image "
                f"({max(design.in_channels, design.out_channels)} channels on a {grid} x {grid} grid), beyond the "
                f"{MAX_LAYER_ACTIVATION:,} any real StyleGAN3 needs (margin_size {config.margin_size}, filter_size "
                f"{config.filter_size}, lrelu_upsampling {config.lrelu_upsampling})", parameter="margin_size")


MAX_KAISER_BETA = 700.0  # the window divides by I0(beta), which overflows float64 past beta ~713 (NaN taps)


def _kaiser_beta(taps: int, width: float, fs: float) -> float:
    import scipy.signal

    return float(scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (fs / 2))))


def check_filter_design(layer: str, taps: int, cutoff: float, width: float, fs: float) -> None:
    """A layer's low-pass design can be built and is finite: the cutoff strictly inside (0, fs / 2) and a
    Kaiser window whose beta stays where I0 is finite. Extreme cutoffs or stopbands, each within its own
    range, derive a cutoff at or past Nyquist (scipy's raw ValueError) or a transition band so wide that
    every tap is NaN."""
    if taps == 1:
        return
    if not (math.isfinite(cutoff) and 0 < cutoff < fs / 2):
        raise ParameterError(f"first_cutoff: StyleGAN3 layer {layer} derives a filter cutoff of {cutoff:g}, outside "
                             f"(0, {fs / 2:g}) (half its sampling rate {fs:g}); lower first_cutoff or raise the stopbands",
                             parameter="first_cutoff")
    beta = _kaiser_beta(taps, width, fs) if math.isfinite(width) else math.inf
    if not beta <= MAX_KAISER_BETA:
        raise ParameterError(f"first_stopband/last_stopband_rel: StyleGAN3 layer {layer} derives a transition band "
                             f"of {width:g} at sampling rate {fs:g} ({taps} taps): its Kaiser window (beta {beta:.4g}, "
                             f"limit {MAX_KAISER_BETA:g}) would be NaN; bring the stopbands closer to the cutoffs",
                             parameter="first_stopband")


def lowpass_filter(taps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-window low-pass FIR (float32), 1-D (separable) or 2-D radial; None for a single tap. A design
    that cannot give finite taps is refused (:func:`check_filter_design`), never built."""
    if taps == 1:
        return None
    import scipy.signal
    import scipy.special

    check_filter_design("?", taps, cutoff, width, fs)
    if not radial:
        taps_1d = scipy.signal.firwin(numtaps=taps, cutoff=cutoff, width=width, fs=fs)
        if not np.isfinite(taps_1d).all():
            raise ParameterError(f"first_stopband: a low-pass design (cutoff {cutoff:g}, width {width:g}, rate {fs:g}) "
                                 "gives non-finite taps", parameter="first_stopband")
        return torch.as_tensor(taps_1d, dtype=torch.float32)
    coords = (np.arange(taps) - (taps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(coords, coords))  # taps is even: radius > 0 everywhere
    kernel = scipy.special.j1(2 * cutoff * (np.pi * radius)) / (np.pi * radius)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (fs / 2)))
    window = np.kaiser(taps, beta)
    kernel = kernel * np.outer(window, window)
    total = float(np.sum(kernel))
    if not (math.isfinite(total) and total > 0) or not np.isfinite(kernel).all():
        raise ParameterError(f"first_cutoff: a radial low-pass design (cutoff {cutoff:g}, width {width:g}, rate {fs:g}) "
                             "sums to no usable gain; its taps would be NaN or infinite", parameter="first_cutoff")
    kernel = kernel / total
    if not np.isfinite(kernel).all() or float(np.abs(kernel).max()) > 1e3:  # a near-zero gain blows the taps up
        raise ParameterError(f"first_cutoff: a radial low-pass design (cutoff {cutoff:g}, width {width:g}, rate {fs:g}) "
                             "has a near-zero gain; its taps would reach huge values", parameter="first_cutoff")
    return torch.as_tensor(kernel, dtype=torch.float32)


# ----------------------------------------------------------------------------------------- filtered lrelu

def _window(x: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """``x`` along ``dim`` from ``start`` for ``length`` samples, zero outside (a view when inside)."""
    size = x.shape[dim]
    if start >= 0 and start + length <= size:
        return x.narrow(dim, start, length)
    pad = [0, 0] * (x.ndim - 1 - dim % x.ndim) + [-start, start + length - size]
    return F.pad(x, pad)


def _upsample_axis(x: torch.Tensor, taps: torch.Tensor, up: int, pad_lo: int, pad_hi: int, dim: int) -> torch.Tensor:
    """Zero insertion by ``up`` along ``dim`` (-1 = width, -2 = height), padding (negative = crop) and a
    'valid' correlation with ``taps * up``, computed as a strided transposed convolution (no products
    with the inserted zeros). Filters are symmetric, so correlation = convolution."""
    channels, length, n_taps = x.shape[1], x.shape[dim], taps.shape[0]
    out_len = length * up + pad_lo + pad_hi - n_taps + 1
    kernel = (taps.flip(0) * up).to(x.dtype)
    if dim == -1:
        y = F.conv_transpose2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, n_taps), stride=(1, up),
                               groups=channels)
    else:
        y = F.conv_transpose2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, n_taps, 1), stride=(up, 1),
                               groups=channels)
    # y[m] = sum_k x[k] f[m - k*up]; the padded zero-inserted signal's j-th valid output is y[j + taps-1 - pad_lo]
    return _window(y, dim, n_taps - 1 - pad_lo, out_len)


def _pad_axis(x: torch.Tensor, pad_lo: int, pad_hi: int, dim: int) -> torch.Tensor:
    return _window(x, dim, -pad_lo, x.shape[dim] + pad_lo + pad_hi)


def _downsample(x: torch.Tensor, taps: torch.Tensor | None, down: int) -> torch.Tensor:
    """'Valid' correlation with the FIR (1-D separable or 2-D), keeping every ``down``-th sample from 0."""
    if taps is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    kernel = taps.to(x.dtype)
    if kernel.ndim == 2:
        return F.conv2d(x, kernel[None, None].expand(channels, 1, *kernel.shape), stride=down, groups=channels)
    n_taps = kernel.shape[0]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, n_taps), stride=(1, down), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, n_taps, 1), stride=(down, 1), groups=channels)


class _LeakyClamp(torch.autograd.Function):
    """``clamp(lrelu(x, slope), -c, c)`` in place, keeping only the output for backward: lrelu keeps
    the sign, so the slope is read off the output (one fused ``leaky_relu_backward``), and clamped
    samples (|y| = c) get no gradient. On CPU one min/max pass tells whether anything was clamped
    at all (it practically never is), which saves the mask in backward; elsewhere it is always
    applied (no host synchronisation)."""

    @staticmethod
    def forward(ctx, x, slope: float, clamp: float | None):
        y = F.leaky_relu(x, slope, inplace=True) if slope != 1 else x
        clamped = clamp is not None
        if clamped:
            if y.device.type == "cpu":
                low, high = torch.aminmax(y)
                clamped = bool(low <= -clamp) or bool(high >= clamp)
            y = y.clamp_(-clamp, clamp)
        ctx.mark_dirty(x)
        ctx.save_for_backward(y)
        ctx.slope, ctx.clamp, ctx.clamped = slope, clamp, clamped
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        grad = torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True) if ctx.slope != 1 else grad.clone()
        if ctx.clamped:
            grad = grad.masked_fill_(y.abs() >= ctx.clamp, 0)
        return grad, None, None


def filtered_lrelu(x: torch.Tensor, bias: torch.Tensor, up_filter: torch.Tensor | None,
                   down_filter: torch.Tensor | None, up: int, down: int, padding: tuple[int, int, int, int],
                   gain: float = SQRT2, slope: float = 0.2, clamp: float | None = None) -> torch.Tensor:
    """``x + bias``, upsample by ``up`` with ``up_filter`` (gain up^2) after ``padding`` [x_lo, x_hi, y_lo, y_hi],
    ``lrelu(., slope) * gain``, clamp to +-``clamp``, then ``down_filter`` and keep every ``down``-th sample.

    [B, C, H, W] -> [B, C, H', W'] with H' = (H * up + y_lo + y_hi - up_taps + 1 - down_taps) // down + 1.
    The gain is moved after the clamp (``clamp(g * l(x), c) = g * clamp(l(x), c / g)``, lrelu is
    positively homogeneous) and folded into the down filter.
    """
    x = x + bias.to(x.dtype)[None, :, None, None]
    x_lo, x_hi, y_lo, y_hi = padding
    if up_filter is not None:
        x = _upsample_axis(x, up_filter, up, x_lo, x_hi, dim=-1)
        x = _upsample_axis(x, up_filter, up, y_lo, y_hi, dim=-2)
    else:
        if up > 1:  # plain zero insertion (not used by StyleGAN3 layers, kept for completeness)
            x = F.pad(x[:, :, :, None, :, None], [0, up - 1, 0, 0, 0, up - 1]).flatten(2, 3).flatten(3, 4)
        x = _pad_axis(_pad_axis(x, x_lo, x_hi, dim=-1), y_lo, y_hi, dim=-2)
    scaled_clamp = None if clamp is None else clamp / gain
    if torch.is_grad_enabled() and x.requires_grad:
        x = _LeakyClamp.apply(x, slope, scaled_clamp)
    else:
        x = F.leaky_relu(x, slope, inplace=True) if slope != 1 else x
        x = x.clamp_(-scaled_clamp, scaled_clamp) if scaled_clamp is not None else x
    if down_filter is not None:
        per_pass = gain ** 0.5 if down_filter.ndim == 1 else gain  # a 1-D filter runs once per axis
        return _downsample(x, down_filter * per_pass if gain != 1 else down_filter, down)
    x = _downsample(x, None, down)
    return x * gain if gain != 1 else x


# ----------------------------------------------------------------------------------------- layers

class SynthesisInput(nn.Module):
    """Fourier features: [B, w_dim] -> [B, C, size, size] (see the module docstring)."""

    def __init__(self, design: InputDesign, w_dim: int):
        super().__init__()
        self.design = design
        channels = design.channels
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine_weight = nn.Parameter(torch.zeros(4, w_dim))  # raw; gain 1/sqrt(w_dim) applied in forward
        self.affine_bias = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        freqs = torch.randn(channels, 2)  # random directions, radii ~ bandwidth, as NVlabs initialises them
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        self.register_buffer("freqs", freqs / (radii * radii.square().exp().pow(0.25)) * design.bandwidth)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def affine(self, w: torch.Tensor) -> torch.Tensor:
        """The input's style vector [B, 4]: rotation (t0, t1) and translation (t2, t3) before normalisation."""
        dtype = w.dtype
        return torch.addmm(self.affine_bias.to(dtype), w, (self.affine_weight / math.sqrt(w.shape[1])).t().to(dtype))

    def forward(self, w: torch.Tensor | None, styles: torch.Tensor | None = None) -> torch.Tensor:
        return self.modulated(self.affine(w) if styles is None else styles)

    def modulated(self, t: torch.Tensor) -> torch.Tensor:
        """The Fourier features from the style vector ``t`` [B, 4] (see :meth:`affine`)."""
        design = self.design
        batch, dtype, w = t.shape[0], t.dtype, t  # ``w`` below only supplies device and dtype
        # Per-sample rotation (t0, t1) and translation (t2, t3), normalised by the rotation's length.
        precise = torch.promote_types(dtype, torch.float32)  # angles and phases need at least float32
        t = t.to(precise)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotate = torch.eye(3, device=w.device, dtype=precise).repeat(batch, 1, 1)
        rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        translate = torch.eye(3, device=w.device, dtype=precise).repeat(batch, 1, 1)
        translate[:, 0, 2], translate[:, 1, 2] = -t[:, 2], -t[:, 3]
        transform = rotate @ translate @ self.transform.to(precise)[None]  # [B, 3, 3]
        freqs = self.freqs.to(precise)[None]  # [1, C, 2] rows (fx, fy)
        phases = self.phases.to(precise)[None] + (freqs @ transform[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = freqs @ transform[:, :2, :2]  # [B, C, 2]
        amplitudes = (1 - (freqs.norm(dim=2) - design.bandwidth)
                      / (design.sampling_rate / 2 - design.bandwidth)).clamp(0, 1)  # [B, C]
        # Pixel centres of the size x size grid, in units of the sampling rate, centred on 0.
        grid = (torch.arange(design.size, device=w.device, dtype=precise) + 0.5 - design.size / 2) \
            / design.sampling_rate
        along_x = freqs[:, :, 0, None] * grid  # [B, C, W]
        along_y = freqs[:, :, 1, None] * grid + phases[:, :, None]  # [B, C, H]
        x = torch.sin((along_y[:, :, :, None] + along_x[:, :, None, :]) * (2 * math.pi))  # [B, C, H, W]
        x = x * amplitudes[:, :, None, None]
        mix = (self.weight / math.sqrt(design.channels)).to(precise)
        return torch.einsum("bchw,oc->bohw", x, mix).to(dtype)


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (or, for ToRGB, modulated 1x1 conv + bias + clamp)."""

    def __init__(self, design: LayerDesign, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.design = design
        self.conv_clamp = conv_clamp
        k = design.conv_kernel
        self.affine_weight = nn.Parameter(torch.randn(design.in_channels, w_dim))  # raw; gain 1/sqrt(w_dim)
        self.affine_bias = nn.Parameter(torch.ones(design.in_channels))
        self.weight = nn.Parameter(torch.randn(design.out_channels, design.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(design.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        if not design.is_torgb:
            self.register_buffer("up_filter", lowpass_filter(design.up_taps, design.in_cutoff,
                                                             2 * design.in_half_width, design.tmp_sampling_rate))
            self.register_buffer("down_filter", lowpass_filter(design.down_taps, design.out_cutoff,
                                                               2 * design.out_half_width, design.tmp_sampling_rate,
                                                               radial=design.down_radial))
        else:
            self.up_filter = self.down_filter = None

    def affine(self, w: torch.Tensor) -> torch.Tensor:
        """This layer's style vector [B, in_channels] (NVlabs' ``affine(w)``; StyleSpace coordinates)."""
        dtype = w.dtype
        return torch.addmm(self.affine_bias.to(dtype), w, (self.affine_weight / math.sqrt(w.shape[1])).t().to(dtype))

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, styles: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, in_size, in_size], w [B, w_dim] (or the given ``styles``) -> [B, C_out, out_size, out_size]."""
        return self.modulated(x, self.affine(w.to(x.dtype)) if styles is None else styles)

    def modulated(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """The layer from its style vector ``styles`` [B, in_channels] (see :meth:`affine`)."""
        design, dtype = self.design, x.dtype
        k = design.conv_kernel
        styles = styles.to(dtype)
        input_gain = self.magnitude_ema.rsqrt()  # normalises the input's running mean square to 1
        if design.is_torgb:
            styles = styles * (1 / math.sqrt(design.in_channels * k * k))
            weight = (self.weight * input_gain).to(dtype)
            x = F.conv2d(x * styles[:, :, None, None], weight, padding=k - 1)
            x = x + self.bias.to(dtype)[None, :, None, None]
            return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x
        # As the original: weight normalised per output channel and styles by their overall RMS (over the
        # whole batch) before the demodulation; both cancel in it except through its 1e-8.
        precise = torch.promote_types(dtype, torch.float32)
        weight = self.weight.to(precise)
        weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        styles = styles.to(precise)
        styles = styles * styles.square().mean().rsqrt()
        demod = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # [B, C_out]
        scale = (demod * input_gain).to(dtype)
        # Activation-form modulated conv: one ordinary convolution for the whole batch.
        x = F.conv2d(x * styles.to(dtype)[:, :, None, None], weight.to(dtype), padding=k - 1)
        x = x * scale[:, :, None, None]
        return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, design.up_factor, design.down_factor,
                              design.padding, gain=SQRT2, slope=0.2, clamp=self.conv_clamp)


class StyleGAN3Synthesis(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, resolution, resolution]."""

    def __init__(self, config: StyleGAN3Config):
        super().__init__()
        input_design, layer_designs = design_layers(config)
        self.output_scale = config.output_scale
        self.input = SynthesisInput(input_design, config.w_dim)
        self.layers = nn.ModuleList(SynthesisLayer(d, config.w_dim, config.conv_clamp) for d in layer_designs)

    @property
    def layer_designs(self) -> list[LayerDesign]:
        return [layer.design for layer in self.layers]

    def style_modules(self) -> list[tuple[str, nn.Module, int, str]]:
        """(name, layer, W+ row, kind) of every modulated layer in StyleSpace order: the Fourier input
        (row 0, its 4 transform values), then layers L0 .. L{N} (row i + 1; the last is ToRGB)."""
        out = [("input", self.input, 0, "input")]
        for index, layer in enumerate(self.layers):
            out.append((layer.design.name.split("_")[0], layer, index + 1, "torgb" if layer.design.is_torgb else "conv"))
        return out

    def styles_from_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        return [layer.affine(ws[:, row]) for _, layer, row, _ in self.style_modules()]

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.forward_styles(self.styles_from_ws(ws))

    def forward_styles(self, styles: list[torch.Tensor], noise_mode: str = "const", **_: object) -> torch.Tensor:
        """The image from the style vectors (no noise inputs: ``noise_mode`` is ignored)."""
        x = self.input(None, styles=styles[0])
        for layer, s in zip(self.layers, styles[1:]):
            x = layer(x, None, styles=s)
        return x * self.output_scale


# ----------------------------------------------------------------------------------------- generator

class StyleGAN3Generator(MappedGenerator):
    """StyleGAN3 generator: ``mapping`` (z -> ws) and ``synthesis`` (ws -> image in about [-1, 1]).

    Attributes: ``family`` ("stylegan3"), ``resolution``, ``num_ws``, ``w_dim``, ``z_dim``, ``c_dim``
    (0 = unconditional), ``class_names`` (None unless the file names its classes), ``w_avg`` (buffer
    [w_dim]), ``config``, ``name``, ``ws_resolutions`` (nominal resolution of each W+ row, for the
    layer presets).
    """

    family = FAMILY

    def __init__(self, config: StyleGAN3Config, name: str = "stylegan3"):
        super().__init__()
        with torch.inference_mode(False):  # parameters must stay usable by autograd later
            self._init_mapping(config, name)
            self.synthesis_network = StyleGAN3Synthesis(config)
            self.requires_grad_(False)
            self.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.synthesis_network.input.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.synthesis_network.input.weight.device

    @property
    def ws_resolutions(self) -> list[float]:
        """Nominal resolution of each W+ row: row 0 drives the input (band limit ``first_cutoff``), row
        i + 1 layer i, whose band limit is its output cutoff; resolution = 2 * cutoff (Nyquist)."""
        inp = self.synthesis_network.input.design
        return [2.0 * inp.bandwidth] + [d.nominal_resolution for d in self.synthesis_network.layer_designs]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const",
                  noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> float32 images [B, C, H, W]. StyleGAN3 has no noise inputs:
        ``noise_mode`` is checked and otherwise ignored (every mode gives the same image)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ParameterError(f"ws: expected shape [batch, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}",
                                 parameter="ws")
        if noise_mode not in NOISE_MODES:
            raise ParameterError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}",
                                 parameter="noise_mode")
        return self.synthesis_network(ws.to(self.device, self.dtype)).float()

    def set_input_transform(self, matrix) -> None:
        """Set the 3x3 user transform of the Fourier-feature grid (NVlabs' ``synthesis.input.transform``;
        e.g. the inverse of a rotation + translation moves the camera). Identity = no transform."""
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.shape != (3, 3) or not torch.isfinite(matrix).all():
            raise ParameterError(f"transform: expected a finite 3x3 matrix, got shape {list(matrix.shape)}",
                                 parameter="transform")
        buffer = self.synthesis_network.input.transform
        with torch.no_grad(), torch.inference_mode(False):
            buffer.copy_(matrix.to(buffer.device, buffer.dtype))

    def extra_repr(self) -> str:
        kind = "R" if self.config.use_radial_filters else "T"
        return (f"name={self.name!r}, config={kind}, resolution={self.resolution}, num_ws={self.num_ws}, "
                f"c_dim={self.c_dim}, w_dim={self.w_dim}")
