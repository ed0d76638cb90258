"""Warm starts for the optimiser: the point along the instant-edit direction with the lowest objective.

An instant edit at a fixed strength can start the optimiser *worse* than the source: its similarity
term ``lambda_sim * sum_l g_l ||w_l - w_s,l||^2`` grows with the square of the step while the CLIP term
saturates. So the warm start evaluates the optimiser's own objective (CLIP term + lambda_sim x
similarity, the identity term left out) at a few strengths along the instant direction, in one batched
render, and starts each code from its best one (the source itself when nothing helps). Cost: one render
+ CLIP pass per strength tried (8 by default), a few optimiser steps' worth.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .edit import InstantEditor, reference_embedding, target_direction

WARM_ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)


def warm_start_codes(generator, clip, editor: InstantEditor, targets: torch.Tensor, source_ws: torch.Tensor, *,
                     target_weights=None, lambda_sim: float = 0.008, layer_weights: torch.Tensor | None = None,
                     alphas: Sequence[float] = WARM_ALPHAS, beta: float | None = None,
                     noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
    """(init_ws [B, num_ws, w_dim], chosen alpha [B]; 0 = the source) for ``optimize_latent(init_ws=...)``."""
    from ..optimize.objective import combine_targets, cosine_distance, similarity_terms
    from .edit import DEFAULT_BETA

    beta = DEFAULT_BETA if beta is None else beta
    device = generator.device
    vector, offset = combine_targets(targets.detach().float().cpu(), None if target_weights is None else
                                     torch.as_tensor(target_weights).detach().clone(),
                                     embed_dim=int(editor.unit.shape[1]))
    source_ws = source_ws.detach().float().to(device)
    batch = max(source_ws.shape[0], vector.shape[0])
    source_ws = source_ws.expand(batch, -1, -1)
    vector, offset = vector.to(device).expand(batch, -1), offset.to(device).expand(batch)
    ref = reference_embedding("source", generator=generator, clip=clip, source_ws=source_ws, noise_mode=noise_mode)
    delta_t = target_direction(vector, ref)
    g = torch.ones(generator.num_ws, device=device) if layer_weights is None else layer_weights.to(device)
    candidates = [source_ws] + [editor.edit(source_ws, delta_t, a, beta).ws for a in alphas]
    stacked = torch.stack(candidates)  # [A+1, B, num_ws, w_dim]
    with torch.no_grad():
        flat = stacked.flatten(0, 1)
        features = clip.image_features(generator.synthesis(flat, noise_mode=noise_mode))
        clip_term = cosine_distance(features, vector.repeat(len(candidates), 1), offset.repeat(len(candidates)))
        similarity = similarity_terms(flat, source_ws.repeat(len(candidates), 1, 1), g).sum(-1)
        objective = (clip_term + lambda_sim * similarity).view(len(candidates), batch)
    best = objective.argmin(dim=0)
    chosen = torch.tensor([0.0, *alphas], device=device)[best]
    return stacked[best, torch.arange(batch, device=device)].clone(), chosen.cpu()
