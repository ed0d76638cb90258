"""The rulebook: what the words the nodes and the command line share mean, in one place.

Layer freedom (Layer Mask node, ``--mask``): one number per W+ layer in [0, 1].
    0 freezes the layer (the optimiser never touches it; it stays bit-identical to the source),
    1 leaves it free under the paper's similarity weight g = 1, and values between hold it back
    harder (g = 1 / freedom). A preset name (``all``, ``coarse``, ``middle``, ``fine``) gives
    freedom 1 to its layers and 0 to the others; Style Mix reads the same numbers as blend
    weights toward its second code.

Target weights (Mix Embeddings, ``--weights``): relative. They are normalised to sum 1, so
    ``1,1`` and ``0.5,0.5`` are the same edit and the CLIP term keeps its scale against
    lambda_sim and lambda_id whatever the number of targets.

Seed: draws the random source codes (z on the CPU, so a seed gives the same image on every
    device) and, with ``noise_mode='random'``, the generator's noise. A given source code with
    constant noise uses no randomness at all, so there the seed is an error, not a no-op.

Batch: the number of random source codes drawn from the seed. A given W+ file brings its own
    batch, and generate mode starts every item from the same mean latent, so there a batch
    other than 1 is an error, not silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ParameterError
from .layer_mask import PRESETS, LayerMask, layer_resolution, preset_layers


def preset_freedom(name: str, num_ws: int, ws_resolutions: Sequence[float] | None = None) -> list[float]:
    """Freedom 1 on the preset's layers, 0 (frozen) on the others. ``ws_resolutions``: the generator's
    nominal resolution per W+ row where it has its own grouping (StyleGAN3, see ``preset_layers``)."""
    chosen = set(preset_layers(name, num_ws, ws_resolutions))
    return [1.0 if i in chosen else 0.0 for i in range(num_ws)]


def check_freedom(values: Sequence[float], num_ws: int, parameter: str = "layer_freedom") -> list[float]:
    """Validate per-layer freedom values: ``num_ws`` finite numbers in [0, 1], not all 0."""
    try:
        freedom = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ParameterError(f"{parameter}: expected {num_ws} numbers in [0, 1], got {values!r}",
                             parameter=parameter) from None
    if len(freedom) != num_ws:
        raise ParameterError(f"{parameter}: {len(freedom)} values given, but the generator has {num_ws} W+ layers",
                             parameter=parameter)
    if not all(0.0 <= v <= 1.0 for v in freedom):  # also rejects NaN
        raise ParameterError(f"{parameter}: expected numbers in [0, 1] (0 = frozen, 1 = free), got {freedom}",
                             parameter=parameter)
    if not any(freedom):
        raise ParameterError(f"{parameter}: every layer is 0 (frozen), nothing could change", parameter=parameter)
    return freedom


def parse_freedom(spec: str, num_ws: int, parameter: str = "mask",
                  ws_resolutions: Sequence[float] | None = None) -> list[float]:
    """A preset name or comma-separated freedom values ``'1,1,0.5,0,...'`` -> one freedom per layer."""
    spec = spec.strip()
    if spec in PRESETS:
        freedom = preset_freedom(spec, num_ws, ws_resolutions)
        if not any(freedom):
            top = layer_resolution(num_ws - 1) if ws_resolutions is None else max(ws_resolutions)
            raise ParameterError(f"{parameter}: preset {spec!r} selects no layer of a generator with {num_ws} W+ "
                                 f"layers (resolution {top:g}); choose another preset", parameter=parameter)
        return freedom
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ParameterError(f"{parameter}: expected a preset ({', '.join(PRESETS)}) or {num_ws} comma-separated "
                             f"numbers in [0, 1], got {spec!r}", parameter=parameter) from None
    return check_freedom(values, num_ws, parameter)


def freedom_mask(freedom: Sequence[float]) -> LayerMask:
    """The optimiser's LayerMask for per-layer freedom: 0 frozen, else similarity weight 1 / freedom."""
    freedom = check_freedom(freedom, len(freedom))
    return LayerMask.from_lists([1.0 / f if f > 0 else 0.0 for f in freedom], [f == 0 for f in freedom])


