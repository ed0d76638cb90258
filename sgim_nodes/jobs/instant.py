"""Job entry points of instant edits: analyse a generator (cached) and edit codes toward CLIP targets.

    outcome = run_instant_edit(InstantEditRequest(generator, clip, targets, source_ws, alpha=3), run)
    outcome.result.ws        # edited W+ codes; outcome.distance_before / distance_after per code

The command line (``analyze``; phase 2: ``edit --instant``) and the node call these with their run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .run import Run


@dataclass
class AnalyzeRequest:
    """The generator and CLIP (loaded), the generator's file (its content hash keys the cache), the
    analysis settings (:class:`sgim_nodes.instant.AnalysisSettings`), the cache file (None: default)."""

    generator: Any
    clip: Any
    generator_file: str | None = None
    settings: Any = None
    cache: str | None = None
    recompute: bool = False


@dataclass
class AnalyzeOutcome:
    directions: Any
    cache_hit: bool
    cache_path: str


def run_analyze(request: AnalyzeRequest, run: Run) -> AnalyzeOutcome:
    from ..instant.cache import cached_directions, default_cache_path

    path = request.cache or str(default_cache_path(request.generator, request.clip, request.generator_file))
    directions, hit = cached_directions(request.generator, request.clip, generator_file=request.generator_file,
                                        cache=path, settings=request.settings, run=run, recompute=request.recompute)
    return AnalyzeOutcome(directions, hit, path)


@dataclass
class InstantEditRequest:
    """What :func:`sgim_nodes.instant.instant_edit` takes, plus where its analysis comes from: given
    ``directions``, or the cache (``generator_file``, ``cache``, ``analysis`` settings)."""

    generator: Any
    clip: Any
    targets: torch.Tensor
    source_ws: torch.Tensor
    target_weights: Any = None
    alpha: float = 1.0  # sgim_nodes.instant.edit.DEFAULT_ALPHA
    beta: float = 0.1
    reference: str = "source"
    space: str = "wplus"
    neutral: torch.Tensor | None = None
    layer_freedom: Any = None
    noise_mode: str = "const"
    directions: Any = None
    generator_file: str | None = None
    cache: str | None = None
    analysis: Any = None


@dataclass
class InstantEditOutcome:
    """The edit (:class:`sgim_nodes.instant.InstantResult`), the CLIP distance (the optimiser's CLIP term)
    of every source and edited code to its target, and whether the analysis came from the cache."""

    result: Any
    distance_before: torch.Tensor
    distance_after: torch.Tensor
    cache_hit: bool
    images: torch.Tensor | None = None


def run_instant_edit(request: InstantEditRequest, run: Run) -> InstantEditOutcome:
    from ..instant.cache import cached_directions
    from ..instant.edit import check_alpha_beta, instant_edit
    from ..optimize.loop import _as_wplus
    from ..optimize.objective import combine_targets, cosine_distance

    check_alpha_beta(request.alpha, request.beta)  # before any heavy work
    G, clip = request.generator, request.clip
    hit = True
    directions = request.directions
    if directions is None:
        directions, hit = cached_directions(G, clip, generator_file=request.generator_file, cache=request.cache,
                                            settings=request.analysis, run=run)
    run.check_cancel()
    result = instant_edit(G, clip, directions, request.targets, request.source_ws,
                          target_weights=request.target_weights, alpha=request.alpha, beta=request.beta,
                          reference=request.reference, neutral=request.neutral, layer_freedom=request.layer_freedom,
                          space=request.space, noise_mode=request.noise_mode)
    vector, offset = combine_targets(request.targets.detach().float().cpu(), None if request.target_weights is None
                                     else torch.as_tensor(request.target_weights).detach().clone(),
                                     embed_dim=int(clip.embed_dim))
    with torch.no_grad():
        source = _as_wplus(request.source_ws.detach().float().to(result.ws.device), int(G.num_ws), "source_ws")
        before = clip.image_features(G.synthesis(source.expand_as(result.ws), noise_mode=request.noise_mode))
        images = G.synthesis(result.ws, noise_mode=request.noise_mode)
        after = clip.image_features(images)
    batch = result.ws.shape[0]
    vector, offset = vector.to(after.device).expand(batch, -1), offset.to(after.device).expand(batch)
    run.progress(1, 1, preview=images)
    return InstantEditOutcome(result, cosine_distance(before, vector, offset).cpu(),
                              cosine_distance(after, vector, offset).cpu(), hit, images)


@dataclass
class WarmStartRequest:
    """Where the optimiser starts with ``--init instant`` / Optimize Latent's ``init``: the models, targets
    ``[B, K, D]`` + weights, the source codes, the optimiser's lambda_sim and layer freedom (per W+ row)."""

    generator: Any
    clip: Any
    targets: torch.Tensor
    source_ws: torch.Tensor
    target_weights: Any = None
    lambda_sim: float = 0.002
    layer_freedom: Any = None
    beta: float | None = None
    space: str = "wplus"
    directions: Any = None
    generator_file: str | None = None
    cache: str | None = None
    analysis: Any = None


def run_warm_start(request: WarmStartRequest, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """(init_ws, chosen strength per code; 0 = the source) by :func:`sgim_nodes.instant.warm_start_codes`."""
    from ..instant import InstantEditor, cached_directions, warm_start_codes
    from ..optimize.rules import freedom_mask

    G, clip = request.generator, request.clip
    directions = request.directions
    if directions is None:
        directions, _ = cached_directions(G, clip, generator_file=request.generator_file, cache=request.cache,
                                          settings=request.analysis, run=run)
    editor = InstantEditor(G, directions, layer_freedom=request.layer_freedom, space=request.space)
    freedom = editor.freedom
    weights = freedom_mask(freedom).weights if request.layer_freedom is not None else None
    init, chosen = warm_start_codes(G, clip, editor, request.targets, request.source_ws,
                                    target_weights=request.target_weights, lambda_sim=request.lambda_sim,
                                    layer_weights=weights, beta=request.beta)
    run.status(f"warm start from the instant edit: strength {', '.join(f'{a:g}' for a in chosen.tolist())}")
    return init, chosen
