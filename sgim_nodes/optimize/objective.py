"""The paper's objective, per sample:

    L(w) = d_cos(CLIP_image(G(w)), target) + lambda_id * L_id(w) + lambda_sim * sum_l g_l ||w_l - w_s,l||^2

Every function returns one value per sample (``[B]``); the optimiser sums over the batch, so a
sample's gradient never depends on the others and a batch gives the same codes as one-by-one runs.

Cosine distance scale: ``d_cos = 1 - cos``. The released code computes ``1 - exp(0.07) * cos``
(exp(0.07) = 1.0725; meant to be the CLIP temperature, which would divide by 0.07). That
reweights the CLIP term against the others by 7 % and is a bug, so we do not copy it;
``cosine_scale=math.exp(0.07)`` reproduces it when comparing against the original.

Weighted target sets: ``targets [B, K, D]`` with relative weights ``[K]`` or ``[B, K]``, normalised
to sum 1 (``rules.normalize_target_weights``), give ``sum_k a_k (1 - cos(f, t_k))``. Because the cosine is linear in the (unit) target, this equals
``sum_k a_k - <f, sum_k a_k t_k>`` for the unit image feature ``f``, so :func:`combine_targets`
folds the set into one vector and one constant per sample once, before the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from .layer_mask import adaptive_layer_terms, layer_distances
from .rules import normalize_target_weights


def combine_targets(targets: torch.Tensor, weights: torch.Tensor | None = None, embed_dim: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold targets ``[B, D]`` or ``[B, K, D]`` (+ weights ``[K]``/``[B, K]``) into ``(vector [B, D], offset [B])``.

    Each target is normalised to unit length; the CLIP term is then ``offset - <f, vector>``.
    """
    if not isinstance(targets, torch.Tensor) or targets.ndim not in (2, 3):
        raise ParameterError(f"targets: expected a [B, D] or [B, K, D] tensor of CLIP embeddings, got "
                             f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}",
                             parameter="targets")
    if embed_dim is not None and targets.shape[-1] != embed_dim:
        raise ParameterError(f"targets: width {targets.shape[-1]} does not match the CLIP model's embed_dim "
                             f"{embed_dim} (embeddings from another CLIP model?)", parameter="clip")
    if not torch.isfinite(targets).all():
        raise ParameterError("targets: contain NaN or infinite values", parameter="targets")
    targets = targets.double()  # float32's whole range, so the scaling below cannot overflow
    if targets.ndim == 2:
        if weights is not None:
            raise ParameterError("target_weights: only meaningful with a [B, K, D] set of targets",
                                 parameter="target_weights")
        targets = targets[:, None]
    batch, count = targets.shape[:2]
    # Scale each target by its largest entry before normalising: only the direction counts, and a
    # finite but huge (or tiny) embedding would otherwise overflow its norm to inf (or 0).
    peak = targets.abs().amax(dim=-1, keepdim=True)
    if (peak == 0).any():
        raise ParameterError("targets: an embedding is all zeros, it has no direction", parameter="targets")
    targets = (targets / peak).float()
    if weights is None:
        weights = torch.ones(count)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.ndim == 1:
        weights = weights.expand(batch, -1)
    if weights.shape != (batch, count):
        raise ParameterError(f"target_weights: expected [{count}] or [{batch}, {count}] for targets "
                             f"{tuple(targets.shape)}, got {tuple(weights.shape)}", parameter="target_weights")
    weights = normalize_target_weights(weights, count).to(targets.device)  # relative weights, sum 1
    unit = F.normalize(targets, dim=-1)
    return (weights[..., None] * unit).sum(dim=1), weights.sum(dim=1)


def cosine_distance(image_features: torch.Tensor, target_vector: torch.Tensor, target_offset: torch.Tensor,
                    cosine_scale: float = 1.0) -> torch.Tensor:
    """``offset - scale * <f, vector>`` per sample (``1 - cos`` for a single unit target)."""
    features = F.normalize(image_features.float(), dim=-1)
    return target_offset - cosine_scale * (features * target_vector).sum(dim=-1)


def similarity_terms(ws: torch.Tensor, source_ws: torch.Tensor, layer_weights: torch.Tensor,
                     adaptive_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Per-layer latent-distance terms ``[B, num_ws]``: ``g_l d_l``, or ``sigmoid(m_l) g_l d_l`` when adaptive."""
    distances = layer_distances(ws, source_ws)
    if adaptive_logits is None:
        return layer_weights * distances
    return adaptive_layer_terms(distances, adaptive_logits, layer_weights)