def normalize_target_weights(weights, count: int | None = None, parameter: str = "target_weights") -> torch.Tensor:
    """Relative target weights ``[K]`` or ``[B, K]`` -> float32 weights summing to 1 along the last axis."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.ndim not in (1, 2) or (count is not None and w.shape[-1] != count):
        raise ParameterError(f"{parameter}: expected {count if count is not None else 'K'} weights (one per "
                             f"target), got shape {tuple(w.shape)}", parameter=parameter)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ParameterError(f"{parameter}: weights must be finite and >= 0, got {w.tolist()}", parameter=parameter)
    total = w.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ParameterError(f"{parameter}: at least one weight must be above 0, got {w.tolist()}",
                             parameter=parameter)
    return w / total


def check_source_options(mode: str, *, batch: int = 1, seed_given: bool = False, source_given: bool = False,
                         class_given: bool = False) -> None:
    """Refuse a ``batch``, ``seed`` or ``class`` that would have no effect (see the module docstring).

    ``source_given``: the codes to edit come from a W+ file (or node) instead of being drawn.
    ``class_given``: a class was chosen for the random source codes of a conditional generator.
    """
    if batch < 1:
        raise ParameterError(f"batch: expected an integer >= 1, got {batch}", parameter="batch")
    if class_given and (mode == "generate" or source_given):
        raise ParameterError("class: picks the class of the random source code; it cannot be combined with "
                             "a given source W+ or generate mode", parameter="class")
    if mode == "generate":
        if batch != 1:
            raise ParameterError("batch: generate mode starts every item from the same mean latent, so a batch "
                                 "would be copies of one image; leave batch at 1", parameter="batch")
        if seed_given:
            raise ParameterError("seed: generate mode starts from the mean latent with constant noise, nothing is "
                                 "random; leave the seed out", parameter="seed")
    elif source_given:
        if batch != 1:
            raise ParameterError("batch: every code of the given source W+ is edited; batch only sets how many "
                                 "random codes are drawn when there is no source", parameter="batch")
        if seed_given:
            raise ParameterError("seed: the given source W+ fixes the codes and the noise is constant, nothing is "
                                 "random; leave the seed out", parameter="seed")


def parse_freedom_json(text: str, num_ws: int, parameter: str = "weights") -> list[float]:
    """Per-layer freedom written as a JSON list (the Layer Mask's bar editor) -> checked values."""
    try:
        values = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{parameter}: not valid JSON ({exc}); expected a list of {num_ws} numbers",
                             parameter=parameter) from None
    if (not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in values)):
        raise ParameterError(f"{parameter}: expected a JSON list of {num_ws} numbers in [0, 1], got {text[:80]!r}",
                             parameter=parameter)
    return check_freedom(values, num_ws, parameter)


def generator_freedom(preset: str, generator, parameter: str = "preset") -> list[float]:
    """A preset's freedom for ``generator``, refused when it selects no layer of it."""
    freedom = preset_freedom(preset, generator.num_ws, getattr(generator, "ws_resolutions", None))
    try:
        freedom_mask(freedom).check(generator.num_ws)
    except ParameterError as exc:
        raise ParameterError(f"{parameter}: {preset!r} for generator {generator.name!r} ({generator.num_ws} W+ "
                             f"layers): {exc}", parameter=parameter) from None
    return freedom


@dataclass(frozen=True)
class LayerFreedom:
    """How free each W+ layer is (the nodes' SGIM_LAYER_MASK): ``freedom`` in [0, 1] per layer.

    0 freezes the layer, 1 is the paper's plain similarity weight g = 1, values between hold it
    back harder (g = 1 / freedom). Style Mix reads the same numbers as blend weights toward B.
    """

    freedom: tuple[float, ...]
    generator: str = ""

    @property
    def num_ws(self) -> int:
        return len(self.freedom)

    def layer_mask(self) -> LayerMask:
        return freedom_mask(self.freedom)

    def blend(self) -> torch.Tensor:
        return torch.tensor(self.freedom, dtype=torch.float32)


def blend_weights(layers: str, num_ws: int, ws_resolutions: Sequence[float] | None = None,
                  freedom: LayerFreedom | None = None, custom: str = "") -> torch.Tensor:
    """Style Mix's per-layer weights toward its second code: a preset's layers, or with ``layers="custom"``
    a layer freedom, else the layer list ``custom`` ("0-3, 8")."""
    from .layer_mask import parse_layer_list

    if layers != "custom":
        return torch.tensor(preset_freedom(layers, num_ws, ws_resolutions))
    if freedom is not None:
        return freedom.blend()
    blend = torch.zeros(num_ws)
    blend[parse_layer_list(custom, num_ws)] = 1.0
    return blend
