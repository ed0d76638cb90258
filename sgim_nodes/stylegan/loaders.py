"""Loading StyleGAN2 and StyleGAN3 generators from any common checkpoint format, without running code from the file.

Formats (detected from the bytes, never from the extension):

- rosinality ``.pt`` (``torch.save`` zip or legacy): ``{"g_ema": state_dict, "latent_avg": [D]}``,
  optionally with ``g``/``d`` training copies, or a bare ``g_ema`` state dict. Read with
  ``torch.load(weights_only=True)``. A bare state dict has no mean latent: ``w_avg`` is then the
  mean of the mapping output over 4096 z drawn from seed 0 (:meth:`Generator.estimate_w_avg`).
- NVlabs stylegan2-ada-pytorch snapshot pickles: ``G_ema`` only (never the training copy ``G``),
  read by :func:`..safe_pickle.restricted_load`. The ``torch_utils.persistence`` records become
  inert ``PlainObject`` records whose pickled ``state`` we read as plain data; also a
  ``torch.save``-d ``G_ema.state_dict()`` (bare or as ``{"G_ema": ...}``).
- Our ``.safetensors`` (``sgim_kind = "stylegan2_generator"``, the :class:`GeneratorConfig` as JSON
  metadata), and a plain safetensors file holding one of the state dicts above.
- NVlabs stylegan3 snapshot pickles (StyleGAN3 T and R, recognised by their ``synthesis.input``
  module) become a :class:`.stylegan3.StyleGAN3Generator` (:mod:`.stylegan3_files`); our StyleGAN3
  ``.safetensors`` have ``sgim_kind = "stylegan3_generator"``.

The architecture (resolution, channels per resolution, style/latent sizes, mapping depth, blur
taps, NVlabs conv_clamp) is inferred from the tensors. rosinality files do not record the mapping
learning-rate multiplier; every published one uses 0.01 (``mapping_lr_mul`` overrides it).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError, ParameterError, UnsafeFileError
from .network import Generator, GeneratorConfig
from .stylegan3 import StyleGAN3Config, StyleGAN3Generator
from .stylegan3_files import from_nvlabs_stylegan3, is_stylegan3

GENERATOR_KIND = "stylegan2_generator"
STYLEGAN3_KIND = "stylegan3_generator"
ROSINALITY_LR_MUL = 0.01
PERSISTENT_RECORD = "torch_utils.persistence._reconstruct_persistent_obj"
# Module names only StyleGAN-XL's mapping network has (a projection of its pretrained class embedding)
STYLEGAN_XL_MARKERS = frozenset({"embed_proj"})

_MAGIC_NAMES = {  # a few common non-model files users pick by mistake
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"RIFF": "a RIFF (WAV/WebP) file", b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive",
}
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


# --------------------------------------------------------------------------------------------- public API

def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu",
                   dtype: torch.dtype | str = torch.float32, modulation: str = "activation",
                   mapping_lr_mul: float | None = None) -> Generator:
    """Load a StyleGAN2 or StyleGAN3 generator from a rosinality ``.pt``, NVlabs ``.pkl`` or our ``.safetensors``.

    ``device`` as :func:`..device.resolve_device` ("auto", "cpu", "cuda:1", ...); ``dtype`` float32,
    float16 or bfloat16 (a torch dtype or its name); ``modulation`` "activation" or "weight";
    ``mapping_lr_mul`` overrides the 0.01 assumed for rosinality files. The generator is frozen, in
    eval mode, and named after the file's stem.
    """
    from ..device import resolve_device

    path = Path(path)
    device, dtype = resolve_device(device), _resolve_dtype(dtype)
    with torch.inference_mode(False):  # ComfyUI loads under inference mode; the result must stay differentiable
        try:
            config, state, w_avg_known = _read_generator(path, mapping_lr_mul)
        except ParameterError as exc:  # an architecture inferred from the file's tensors is out of range
            raise ModelFileError(f"{path}: {exc}") from None
        if isinstance(config, StyleGAN3Config):  # modulation: StyleGAN3 layers have one form only
            generator = StyleGAN3Generator(config, name=path.stem)
        else:
            generator = Generator(config, modulation=modulation, name=path.stem)
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{path}: the tensors do not fit the {generator.family} architecture inferred "
                                 f"from them ({_first_line(exc)})") from None
        if not w_avg_known:
            generator.w_avg.copy_(generator.estimate_w_avg())
        _check_finite(generator, path)
        generator.class_names = _stored_class_names(path, config.c_dim)
        generator.source_file = str(path.resolve())  # what caches about this generator are keyed by
        return generator.to(device=device, dtype=dtype)


def save_generator(generator: Generator | StyleGAN3Generator, path: str | os.PathLike) -> None:
    """Write ``generator`` as our ``.safetensors`` (float32 weights + the config as JSON), atomically."""
    from ..fileio import save_model_file

    import json

    tensors = {k: v.float() for k, v in generator.state_dict().items()}
    extra = {"name": generator.name}
    names = getattr(generator, "class_names", None)
    if names:
        extra["class_names"] = json.dumps(list(check_class_names(names, generator.c_dim, "class_names")))
    kind = STYLEGAN3_KIND if isinstance(generator, StyleGAN3Generator) else GENERATOR_KIND
    save_model_file(path, tensors, kind, generator.config.to_dict(), extra)


def check_class_names(names, c_dim: int, name: str) -> list[str]:
    """``names`` as a list of ``c_dim`` distinct non-empty strings, or a ParameterError naming ``name``."""
    from ..limits import MAX_NAME_CHARS

    if any(not isinstance(n, (str, int)) or isinstance(n, bool) for n in names):
        raise ParameterError(f"{name}: class names must be strings")
    names = [n.strip() if isinstance(n, str) else str(n) for n in names]
    if any(len(n) > MAX_NAME_CHARS for n in names):
        raise ParameterError(f"{name}: class names must be at most {MAX_NAME_CHARS} characters")
    if c_dim == 0:
        raise ParameterError(f"{name}: the generator is unconditional; it has no classes to name")
    if len(names) != c_dim:
        raise ParameterError(f"{name}: got {len(names)} class names for a generator with {c_dim} classes")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ParameterError(f"{name}: class names must be non-empty and distinct")
    return names


def _stored_class_names(path: Path, c_dim: int) -> list[str] | None:
    """Class names from our ``.safetensors`` metadata; no other format records them."""
    import json

    from ..fileio import read_safetensors_metadata

    if not c_dim or _sniff(path) != "safetensors":
        return None
    text = read_safetensors_metadata(path).get("class_names")
    if text is None:
        return None
    try:
        value = json.loads(text)
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return check_class_names(value, c_dim, "class_names")
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: the 'class_names' metadata is invalid ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None


def rosinality_checkpoint(generator: Generator) -> dict[str, Any]:
    """``{"g_ema": state_dict, "latent_avg": tensor}`` in rosinality's exact key layout and raw
    (equalised-learning-rate) scaling, as ``convert_weight.py`` writes it; ``torch.save`` it to
    make a real-format file."""
    cfg = generator.config
    ours = {k: v.detach().float().cpu() for k, v in generator.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_mapping):
        weight = ours[f"mapping_network.weights.{i}"]
        out[f"style.{i + 1}.weight"] = weight / (cfg.mapping_lr_mul / math.sqrt(weight.shape[1]))
        out[f"style.{i + 1}.bias"] = ours[f"mapping_network.biases.{i}"] / cfg.mapping_lr_mul
    out["input.input"] = ours["synthesis_network.const"][None].clone()
    blur = _blur_kernel_2d(cfg.blur_kernel)
    n_convs = len(generator.synthesis_network.convs)
    for j in range(n_convs):
        name = "conv1" if j == 0 else f"convs.{j - 1}"
        src = f"synthesis_network.convs.{j}."
        weight = ours[src + "weight"]
        out[f"{name}.conv.weight"] = (weight * math.sqrt(weight[0].numel()))[None]
        if j % 2 == 1:
            out[f"{name}.conv.blur.kernel"] = blur.clone()
        _put_affine(out, f"{name}.conv.modulation", ours, src, cfg.w_dim)
        out[f"{name}.noise.weight"] = ours[src + "noise_strength"].reshape(1)
        out[f"{name}.activate.bias"] = ours[src + "bias"].clone()
    for k in range(len(generator.synthesis_network.torgbs)):
        name = "to_rgb1" if k == 0 else f"to_rgbs.{k - 1}"
        src = f"synthesis_network.torgbs.{k}."
        weight = ours[src + "weight"]
        out[f"{name}.bias"] = ours[src + "bias"].reshape(1, -1, 1, 1)
        if k > 0:
            out[f"{name}.upsample.kernel"] = blur.clone()
        out[f"{name}.conv.weight"] = (weight * math.sqrt(weight.shape[1]))[None, :, :, None, None]
        _put_affine(out, f"{name}.conv.modulation", ours, src, cfg.w_dim)
    for j in range(n_convs):
        out[f"noises.noise_{j}"] = ours[f"synthesis_network.convs.{j}.noise_const"][None, None].clone()
    return {"g_ema": out, "latent_avg": ours["w_avg"].clone()}


# --------------------------------------------------------------------------------------------- reading

def _read_generator(path: Path, mapping_lr_mul: float | None) -> tuple[GeneratorConfig, dict, bool]:
    """(config, our state dict, whether w_avg came from the file) for any supported file."""
    from ..limits import check_file_claims

    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path, mapping_lr_mul)
    if kind == "torch":
        obj = _torch_load(path)
        check_file_claims(path, obj)  # views claim no more than the file stores, before any is materialised
        return _from_container(obj, path, mapping_lr_mul)
    return _from_container(_load_pickle(path), path, mapping_lr_mul)


def _sniff(path: Path) -> str:
    if not path.exists():
        raise ModelFileError(f"{path}: file not found (expected a StyleGAN2 or StyleGAN3 .pt, .pkl or .safetensors file)")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a StyleGAN2 or StyleGAN3 checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ModelFileError(f"{path}: the file is empty (expected a StyleGAN2 or StyleGAN3 checkpoint)")
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    for magic, what in _MAGIC_NAMES.items():
        if head.startswith(magic):
            raise ModelFileError(f"{path}: this is {what}, not a StyleGAN2 or StyleGAN3 checkpoint (.pt, .pkl or .safetensors)")
    raise ModelFileError(f"{path}: not a StyleGAN2 or StyleGAN3 checkpoint: the content is neither a PyTorch file, "
                         "a pickle nor a .safetensors file")


def _torch_load(path: Path) -> Any:
    from ..errors import torch_message
    from ..safe_pickle import check_torch_file

    check_torch_file(path)  # declared sizes against the real ones, before torch allocates anything
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError / EOFError / ... depending on the damage
        message = torch_message(exc)
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise UnsafeFileError(f"{path}: refused to load: the file asks for code beyond plain tensors "
                                  f"(torch's safe loader said: {message}); nothing from it was executed") from None
        raise ModelFileError(f"{path}: could not read this PyTorch file (truncated or damaged?): {message}") from None


def _load_pickle(path: Path) -> Any:
    from ..safe_pickle import restricted_load

    from .tf_pickle import tf_pickle_globals

    try:
        with open(path, "rb") as f:
            return restricted_load(f, source=str(path),
                                   extra_allowed={("dnnlib.util", "EasyDict"): dict, **tf_pickle_globals()},
                                   stub_prefixes=("torch_utils.persistence",))
    except UnsafeFileError as exc:
        refused = getattr(exc, "refused_global", "")
        if refused.startswith("torch.nn.modules.") and _pickle_mentions(path, STYLEGAN_XL_MARKERS):
            raise ModelFileError(f"{path}: a StyleGAN-XL snapshot (its mapping network holds a pretrained class "
                                 f"embedding, '{refused}'); StyleGAN-XL generators are not supported. Nothing "
                                 "from the file was executed.") from None
        raise


def _pickle_mentions(path: Path, words: frozenset[str]) -> bool:
    """Whether a string opcode of the pickle is one of ``words``: reads the opcode stream without building
    any object (so without running anything), one opcode at a time."""
    import pickletools

    try:
        with open(path, "rb") as f:
            for opcode, arg, _ in pickletools.genops(f):
                if isinstance(arg, str) and "UNICODE" in opcode.name and arg in words:
                    return True
    except Exception:  # a damaged stream: the caller reports the refusal it already has
        return False
    return False


def _read_safetensors(path: Path, mapping_lr_mul: float | None) -> tuple[GeneratorConfig, dict, bool]:
    from ..fileio import load_model_file, read_safetensors_metadata

    kind = read_safetensors_metadata(path).get("sgim_kind")
    if kind == STYLEGAN3_KIND:
        tensors, config_dict, _ = load_model_file(path, STYLEGAN3_KIND)
        try:
            config = StyleGAN3Config.from_dict(config_dict)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: the StyleGAN3 config in the metadata is invalid ({exc})") from None
        _check_tensors_fit_config(config, tensors, path)
        return config, tensors, True
    if kind is None:  # someone else's export of a state dict
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise ModelFileError(f"{path}: could not read the tensors ({_first_line(exc)})") from None
        return _from_container(tensors, path, mapping_lr_mul)
    tensors, config_dict, _ = load_model_file(path, GENERATOR_KIND)
    try:  # types and ranges first, then the shapes it implies against the tensors: nothing is built before
        config = GeneratorConfig.from_dict(config_dict)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the generator config in the metadata is invalid ({exc})") from None
    _check_tensors_fit_config(config, tensors, path)
    return config, tensors, True


def _check_tensors_fit_config(config: GeneratorConfig | StyleGAN3Config, tensors: dict, path: Path) -> None:
    """The file's tensors are exactly those of the network its config describes (names and shapes),
    checked on the meta device, so a config that disagrees with its tensors builds nothing real."""
    network = StyleGAN3Generator if isinstance(config, StyleGAN3Config) else Generator
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in network(config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or extra or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
            ", ".join(f"'{k}' is {list(found[k])}, the config needs {list(expected[k])}" for k in wrong[:3])) if part)
        raise ModelFileError(f"{path}: the tensors do not match the generator config in the metadata ({detail})")


def _from_container(obj: Any, path: Path, mapping_lr_mul: float | None) -> tuple[GeneratorConfig, dict, bool]:
    """Dispatch on what a pickle / torch file contained."""
    from .tf_pickle import from_tf_container, is_tf_container

    if is_tf_container(obj):  # TensorFlow (G, D, Gs)
        return from_tf_container(obj, path)
    if _is_persistent(obj):  # a pickled network on its own
        return _from_nvlabs_network(obj, path)
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: expected a checkpoint dict, found a {type(obj).__name__}")
    if "G_ema" in obj:
        if _is_tensor_dict(obj["G_ema"]):  # {"G_ema": G_ema.state_dict()} written by conversion scripts
            return _from_nvlabs_flat(_strip_prefix(obj["G_ema"], "module."), {}, path)
        return _from_nvlabs_network(obj["G_ema"], path)
    if "g_ema" in obj:
        state = obj["g_ema"]
        if not _is_tensor_dict(state):
            raise ModelFileError(f"{path}: 'g_ema' is not a state dict of tensors")
        latent_avg = obj.get("latent_avg")
        return _from_rosinality(state, latent_avg, path, mapping_lr_mul)
    if any(k in obj for k in ("G", "D", "d", "g")):
        present = sorted(k for k in ("G", "D", "g", "d") if k in obj)
        raise ModelFileError(f"{path}: has no EMA generator ('g_ema' or 'G_ema'), only {present}; a "
                             "discriminator or training copy cannot be used for generation")
    if not _is_tensor_dict(obj):
        raise ModelFileError(f"{path}: not a StyleGAN2 checkpoint (top-level keys: {_some_keys(obj)})")
    state = _strip_prefix(obj, "module.")
    if "style.1.weight" in state:
        return _from_rosinality(state, None, path, mapping_lr_mul)
    if "mapping.fc0.weight" in state or "synthesis.b4.const" in state:
        return _from_nvlabs_flat(state, {}, path)
    if "final_linear.0.weight" in state or "b4.out.weight" in state or "final_conv.0.weight" in state:
        raise ModelFileError(f"{path}: this is a StyleGAN2 discriminator, not a generator")
    raise ModelFileError(f"{path}: not a StyleGAN2 generator: expected rosinality keys ('style.1.weight', "
                         f"'conv1.conv.weight', ...) or NVlabs keys ('mapping.fc0.weight', 'synthesis.b4.const', "
                         f"...), found {_some_keys(state)}")


# --------------------------------------------------------------------------------------------- rosinality

def _from_rosinality(state: dict, latent_avg: Any, path: Path, mapping_lr_mul: float | None
                     ) -> tuple[GeneratorConfig, dict, bool]:
    state = _strip_prefix(state, "module.")
    get = _getter(state, path)
    lr_mul = ROSINALITY_LR_MUL if mapping_lr_mul is None else float(mapping_lr_mul)
    n_mapping = _count(state, r"style\.(\d+)\.weight")
    if n_mapping == 0 or "input.input" not in state:
        raise ModelFileError(f"{path}: not a rosinality StyleGAN2 generator (no 'style.N.weight' mapping "
                             f"layers or no 'input.input'); keys: {_some_keys(state)}")
    if any(f"style.{i}.weight" not in state for i in range(1, n_mapping + 1)):
        raise ModelFileError(f"{path}: mapping layers 'style.1..{n_mapping}' are not numbered consecutively")
    n_rgbs = _count(state, r"to_rgbs\.(\d+)\.conv\.weight")
    resolution = 2 ** (n_rgbs + 2)
    const = get("input.input", ndim=4)
    channels = {4: const.shape[1]}
    for k in range(n_rgbs):
        channels[2 ** (k + 3)] = get(f"convs.{2 * k}.conv.weight", ndim=5).shape[1]
    first, last = get("style.1.weight", ndim=2), get(f"style.{n_mapping}.weight", ndim=2)
    blur = state.get("convs.0.conv.blur.kernel", state.get("to_rgbs.0.upsample.kernel"))
    config = GeneratorConfig(
        resolution=resolution, z_dim=first.shape[1], w_dim=last.shape[0], n_mapping=n_mapping,
        mapping_lr_mul=lr_mul, mapping_hidden=first.shape[0] if n_mapping > 1 else None, channels=channels,
        conv_clamp=None, blur_kernel=_taps_from_kernel(blur, path) if blur is not None else [1, 3, 3, 1],
        source_format="rosinality")

    ours: dict[str, torch.Tensor] = {}
    for i in range(n_mapping):
        weight = get(f"style.{i + 1}.weight", ndim=2)
        ours[f"mapping_network.weights.{i}"] = weight * (lr_mul / math.sqrt(weight.shape[1]))
        ours[f"mapping_network.biases.{i}"] = get(f"style.{i + 1}.bias") * lr_mul
    ours["synthesis_network.const"] = const[0]
    for j in range(2 * n_rgbs + 1):
        name = "conv1" if j == 0 else f"convs.{j - 1}"
        dst = f"synthesis_network.convs.{j}."
        weight = get(f"{name}.conv.weight", ndim=5)[0]
        ours[dst + "weight"] = weight / math.sqrt(weight[0].numel())
        _take_affine(ours, dst, get, f"{name}.conv.modulation")
        ours[dst + "noise_strength"] = get(f"{name}.noise.weight").reshape(())
        ours[dst + "bias"] = get(f"{name}.activate.bias")
        ours[dst + "noise_const"] = get(f"noises.noise_{j}", ndim=4)[0, 0]
    for k in range(n_rgbs + 1):
        name = "to_rgb1" if k == 0 else f"to_rgbs.{k - 1}"
        dst = f"synthesis_network.torgbs.{k}."
        weight = get(f"{name}.conv.weight", ndim=5)[0, :, :, 0, 0]
        ours[dst + "weight"] = weight / math.sqrt(weight.shape[1])
        ours[dst + "bias"] = get(f"{name}.bias").reshape(-1)
        _take_affine(ours, dst, get, f"{name}.conv.modulation")
    known = latent_avg is not None
    if known:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != config.w_dim:
            raise ModelFileError(f"{path}: 'latent_avg' should be a tensor of {config.w_dim} values")
        ours["w_avg"] = latent_avg.reshape(-1).float()
    else:
        ours["w_avg"] = torch.zeros(config.w_dim)
    _expect_only(state, _rosinality_keys(state, n_mapping, n_rgbs), path)
    return config, ours, known


def _take_affine(ours: dict, dst: str, get, src: str) -> None:
    weight = get(src + ".weight", ndim=2)
    ours[dst + "affine_weight"] = weight / math.sqrt(weight.shape[1])
    ours[dst + "affine_bias"] = get(src + ".bias")


def _put_affine(out: dict, dst: str, ours: dict, src: str, w_dim: int) -> None:
    out[dst + ".weight"] = ours[src + "affine_weight"] * math.sqrt(w_dim)
    out[dst + ".bias"] = ours[src + "affine_bias"].clone()


def _rosinality_keys(state: dict, n_mapping: int, n_rgbs: int) -> set[str]:
    """Every key a rosinality generator of this shape may hold (FIR kernels are optional buffers)."""
    keys = {"input.input"} | {f"style.{i}.{p}" for i in range(1, n_mapping + 1) for p in ("weight", "bias")}
    convs = ["conv1"] + [f"convs.{m}" for m in range(2 * n_rgbs)]
    for j, name in enumerate(convs):
        keys |= {f"{name}.conv.weight", f"{name}.conv.modulation.weight", f"{name}.conv.modulation.bias",
                 f"{name}.noise.weight", f"{name}.activate.bias", f"{name}.conv.blur.kernel", f"noises.noise_{j}"}
    for name in ["to_rgb1"] + [f"to_rgbs.{k}" for k in range(n_rgbs)]:
        keys |= {f"{name}.conv.weight", f"{name}.conv.modulation.weight", f"{name}.conv.modulation.bias",
                 f"{name}.bias", f"{name}.upsample.kernel"}
    return keys


# --------------------------------------------------------------------------------------------- NVlabs

def _is_persistent(obj: Any) -> bool:
    from ..safe_pickle import PlainObject

    return isinstance(obj, PlainObject) and obj.qualname == PERSISTENT_RECORD


def _persistent_meta(obj: Any, path: Path, where: str) -> dict:
    if not _is_persistent(obj) or not obj.args or not isinstance(obj.args[0], dict) \
            or not isinstance(obj.args[0].get("state"), dict):
        raise ModelFileError(f"{path}: '{where}' is not an NVlabs network record")
    return obj.args[0]


def _flatten_persistent(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Walk nested persistence records into (flat state dict, plain attributes per module path).

    Iterative and budgeted (:mod:`..limits`): a record shared by several parents is one object but
    yields names under each, so records are counted per use and the walk stops at
    ``MAX_MODULE_RECORDS`` uses, ``MAX_NESTING_DEPTH`` levels or ``MAX_TENSORS`` tensors; a
    crafted "billion laughs" file is refused in milliseconds instead of expanding without end.
    """
    from ..limits import check_tree_walk

    tensors: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict] = {}
    pending = [(obj, "", 0)]
    uses = 0
    while pending:
        record, prefix, depth = pending.pop()
        uses += 1
        check_tree_walk(path, uses, depth, len(tensors), "a StyleGAN2 has about 100 modules, 5 levels deep")
        meta = _persistent_meta(record, path, prefix.rstrip(".") or "G_ema")
        state = meta["state"]
        for group in ("_parameters", "_buffers"):
            for name, value in _record_table(state, group, path, prefix).items():
                if isinstance(value, torch.Tensor):
                    tensors[prefix + str(name)] = value.detach()
        attrs[prefix.rstrip(".")] = {"class_name": meta.get("class_name"),
                                     **{k: v for k, v in state.items() if isinstance(k, str) and not k.startswith("_")}}
        children = [(name, child) for name, child in _record_table(state, "_modules", path, prefix).items()
                    if child is not None]
        pending.extend((child, f"{prefix}{name}.", depth + 1) for name, child in reversed(children))
    return tensors, attrs


