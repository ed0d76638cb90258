"""CLIP through open_clip, from local files only, plus the paper's exact image resize for the optimiser.

Supported files (never any network access: open_clip is always called with ``pretrained=None``):

* the OpenAI ``ViT-B-32.pt`` archive the paper used. It is a TorchScript zip; ``torch.jit.load`` would
  compile the code stored in it, so instead its ``data.pkl`` is read with the restricted unpickler
  (TorchScript classes become inert stand-ins, storages are read from the zip), the tensors are
  collected into a state dict and open_clip's own OpenAI builder makes the model (QuickGELU);
* a plain OpenAI state dict (``.pt``; it carries ``input_resolution``/``context_length``/``vocab_size``).
  For both OpenAI forms the architecture comes from the tensors (QuickGELU, as OpenAI trained it); a
  ``model_name`` only labels the model (default: the matching open_clip name, e.g. ``ViT-B-32``);
* open_clip state dicts (``.bin``/``.pt``/``.pth``/``.safetensors``) with an open_clip model name, or with
  their config beside them (``<weights stem>.json``, or Hugging Face's ``open_clip_config.json``) or passed
  as ``config`` (validated first by :func:`check_clip_config`: bounded sizes, and nothing that would make
  open_clip fetch a Hugging Face or pretrained timm tower from a hub). Without either, the name is inferred from the tensor shapes and the file name when exactly
  one built-in config fits; else a clear error asks for it (e.g. ``ViT-B-32`` and ``ViT-B-32-quickgelu``
  have identical weights layouts). open_clip's config registry is read, never written.

:class:`ClipModel` wraps the model: ``encode_text``, ``encode_image`` (standard CLIP preprocessing, no grad)
and ``image_features``, the differentiable path of the optimiser. That one reproduces the official loss's
resize (nearest upsample x7, then average pooling to 224) as the exact box resampling ``A X A^T`` it equals,
with two small matrix products instead of a 7x larger intermediate image (588 MiB at 1024 px).
By default it feeds CLIP the generator output in [-1, 1] as it is, like the paper; ``normalize_input=True``
maps it to [0, 1] and applies CLIP's mean/std, which is what CLIP was trained on (more faithful CLIP
semantics, different numbers from the paper).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .errors import ModelFileError, ParameterError

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


# ----------------------------------------------------------------------------------------------
# The paper's resize, exactly and cheaply
# ----------------------------------------------------------------------------------------------

_RESIZE_MATRICES: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}


def box_resize_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``A`` [out_size, in_size]: output pixel o averages input pixels by their overlap with the cell
    [o*in/out, (o+1)*in/out) (area resampling). With in = 32k and out = 224 this is exactly nearest x7 then
    ``AvgPool2d(k)``, the official resize. Integer arithmetic, so the weights are exact fractions."""
    key = (in_size, out_size, str(device), dtype)
    cached = _RESIZE_MATRICES.get(key)
    if cached is not None:
        return cached
    with torch.inference_mode(False):
        o = torch.arange(out_size, dtype=torch.float64)[:, None]
        j = torch.arange(in_size, dtype=torch.float64)[None, :]
        # Work in units of 1/out_size input pixels: cell o is [o*in, (o+1)*in), pixel j is [j*out, (j+1)*out).
        overlap = (torch.minimum((o + 1) * in_size, (j + 1) * out_size) - torch.maximum(o * in_size, j * out_size))
        matrix = (overlap.clamp(min=0) / in_size).to(device=device, dtype=dtype)
    _RESIZE_MATRICES[key] = matrix
    return matrix


