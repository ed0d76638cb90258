"""Temporal quality of a music video: how much each frame changes against how much its W+ code changed.

Per step from frame ``i`` to ``i + 1``:

- ``pixel``  mean absolute change of the RGB values, in [0, 1];
- ``edges``  mean absolute change of the luminance gradient magnitude (Sobel), in [0, 1]: a
             perceptual stand-in that follows structure (edges appearing, textures crawling) and
             ignores slow uniform brightness drifts;
- ``code``   Euclidean distance between the two frames' W+ codes.

Flicker shows as pixel change out of proportion to code change (the generator's noise, the
encoder) and as spikes: steps whose pixel change exceeds :data:`SPIKE_FACTOR` times the median
of the second around them. Steps touching a keyframe are counted apart, since a badly joined
path shows up there first. Frames are consumed as a stream (two at a time), so an hour costs
no more memory than a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .trajectory import Trajectory

SPIKE_FACTOR = 3.0


@dataclass
class FlickerStats:
    fps: float
    pixel: np.ndarray  # [F - 1]
    edges: np.ndarray  # [F - 1]
    code: np.ndarray  # [F - 1]
    at_keyframe: np.ndarray  # [F - 1] bool: the step ends or starts on a keyframe

    def spikes(self) -> np.ndarray:
        """Steps whose pixel change is over SPIKE_FACTOR x the median of the surrounding second."""
        half = max(1, int(round(self.fps / 2)))
        padded = np.pad(self.pixel, half, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
        local = np.median(windows, axis=1)
        return np.nonzero(self.pixel > SPIKE_FACTOR * np.maximum(local, 1e-6))[0]

    def summary(self) -> dict:
        def q(values, p):
            return float(np.percentile(values, p)) if values.size else float("nan")

        ratio = self.pixel / np.maximum(self.code, 1e-9)
        moving = self.code > 1e-9
        inside, boundary = self.pixel[~self.at_keyframe], self.pixel[self.at_keyframe]
        return {"steps": int(self.pixel.size), "pixel_median": q(self.pixel, 50), "pixel_p95": q(self.pixel, 95),
                "pixel_max": float(self.pixel.max()) if self.pixel.size else float("nan"),
                "edges_median": q(self.edges, 50), "edges_p95": q(self.edges, 95), "code_median": q(self.code, 50),
                "pixel_per_code_median": q(ratio[moving], 50) if moving.any() else float("nan"),
                "keyframe_over_inside": (float(boundary.mean() / max(np.median(inside), 1e-9))
                                         if boundary.size and inside.size else float("nan")),
                "spikes": int(self.spikes().size),
                "spikes_at_keyframes": int(self.at_keyframe[self.spikes()].sum())}


def _gradient(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of ``[H, W]`` luminance in [0, 1] (edges replicated)."""
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy) / 8.0


def measure_flicker(batches: Iterable[np.ndarray], trajectory: Trajectory,
                    keyframe_frames: Sequence[int] | None = None) -> FlickerStats:
    """Flicker of uint8 ``[B, H, W, 3]`` frame batches (in order, all of ``trajectory``'s frames)."""
    fps = trajectory.timeline.fps
    if keyframe_frames is None:
        keyframe_frames = [int(round(t * fps)) for t in trajectory.keyframes.times]
    keys = set(int(k) for k in keyframe_frames)
    pixel, edges, code = [], [], []
    previous = previous_grad = previous_code = None
    index = 0
    for batch in batches:
        frames = batch.astype(np.float32) / 255.0
        codes = trajectory.codes(index, frames.shape[0]).flatten(1).double()
        for frame, c in zip(frames, codes):
            grad = _gradient(frame @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
            if previous is not None:
                pixel.append(float(np.abs(frame - previous).mean()))
                edges.append(float(np.abs(grad - previous_grad).mean()))
                code.append(float(torch.linalg.vector_norm(c - previous_code)))
            previous, previous_grad, previous_code = frame, grad, c
        index += frames.shape[0]
    steps = np.arange(len(pixel))
    at_keyframe = np.array([(i in keys) or (i + 1 in keys) for i in steps], dtype=bool)
    return FlickerStats(fps, np.array(pixel), np.array(edges), np.array(code), at_keyframe)


def flicker_of_video(path: str | Path, trajectory: Trajectory, batch: int = 32) -> FlickerStats:
    """Flicker of a written video (what a viewer sees, encoder included), decoded as a stream."""
    import av

    def batches():
        pending = []
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                pending.append(frame.to_ndarray(format="rgb24"))
                if len(pending) == batch:
                    yield np.stack(pending)
                    pending = []
        if pending:
            yield np.stack(pending)

    return measure_flicker(batches(), trajectory)


def plot_flicker(stats: FlickerStats, width: int = 900, height: int = 300) -> np.ndarray:
    """uint8 RGB figure: left, pixel change against code change per step (keyframe steps orange);
    right, pixel (white) and edge (blue) change over time, keyframes as orange ticks, spikes red."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    left, pad = width // 3, 24
    top = max(float(np.percentile(stats.pixel, 99.5)) * 1.1 if stats.pixel.size else 1.0, 1e-6)
    code_top = max(float(stats.code.max()) * 1.05 if stats.code.size else 1.0, 1e-9)

    def y_of(v):
        return height - pad - min(v / top, 1.0) * (height - 2 * pad)

    for x0, x1 in ((pad, left - pad), (left + pad, width - pad)):
        draw.rectangle([x0, pad, x1, height - pad], outline=(70, 70, 78))
    for p, c, key in zip(stats.pixel, stats.code, stats.at_keyframe):
        x = pad + c / code_top * (left - 2 * pad)
        draw.point((x, y_of(p)), fill=(255, 170, 60) if key else (220, 220, 220))
    n = max(1, stats.pixel.size - 1)
    span = width - left - 2 * pad

    def x_of(i):
        return left + pad + i / n * span

    for i in np.nonzero(stats.at_keyframe)[0]:
        draw.line([(x_of(i), height - pad), (x_of(i), height - pad + 6)], fill=(255, 170, 60))
    for curve, colour in ((stats.edges, (110, 170, 255)), (stats.pixel, (235, 235, 235))):
        if curve.size > 1:
            draw.line([(x_of(i), y_of(v)) for i, v in enumerate(curve)], fill=colour, width=1)
    for i in stats.spikes():
        draw.ellipse([x_of(i) - 2, y_of(stats.pixel[i]) - 2, x_of(i) + 2, y_of(stats.pixel[i]) + 2],
                     outline=(255, 70, 70))
    draw.text((pad, 4), "pixel change vs W+ change", fill=(220, 220, 220))
    summary = stats.summary()
    draw.text((left + pad, 4), f"change per frame: median {summary['pixel_median']:.4f}, p95 "
                               f"{summary['pixel_p95']:.4f}, {summary['spikes']} spikes "
                               f"({summary['spikes_at_keyframes']} at keyframes)", fill=(220, 220, 220))
    return np.asarray(image)
