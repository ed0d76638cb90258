"""TensorFlow StyleGAN2 pickles (NVlabs/stylegan2 and stylegan2-ada TF), read without TensorFlow.

Such a file is ``pickle.dump((G, D, Gs), f)`` of three ``dnnlib.tflib.network.Network`` objects; the
EMA generator ``Gs`` is the one used for inference. In TensorFlow, unpickling a Network execs its
``build_module_src`` and builds a graph. We read the pickle with the restricted unpickler instead: the
class becomes an inert record, BUILD keeps the state (``static_kwargs``, ``components``,
``variables``) as plain data, and the source text is never run. ``Gs``'s variables are then mapped
onto our StyleGAN2 network (:func:`from_tf_container`).

Supported: the ``G_main`` generator with the StyleGAN2 synthesis (``G_synthesis_stylegan2`` in the
original code, ``G_synthesis`` in ADA), skip architecture, unconditional or conditional
(``LabelConcat`` in the original code and its forks, ``LabelEmbed`` in ADA). StyleGAN (v1) and
Progressive GAN pickles are recognised and refused with a clear message.

Where the static kwargs leave a value out, the original TF code's default applies; note that the two
code bases differ: the original mapping network's hidden width defaults to 512, ADA's to the dlatent
size (and ADA's label embedding to the latent size). Every width is also checked against the stored
variables, so a file whose kwargs and weights disagree is refused rather than misread.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError, ParameterError
from .network import GeneratorConfig

TF_NETWORK = "dnnlib.tflib.network.Network"
PROGAN_NETWORK = "tfutil.Network"  # Progressive GAN's own (older) network class

# static_kwargs that do not change what the generator computes at inference (training switches,
# truncation defaults of the TF graph, precision hints: we always compute in float32 like
# ``legacy.py``'s force_fp32), or that we check against the variables' shapes instead of trusting.
_INERT_KWARGS = {
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val", "dlatent_avg_beta",
    "w_avg_beta",
    "style_mixing_prob", "randomize_noise", "is_training", "is_validation", "return_dlatents",
    "is_template_graph", "structure", "conditioning", "fused_modconv", "dtype", "num_fp16_res",
    "fmap_base", "fmap_decay", "fmap_min", "fmap_max", "fmap_const", "dlatent_broadcast", "components",
    "mapping_func", "synthesis_func", "latent_size", "label_size", "dlatent_size", "mapping_layers",
    "mapping_fmaps", "label_fmaps", "resolution", "num_channels",
    # non-square forks (pbaylies/stylegan2): harmless when the network starts from a square 4x4 const,
    # which the variables' shapes show (checked below)
    "min_h", "min_w", "res_log2",
}
_SEMANTIC_KWARGS = {"mapping_lrmul", "resample_kernel", "conv_clamp", "architecture", "nonlinearity",
                    "mapping_nonlinearity", "normalize_latents", "use_noise"}


def _short(value: Any) -> str:
    from ..limits import short_repr

    return short_repr(value)


def tf_pickle_globals() -> dict[tuple[str, str], Any]:
    """The globals a TF pickle needs besides numpy dtypes/scalars: the Network classes (as inert
    records) and plain numpy arrays."""
    from ..safe_pickle import numpy_array_globals, plain_class

    return {("dnnlib.tflib.network", "Network"): plain_class(TF_NETWORK),
            ("tfutil", "Network"): plain_class(PROGAN_NETWORK), **numpy_array_globals()}


def is_tf_network(obj: Any) -> bool:
    from ..safe_pickle import PlainObject

    return isinstance(obj, PlainObject) and obj.qualname in (TF_NETWORK, PROGAN_NETWORK)


def is_tf_container(obj: Any) -> bool:
    """A TF snapshot tuple ``(G, D, Gs)`` (or any tuple of TF networks), or one pickled network."""
    if isinstance(obj, tuple) and obj:
        return all(is_tf_network(item) for item in obj)
    return is_tf_network(obj)


def from_tf_container(obj: Any, path: Path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], bool]:
    """(config, our state dict, whether w_avg came from the file) for the inference generator of a TF pickle."""
    from ..limits import check_file_claims

    # Every array each network reaches, once per use: an array shared through the pickle's memo is one
    # object in memory but is copied for each variable that names it.
    check_file_claims(path, obj, "arrays")
    networks = list(obj) if isinstance(obj, tuple) else [obj]
    states = [_network_state(net, path, f"network {i}") for i, net in enumerate(networks)]
    # (G, D, Gs): Gs is the last; a lone pickled generator is used as it is.
    gs_state = states[-1]
    _refuse_unsupported(networks[-1], gs_state, path)
    return _convert_generator(gs_state, path)


# --------------------------------------------------------------------------------------------- checks

def _network_state(net: Any, path: Path, where: str) -> dict:
    state = net.state
    if not isinstance(state, dict) or not isinstance(state.get("build_func_name"), str) \
            or not isinstance(state.get("variables"), list):
        raise ModelFileError(f"{path}: {where} is a TensorFlow network record without the expected state "
                             "(build_func_name, static_kwargs, variables); damaged or an unknown version")
    return state


def _refuse_unsupported(net: Any, state: dict, path: Path) -> None:
    func = state["build_func_name"]
    if net.qualname == PROGAN_NETWORK or func == "G_paper":
        raise ModelFileError(f"{path}: a TensorFlow Progressive GAN (ProGAN) pickle (build function '{func}'); "
                             "not supported: only TensorFlow StyleGAN2 / StyleGAN2-ADA generators are")
    if func == "G_style":
        raise ModelFileError(f"{path}: a TensorFlow StyleGAN (version 1) pickle (build function 'G_style'); not "
                             "supported: only TensorFlow StyleGAN2 / StyleGAN2-ADA generators are")
    if func.startswith("D_"):
        raise ModelFileError(f"{path}: the last network in this TensorFlow pickle is a discriminator "
                             f"('{func}'), expected the generator Gs")
    if func != "G_main":
        raise ModelFileError(f"{path}: a TensorFlow network built by '{func}', not a StyleGAN2 generator "
                             "('G_main'); not supported")
    components = state.get("components")
    if not isinstance(components, dict) or not all(is_tf_network(components.get(k)) for k in ("mapping", "synthesis")):
        raise ModelFileError(f"{path}: the TensorFlow generator has no 'mapping' and 'synthesis' components")
    _network_state(components["mapping"], path, "Gs/mapping")
    synthesis_func = _network_state(components["synthesis"], path, "Gs/synthesis")["build_func_name"]
    if synthesis_func not in ("G_synthesis_stylegan2", "G_synthesis"):
        what = {"G_synthesis_stylegan_revised": "the revised StyleGAN synthesis of StyleGAN2 configs A-D"}.get(
            synthesis_func, f"synthesis '{synthesis_func}'")
        raise ModelFileError(f"{path}: a TensorFlow generator with {what}; only the StyleGAN2 synthesis "
                             "(configs E/F, StyleGAN2-ADA) is supported")


def _kwargs(state: dict, components: dict, path: Path) -> dict:
    """All static kwargs of Gs and its components (components repeat the top-level ones)."""
    merged: dict = {}
    for source in (state, components["mapping"].state, components["synthesis"].state):
        kwargs = source.get("static_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ModelFileError(f"{path}: 'static_kwargs' of a TensorFlow network is not a dict")
        merged.update(kwargs)
    unknown = sorted(str(k) for k in merged if k not in _INERT_KWARGS | _SEMANTIC_KWARGS)
    if unknown:
        raise ModelFileError(f"{path}: unknown TensorFlow generator kwargs {unknown}: a variant of StyleGAN2 "
                             "we do not know how to read")
    checks = {"architecture": "skip", "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu",
              "normalize_latents": True}
    for key, supported in checks.items():
        if key in merged and merged[key] != supported:
            raise ModelFileError(f"{path}: TensorFlow generator with {key}={_short(merged[key])}; only {supported!r} "
                                 "is supported")
    return merged


# --------------------------------------------------------------------------------------------- conversion

def _variables(state: dict, path: Path, where: str) -> dict[str, torch.Tensor]:
    import numpy as np

    out: dict[str, torch.Tensor] = {}
    for item in state["variables"]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ModelFileError(f"{path}: {where} variables are not (name, value) pairs")
        name, value = item
        if isinstance(value, np.generic):  # 0-d variables come as numpy scalars, as TF's session.run returns them
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise ModelFileError(f"{path}: {where} variable '{name}' is not a float array "
                                 f"(got {type(value).__name__} {getattr(value, 'dtype', '')})")
        out[name] = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))
    return out


def _convert_generator(state: dict, path: Path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], bool]:
    components = state["components"]
    kwargs = _kwargs(state, components, path)
    top = _variables(state, path, "Gs")
    mapping = _variables(components["mapping"].state, path, "Gs/mapping")
    synthesis = _variables(components["synthesis"].state, path, "Gs/synthesis")
    ada_layout = components["synthesis"].state["build_func_name"] == "G_synthesis"

    def get(variables: dict, name: str, ndim: int, where: str) -> torch.Tensor:
        value = variables.get(name)
        if value is None:
            raise ModelFileError(f"{path}: missing TensorFlow variable '{where}/{name}' (incomplete or not a "
                                 "StyleGAN2 generator)")
        if value.ndim != ndim:
            raise ModelFileError(f"{path}: TensorFlow variable '{where}/{name}' has shape {list(value.shape)}, "
                                 f"expected {ndim} dimensions")
        return value

    def expect(what: str, found: int, declared: Any) -> None:
        if declared is not None and _number(declared, what, path) != found:
            raise ModelFileError(f"{path}: static_kwargs say {what}={declared} but the variables have {found}")

    # --- mapping
    n_mapping = len({m.group(1) for k in mapping if (m := re.fullmatch(r"Dense(\d+)/weight", k))})
    if n_mapping == 0:
        raise ModelFileError(f"{path}: the TensorFlow mapping network has no 'Dense0/weight'")
    dense = [get(mapping, f"Dense{i}/weight", 2, "mapping") for i in range(n_mapping)]
    expect("mapping_layers", n_mapping, kwargs.get("mapping_layers"))
    w_dim = dense[-1].shape[1]
    expect("dlatent_size", w_dim, kwargs.get("dlatent_size"))
    hidden = dense[0].shape[1] if n_mapping > 1 else None
    if n_mapping > 1:  # the two code bases default the hidden width differently
        default_hidden = w_dim if ada_layout else 512
        declared = kwargs.get("mapping_fmaps")
        expect("mapping_fmaps", hidden, default_hidden if declared is None else declared)
    c_dim, label_mode, label_width = 0, None, 0
    ours: dict[str, torch.Tensor] = {}
    if "LabelConcat/weight" in mapping:  # original code: y = c·L, no gain, no bias
        concat = get(mapping, "LabelConcat/weight", 2, "mapping")
        c_dim, label_width, label_mode = concat.shape[0], concat.shape[1], "concat"
        ours["mapping_network.label_weight"] = concat.t().contiguous()
    elif "LabelEmbed/weight" in mapping:  # ADA: a dense layer (gain 1/sqrt(fan_in), lr 1) with bias
        embed = get(mapping, "LabelEmbed/weight", 2, "mapping")
        c_dim, label_width, label_mode = embed.shape[0], embed.shape[1], "embed"
        ours["mapping_network.label_weight"] = embed.t() / math.sqrt(c_dim)
        ours["mapping_network.label_bias"] = get(mapping, "LabelEmbed/bias", 1, "mapping")
    expect("label_size", c_dim, kwargs.get("label_size", 0))
    z_dim = dense[0].shape[0] - label_width
    if label_mode == "concat" and z_dim != label_width:
        raise ModelFileError(f"{path}: 'LabelConcat/weight' projects labels to {label_width} values, but the "
                             f"latent has {z_dim}")
    if z_dim <= 0:
        raise ModelFileError(f"{path}: 'Dense0/weight' reads {dense[0].shape[0]} values, too few for the latent "
                             f"and the {label_width} label values")
    expect("latent_size", z_dim, kwargs.get("latent_size"))
    if label_mode == "embed":
        expect("label_fmaps", label_width, kwargs.get("label_fmaps"))
    lr_mul = _number(kwargs.get("mapping_lrmul", 0.01), "mapping_lrmul", path)
    for i, weight in enumerate(dense):
        ours[f"mapping_network.weights.{i}"] = weight.t() * (lr_mul / math.sqrt(weight.shape[0]))
        ours[f"mapping_network.biases.{i}"] = get(mapping, f"Dense{i}/bias", 1, "mapping") * lr_mul

    # --- synthesis
    resolutions = sorted(int(m.group(1)) for k in synthesis if (m := re.fullmatch(r"(\d+)x\1/ToRGB/weight", k)))
    if not resolutions or resolutions[0] != 4 or resolutions != [2 ** i for i in range(2, len(resolutions) + 2)]:
        raise ModelFileError(f"{path}: the TensorFlow synthesis network has ToRGB layers at {resolutions}, expected "
                             "4x4, 8x8, ... up to the resolution (square images only)")
    resolution = resolutions[-1]
    expect("resolution", resolution, kwargs.get("resolution"))
    const = get(synthesis, "4x4/Const/const", 4, "synthesis")
    if tuple(const.shape[2:]) != (4, 4):
        raise ModelFileError(f"{path}: the synthesis starts from a {list(const.shape[2:])} constant; only square "
                             "4x4 starts are supported")
    ours["synthesis_network.const"] = const[0]
    layers = [("4x4/Conv", False)]
    for res in resolutions[1:]:
        layers += [(f"{res}x{res}/Conv0_up", True), (f"{res}x{res}/Conv1", False)]
    use_noise = bool(kwargs.get("use_noise", True))
    channels = {4: const.shape[1]}
    for j, (name, up) in enumerate(layers):
        dst = f"synthesis_network.convs.{j}."
        weight = get(synthesis, name + "/weight", 4, "synthesis")  # HWIO
        if up:  # TF's transposed convolution reads the kernel flipped relative to NVlabs PyTorch's
            weight = weight.flip(0, 1)
        weight = weight.permute(3, 2, 0, 1)  # -> OIHW
        ours[dst + "weight"] = weight / math.sqrt(weight[0].numel())
        channels[int(name.split("x")[0])] = weight.shape[0]
        _take_tf_affine(ours, dst, synthesis, name, get)
        ours[dst + "bias"] = get(synthesis, name + "/bias", 1, "synthesis")
        strength = synthesis.get(name + "/noise_strength")
        ours[dst + "noise_strength"] = (strength.reshape(()) if use_noise and strength is not None
                                        else torch.zeros(()))
        res = 4 if j == 0 else int(name.split("x")[0])
        noise = synthesis.get(f"noise{j}")
        ours[dst + "noise_const"] = (get(synthesis, f"noise{j}", 4, "synthesis")[0, 0] if noise is not None
                                     else torch.zeros(res, res))
    for k, res in enumerate(resolutions):
        name, dst = f"{res}x{res}/ToRGB", f"synthesis_network.torgbs.{k}."
        weight = get(synthesis, name + "/weight", 4, "synthesis")[0, 0].t()  # [1,1,I,O] -> [O, I]
        ours[dst + "weight"] = weight / math.sqrt(weight.shape[1])
        ours[dst + "bias"] = get(synthesis, name + "/bias", 1, "synthesis")
        _take_tf_affine(ours, dst, synthesis, name, get)
    img_channels = ours["synthesis_network.torgbs.0.weight"].shape[0]
    expect("num_channels", img_channels, kwargs.get("num_channels"))

    clamp = kwargs.get("conv_clamp")
    try:
        config = GeneratorConfig(
            resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mapping=n_mapping, mapping_lr_mul=lr_mul,
            mapping_hidden=hidden, channels=channels,
            conv_clamp=None if clamp is None else _number(clamp, "conv_clamp", path),
            blur_kernel=[int(t) for t in kwargs.get("resample_kernel") or [1, 3, 3, 1]],
            img_channels=img_channels, c_dim=c_dim, label_mode=label_mode, label_features=label_width or None,
            source_format="tensorflow-ada" if ada_layout else "tensorflow")
    except (ParameterError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: unsupported TensorFlow generator settings ({exc})") from None
    w_avg = top.get("dlatent_avg")
    if w_avg is not None:
        if w_avg.shape != (w_dim,):
            raise ModelFileError(f"{path}: 'dlatent_avg' has shape {list(w_avg.shape)}, expected [{w_dim}]")
        ours["w_avg"] = w_avg
    else:
        ours["w_avg"] = torch.zeros(w_dim)
    return config, ours, w_avg is not None


def _number(value: Any, key: str, path: Path) -> float:
    from ..limits import short_repr

    try:
        finite = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    except OverflowError:  # a 400-digit integer
        finite = False
    if not finite:
        raise ModelFileError(f"{path}: TensorFlow kwarg {key}={short_repr(value)} is not a finite number of usable size")
    return value


def _take_tf_affine(ours: dict, dst: str, synthesis: dict, name: str, get) -> None:
    mod_weight = get(synthesis, name + "/mod_weight", 2, "synthesis")  # [dlatent, in]
    ours[dst + "affine_weight"] = mod_weight.t() / math.sqrt(mod_weight.shape[0])
    ours[dst + "affine_bias"] = get(synthesis, name + "/mod_bias", 1, "synthesis") + 1  # TF adds the 1 at run time