def paper_resize(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The official CLIP-loss resize of ``[B, C, H, W]`` images to ``size x size``, differentiable.

    Equals ``AvgPool2d(H // 32)(Upsample(scale_factor=7)(x))`` for H = W = 32k (size 224) exactly, and is
    the same box resampling for any other resolution; memory stays at one [B, C, size, W] intermediate.
    """
    if images.dim() != 4:
        raise ParameterError(f"images: expected [batch, channels, height, width], got shape {list(images.shape)}")
    height, width = images.shape[-2:]
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    rows = box_resize_matrix(height, size, images.device, dtype)
    cols = box_resize_matrix(width, size, images.device, dtype)
    return torch.matmul(torch.matmul(rows, images.to(dtype)), cols.T)


# ----------------------------------------------------------------------------------------------
# Model configs: open_clip's built-in registry is only read, never written. A model whose config is
# not built in (a custom or tiny test model) brings it: an explicit ``config``, or a JSON beside the
# weights (``<weights stem>.json``, or Hugging Face's ``open_clip_config.json`` with ``model_cfg``).
# ----------------------------------------------------------------------------------------------

def tiny_clip_config(embed_dim: int = 32) -> dict[str, Any]:
    """A ~3.5 M-parameter open_clip ViT config (32 px images, one transformer block per tower), for tests
    and benchmarks (it is never looked up by name).

    Widths are 64 so that open_clip's OpenAI builder (heads = width // 64) rebuilds it from an OpenAI-layout
    state dict; the 49408-token vocabulary keeps the standard tokenizer usable.
    """
    return {
        "embed_dim": int(embed_dim),
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """An open_clip model config from a JSON file (plain, or Hugging Face's with a ``model_cfg`` entry)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{path}: {path.stat().st_size:,} bytes is far more than an open_clip model config "
                                 f"(limit {MAX_CONFIG_BYTES:,})")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"clip_config: {path} not found (expected an open_clip model config .json)",
                             parameter="config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: not an open_clip model config ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    config = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(config, dict) or "embed_dim" not in config or "vision_cfg" not in config:
        raise ModelFileError(f"{path}: not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    check_clip_config(config, str(path))
    return config


MAX_CONFIG_BYTES = 1 << 20  # an open_clip config JSON (real ones: under 2 KB)
_CONFIG_INTS = {"embed_dim": 4096, "width": 16384, "head_width": 16384, "heads": 256, "patch_size": 1024,
                "image_size": 8192, "context_length": 8192, "vocab_size": 1 << 20, "layers": 128,
                "attn_pooler_queries": 4096, "attn_pooler_heads": 256}


def check_clip_config(config: dict[str, Any], source: str) -> None:
    """An open_clip model config (from a file beside the weights, or given) within bounds before anything
    is built, and never one that makes open_clip reach a model hub (Hugging Face text towers and
    tokenizers, pretrained timm towers): a load reads local files only."""
    from .limits import MAX_TRANSFORMER_LAYERS, check_int, short_repr

    def check_value(key: str, value: Any, where: str) -> None:
        if key in _CONFIG_INTS:
            limit = MAX_TRANSFORMER_LAYERS if key == "layers" else _CONFIG_INTS[key]
            values = value if key in ("layers", "image_size") and isinstance(value, (list, tuple)) else [value]
            if key in ("layers", "image_size") and len(values) > 8:
                raise ModelFileError(f"{source}: {where}{key} lists {len(values)} values")
            for item in values:
                try:
                    check_int(f"{where}{key}", item, 1, limit)
                except ParameterError as exc:
                    raise ModelFileError(f"{source}: {exc}") from None
        if (key.startswith("hf_") and key != "hf_proj_type" and key != "hf_pooler_type" and value) \
                or (key == "timm_model_pretrained" and value):
            raise ModelFileError(f"{source}: {where}{key}={short_repr(value)} would fetch a model from a hub; "
                                 "CLIP loads read local files only (models with Hugging Face text towers or "
                                 "pretrained timm towers are not supported)")

    for key, value in config.items():
        if key in ("vision_cfg", "text_cfg"):
            if not isinstance(value, dict):
                raise ModelFileError(f"{source}: '{key}' should be a JSON object, found {type(value).__name__}")
            for inner, item in value.items():
                check_value(str(inner), item, f"{key}.")
        else:
            check_value(str(key), value, "")


def config_beside(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(name, config) of a config JSON next to the weights file, if there is one."""
    for candidate, name in ((path.with_suffix(".json"), path.stem),
                            (path.parent / "open_clip_config.json", path.parent.name)):
        if candidate.is_file() and candidate != path:
            return name, read_model_config(candidate)
    return None


def _model_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """An open_clip CLIP built straight from a config dict (what ``create_model`` does for its
    registered names, without going through the registry)."""
    from open_clip.model import CLIP, CustomTextCLIP

    config = dict(config)
    custom_text = config.pop("custom_text", False) or any(k.startswith("hf_") for k in config.get("text_cfg", {}))
    try:
        return (CustomTextCLIP if custom_text else CLIP)(**config)
    except TypeError as exc:
        raise ModelFileError(f"open_clip config not supported here ({exc})") from None


def build_tiny_clip(embed_dim: int = 32, seed: int = 0, name: str | None = None) -> torch.nn.Module:
    """A random-weight tiny open_clip ``CLIP`` (see :func:`tiny_clip_config`), deterministic for a seed.
    ``name`` is accepted for older callers and ignored: nothing is registered."""
    with torch.inference_mode(False):
        torch.manual_seed(seed)
        return _model_from_config(tiny_clip_config(embed_dim)).eval()


class _QuietRandomInitWarning:
    """open_clip logs 'No pretrained weights loaded ... initialized randomly' for every ``pretrained=None``
    model; we always load weights right after, so that line would only mislead."""

    def filter(self, record) -> bool:
        return "initialized randomly" not in str(record.msg) and "initialized partially" not in str(record.msg)


def _create_open_clip(name: str, config: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model for ``config`` if given, else open_clip's built-in config ``name`` (random weights)."""
    import logging

    import open_clip

    if config is not None:
        check_clip_config(config, "config")
        return _model_from_config(config)
    check_clip_config(open_clip.get_model_config(name) or {}, f"open_clip model {name!r}")
    quiet = _QuietRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(name, pretrained=None)
    finally:
        logging.getLogger().removeFilter(quiet)


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------

def _is_torchscript_zip(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript archive as a state dict, WITHOUT running or compiling its code.

    ``data.pkl`` holds the module tree (``__torch__.*`` objects, each with a dict of attributes); the
    tensors are collected with dotted names as ``module.state_dict()`` would give. Non-persistent
    ``attn_mask`` buffers are dropped (CLIP rebuilds them)."""
    from .safe_pickle import check_torch_zip, restricted_load

    path = Path(path)
    check_torch_zip(path)  # no member inflates past the budget; every declared storage fits its member
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise ModelFileError(f"{path}: TorchScript archive without a data.pkl")
        prefix = pickles[0].rsplit("/", 1)[0]
        storages: dict[str, Any] = {}

        def persistent_load(pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise ModelFileError(f"{path}: unexpected persistent reference {pid!r}")
            storage_type, key, _location, _numel = pid[1:]
            if key not in storages:
                dtype = getattr(storage_type, "dtype", None)
                if not isinstance(dtype, torch.dtype):
                    raise ModelFileError(f"{path}: unknown storage type {storage_type!r}")
                try:
                    raw = archive.read(f"{prefix}/data/{key}")
                except KeyError:
                    raise ModelFileError(f"{path}: storage {key} missing from the archive (truncated?)") from None
                untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
                storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
            return storages[key]

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notes
            root = restricted_load(io.BytesIO(archive.read(pickles[0])), source=str(path),
                                   stub_prefixes=("__torch__",), persistent_load=persistent_load)

    state = _collect_module_tensors(root, path)
    if not state:
        raise ModelFileError(f"{path}: no tensors found in the TorchScript archive")
    return state


def _collect_module_tensors(root: Any, path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript module tree with dotted names, walked iteratively within the budgets of
    :mod:`.limits` (a module shared by several parents counts once per use, as it yields names under each)."""
    from .limits import check_tree_walk
    from .safe_pickle import PlainObject

    state: dict[str, torch.Tensor] = {}
    pending = [(root, "", 0)]
    uses = 0
    while pending:
        obj, prefix, depth = pending.pop()
        uses += 1
        check_tree_walk(path, uses, depth, len(state), "CLIP ViT-L/14 has about 400 modules")
        attributes = obj.state if isinstance(obj, PlainObject) else None
        if not isinstance(attributes, dict):
            continue
        children = []
        for name, value in attributes.items():
            if isinstance(value, torch.Tensor):
                if name != "attn_mask":  # a non-persistent buffer CLIP rebuilds
                    state[f"{prefix}{name}"] = value
            elif isinstance(value, PlainObject):
                children.append((value, f"{prefix}{name}.", depth + 1))
        pending.extend(reversed(children))
    return state


def _check_openai_architecture(state: dict[str, torch.Tensor], path: Path) -> None:
    """The OpenAI CLIP that the tensors imply, checked before it is built: layer counts within budget,
    then built on the meta device (no memory), its tensors must be exactly the file's. So a file of a
    few tiny tensors cannot ask for a network of any size."""
    import re
    import warnings

    import open_clip

    from .limits import MAX_TRANSFORMER_LAYERS

    for pattern in (r"visual\.transformer\.resblocks\.(\d+)\.", r"transformer\.resblocks\.(\d+)\.",
                    r"visual\.layer\d\.(\d+)\."):
        count = len({m.group(1) for k in state if (m := re.match(pattern, k))})
        if count > MAX_TRANSFORMER_LAYERS:
            raise ModelFileError(f"{path}: {count} blocks in one tower, beyond the {MAX_TRANSFORMER_LAYERS} any CLIP "
                                 "model has; the file is damaged or crafted")
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # loading real tensors into meta ones is a no-op torch warns about
        try:
            expected = {k: tuple(v.shape) for k, v in
                        open_clip.model.build_model_from_openai_state_dict(dict(state), cast_dtype=None)
                        .state_dict().items()}
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, ZeroDivisionError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            detail = next((line for line in lines if line.startswith(("size mismatch", "Missing", "Unexpected"))),
                          lines[0])
            raise ModelFileError(f"{path}: the tensors do not fit the CLIP architecture they imply ({detail})") from None
    missing = sorted(k for k in expected if k not in state)
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != expected[k])
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else \
            f"'{wrong[0]}' is {list(state[wrong[0]].shape)}, the architecture needs {list(expected[wrong[0]])}"
        raise ModelFileError(f"{path}: the tensors do not fit the CLIP architecture they imply ({detail})")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors / torch.save files (weights_only) / TorchScript archives."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable .safetensors file ({exc})") from None
    elif _is_torchscript_zip(path):
        state = read_torchscript_state_dict(path)
    else:
        from .errors import torch_message
        from .safe_pickle import check_torch_file

        check_torch_file(path)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable CLIP checkpoint ({type(exc).__name__}: "
                                 f"{torch_message(exc)})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    from .limits import check_file_claims

    check_file_claims(path, state)  # expanded views claim no more than the file stores
    if next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class _Signature:
    """The shape facts of a standard ViT CLIP that a state dict fixes."""

    embed_dim: int
    vision_width: int
    vision_layers: int
    patch_size: int
    image_size: int
    text_width: int
    text_layers: int
    context_length: int
    vocab_size: int


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _state_signature(state: dict[str, torch.Tensor]) -> _Signature | None:
    needed = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight")
    if not all(k in state for k in needed):
        return None
    patch = int(state["visual.conv1.weight"].shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return _Signature(int(state["text_projection"].shape[1]), int(state["visual.conv1.weight"].shape[0]),
                      _count_blocks(state, "visual.transformer.resblocks."), patch, patch * grid,
                      int(state["ln_final.weight"].shape[0]), _count_blocks(state, "transformer.resblocks."),
                      int(state["positional_embedding"].shape[0]), int(state["token_embedding.weight"].shape[0]))


def _config_signature(config: dict[str, Any]) -> _Signature | None:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if config.get("custom_text") or any(k.startswith(("timm_", "hf_")) for k in {**vision, **text}):
        return None
    try:
        v, t = CLIPVisionCfg(**vision), CLIPTextCfg(**text)
    except TypeError:
        return None
    if not isinstance(v.layers, int) or not isinstance(v.image_size, int) or v.patch_size is None:
        return None
    return _Signature(int(config["embed_dim"]), v.width, v.layers, v.patch_size, v.image_size, t.width, t.layers,
                      t.context_length, t.vocab_size)


def infer_model_name(state: dict[str, torch.Tensor], file_name: str = "") -> tuple[str | None, list[str]]:
    """(name, candidates): open_clip's built-in model names whose config fits the tensors; ``name`` is set
    when exactly one fits, or when exactly one of them appears in ``file_name``."""
    import open_clip

    wanted = _state_signature(state)
    if wanted is None:
        return None, []
    candidates = [name for name in open_clip.list_models()
                  if _config_signature(open_clip.get_model_config(name) or {}) == wanted]
    if len(candidates) == 1:
        return candidates[0], candidates
    lowered = file_name.lower()
    in_name = [c for c in candidates if c.lower() in lowered]
    longest = max((len(c) for c in in_name), default=0)
    in_name = [c for c in in_name if len(c) == longest]  # "ViT-B-32-quickgelu" beats "ViT-B-32"
    return (in_name[0] if len(in_name) == 1 else None), candidates


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """open_clip's own state-dict massaging (as ``load_checkpoint``), then a strict load."""
    from open_clip.factory import convert_state_dict, convert_to_custom_text_state_dict, resize_pos_embed

    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: the weights do not fit this CLIP architecture "
                             f"({str(exc).splitlines()[0]}: {' '.join(str(exc).split())[:300]})") from None


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------

class ClipModel:
    """A frozen open_clip model with the three entry points the pack needs."""

    def __init__(self, model: torch.nn.Module, name: str, tokenizer: Any):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.tokenizer = tokenizer
        visual = model.visual
        self.embed_dim = int(getattr(visual, "output_dim", 0) or model.text_projection.shape[-1])
        size = getattr(visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        mean, std = cfg.get("mean", OPENAI_DATASET_MEAN), cfg.get("std", OPENAI_DATASET_STD)
        with torch.inference_mode(False):
            self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"ClipModel({self.name}, embed_dim={self.embed_dim}, image_size={self.image_size}, device={self.device})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "ClipModel":
        from .device import resolve_device

        with torch.inference_mode(False):
            self.model.to(resolve_device(device))
        return self

    def _normalize_pixels(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self._mean.to(images01.device)) / self._std.to(images01.device)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, D] L2-normalised text embeddings (no grad)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ParameterError(f"prompts: expected a non-empty list of strings, got {prompts!r}")
        with torch.no_grad():
            tokens = self.tokenizer(prompts).to(self.device)
            embeddings = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return _usable_outside_inference_mode(embeddings)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, D] L2-normalised embeddings of images in [0, 1], ``[B, H, W, 3]`` (ComfyUI) or ``[B, 3, H, W]``,
        with CLIP's standard preprocessing (bicubic resize of the short side, centre crop, mean/std)."""
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ParameterError(f"images: expected [B, H, W, 3] or [B, 3, H, W], got shape {list(images.shape)}")
        if images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        with torch.no_grad():
            x = images.to(self.device, torch.float32)
            height, width = x.shape[-2:]
            scale = self.image_size / min(height, width)
            new_h, new_w = max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale))
            if (new_h, new_w) != (height, width):
                x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            top, left = (new_h - self.image_size) // 2, (new_w - self.image_size) // 2
            x = x[..., top:top + self.image_size, left:left + self.image_size].clamp(0, 1)
            embeddings = F.normalize(self.model.encode_image(self._normalize_pixels(x)).float(), dim=-1)
        return _usable_outside_inference_mode(embeddings)

    def image_features(self, images_m11: torch.Tensor, *, normalize_input: bool = False) -> torch.Tensor:
        """[B, D] L2-normalised embeddings of generator output in [-1, 1] at any resolution, differentiable
        with respect to the images (the weights stay frozen).

        ``normalize_input=False`` (default) is the paper: the box-resized [-1, 1] image goes into CLIP as is.
        ``normalize_input=True`` maps it to [0, 1] and applies CLIP's mean/std (CLIP's training input).
        """
        x = paper_resize(images_m11.to(self.device), self.image_size)
        if normalize_input:
            x = self._normalize_pixels((x + 1) / 2)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)