def _record_table(state: dict, group: str, path: Path, prefix: str) -> dict:
    table = state.get(group) or {}
    if not isinstance(table, dict):
        raise ModelFileError(f"{path}: '{prefix}{group}' of an NVlabs network record is not a dict")
    return table


def _from_nvlabs_network(obj: Any, path: Path) -> tuple[GeneratorConfig, dict, bool]:
    meta = _persistent_meta(obj, path, "G_ema")
    state = meta["state"]
    class_name = meta.get("class_name")
    if class_name != "Generator":
        raise ModelFileError(f"{path}: 'G_ema' is a '{class_name}', expected an NVlabs StyleGAN2 'Generator'")
    tensors, attrs = _flatten_persistent(obj, path)
    from ..limits import check_file_claims

    check_file_claims(path, tensors)  # per module path, so a tensor shared by many records counts per use
    if is_stylegan3(tensors, attrs):
        config, ours = from_nvlabs_stylegan3(state.get("_init_kwargs"), tensors, attrs, path)
        return config, ours, True
    synthesis = attrs.get("synthesis", {})
    layer_names = {key.split(".")[1] for key in tensors if key.startswith("synthesis.")}
    if synthesis.get("class_name") != "SynthesisNetwork" or any(re.fullmatch(r"L\d+_.*", n) for n in layer_names):
        raise ModelFileError(f"{path}: the synthesis network is neither StyleGAN2's nor StyleGAN3's "
                             f"({synthesis.get('class_name')!r}); expected an NVlabs StyleGAN2/3 generator")
    c_dim = state.get("c_dim", 0)
    if isinstance(c_dim, int) and not isinstance(c_dim, bool) and c_dim > 0 and "mapping.embed.weight" not in tensors:
        raise ModelFileError(f"{path}: a conditional generator (c_dim={c_dim}) without its class embedding "
                             "'mapping.embed' (damaged or an unknown variant)")
    return _from_nvlabs_flat(tensors, attrs, path)


