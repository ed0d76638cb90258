"""Reading NVlabs StyleGAN3 snapshot pickles (already unpickled by the restricted unpickler).

A StyleGAN3 ``G_ema`` record holds the Generator's init kwargs, the layers' design values as plain
attributes, and the tensors. We rebuild the configuration from the init kwargs (NVlabs defaults
for the ones not given), design every layer ourselves (:func:`.stylegan3.design_layers`) and
refuse the file unless every stored design value and filter agrees with that design: a file
from modified code cannot silently produce wrong images. Only the six StyleGAN3 generator
classes may appear in the record tree.

Our state dict keeps NVlabs' raw values for the synthesis layers (their gains are applied in the
forward pass); the mapping layers and the class embedding of a conditional generator
(``mapping.embed``, c_dim -> w_dim) carry their gains folded in, as :class:`.network.MappingNetwork`
expects.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError, ParameterError
from ..limits import short_repr
from .stylegan3 import StyleGAN3Config, design_layers, lowpass_filter

CLASS_NAMES = {"Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisInput",
               "SynthesisLayer"}
# Init kwargs of NVlabs' StyleGAN3 Generator / SynthesisNetwork / SynthesisLayer -> our config field.
_SYNTHESIS_KWARGS = {
    "channel_base": "channel_base", "channel_max": "channel_max", "num_layers": "num_layers",
    "num_critical": "num_critical", "first_cutoff": "first_cutoff", "first_stopband": "first_stopband",
    "last_stopband_rel": "last_stopband_rel", "margin_size": "margin_size", "output_scale": "output_scale",
    "conv_kernel": "conv_kernel", "filter_size": "filter_size", "lrelu_upsampling": "lrelu_upsampling",
    "use_radial_filters": "use_radial_filters", "conv_clamp": "conv_clamp",
}
_IGNORED_KWARGS = {"num_fp16_res", "magnitude_ema_beta", "z_dim", "c_dim", "w_dim", "img_resolution",
                   "img_channels", "mapping_kwargs"}  # training-only, or read from the record itself
_MAPPING_KWARGS = {"num_layers", "lr_multiplier", "w_avg_beta", "z_dim", "c_dim", "w_dim", "num_ws"}
FILTER_TOLERANCE = 1e-6  # designed vs stored filter taps (float32; the original's own rounding is ~1e-9)


def is_stylegan3(tensors: dict[str, torch.Tensor], attrs: dict[str, dict]) -> bool:
    """StyleGAN3 has a Fourier-feature ``synthesis.input`` module; StyleGAN2 has none (class names
    alone do not tell: both networks have a ``Generator``, ``SynthesisNetwork``, ``SynthesisLayer``)."""
    return "synthesis.input" in attrs or any(k.startswith("synthesis.input.") for k in tensors) \
        or "layer_names" in attrs.get("synthesis", {})


def from_nvlabs_stylegan3(init_kwargs: dict, tensors: dict[str, torch.Tensor], attrs: dict[str, dict],
                          path: Path) -> tuple[StyleGAN3Config, dict[str, torch.Tensor]]:
    """(config, our state dict) from a flattened NVlabs StyleGAN3 ``G_ema`` record."""
    for module, values in attrs.items():
        if values.get("class_name") not in CLASS_NAMES:
            raise ModelFileError(f"{path}: module '{module or 'G_ema'}' is a {short_repr(values.get('class_name'))}, which "
                                 f"is not part of an NVlabs StyleGAN3 generator (expected one of "
                                 f"{sorted(CLASS_NAMES)})")
    config = _config(init_kwargs, tensors, attrs, path)
    _check_design(config, tensors, attrs, path)
    return config, _state_dict(config, tensors, attrs, path)


def _number(value: Any, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # arrays, lists, strings where a number belongs
        raise ModelFileError(f"{path}: {what} should be a number, found {type(value).__name__} {short_repr(value)}")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
        raise ModelFileError(f"{path}: {what} should be a number of usable size, found {short_repr(value)}") from None
    if not math.isfinite(out):
        raise ModelFileError(f"{path}: {what} is not finite ({out})")
    return out


def _config(init_kwargs: dict, tensors: dict, attrs: dict, path: Path) -> StyleGAN3Config:
    if not isinstance(init_kwargs, dict):
        raise ModelFileError(f"{path}: the StyleGAN3 generator record has no init kwargs")
    unknown = set(init_kwargs) - set(_SYNTHESIS_KWARGS) - _IGNORED_KWARGS
    mapping_kwargs = init_kwargs.get("mapping_kwargs") or {}
    if not isinstance(mapping_kwargs, dict):
        raise ModelFileError(f"{path}: 'mapping_kwargs' should be a dict, found {type(mapping_kwargs).__name__}")
    unknown |= {f"mapping_kwargs.{k}" for k in set(mapping_kwargs) - _MAPPING_KWARGS}
    if unknown:
        raise ModelFileError(f"{path}: StyleGAN3 generator options {sorted(unknown)} are not supported (a modified "
                             "network); only NVlabs stylegan3's own options are")
    top = attrs.get("", {})
    n_mapping = len({int(m.group(1)) for k in tensors if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k))})
    if n_mapping == 0 or "mapping.fc0.weight" not in tensors:
        raise ModelFileError(f"{path}: StyleGAN3 generator without mapping layers 'mapping.fcN'")
    fields: dict[str, Any] = {}
    for key, field in _SYNTHESIS_KWARGS.items():
        if key in init_kwargs:
            value = init_kwargs[key]
            if field == "use_radial_filters":
                if not isinstance(value, (bool, int)) or value not in (0, 1):
                    raise ModelFileError(f"{path}: {key} should be true or false, found {short_repr(value)}")
                fields[field] = bool(value)
            elif field == "conv_clamp":
                fields[field] = None if value is None else _number(value, key, path)
            elif field in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale"):
                fields[field] = _number(value, key, path)
            else:
                fields[field] = int(_number(value, key, path))
    fc0 = tensors["mapping.fc0.weight"]
    c_dim = int(_number(top.get("c_dim", 0), "c_dim", path))
    has_embed = "mapping.embed.weight" in tensors
    if c_dim > 0 and not has_embed:
        raise ModelFileError(f"{path}: a conditional StyleGAN3 generator (c_dim={c_dim}) without its class "
                             "embedding 'mapping.embed' (damaged or an unknown variant)")
    if c_dim == 0 and has_embed:
        raise ModelFileError(f"{path}: an unconditional StyleGAN3 generator (c_dim 0) with a class embedding "
                             "'mapping.embed' (damaged or an unknown variant)")
    try:
        return StyleGAN3Config(
            resolution=int(_number(top.get("img_resolution"), "img_resolution", path)),
            z_dim=int(_number(top.get("z_dim"), "z_dim", path)), w_dim=int(_number(top.get("w_dim"), "w_dim", path)),
            c_dim=c_dim, n_mapping=n_mapping,
            mapping_lr_mul=_number(mapping_kwargs.get("lr_multiplier", 0.01), "mapping lr_multiplier", path),
            mapping_hidden=int(fc0.shape[0]) if n_mapping > 1 else None,
            img_channels=int(_number(top.get("img_channels", 3), "img_channels", path)),
            source_format="nvlabs", **fields)
    except ParameterError as exc:
        raise ModelFileError(f"{path}: invalid StyleGAN3 configuration ({exc})") from None


def _same(stored: Any, ours: Any) -> bool:
    if isinstance(ours, tuple):
        return stored is not None and len(stored) == len(ours) and all(_same(s, o) for s, o in zip(stored, ours))
    if isinstance(ours, bool) or ours is None:
        return (stored is None) if ours is None else bool(stored) == ours
    try:
        values = [float(v) for v in (stored.tolist() if hasattr(stored, "tolist") else stored)] \
            if hasattr(stored, "__len__") else [float(stored)]
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False
    return all(math.isclose(v, float(ours), rel_tol=1e-9, abs_tol=1e-12) for v in values)


def _check_design(config: StyleGAN3Config, tensors: dict, attrs: dict, path: Path) -> None:
    """Every design value stored in the file must equal ours (values a layer may lack are skipped)."""
    input_design, layer_designs = design_layers(config)
    names = attrs.get("synthesis", {}).get("layer_names")
    ours_names = [d.name for d in layer_designs]
    if names is not None and list(names) != ours_names:
        raise ModelFileError(f"{path}: the file's synthesis layers {list(names)} differ from those its options "
                             f"give ({ours_names}); a modified StyleGAN3 network is not supported")
    stored_input = attrs.get("synthesis.input")
    if stored_input is None:
        raise ModelFileError(f"{path}: StyleGAN3 generator without its 'synthesis.input' layer")
    for key in ("channels", "size", "sampling_rate", "bandwidth"):
        if key in stored_input and not _same(stored_input[key], getattr(input_design, key)):
            raise ModelFileError(f"{path}: synthesis.input.{key} is {short_repr(stored_input[key])}, the design gives "
                                 f"{getattr(input_design, key)!r}")
    for design in layer_designs:
        stored = attrs.get(f"synthesis.{design.name}")
        if stored is None:
            raise ModelFileError(f"{path}: missing synthesis layer '{design.name}'")
        checks = {k: getattr(design, k) for k in (
            "is_torgb", "is_critically_sampled", "in_channels", "out_channels", "in_size", "out_size",
            "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "in_cutoff", "out_cutoff",
            "in_half_width", "out_half_width", "conv_kernel", "up_factor", "down_factor", "up_taps", "down_taps",
            "down_radial", "padding")}
        checks["conv_clamp"] = config.conv_clamp
        for key, value in checks.items():
            if key in stored and not _same(stored[key], value):
                raise ModelFileError(f"{path}: layer {design.name}: {key} is {short_repr(stored[key])} in the file, the "
                                     f"StyleGAN3 design gives {value!r}")


def _state_dict(config: StyleGAN3Config, tensors: dict, attrs: dict, path: Path) -> dict[str, torch.Tensor]:
    def get(key: str, shape: tuple | None = None) -> torch.Tensor:
        value = tensors.get(key)
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"{path}: missing tensor '{key}' (incomplete StyleGAN3 generator)")
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ModelFileError(f"{path}: tensor '{key}' has shape {list(value.shape)}, expected {list(shape)}")
        return value.detach().float()

    def gain(module: str, name: str, default: float) -> float:
        return _number(attrs.get(module, {}).get(name, default), f"{module}.{name}", path)

    ours: dict[str, torch.Tensor] = {}
    if config.c_dim:  # the class embedding is an ordinary FullyConnectedLayer (lr multiplier 1)
        embed = get("mapping.embed.weight", (config.label_width, config.c_dim))
        ours["mapping_network.label_weight"] = embed * gain("mapping.embed", "weight_gain", 1 / math.sqrt(config.c_dim))
        ours["mapping_network.label_bias"] = get("mapping.embed.bias", (config.label_width,)) \
            * gain("mapping.embed", "bias_gain", 1.0)
    for i in range(config.n_mapping):
        module = f"mapping.fc{i}"
        weight = get(module + ".weight")
        if i == 0 and weight.shape[1] != config.z_dim + config.label_width:
            raise ModelFileError(f"{path}: 'mapping.fc0.weight' reads {weight.shape[1]} values; z_dim {config.z_dim}"
                                 + (f" and the {config.label_width}-wide class embedding" if config.c_dim else "")
                                 + f" need {config.z_dim + config.label_width}")
        ours[f"mapping_network.weights.{i}"] = weight * gain(module, "weight_gain",
                                                             config.mapping_lr_mul / math.sqrt(weight.shape[1]))
        ours[f"mapping_network.biases.{i}"] = get(module + ".bias") * gain(module, "bias_gain", config.mapping_lr_mul)
    ours["w_avg"] = get("mapping.w_avg", (config.w_dim,))

    # Synthesis affines are applied with gain 1/sqrt(w_dim) (bias gain 1), as NVlabs' FullyConnectedLayer.
    def affine(src: str, dst: str, rows: int) -> None:
        expected = 1 / math.sqrt(config.w_dim)
        if not math.isclose(gain(src, "weight_gain", expected), expected, rel_tol=1e-9) \
                or not math.isclose(gain(src, "bias_gain", 1.0), 1.0, rel_tol=1e-9):
            raise ModelFileError(f"{path}: {src} uses learning-rate gains other than StyleGAN3's")
        ours[dst + "affine_weight"] = get(src + ".weight", (rows, config.w_dim))
        ours[dst + "affine_bias"] = get(src + ".bias", (rows,))

    input_design, layer_designs = design_layers(config)
    c0 = input_design.channels
    ours["synthesis_network.input.weight"] = get("synthesis.input.weight", (c0, c0))
    affine("synthesis.input.affine", "synthesis_network.input.", 4)
    ours["synthesis_network.input.transform"] = get("synthesis.input.transform", (3, 3))
    ours["synthesis_network.input.freqs"] = get("synthesis.input.freqs", (c0, 2))
    ours["synthesis_network.input.phases"] = get("synthesis.input.phases", (c0,))

    for index, design in enumerate(layer_designs):
        src, dst = f"synthesis.{design.name}", f"synthesis_network.layers.{index}."
        k = design.conv_kernel
        ours[dst + "weight"] = get(src + ".weight", (design.out_channels, design.in_channels, k, k))
        ours[dst + "bias"] = get(src + ".bias", (design.out_channels,))
        affine(src + ".affine", dst, design.in_channels)
        ours[dst + "magnitude_ema"] = get(src + ".magnitude_ema", ()).reshape(())
        if design.is_torgb:
            continue
        designed = {
            "up_filter": lowpass_filter(design.up_taps, design.in_cutoff, 2 * design.in_half_width,
                                        design.tmp_sampling_rate),
            "down_filter": lowpass_filter(design.down_taps, design.out_cutoff, 2 * design.out_half_width,
                                          design.tmp_sampling_rate, radial=design.down_radial)}
        for name, ours_filter in designed.items():
            stored = tensors.get(f"{src}.{name}")
            if ours_filter is None:
                if stored is not None:
                    raise ModelFileError(f"{path}: layer {design.name} has a {name}, the design has none")
                continue
            stored = get(f"{src}.{name}", tuple(ours_filter.shape))
            difference = (stored - ours_filter).abs().max().item()
            if not difference <= FILTER_TOLERANCE:
                raise ModelFileError(f"{path}: layer {design.name}: the stored {name} differs from the StyleGAN3 "
                                     f"design by {difference:.3g}")
            ours[dst + name] = stored
    return ours


def nvlabs_stylegan3_state(generator) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(init_kwargs, G_ema.state_dict())`` in NVlabs stylegan3's layout and raw scaling for one of our
    StyleGAN3 generators: the inverse of :func:`from_nvlabs_stylegan3` (used to write real-format test
    files and to run NVlabs' code on the same weights in the benchmark)."""
    config = generator.config
    if config.mapping_hidden is not None:
        raise ParameterError("mapping_hidden: NVlabs' StyleGAN3 mapping layers are all w_dim wide",
                             parameter="mapping_hidden")
    init_kwargs: dict[str, Any] = {
        "z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim, "img_resolution": config.resolution,
        "img_channels": config.img_channels,
        "mapping_kwargs": {"num_layers": config.n_mapping, "lr_multiplier": config.mapping_lr_mul},
        **{key: getattr(config, field) for key, field in _SYNTHESIS_KWARGS.items()}}
    ours = {k: v.detach().float().cpu() for k, v in generator.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    if config.c_dim:
        out["mapping.embed.weight"] = ours["mapping_network.label_weight"] * math.sqrt(config.c_dim)
        out["mapping.embed.bias"] = ours["mapping_network.label_bias"].clone()
    for i in range(config.n_mapping):
        weight = ours[f"mapping_network.weights.{i}"]
        out[f"mapping.fc{i}.weight"] = weight / (config.mapping_lr_mul / math.sqrt(weight.shape[1]))
        out[f"mapping.fc{i}.bias"] = ours[f"mapping_network.biases.{i}"] / config.mapping_lr_mul
    out["mapping.w_avg"] = ours["w_avg"].clone()
    for key in ("weight", "transform", "freqs", "phases"):
        out[f"synthesis.input.{key}"] = ours[f"synthesis_network.input.{key}"].clone()
    out["synthesis.input.affine.weight"] = ours["synthesis_network.input.affine_weight"].clone()
    out["synthesis.input.affine.bias"] = ours["synthesis_network.input.affine_bias"].clone()
    for index, design in enumerate(generator.synthesis_network.layer_designs):
        src, dst = f"synthesis_network.layers.{index}.", f"synthesis.{design.name}."
        for key in ("weight", "bias", "magnitude_ema", "up_filter", "down_filter"):
            if src + key in ours:
                out[dst + key] = ours[src + key].clone()
        out[dst + "affine.weight"] = ours[src + "affine_weight"].clone()
        out[dst + "affine.bias"] = ours[src + "affine_bias"].clone()
    return init_kwargs, out
