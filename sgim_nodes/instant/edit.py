"""Instant edits: a CLIP-space target becomes a style or W+ edit at the cost of a few matrix products.

The analysis (:mod:`.analysis`) gives each style channel ``c`` its mean CLIP change per standard
deviation ``D_c`` (unit direction ``d_c``). For a target direction ``dt`` in CLIP space the relevance of
a channel is the cosine ``r_c = <d_c, dt>``; ``beta`` (disentanglement) keeps only channels with
``|r_c| >= beta``, so a larger beta uses fewer channels. Two ways to move (``space=``):

- ``"wplus"`` (default): the W+ direction those channels ask for, pulled back through each row's
  affine maps: ``dw_row = sum_c g_c A_c`` over the kept channels of the layers the row drives, with
  ``g_c = <D_c, dt> / sigma_c`` the sample-averaged gradient of ``<f, dt>`` with respect to ``s_c``
  (so this is a global, source-independent version of the optimiser's first step). Scaled so that the
  whole code moves ``alpha`` times the generator's typical W+ row spread (``sqrt E||w - w_avg||^2`` at
  the analysis truncation).
- ``"style"``: StyleCLIP's global-direction edit in StyleSpace, ``ds_c = alpha * sigma_c * r_c / max |r|``
  (the most relevant channel moves ``alpha`` standard deviations), exactly disentangled in ``styles``;
  its W+ code is the least-squares projection (``residual`` > 0 where a row's affine maps cannot
  express the change, e.g. StyleGAN2 rows that drive a 512-channel up-conv and a 512-channel ToRGB).

Why "wplus" is the default: downstream (Decode, Style Mix, music videos) takes W+ codes, and at equal
small W+ displacement the pulled-back direction lowered the CLIP distance 6-9x (test model) and ~35x
(benchmark's quick model) more than the projected StyleSpace edit: the projection spends W+ distance on
ill-conditioned directions of the affine maps. It reached about half of what the per-image W+ gradient
reaches at the same displacement (quick model).

Target direction. ``dt = normalize(t - ref)`` with ``t`` the weighted target set folded as the optimiser
folds it (:func:`sgim_nodes.optimize.objective.combine_targets`: same weights, same rulebook). The
reference ``ref`` (``reference=``):

- ``"source"`` (default): the source image's own unit CLIP embedding. ``t - ref`` is then the direction
  the embedding has to travel, so the edit descends the optimiser's own objective ``1 - cos(f, t)``
  to first order; it needs one render of the source (which any caller shows anyway).
- ``"mean"``: the generator's mean image embedding (recorded by the analysis): one ``dt`` for every
  source, like StyleCLIP's, but it also pulls an atypical source toward the average.
- ``"neutral"``: a neutral embedding the caller gives (StyleCLIP: the text of a neutral prompt, e.g.
  "a face"). Sound targets have no neutral sentence, and a text reference mixes the modality gap
  between CLIP's text and image (or audio) embeddings into ``dt``.
Measured on two tiny random models (16 sources, 32-d CLIP): toward random unit targets (far away, like
sounds and prompts) "source" and "mean" both lowered the distance for 14-16 of 16 codes by about the
same amount, "neutral" (a random unit vector) by 20-35 % less; toward targets that are other images'
embeddings (close by) only "source" helped most codes (13 of 16 at small alpha; "mean" 9, "neutral" 5).
So "source" is the default: it is never worse, and it is the only one right for nearby targets.

Layer freedom (the rulebook's per-W+-row numbers in [0, 1]) scales the channels of the layers each row
drives; 0 freezes them, and a frozen row of the W+ code stays bit-identical. The StyleGAN3 input's four
transform values (rotation, translation) are left out unless ``kinds`` includes "input".

Output: the edited W+ code and its style vectors (for ``space="style"`` the exact StyleSpace edit, and
the nearest W+ code with its ``residual``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..limits import check_float
from ..stylegan.stylespace import STYLE_KINDS, affine_maps, flatten_styles, unflatten_styles
from .analysis import StyleDirections

REFERENCES = ("source", "mean", "neutral")
SPACES = ("wplus", "style")
DEFAULT_ALPHA = 1.0  # "wplus": one typical W+ row spread in all; "style" edits want about 3-6
DEFAULT_BETA = 0.1
MAX_ALPHA = 100.0


@dataclass
class InstantResult:
    """``ws`` [B, num_ws, w_dim] (nearest W+ code), ``styles`` (list of [B, C_l], the exact edit), ``delta``
    [B, C] flat style change, ``channels`` [B] channels moved, ``residual`` [B] (see the module docstring),
    ``delta_t`` [B, D] the target direction used."""

    ws: torch.Tensor
    styles: list[torch.Tensor]
    delta: torch.Tensor
    channels: torch.Tensor
    residual: torch.Tensor
    delta_t: torch.Tensor


def check_alpha_beta(alpha, beta) -> tuple[float, float]:
    alpha = check_float("alpha", alpha, -MAX_ALPHA, MAX_ALPHA, what="a strength in standard deviations")
    beta = check_float("beta", beta, 0.0, 1.0, what="a relevance threshold in [0, 1)")
    if beta >= 1.0:
        raise ParameterError("beta: 1 or more would keep no channel (relevances are cosines)", parameter="beta")
    return alpha, beta


def resolve_freedom(layer_freedom, generator) -> list[float]:
    """Per-W+-row freedom from None (all 1), a preset name or numbers (the rulebook's words)."""
    from ..optimize.rules import check_freedom, parse_freedom

    num_ws = int(generator.num_ws)
    if layer_freedom is None:
        return [1.0] * num_ws
    if isinstance(layer_freedom, str):
        return parse_freedom(layer_freedom, num_ws, "layer_freedom", getattr(generator, "ws_resolutions", None))
    if isinstance(layer_freedom, torch.Tensor):
        layer_freedom = layer_freedom.tolist()
    return check_freedom(layer_freedom, num_ws, "layer_freedom")


def freedom_of_mask(mask) -> list[float] | None:
    """The per-row freedom a LayerMask stands for (frozen 0, else 1 / weight, at most 1); None stays None."""
    if mask is None:
        return None
    weights, frozen = mask.weights.tolist(), mask.frozen.tolist()
    return [0.0 if f else (min(1.0, 1.0 / w) if w > 0 else 1.0) for w, f in zip(weights, frozen)]


class InstantEditor:
    """Everything of an instant edit that does not depend on the target, prepared once per generator,
    analysis, layer freedom and channel kinds: the unit directions, the per-channel gains and each free
    W+ row's pseudo-inverse. Then :meth:`edit` costs two small matrix products (live use)."""

    def __init__(self, generator, directions: StyleDirections, *, layer_freedom=None,
                 kinds: Sequence[str] = ("conv", "torgb"), space: str = "wplus"):
        directions.check_matches(generator)
        unknown = set(kinds) - set(STYLE_KINDS)
        if unknown or not kinds:
            raise ParameterError(f"kinds: expected some of {STYLE_KINDS}, got {list(kinds)}", parameter="kinds")
        if space not in SPACES:
            raise ParameterError(f"space: expected one of {SPACES}, got {space!r}", parameter="space")
        self.generator = generator
        self.directions = directions
        self.space = space
        self.freedom = resolve_freedom(layer_freedom, generator)
        device = generator.device
        self.table = directions.layers
        self.unit = directions.unit_directions().to(device)
        self.std = directions.style_std.to(device)
        gain = torch.zeros(directions.num_channels)
        for layer in self.table:
            if layer.kind in kinds:
                gain[layer.offset:layer.stop] = self.freedom[layer.row]
        self.gain = gain.to(device)
        # mean d<f, dt>/ds_c = <D_c, dt> / sigma_c: the per-unit-style gradient the W+ pull-back uses
        self.per_style = (directions.directions / directions.style_std.clamp_min(1e-12)[:, None]).to(device)
        self.w_spread = _w_spread(generator, directions)
        maps = affine_maps(generator)
        self.rows = []  # (row, [(flat slice)], A [sumC, w_dim] float64, pinv [w_dim, sumC] float64)
        for row in range(int(generator.num_ws)):
            layers = [i for i, layer in enumerate(self.table) if layer.row == row]
            if not layers or self.freedom[row] == 0 or not any(self.table[i].kind in kinds for i in layers):
                continue
            a = torch.cat([maps[i][0] for i in layers])
            index = torch.cat([torch.arange(self.table[i].offset, self.table[i].stop) for i in layers]).to(device)
            self.rows.append((row, index, a, torch.linalg.pinv(a.cpu()).to(device)))

    def relevance(self, delta_t: torch.Tensor) -> torch.Tensor:
        """[B, C]: cosine of each channel's direction with the unit target direction (0 on frozen channels)."""
        return (F.normalize(delta_t.float(), dim=-1) @ self.unit.t()) * (self.gain > 0)

    def style_delta(self, delta_t: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """[B, C] flat style change for target directions ``delta_t`` [B, D] (module docstring formula)."""
        alpha, beta = check_alpha_beta(alpha, beta)
        r = self.relevance(delta_t)
        r = torch.where(r.abs() >= beta, r, torch.zeros_like(r))
        peak = r.abs().amax(dim=1, keepdim=True)
        scale = torch.where(peak > 0, alpha / peak.clamp_min(1e-30), torch.zeros_like(peak))
        return r * scale * self.std * self.gain

    def wplus_delta(self, delta_t: torch.Tensor, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, num_ws, w_dim] W+ change, [B] channels used) for ``space="wplus"`` (module docstring)."""
        alpha, beta = check_alpha_beta(alpha, beta)
        r = self.relevance(delta_t)
        keep = (r.abs() >= beta) & (r != 0)
        grad = (F.normalize(delta_t.float(), dim=-1) @ self.per_style.t()) * self.gain * keep
        dw = torch.zeros(delta_t.shape[0], int(self.generator.num_ws), int(self.generator.w_dim),
                         dtype=torch.float64, device=delta_t.device)
        for row, index, a, _ in self.rows:
            dw[:, row] = grad[:, index].double() @ a
        norm = dw.flatten(1).norm(dim=1)
        scale = torch.where(norm > 0, alpha * self.w_spread / norm.clamp_min(1e-300), torch.zeros_like(norm))
        return (dw * scale[:, None, None]).float(), keep.sum(dim=1)

    def toward(self, source_ws: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor, *,
               target_weights=None, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> InstantResult:
        """The live-use call: targets as Optimize Latent takes them ([B, D], or [B, K, D] with weights) and the
        source's reference embedding [B or 1, D] (:func:`reference_embedding`, computed once per source)."""
        from ..optimize.objective import combine_targets

        vector, _ = combine_targets(targets.detach().float(), None if target_weights is None
                                    else torch.as_tensor(target_weights).detach().clone(),
                                    embed_dim=int(self.unit.shape[1]))
        batch = max(vector.shape[0], reference.shape[0])
        return self.edit(source_ws, target_direction(vector.to(reference.device).expand(batch, -1),
                                                     reference.expand(batch, -1)), alpha, beta)

    def edit(self, source_ws: torch.Tensor, delta_t: torch.Tensor, alpha: float = DEFAULT_ALPHA,
             beta: float = DEFAULT_BETA) -> InstantResult:
        """Edit ``source_ws`` [B, num_ws, w_dim] toward target directions ``delta_t`` [B, D] (a batch of 1
        on either side is broadcast). Deterministic: no randomness anywhere."""
        generator = self.generator
        if delta_t.ndim != 2 or delta_t.shape[1] != self.unit.shape[1]:
            raise ParameterError(f"delta_t: expected [B, {self.unit.shape[1]}] target directions, got "
                                 f"{list(delta_t.shape)} (embeddings from another CLIP model?)", parameter="clip")
        source_ws = source_ws.detach().to(generator.device, torch.float32)
        batch = max(source_ws.shape[0], delta_t.shape[0])
        if {source_ws.shape[0], delta_t.shape[0]} - {1, batch}:
            raise ParameterError(f"targets: batch {delta_t.shape[0]} does not match the source codes' batch "
                                 f"{source_ws.shape[0]} (give as many of each, or one of either)", parameter="targets")
        source_ws = source_ws.expand(batch, -1, -1)
        delta_t = delta_t.to(generator.device).expand(batch, -1)
        with torch.no_grad():
            if self.space == "wplus":
                dw, channels = self.wplus_delta(delta_t, alpha, beta)
                ws = source_ws.clone()
                free = [row for row, *_ in self.rows]
                ws[:, free] = source_ws[:, free] + dw[:, free]  # frozen rows are never written: bit-identical
                styles = generator.styles(ws)
                delta = flatten_styles(styles) - flatten_styles(generator.styles(source_ws))
                return InstantResult(ws, styles, delta, channels, torch.zeros(batch), delta_t)
            delta = self.style_delta(delta_t, alpha, beta)
            source_flat = flatten_styles(generator.styles(source_ws)).float()
            ws = source_ws.clone()
            missed = torch.zeros(batch, dtype=torch.float64, device=ws.device)
            wanted = torch.zeros_like(missed)
            for row, index, a, pinv in self.rows:
                target = delta[:, index].double()
                dw = target @ pinv.t()
                ws[:, row] = (ws[:, row].double() + dw).float()
                missed += (target - dw @ a.t()).square().sum(1)
                wanted += target.square().sum(1)
            residual = torch.where(wanted > 0, (missed / wanted.clamp_min(1e-300)).sqrt(), torch.zeros_like(wanted))
            styles = unflatten_styles(source_flat + delta, self.table)
        return InstantResult(ws, [s.clone() for s in styles], delta, (delta != 0).sum(dim=1), residual.float(),
                             delta_t)


def _w_spread(generator, directions: StyleDirections, samples: int = 512) -> float:
    """sqrt(E ||w - w_avg||^2) of the mapping at the analysis truncation (seeded: deterministic)."""
    from .analysis import sample_codes

    psi = float(directions.info.get("settings", {}).get("truncation", 0.7))
    with torch.no_grad():
        w = sample_codes(generator, samples, 12345, psi)[:, 0].double()
        return float((w - generator.w_avg.double().to(w.device)).square().sum(1).mean().sqrt())


def target_direction(target_vector: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``normalize(t - ref)`` [B, D]; a target equal to its reference has no direction (an error)."""
    delta = target_vector.float() - reference.float().to(target_vector.device)
    norm = delta.norm(dim=-1)
    if bool((norm < 1e-6).any()):
        raise ParameterError("targets: a target equals its reference embedding, so it asks for no change",
                             parameter="targets")
    return delta / norm[:, None]


def reference_embedding(reference: str, *, generator=None, clip=None, source_ws=None,
                        directions: StyleDirections | None = None, neutral: torch.Tensor | None = None,
                        noise_mode: str = "const") -> torch.Tensor:
    """The reference ``ref`` [B or 1, D] for :func:`target_direction` (see the module docstring)."""
    if reference not in REFERENCES:
        raise ParameterError(f"reference: expected one of {REFERENCES}, got {reference!r}", parameter="reference")
    if reference == "source":
        if clip is None or generator is None or source_ws is None:
            raise ParameterError("reference: 'source' needs the generator, CLIP and the source codes",
                                 parameter="reference")
        with torch.no_grad():
            return clip.image_features(generator.synthesis(source_ws, noise_mode=noise_mode)).float()
    if reference == "mean":
        if directions is None:
            raise ParameterError("reference: 'mean' needs the analysed directions", parameter="reference")
        return F.normalize(directions.mean_embedding.float(), dim=-1)[None]
    if neutral is None:
        raise ParameterError("reference: 'neutral' needs a neutral embedding (e.g. the text of a neutral prompt)",
                             parameter="neutral")
    neutral = torch.as_tensor(neutral, dtype=torch.float32)
    return F.normalize(neutral.reshape(-1, neutral.shape[-1]), dim=-1)


def instant_edit(generator, clip, directions: StyleDirections, targets: torch.Tensor, source_ws: torch.Tensor, *,
                 target_weights=None, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
                 reference: str = "source", neutral: torch.Tensor | None = None, layer_freedom=None,
                 kinds: Sequence[str] = ("conv", "torgb"), space: str = "wplus", noise_mode: str = "const",
                 editor: InstantEditor | None = None) -> InstantResult:
    """Edit ``source_ws`` toward ``targets`` as Optimize Latent takes them: unit CLIP embeddings [B, D] or a
    weighted set [B, K, D] with ``target_weights`` [K] / [B, K] (relative, the rulebook's). ``editor``: a
    prepared :class:`InstantEditor` to reuse (its layer freedom, kinds and space then apply)."""
    from ..latents import check_wplus_values
    from ..optimize.objective import combine_targets
    from ..optimize.loop import _as_wplus

    alpha, beta = check_alpha_beta(alpha, beta)
    embed_dim = int(directions.directions.shape[1])
    vector, _ = combine_targets(targets.detach().float().cpu(), None if target_weights is None
                                else torch.as_tensor(target_weights).detach().clone(), embed_dim=embed_dim)
    source_ws = _as_wplus(source_ws.detach().float().to(generator.device), int(generator.num_ws), "source_ws",
                          int(generator.w_dim))
    source_ws = check_wplus_values(source_ws, "source_ws", "source_ws")
    editor = editor or InstantEditor(generator, directions, layer_freedom=layer_freedom, kinds=kinds, space=space)
    ref = reference_embedding(reference, generator=generator, clip=clip, source_ws=source_ws,
                              directions=directions, neutral=neutral, noise_mode=noise_mode)
    if ref.shape[0] not in (1, vector.shape[0]) and vector.shape[0] != 1:
        raise ParameterError(f"targets: batch {vector.shape[0]} does not match the source codes' batch "
                             f"{ref.shape[0]}", parameter="targets")
    batch = max(ref.shape[0], vector.shape[0])
    delta_t = target_direction(vector.to(ref.device).expand(batch, -1), ref.expand(batch, -1))
    return editor.edit(source_ws, delta_t, alpha, beta)