def _from_nvlabs_flat(state: dict, attrs: dict[str, dict], path: Path) -> tuple[GeneratorConfig, dict, bool]:
    """NVlabs ``G_ema.state_dict()`` layout (+ attributes from the pickle, when we have them)."""
    if any(key.startswith("synthesis.input.") for key in state):
        raise ModelFileError(f"{path}: the tensors of a StyleGAN3 generator without its design values (a bare "
                             "state dict); load or convert the NVlabs snapshot .pkl instead")
    get = _getter(state, path)
    n_mapping = _count(state, r"mapping\.fc(\d+)\.weight")
    blocks = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if n_mapping == 0 or not blocks or blocks[0] != 4:
        raise ModelFileError(f"{path}: not an NVlabs StyleGAN2 generator (no 'mapping.fcN' layers or no "
                             f"'synthesis.b4' block); keys: {_some_keys(state)}")
    resolution = blocks[-1]
    if blocks != [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]:
        raise ModelFileError(f"{path}: synthesis blocks {blocks} are not the consecutive powers of two StyleGAN2 uses")
    for res in blocks:
        arch = attrs.get(f"synthesis.b{res}", {}).get("architecture", "skip")
        if arch != "skip":
            raise ModelFileError(f"{path}: synthesis architecture '{arch}' is not supported (only 'skip', the "
                                 "StyleGAN2 default)")
    first, last = get("mapping.fc0.weight", ndim=2), get(f"mapping.fc{n_mapping - 1}.weight", ndim=2)
    clamps = {attrs.get(f"synthesis.b{r}.conv1", {}).get("conv_clamp") for r in blocks}
    if len(clamps) > 1:
        raise ModelFileError(f"{path}: layers use different conv_clamp values {sorted(map(str, clamps))}")
    conv_clamp = clamps.pop()
    fir = state.get("synthesis.b8.resample_filter", state.get("synthesis.b4.resample_filter"))
    channels = {res: get(f"synthesis.b{res}.conv1.weight", ndim=4).shape[0] for res in blocks}
    embed = get("mapping.embed.weight", ndim=2) if "mapping.embed.weight" in state else None
    label_width, c_dim = (0, 0) if embed is None else embed.shape
    if first.shape[1] <= label_width:
        raise ModelFileError(f"{path}: 'mapping.fc0.weight' reads {first.shape[1]} values, too few for z and "
                             f"the {label_width}-wide class embedding")
    config = GeneratorConfig(
        resolution=resolution, z_dim=first.shape[1] - label_width, w_dim=last.shape[0], n_mapping=n_mapping,
        c_dim=c_dim, label_mode="embed" if c_dim else None, label_features=label_width or None,
        mapping_lr_mul=float(attrs.get("mapping.fc0", {}).get("bias_gain", ROSINALITY_LR_MUL)),
        mapping_hidden=first.shape[0] if n_mapping > 1 else None, channels=channels,
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        blur_kernel=_taps_from_kernel(fir, path) if fir is not None else [1, 3, 3, 1], source_format="nvlabs")

    def gain(module: str, name: str, default: float) -> float:
        return float(attrs.get(module, {}).get(name, default))

    ours: dict[str, torch.Tensor] = {}
    for i in range(n_mapping):
        weight = get(f"mapping.fc{i}.weight", ndim=2)
        module = f"mapping.fc{i}"
        ours[f"mapping_network.weights.{i}"] = weight * gain(module, "weight_gain",
                                                             config.mapping_lr_mul / math.sqrt(weight.shape[1]))
        ours[f"mapping_network.biases.{i}"] = get(module + ".bias") * gain(module, "bias_gain", config.mapping_lr_mul)
    if embed is not None:  # the class embedding is an ordinary FullyConnectedLayer (lr multiplier 1)
        ours["mapping_network.label_weight"] = embed * gain("mapping.embed", "weight_gain", 1 / math.sqrt(c_dim))
        ours["mapping_network.label_bias"] = get("mapping.embed.bias") * gain("mapping.embed", "bias_gain", 1.0)
    ours["w_avg"] = get("mapping.w_avg", ndim=1)
    ours["synthesis_network.const"] = get("synthesis.b4.const", ndim=3)
    layers = [("synthesis.b4.conv1", 4)]
    for res in blocks[1:]:
        layers += [(f"synthesis.b{res}.conv0", res), (f"synthesis.b{res}.conv1", res)]
    for j, (src, res) in enumerate(layers):
        dst = f"synthesis_network.convs.{j}."
        weight = get(src + ".weight", ndim=4)
        ours[dst + "weight"] = weight / math.sqrt(weight[0].numel())  # NVlabs demodulates unscaled weights
        _take_nvlabs_affine(ours, dst, get, src + ".affine", gain)
        ours[dst + "bias"] = get(src + ".bias")
        ours[dst + "noise_strength"] = get(src + ".noise_strength").reshape(())
        ours[dst + "noise_const"] = get(src + ".noise_const", ndim=2)
    for k, res in enumerate(blocks):
        src, dst = f"synthesis.b{res}.torgb", f"synthesis_network.torgbs.{k}."
        weight = get(src + ".weight", ndim=4)[:, :, 0, 0]
        ours[dst + "weight"] = weight * gain(src, "weight_gain", 1 / math.sqrt(weight.shape[1]))
        ours[dst + "bias"] = get(src + ".bias")
        _take_nvlabs_affine(ours, dst, get, src + ".affine", gain)
    return config, ours, True