def _usable_outside_inference_mode(tensor: torch.Tensor) -> torch.Tensor:
    """Inference tensors cannot be saved for backward; targets computed inside ComfyUI's inference mode
    are copied to normal tensors so the optimiser can use them."""
    if not tensor.is_inference():
        return tensor
    with torch.inference_mode(False):
        return tensor.clone()


def _tokenizer_for(name: str | None, model: torch.nn.Module, config: dict[str, Any] | None = None) -> Any:
    import open_clip

    context_length = int(getattr(model, "context_length", 77))
    config = config if config is not None else (open_clip.get_model_config(name) if name else None) or {}
    if not any(k.startswith("hf_") for k in config.get("text_cfg", {})):
        return lambda texts: open_clip.tokenize(texts, context_length=context_length)
    try:
        return open_clip.get_tokenizer(name)
    except Exception as exc:
        raise ModelFileError(f"{name}: its tokenizer is not available offline ({exc})") from None


def load_clip(path: str | os.PathLike, model_name: str | None = None, device: str | torch.device = "cpu",
              config: dict[str, Any] | str | os.PathLike | None = None) -> ClipModel:
    """Load a CLIP model from a local file (see the module docstring for the formats); frozen, eval mode.

    ``config``: an open_clip model config (dict, or a JSON file) for an architecture open_clip does not
    know by name; without it a JSON beside the weights is used (:func:`config_beside`). Nothing global
    changes: open_clip's registry is only read.
    """
    import open_clip

    from .device import resolve_device
    from .limits import check_finite_weights

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: CLIP model file not found")
    device = resolve_device(device)
    if config is not None and not isinstance(config, dict):
        config_name, config = Path(config).stem, read_model_config(config)
        model_name = model_name or config_name
    with torch.inference_mode(False), torch.no_grad():
        state = _read_state_dict(path)
        is_openai = any(k in state for k in OPENAI_EXTRA_KEYS) or _is_torchscript_zip(path)
        if is_openai:  # architecture from the weights, QuickGELU as OpenAI trained it; a given name only labels it
            if _state_signature(state) is None and "visual.attnpool.positional_embedding" not in state:
                raise ModelFileError(f"{path}: not an OpenAI CLIP checkpoint (missing the visual/text tower keys)")
            _check_openai_architecture(state, path)
            try:
                model = open_clip.model.build_model_from_openai_state_dict(dict(state), cast_dtype=None)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise ModelFileError(f"{path}: OpenAI CLIP weights could not be loaded ({exc})") from None
            model = model.float()
            _load_into(model, state, str(path))  # again in float32: the builder rounds through float16
            fitting = infer_model_name(state)[1]
            name = model_name or next((c for c in fitting if not c.endswith("quickgelu")), None) or f"openai:{path.stem}"
        else:
            if config is None and (model_name is None or open_clip.get_model_config(model_name) is None):
                beside = config_beside(path)
                if beside is not None:
                    model_name, config = model_name or beside[0], beside[1]
            if config is None and model_name is None:
                model_name, candidates = infer_model_name(state, path.name)
                if model_name is None:
                    hint = (f"it fits {', '.join(candidates)}" if candidates else
                            "no built-in open_clip config matches its tensor shapes")
                    raise ModelFileError(f"{path}: cannot tell which open_clip model this is ({hint}); "
                                         "pass the model name (e.g. model_name='ViT-B-32') or put its open_clip "
                                         f"config beside it as {path.stem}.json")
            if config is None and open_clip.get_model_config(model_name) is None:
                raise ParameterError(f"model_name: unknown open_clip model {model_name!r}; "
                                     f"known: {', '.join(open_clip.list_models()[:12])}, ...", parameter="model_name")
            built_from = config if config is not None else open_clip.get_model_config(model_name)
            check_clip_config(built_from, str(path) if config is not None else f"open_clip model {model_name!r}")
            import warnings

            with torch.device("meta"), warnings.catch_warnings():  # the size it claims, before it is built for real
                warnings.simplefilter("ignore")  # loading real tensors into meta ones is a no-op torch warns about
                claimed = _model_from_config(built_from)
                _load_into(claimed, state, str(path))  # names and shapes first: "do not fit" says more
            from .limits import check_claimed

            check_claimed(path, list(claimed.parameters()) + list(claimed.buffers()), path.stat().st_size,
                          "model config's tensors")
            del claimed
            model = _create_open_clip(model_name, config)
            _load_into(model, state, str(path))
            name = model_name or path.stem
        check_finite_weights(model, str(path), "CLIP")
        model = model.float().to(device)
    return ClipModel(model, name, _tokenizer_for(name, model, config))


def save_open_clip_state_dict(model: torch.nn.Module, path: str | os.PathLike,
                              config: dict[str, Any] | None = None) -> None:
    """Write ``model``'s state dict as open_clip does (``.safetensors`` or a torch ``.bin``/``.pt``), atomically,
    and ``config`` (for an architecture open_clip does not know by name) beside it as ``<stem>.json``.
    Mostly for tests and conversion; files written here load with :func:`load_clip`."""
    from .fileio import atomic_path

    if config is not None:
        Path(path).with_suffix(".json").write_text(json.dumps(config, indent=2))

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, str(tmp))


def text_similarities(clip: ClipModel, embedding: torch.Tensor, prompts: Sequence[str]) -> list[tuple[str, float]]:
    """Cosine similarity of one normalised embedding against each prompt, best first."""
    text = clip.encode_text(prompts)
    sims = (text @ F.normalize(embedding.reshape(-1).float().to(text.device), dim=0)).tolist()
    return sorted(zip(prompts, sims), key=lambda item: -item[1])

