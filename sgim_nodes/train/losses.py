"""The paper's contrastive objective: symmetric InfoNCE between audio and text, image, augmented audio.

``loss = (w_text * L(audio, text) + w_image * L(audio, image) + w_self * L(audio, audio_aug)) / sum(w)``
with ``L(a, b) = (CE(s * a b^T, targets) + CE(s * b a^T, targets^T)) / 2`` on L2-normalised rows.

Temperature: the logits are cosine similarities DIVIDED by tau, i.e. multiplied by ``s = 1/tau``.
``tau = 0.07`` fixed by default (the paper's value). ``learnable=True`` makes ``log s`` a parameter
initialised at ``log(1/0.07)`` and clamped so that ``s <= 100``, exactly as CLIP does. (The released
code multiplied by ``exp(0.07) ~= 1.07``, which leaves the softmax almost flat; a bug we do not copy.)

Duplicate targets: with class-label datasets several clips in a batch share a caption, and treating
their identical text embeddings as negatives of each other would push a clip away from its own
class. When ``group_ids`` is given, every pair with the same id is a positive: the target row is
uniform over them (soft-target cross-entropy). With all ids distinct this is plain InfoNCE.

Distributed: ``gather_with_grad`` concatenates every rank's rows (padded to a common length, since a
rank may have dropped unreadable clips) with torch's autograd-aware ``all_gather``, so negatives span
the global batch and gradients reach every shard's owner. Every rank computes the same global loss;
the all_gather backward sums the W identical gradients of each shard and DDP's mean over ranks then
divides by W, so the update equals the single-process update of the global batch. The logit scale
lives in the DDP-wrapped module (see ``loop.ContrastiveModel``), so its gradient is averaged too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError

from .config import PAPER_TEMPERATURE  # noqa: E402,F401  (re-exported)
MAX_LOGIT_SCALE = 100.0


class LogitScale(nn.Module):
    """``s = 1/tau``: fixed (a buffer) or learnable in log space (a parameter), CLIP-style clamp."""

    def __init__(self, temperature: float = PAPER_TEMPERATURE, learnable: bool = False):
        super().__init__()
        value = torch.tensor(math.log(1.0 / temperature))
        self.learnable = learnable
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def _targets(group_ids_rows: torch.Tensor | None, group_ids_cols: torch.Tensor | None,
             n_rows: int, n_cols: int, offset: int, device: torch.device) -> torch.Tensor:
    """Soft targets [n_rows, n_cols]: row i is uniform over the columns that are its positives."""
    if group_ids_rows is None:
        eye = torch.zeros(n_rows, n_cols, device=device)
        eye[torch.arange(n_rows, device=device), torch.arange(n_rows, device=device) + offset] = 1.0
        return eye
    same = (group_ids_rows[:, None] == group_ids_cols[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                       group_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` ([N, D] each, any norm).

    ``group_ids`` ([N] ints, optional): rows with the same id are all positives of each other.
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = logit_scale * (a @ b.t())
    targets = _targets(group_ids, group_ids, a.shape[0], b.shape[0], 0, a.device)
    loss_ab = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_ba = torch.sum(-targets.t() * F.log_softmax(logits.t(), dim=1), dim=1).mean()
    return (loss_ab + loss_ba) / 2


def _all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _AllGather(torch.autograd.Function):
    """Differentiable all_gather of equal-sized tensors: backward sums every rank's gradient of the
    gathered tensor (all_reduce) and keeps this rank's slice. Works on gloo (no reduce_scatter needed)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order, differentiable (a no-op outside distributed runs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1) + [0, longest - x.shape[0]])
    gathered = _AllGather.apply(padded) if x.requires_grad else _all_gather_cat(padded)
    return torch.cat([gathered[i * longest:i * longest + n] for i, n in enumerate(counts)], dim=0)


class ContrastiveLoss(nn.Module):
    """The three-term objective. ``forward`` returns (total, {"text": .., "image": .., "self": ..})."""

    def __init__(self, text_weight: float = 1.0, image_weight: float = 1.0, self_weight: float = 1.0,
                 temperature: float = PAPER_TEMPERATURE, learnable_temperature: bool = False):
        super().__init__()
        self.weights = {"text": text_weight, "image": image_weight, "self": self_weight}
        self.logit_scale = LogitScale(temperature, learnable_temperature)

    def forward(self, audio: torch.Tensor, text: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                audio_aug: torch.Tensor | None = None, image: torch.Tensor | None = None,
                image_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """All inputs are this rank's rows; they are gathered across ranks when running distributed.

        ``text_ids`` groups identical captions (see module docstring). ``image`` rows whose
        ``image_ids`` is negative (no image for that clip) are left out of the image term.
        """
        scale = self.logit_scale()
        audio_all = gather_with_grad(audio)
        terms: dict[str, torch.Tensor] = {}
        if text is not None and self.weights["text"]:
            ids = gather_with_grad(text_ids) if text_ids is not None else None
            terms["text"] = symmetric_info_nce(audio_all, gather_with_grad(text), scale, ids)
        if audio_aug is not None and self.weights["self"]:
            terms["self"] = symmetric_info_nce(audio_all, gather_with_grad(audio_aug), scale)
        if image is not None and image_ids is not None and self.weights["image"]:
            ids = gather_with_grad(image_ids)
            has_image = ids >= 0
            if int(has_image.sum()) >= 2:  # one pair has no negatives: nothing to learn from
                terms["image"] = symmetric_info_nce(audio_all[has_image], gather_with_grad(image)[has_image],
                                                    scale, ids[has_image])
        if not terms:
            raise ParameterError("loss weights: no loss term is active (all weights are zero or their inputs are missing)")
        weight_sum = sum(self.weights[k] for k in terms)
        total = sum(self.weights[k] * v for k, v in terms.items()) / weight_sum
        parts = {k: float(v.detach()) for k, v in terms.items()}
        return total, parts