def _take_nvlabs_affine(ours: dict, dst: str, get, src: str, gain) -> None:
    weight = get(src + ".weight", ndim=2)
    ours[dst + "affine_weight"] = weight * gain(src, "weight_gain", 1 / math.sqrt(weight.shape[1]))
    ours[dst + "affine_bias"] = get(src + ".bias") * gain(src, "bias_gain", 1.0)


# --------------------------------------------------------------------------------------------- helpers

def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    resolved = names.get(dtype.replace("torch.", "")) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise ParameterError(f"dtype: expected float32, float16 or bfloat16, got {dtype!r}")
    return resolved


def _getter(state: dict, path: Path):
    """``get(key, ndim=None)``: a float32 tensor from ``state`` or a ModelFileError naming the key."""
    def get(key: str, ndim: int | None = None) -> torch.Tensor:
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"{path}: missing tensor '{key}' (incomplete or not a StyleGAN2 generator)")
        if ndim is not None and value.ndim != ndim:
            raise ModelFileError(f"{path}: tensor '{key}' has shape {list(value.shape)}, expected {ndim} dimensions")
        return value.detach().float()
    return get


def _count(state: dict, pattern: str) -> int:
    """How many distinct indices match ``pattern`` (one integer group); gaps surface later as missing keys."""
    found = {int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))}
    return len(found)


