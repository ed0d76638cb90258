"""Sets of weighted CLIP-space targets (the nodes' SGIM_EMBEDDING), and how several are mixed.

A set holds ``vectors`` [B, K, D] (unit length) and one relative weight per component K. A single
audio, text or image embedding has K = 1; mixing concatenates components, so the optimiser weighs
each term of the objective (B carries a batch of clips or prompts). Mix Embeddings and the command
line's ``--audio``/``--text``/``--weights`` both go through :func:`mix_targets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ParameterError
from .rules import normalize_target_weights


@dataclass(frozen=True)
class Embedding:
    vectors: torch.Tensor
    weights: tuple[float, ...]
    labels: tuple[str, ...]
    clip_model: str | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def batch(self) -> int:
        return int(self.vectors.shape[0])


def single_embedding(vectors: torch.Tensor, label: str, clip_model: str | None = None) -> Embedding:
    """One target per row of ``vectors`` [B, D] (detached float32 copy on the CPU)."""
    vectors = vectors.detach().to("cpu", torch.float32).clone()
    return Embedding(vectors=vectors[:, None, :], weights=(1.0,), labels=(label,), clip_model=clip_model)


def mix_targets(parts: Sequence[tuple[str, Embedding, float]], parameter: str = "weights") -> Embedding:
    """``[(parameter name, set, weight)]`` -> one set whose relative weights sum to 1.

    Every set must live in the same CLIP space (width D) and have a batch of 1 or the common batch.
    """
    if not parts:
        raise ParameterError(f"{parameter}: no target given", parameter=parameter)
    if sum(w for _, _, w in parts) <= 0:
        raise ParameterError(f"{parameter}: at least one weight must be above 0", parameter=parameter)
    first_name, first = parts[0][0], parts[0][1]
    batch = max(e.batch for _, e, _ in parts)
    vectors, weights, labels = [], [], []
    for name, e, w in parts:
        if e.dim != first.dim:
            raise ParameterError(f"{name}: a {e.dim}-d embedding cannot be mixed with the {first.dim}-d "
                                 f"{first_name}; they come from different CLIP spaces", parameter=name)
        if e.batch not in (1, batch):
            raise ParameterError(f"{name}: batch of {e.batch} does not match the batch of {batch} of the other "
                                 f"embeddings (use 1 or {batch})", parameter=name)
        vectors.append(e.vectors.expand(batch, -1, -1))
        weights += [x * w for x in e.weights]
        labels += list(e.labels)
    clip_model = next((e.clip_model for _, e, _ in parts if e.clip_model), None)
    relative = normalize_target_weights(weights, parameter=parameter).tolist()
    return Embedding(torch.cat(vectors, dim=1).clone(), tuple(relative), tuple(labels), clip_model)
