"""Music videos without keyframe optimisation: every frame's code follows its own moment's sound.

``follow_codes`` takes one target per frame (the windowed sound embedding of that moment, optionally
mixed with a prompt, exactly as the keyframe targets are made), turns each into an instant edit of the
source and smooths the resulting W+ offsets over time with a centred Hann window (the same window as the
audio features' smoothing), so the picture moves with the music without jitter from window to window.
Cost per frame: one small matrix product per W+ row (the reference needs one render of the source).
"""

from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from ..limits import check_float
from .edit import DEFAULT_ALPHA, DEFAULT_BETA, InstantEditor, target_direction


def smooth_frames(values: torch.Tensor, fps: float, seconds: float) -> torch.Tensor:
    """Centred Hann smoothing along the first axis over ``seconds`` (edge values repeated at both ends)."""
    width = int(round(seconds * fps))
    if width < 2 or values.shape[0] < 2:
        return values.clone()
    width += 1 - width % 2
    kernel = torch.hann_window(width + 2, periodic=False, dtype=torch.float64)[1:-1]
    kernel = kernel / kernel.sum()
    half = width // 2
    flat = values.reshape(values.shape[0], -1).double().t()[:, None]  # [N, 1, T]
    padded = torch.cat([flat[..., :1].expand(-1, -1, half), flat, flat[..., -1:].expand(-1, -1, half)], dim=-1)
    out = torch.nn.functional.conv1d(padded, kernel.view(1, 1, -1).to(flat.device))
    return out[:, 0].t().reshape(values.shape).to(values.dtype)


def follow_codes(editor: InstantEditor, source_ws: torch.Tensor, reference: torch.Tensor,
                 frame_targets: torch.Tensor, *, target_weights=None, fps: float = 24.0,
                 smoothing_seconds: float = 0.5, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
                 batch: int = 256) -> torch.Tensor:
    """W+ codes [T, num_ws, w_dim], one per frame, following ``frame_targets`` [T, D] (or [T, K, D] with
    ``target_weights``, the keyframe targets' layout) from ``source_ws`` [1, num_ws, w_dim].

    ``reference`` [1, D]: the reference embedding of the edit (:func:`.edit.reference_embedding`).
    Frozen W+ rows of the editor stay bit-identical to the source in every frame.
    """
    from ..optimize.objective import combine_targets

    fps = check_float("fps", fps, 0.0, 1000.0, exclusive_minimum=True, what="frames per second")
    smoothing_seconds = check_float("smoothing_seconds", smoothing_seconds, 0.0, 3600.0, what="seconds")
    if source_ws.ndim != 3 or source_ws.shape[0] != 1:
        raise ParameterError(f"source_ws: expected one code [1, num_ws, w_dim], got {list(source_ws.shape)}",
                             parameter="source_ws")
    vector, _ = combine_targets(frame_targets.detach().float().cpu(), None if target_weights is None else
                                torch.as_tensor(target_weights).detach().clone(),
                                embed_dim=int(editor.unit.shape[1]))
    delta_t = target_direction(vector, reference.expand(vector.shape[0], -1).cpu())
    offsets = []
    for first in range(0, delta_t.shape[0], batch):
        part = delta_t[first:first + batch]
        result = editor.edit(source_ws, part, alpha, beta)
        offsets.append((result.ws - source_ws.to(result.ws.device)).cpu())
    offsets = smooth_frames(torch.cat(offsets), fps, smoothing_seconds)
    ws = source_ws.detach().float().cpu() + offsets
    frozen = [row for row in range(ws.shape[1]) if row not in {r for r, *_ in editor.rows}]
    if frozen:  # exact copies, not source + 0.0 after smoothing round-off
        ws[:, frozen] = source_ws.detach().float().cpu()[:, frozen]
    if not math.isfinite(float(ws.abs().max())):
        raise ParameterError("frame_targets: the followed codes came out non-finite", parameter="frame_targets")
    return ws


def instant_keyframes(editor: InstantEditor, source_ws: torch.Tensor, reference: torch.Tensor, times, targets,
                      *, target_weights=None, labels=None, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
                      smoothing_seconds: float = 0.5):
    """Dense keyframes for :class:`sgim_nodes.animate.trajectory.Trajectory` from instant edits, no optimisation.

    ``times`` (evenly spaced seconds, e.g. every 0.25 s) and ``targets`` [K, M, D] + ``target_weights`` as
    :func:`sgim_nodes.animate.keyframes.keyframe_targets` makes them; each keyframe follows its own moment
    (smoothed over ``smoothing_seconds``), and the trajectory's Hermite path, audio reaction and StyleGAN3
    motion then work as with optimised keyframes (``animate --follow instant``).
    """
    from ..animate.keyframes import Keyframes

    times = [float(t) for t in times]
    if len(times) != targets.shape[0] or not times:
        raise ParameterError(f"times: {len(times)} times for {targets.shape[0]} targets", parameter="times")
    step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1.0
    codes = follow_codes(editor, source_ws, reference, targets, target_weights=target_weights,
                         fps=1.0 / step if step > 0 else 1.0, smoothing_seconds=smoothing_seconds,
                         alpha=alpha, beta=beta)
    return Keyframes(times, codes, source_ws.detach().float().cpu(), getattr(editor.generator, "name", ""),
                     list(labels) if labels is not None else [f"{t:.2f}s" for t in times])
