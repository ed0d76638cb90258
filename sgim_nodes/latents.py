"""W+ codes on disk and style mixing: shared by the command line and the ComfyUI nodes.

File format: our safetensors (``sgim_kind`` "wplus_latent") with the tensor ``ws``
``[B, num_ws, w_dim]`` and optionally ``source_ws`` (the code an edit started from); the metadata
records the generator's name so a code is not silently rendered by a generator it does not belong to.
"""

from __future__ import annotations

import os

import torch

from .errors import ModelFileError, NonFiniteError, ParameterError
from .fileio import load_model_file, save_model_file
from .limits import MAX_LATENT_ABS

WPLUS_KIND = "wplus_latent"


def check_wplus_values(ws: torch.Tensor, what: str = "ws", parameter: str = "ws") -> torch.Tensor:
    """``ws`` unchanged if every value is finite and within ``MAX_LATENT_ABS``; a code beyond that
    renders as NaN (float32 overflows inside the generator), so it is refused where it enters."""
    if not bool(torch.isfinite(ws).all()):
        raise NonFiniteError(f"{what}: the W+ code contains NaN or infinite values", parameter=parameter)
    peak = float(ws.detach().abs().max()) if ws.numel() else 0.0
    if peak > MAX_LATENT_ABS:
        raise NonFiniteError(f"{what}: the W+ code reaches {peak:.3g}; codes are expected within "
                             f"+-{MAX_LATENT_ABS:g} (real ones stay near +-10), larger ones overflow to NaN",
                             parameter=parameter)
    return ws


def save_wplus(path: str | os.PathLike, ws: torch.Tensor, generator_name: str = "",
               source_ws: torch.Tensor | None = None, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``ws`` (and the edit's ``source_ws``) atomically; a NaN or out-of-range code is refused.
    ``extra_metadata`` (e.g. the ComfyUI prompt and workflow) goes into the safetensors header as strings."""
    if ws.dim() != 3:
        raise ParameterError(f"ws: expected W+ codes [batch, num_ws, w_dim], got shape {list(ws.shape)}",
                             parameter="ws")
    check_wplus_values(ws)
    if source_ws is not None:
        check_wplus_values(source_ws, "source_ws", "source_ws")
    tensors = {"ws": ws.float()}
    if source_ws is not None:
        tensors["source_ws"] = source_ws.float()
    save_model_file(path, tensors, kind=WPLUS_KIND,
                    config={"generator": generator_name, "num_ws": int(ws.shape[1]), "w_dim": int(ws.shape[2]),
                            "batch": int(ws.shape[0])},
                    extra_metadata={**(extra_metadata or {}), "generator": generator_name})


def load_wplus(path: str | os.PathLike) -> tuple[torch.Tensor, str, torch.Tensor | None]:
    """Read a W+ file: ``(ws, generator_name, source_ws or None)``."""
    tensors, config, _ = load_model_file(path, WPLUS_KIND)
    usable = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    ws = tensors.get("ws")
    if ws is None or ws.dim() != 3 or ws.dtype not in usable or ws.shape[0] == 0:
        found = "none" if ws is None else f"{str(ws.dtype).replace('torch.', '')} {list(ws.shape)}"
        raise ModelFileError(f"{path}: expected a float16/32/64 tensor 'ws' of shape [batch >= 1, num_ws, w_dim], "
                             f"found {found}")
    source = tensors.get("source_ws")
    if source is not None and (source.dtype not in usable or source.shape != ws.shape):
        raise ModelFileError(f"{path}: 'source_ws' should be a float tensor shaped like 'ws' {list(ws.shape)}, found "
                             f"{str(source.dtype).replace('torch.', '')} {list(source.shape)}")
    generator = config.get("generator", "")
    if not isinstance(generator, str):
        raise ModelFileError(f"{path}: the 'generator' entry of the config should be a name, found "
                             f"{type(generator).__name__}")
    try:
        check_wplus_values(ws, str(path))
        if tensors.get("source_ws") is not None:
            check_wplus_values(tensors["source_ws"], f"{path} (source_ws)")
    except NonFiniteError as exc:
        raise ModelFileError(str(exc)) from None
    return ws, generator, source


def check_wplus_fits(ws: torch.Tensor, generator, what: str = "ws") -> torch.Tensor:
    """``ws`` as ``[B, num_ws, w_dim]`` for ``generator``; a ``[B, w_dim]`` code is repeated per layer."""
    if ws.dim() == 2 and ws.shape[1] == generator.w_dim:
        ws = ws[:, None, :].expand(-1, generator.num_ws, -1)
    if ws.dim() != 3 or ws.shape[1] != generator.num_ws or ws.shape[2] != generator.w_dim:
        raise ParameterError(f"{what}: W+ code of shape {list(ws.shape)} does not fit generator "
                             f"{getattr(generator, 'name', '')!r}, which needs [batch, {generator.num_ws}, "
                             f"{generator.w_dim}]")
    if ws.shape[0] == 0:
        raise ParameterError(f"{what}: the W+ batch is empty")
    return check_wplus_values(ws, what)


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """Layer-wise mix of two W+ batches: per layer, ``blend`` 0 keeps A, 1 takes B, between lerps.

    This is the paper's sound-and-text mixing: e.g. coarse layers from a text edit, fine layers from
    a sound edit. Batches of 1 broadcast against the other batch.
    """
    if ws_a.dim() != 3 or ws_a.shape[1:] != ws_b.shape[1:]:
        raise ParameterError(f"ws_b: codes of shape {list(ws_b.shape)} and {list(ws_a.shape)} come from "
                             "different generators", parameter="ws_b")
    if ws_a.shape[0] != ws_b.shape[0] and 1 not in (ws_a.shape[0], ws_b.shape[0]):
        raise ParameterError(f"ws_b: batch {ws_b.shape[0]} does not match batch {ws_a.shape[0]} "
                             "(use equal batches or a batch of 1)", parameter="ws_b")
    blend = torch.as_tensor(blend, dtype=ws_a.dtype, device=ws_a.device).flatten()
    if blend.numel() != ws_a.shape[1]:
        raise ParameterError(f"blend: expected {ws_a.shape[1]} per-layer weights, got {blend.numel()}",
                             parameter="blend")
    if not bool(torch.isfinite(blend).all()) or bool((blend < 0).any()) or bool((blend > 1).any()):
        raise ParameterError(f"blend: per-layer weights must lie in [0, 1], got {blend.tolist()}", parameter="blend")
    check_wplus_values(ws_a, "ws_a", "ws_a")
    check_wplus_values(ws_b, "ws_b", "ws_b")
    return torch.lerp(ws_a, ws_b.to(ws_a), blend[None, :, None])


def legacy_wplus_path(name: str, input_dir: str, output_dir: str, wplus_folder: str) -> str:
    """Where the old Load Latent node found ``name``: "x [output]" in the output folder, else the input
    folder, else today's ``input/<wplus_folder>``; never outside those folders."""
    root, name = ((output_dir, name[: -len(" [output]")]) if name.endswith(" [output]") else (input_dir, name))
    current = os.path.join(input_dir, wplus_folder, os.path.basename(name))
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([os.path.realpath(root), path]) != os.path.realpath(root):
        return current
    return path if os.path.isfile(path) else current