def _taps_from_kernel(kernel: torch.Tensor, path: Path) -> list[int]:
    """Recover the 1-D taps of a separable FIR buffer (any gain), e.g. [1, 3, 3, 1]."""
    kernel = kernel.detach().double()
    if kernel.ndim != 2:
        raise ModelFileError(f"{path}: FIR kernel has shape {list(kernel.shape)}, expected 2-D")
    row = kernel.sum(dim=0)
    taps = row / row[0]
    rounded = taps.round()
    if not torch.allclose(taps, rounded, atol=1e-4) or not torch.allclose(
            torch.outer(rounded, rounded) / torch.outer(rounded, rounded).sum(), kernel / kernel.sum(), atol=1e-6):
        raise ModelFileError(f"{path}: unsupported FIR kernel {kernel.tolist()}")
    return [int(t) for t in rounded]


def _blur_kernel_2d(taps: list[int]) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * 4


def _expect_only(state: dict, allowed: set[str], path: Path) -> None:
    extra = sorted(set(state) - allowed)
    if extra:
        raise ModelFileError(f"{path}: unexpected tensors {extra[:5]} for a rosinality StyleGAN2 generator with "
                             "this many layers (a different variant or a damaged file?)")


def _check_finite(generator: Generator, path: Path) -> None:
    for name, tensor in generator.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: tensor '{name}' contains NaN or infinite values")


def _strip_prefix(state: dict, prefix: str) -> dict:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _some_keys(obj: dict, n: int = 6) -> str:
    keys = [str(k) for k in list(obj)[:n]]
    return ", ".join(repr(k) for k in keys) + (", ..." if len(obj) > n else "") if keys else "(none)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
