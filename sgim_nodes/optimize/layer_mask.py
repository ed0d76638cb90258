"""Per-layer weights ``g`` of the latent-similarity term, hard layer freezing, and adaptive masking.

The objective penalises the distance to the source code layer by layer,
``lambda_sim * sum_l g_l * ||w_l - w_s,l||^2``. A :class:`LayerMask` holds

- ``weights`` ``[num_ws]``: the fixed ``g_l`` (1 everywhere reproduces the paper's plain sum);
- ``frozen`` ``[num_ws]`` bool: layers that are not optimised at all. The optimiser never sees
  them, so they stay bit-identical to the source (a hard mask, not a large penalty).

Layer groups (presets). W+ layer ``i`` is assigned the nominal resolution ``4 * 2**(i // 2)``,
the convention of the StyleGAN papers' style-mixing figures (two W+ rows per resolution; in
StyleGAN2 row ``2k+1`` also drives the up-sampling conv of the next resolution):

- ``coarse``: 4x4 and 8x8 layers (rows 0-3): pose, layout, overall shape;
- ``middle``: 16x16 and 32x32 layers (rows 4-7): facial features, mid-scale structure;
- ``fine``: 64x64 and above (rows 8 to the end): colour scheme, texture, micro-structure;
- ``all``: every row.

StyleGAN3 has no resolution doublings: its layers lower the band limit (cutoff) geometrically from
2 to resolution/2 and all but the last two run on the same few sampling grids. There, W+ row ``i``
gets the nominal resolution ``2 * cutoff`` of the layer it drives (row 0, the Fourier-feature input:
its bandwidth; row ``i + 1``: layer ``i``'s output cutoff), i.e. the resolution whose Nyquist limit
is that band limit, and the groups are the same ranges rounded to the nearest power of two in log
scale (ties upward): coarse below 8*sqrt(2), middle below 32*sqrt(2), fine above. Generators say
this through ``ws_resolutions`` (one value per W+ row); without it rows follow the StyleGAN2 rule.
A 1024 StyleGAN3 (16 rows) has 4/3/9 rows coarse/middle/fine, a 256 one 4/4/8.

A preset makes its group editable with weight 1; the other rows are frozen, or, with
``outside_weight=x``, editable but penalised with weight ``x``. A 256 generator (14 rows) has
4/4/6 rows coarse/middle/fine, a 1024 one (18 rows) 4/4/10, a tiny 32 px one (8 rows) 4/4/0.

Adaptive layer masking (the released code's ``--adaptive_layer_masking``): per-layer logits
``m_l`` start at 1; each step layer ``l`` contributes ``l_l = sigmoid(m_l) * g_l * ||w_l - w_s,l||^2``
to the similarity term and afterwards, without gradient, ``m_l <- m_l - 0.1 * l_l * (1 - l_l)``.
Layers that move little keep a weight near sigmoid(1) = 0.73; a layer whose term exceeds 1
gets ``m_l`` pushed up, so it is held back harder. The released code hard-codes 14 layers,
keeps one ``m`` for its single image and reads every ``l_l`` back to the host; here ``m`` is a
``[B, num_ws]`` tensor updated in one vectorised operation for any number of layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ParameterError

PRESETS = ("all", "coarse", "middle", "fine")
ADAPTIVE_INIT = 1.0
ADAPTIVE_RATE = 0.1


def layer_resolution(index: int) -> int:
    """Nominal resolution of W+ row ``index`` (two rows per resolution, starting at 4x4)."""
    return 4 * 2 ** (index // 2)


def nominal_power_of_two(resolution: float) -> int:
    """``resolution`` rounded to the nearest power of two in log scale, ties upward (8*sqrt2 -> 16)."""
    return 2 ** math.floor(math.log2(resolution) + 0.5 + 1e-9)


def preset_layers(name: str, num_ws: int, ws_resolutions: Sequence[float] | None = None) -> list[int]:
    """Indices of the W+ rows a preset selects, for a generator with ``num_ws`` rows; ``ws_resolutions``
    (the generator's nominal resolution per row, as StyleGAN3 generators give) overrides the
    StyleGAN2 rule of two rows per resolution."""
    if name not in PRESETS:
        raise ParameterError(f"layer preset: expected one of {', '.join(PRESETS)}, got {name!r}",
                             parameter="layer_weights")
    if ws_resolutions is None:
        resolutions = [layer_resolution(i) for i in range(num_ws)]
    else:
        if len(ws_resolutions) != num_ws:
            raise ParameterError(f"ws_resolutions: {len(ws_resolutions)} values for {num_ws} W+ layers",
                                 parameter="ws_resolutions")
        resolutions = [nominal_power_of_two(r) for r in ws_resolutions]
    bounds = {"all": (0, math.inf), "coarse": (0, 8), "middle": (16, 32), "fine": (64, math.inf)}[name]
    return [i for i in range(num_ws) if bounds[0] <= resolutions[i] <= bounds[1]]


def parse_layer_list(spec: str, num_ws: int) -> list[int]:
    """Parse ``"0-3, 7, 10-"`` into sorted row indices (``a-`` means a to the last row)."""
    indices: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo = int(lo_s) if lo_s.strip() else 0
                hi = int(hi_s) if hi_s.strip() else num_ws - 1
            else:
                lo = hi = int(part)
        except ValueError:
            raise ParameterError(f"layers: cannot read {part!r} in {spec!r}; expected indices like '0-3, 7, 10-'",
                                 parameter="layer_weights") from None
        if not 0 <= lo <= hi < num_ws:
            raise ParameterError(f"layers: {part!r} is outside 0..{num_ws - 1} (the generator has {num_ws} W+ layers)",
                                 parameter="layer_weights")
        indices.update(range(lo, hi + 1))
    return sorted(indices)


@dataclass(frozen=True)
class LayerMask:
    """Fixed per-layer similarity weights ``g`` and the hard-frozen rows of a W+ code."""

    weights: torch.Tensor  # float32 [num_ws], >= 0
    frozen: torch.Tensor  # bool [num_ws]

    def __post_init__(self):
        if self.weights.ndim != 1 or self.frozen.shape != self.weights.shape:
            raise ParameterError(f"layer mask: weights {tuple(self.weights.shape)} and frozen "
                                 f"{tuple(self.frozen.shape)} must both be [num_ws]", parameter="layer_weights")
        if not torch.isfinite(self.weights).all() or (self.weights < 0).any():
            raise ParameterError(f"layer mask: weights must be finite and >= 0, got {self.weights.tolist()}",
                                 parameter="layer_weights")
        if self.frozen.all():
            raise ParameterError("layer mask: every layer is frozen, so there is nothing to optimise",
                                 parameter="layer_weights")

    @property
    def num_ws(self) -> int:
        return int(self.weights.shape[0])

    @property
    def editable(self) -> torch.Tensor:
        """Indices (int64) of the rows the optimiser changes."""
        return torch.nonzero(~self.frozen).flatten()

    @classmethod
    def uniform(cls, num_ws: int, weight: float = 1.0) -> "LayerMask":
        """Every row editable with the same weight (the paper's default, weight 1)."""
        return cls(torch.full((num_ws,), float(weight)), torch.zeros(num_ws, dtype=torch.bool))

    @classmethod
    def preset(cls, name: str, num_ws: int, outside_weight: float | None = None,
               ws_resolutions: Sequence[float] | None = None) -> "LayerMask":
        """Edit one group of rows (see the module docstring); the others are frozen or weighted."""
        chosen = preset_layers(name, num_ws, ws_resolutions)
        if not chosen:
            top = layer_resolution(num_ws - 1) if ws_resolutions is None else nominal_power_of_two(ws_resolutions[-1])
            raise ParameterError(f"layer preset {name!r} selects no layer of a generator with {num_ws} W+ layers "
                                 f"(resolution {top}); choose another preset",
                                 parameter="layer_weights")
        inside = torch.zeros(num_ws, dtype=torch.bool)
        inside[chosen] = True
        if outside_weight is None:
            return cls(inside.float(), ~inside)
        weights = torch.where(inside, torch.tensor(1.0), torch.tensor(float(outside_weight)))
        return cls(weights, torch.zeros(num_ws, dtype=torch.bool))

    @classmethod
    def from_lists(cls, weights: Sequence[float] | None = None, frozen: Sequence[int] | Sequence[bool] = (),
                   num_ws: int | None = None) -> "LayerMask":
        """Custom weights (one per row) and/or frozen rows (indices, or one bool per row)."""
        if weights is None:
            if num_ws is None:
                raise ParameterError("layer mask: give the weights or num_ws", parameter="layer_weights")
            weights = [1.0] * num_ws
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        n = w.shape[0] if num_ws is None else num_ws
        if w.shape[0] != n:
            raise ParameterError(f"layer weights: got {w.shape[0]} values, the generator has {n} W+ layers",
                                 parameter="layer_weights")
        frozen = list(frozen)
        if frozen and all(isinstance(f, bool) for f in frozen):
            if len(frozen) != n:
                raise ParameterError(f"frozen layers: got {len(frozen)} flags, the generator has {n} W+ layers",
                                     parameter="layer_weights")
            frozen_t = torch.tensor(frozen, dtype=torch.bool)
        else:
            frozen_t = torch.zeros(n, dtype=torch.bool)
            for i in frozen:
                if not 0 <= int(i) < n:
                    raise ParameterError(f"frozen layers: index {i} is outside 0..{n - 1} "
                                         f"(the generator has {n} W+ layers)", parameter="layer_weights")
                frozen_t[int(i)] = True
        return cls(w, frozen_t)

    def check(self, num_ws: int) -> "LayerMask":
        """Raise ParameterError unless this mask fits a generator with ``num_ws`` rows."""
        if self.num_ws != num_ws:
            raise ParameterError(f"layer_weights: the mask has {self.num_ws} layers but the generator has "
                                 f"num_ws = {num_ws} W+ layers", parameter="layer_weights")
        return self


def resolve_layer_mask(layer_weights, num_ws: int, ws_resolutions: Sequence[float] | None = None) -> LayerMask:
    """``None`` (all rows, weight 1), a preset name, a list of per-row weights, or a LayerMask;
    ``ws_resolutions`` as in :func:`preset_layers`."""
    if layer_weights is None:
        return LayerMask.uniform(num_ws)
    if isinstance(layer_weights, LayerMask):
        return layer_weights.check(num_ws)
    if isinstance(layer_weights, str):
        return LayerMask.preset(layer_weights, num_ws, ws_resolutions=ws_resolutions)
    if isinstance(layer_weights, torch.Tensor):
        layer_weights = layer_weights.detach().flatten().tolist()
    try:
        values = [float(v) for v in layer_weights]
    except (TypeError, ValueError):
        raise ParameterError(f"layer_weights: expected None, a preset name, a list of {num_ws} numbers or a "
                             f"LayerMask, got {type(layer_weights).__name__}", parameter="layer_weights") from None
    if len(values) != num_ws:
        raise ParameterError(f"layer_weights: got {len(values)} values but the generator has num_ws = {num_ws} "
                             "W+ layers", parameter="layer_weights")
    return LayerMask.from_lists(values, num_ws=num_ws)


def layer_distances(ws: torch.Tensor, source_ws: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance per sample and W+ row: ``[B, num_ws]``."""
    return (ws - source_ws).square().sum(dim=-1)


def adaptive_init(batch: int, num_ws: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Initial adaptive logits ``m`` (all 1, as in the released code): ``[B, num_ws]``."""
    return torch.full((batch, num_ws), ADAPTIVE_INIT, device=device)


def adaptive_layer_terms(distances: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-layer terms ``l_l = sigmoid(m_l) * g_l * d_l`` (differentiable in the distances): ``[B, num_ws]``."""
    return torch.sigmoid(logits) * weights * distances


@torch.no_grad()
def adaptive_update_(logits: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """In place ``m <- m - 0.1 * l * (1 - l)`` from this step's terms (no gradient, no host sync)."""
    terms = terms.detach()
    return logits.sub_(ADAPTIVE_RATE * terms * (1 - terms))
