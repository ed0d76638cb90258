"""A smooth, audio-reactive path through the keyframe codes: one W+ code per video frame.

Path. Between keyframes, a cubic Hermite spline in W+ with Catmull-Rom tangents for uneven
spacing, ``m_k = (p_{k+1} - p_{k-1}) / (t_{k+1} - t_{k-1})`` (one-sided at the ends). It passes
through every keyframe code and its velocity is continuous, so nothing jumps at a keyframe.

Reaction. Per frame and W+ row, the path's displacement from the source is scaled by
``1 + reactivity * drive``, where ``drive`` in [0, 1] is the envelope ``(loudness + onset) / 2``;
with ``beat_weight`` > 0 that envelope is mixed with beat pulses (1 on each tracked beat, decaying
over :data:`~sgim_nodes.animate.beats.PULSE_SECONDS`; the features must carry beats); with
``band_layers`` the coarse rows (4-8 px: layout) follow half envelope, half bass energy, the
middle rows (16-32 px) the mid band and the fine rows (colour, texture) the highs. The curves are
centred, so the image pulses on the beat, not after it.

Motion (StyleGAN3 only: ``G.family == "stylegan3"``). A slow rotation by up to
``rotation_degrees`` following the loudness and a translation by up to ``translation`` (input
coordinates) following the brightness (x) and the bass (y), both smoothed over
``MOTION_SMOOTHING`` seconds; given to ``G.set_input_transform`` as NVlabs' visualiser does (the
inverse of the rotate-then-translate matrix).

Everything here is computed per chunk of frames, so a long song never needs all its codes at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ParameterError
from ..optimize.layer_mask import preset_layers
from .features import AudioFeatures, smooth
from .keyframes import Keyframes

from .defaults import DEFAULT_REACTIVITY, DEFAULT_ROTATION_DEGREES, DEFAULT_TRANSLATION  # noqa: F401  (re-exported)
MOTION_SMOOTHING = 2.0
BAND_OF_GROUP = {"coarse": "low", "middle": "mid", "fine": "high"}


def hermite_path(times: torch.Tensor, codes: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Codes ``[K, ...]`` at sorted ``times`` [K] interpolated at ``at`` [F] (clamped to the ends): [F, ...]."""
    times = times.double()
    at = at.double().clamp(times[0], times[-1])
    count = times.shape[0]
    if count == 1:
        return codes[:1].expand(at.shape[0], *codes.shape[1:]).clone()
    points = codes.double()
    tangents = torch.empty_like(points)
    tangents[1:-1] = (points[2:] - points[:-2]) / (times[2:] - times[:-2]).reshape(-1, *[1] * (points.dim() - 1))
    tangents[0] = (points[1] - points[0]) / (times[1] - times[0])
    tangents[-1] = (points[-1] - points[-2]) / (times[-1] - times[-2])
    segment = (torch.searchsorted(times, at, right=True) - 1).clamp(0, count - 2)
    t0, t1 = times[segment], times[segment + 1]
    span = (t1 - t0)
    u = ((at - t0) / span).reshape(-1, *[1] * (points.dim() - 1))
    span = span.reshape(-1, *[1] * (points.dim() - 1))
    u2, u3 = u * u, u * u * u
    h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
    out = (h00 * points[segment] + h10 * span * tangents[segment] + h01 * points[segment + 1]
           + h11 * span * tangents[segment + 1])
    return out.to(codes.dtype)


def layer_drive(features: AudioFeatures, num_ws: int, band_layers: bool = True, offset: int = 0,
                count: int | None = None) -> torch.Tensor:
    """Per-frame, per-row reaction strength in [0, 1]: ``[count, num_ws]``."""
    offset, count = features.timeline.check_range(offset, count)
    window = slice(offset, offset + count)
    envelope = 0.5 * (features.tensor("loudness")[window] + features.tensor("onset")[window])
    drive = envelope[:, None].expand(count, num_ws).clone()
    if band_layers:
        for group, band in BAND_OF_GROUP.items():
            rows = preset_layers(group, num_ws)
            if rows:
                drive[:, rows] = 0.5 * envelope[:, None] + 0.5 * features.tensor(band)[window][:, None]
    return drive


def transform_matrix(angle_degrees: float, tx: float, ty: float) -> torch.Tensor:
    """The 3x3 input transform NVlabs' StyleGAN3 tools set for a rotation and a translation."""
    a = math.radians(angle_degrees)
    c, s = math.cos(a), math.sin(a)
    forward = torch.tensor([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.linalg.inv(forward).float()


@dataclass
class Trajectory:
    """Keyframes + features -> the codes (and StyleGAN3 transforms) of any chunk of frames."""

    keyframes: Keyframes
    features: AudioFeatures
    reactivity: float = DEFAULT_REACTIVITY
    band_layers: bool = True
    rotation_degrees: float = DEFAULT_ROTATION_DEGREES
    translation: float = DEFAULT_TRANSLATION
    beat_weight: float = 0.0  # share of the drive that follows beat pulses instead of the envelope

    def __post_init__(self):
        for name in ("reactivity", "rotation_degrees", "translation"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ParameterError(f"{name}: expected a finite number >= 0, got {value!r}", parameter=name)
        if not isinstance(self.beat_weight, (int, float)) or not 0.0 <= self.beat_weight <= 1.0:
            raise ParameterError(f"beat_weight: expected a number in [0, 1], got {self.beat_weight!r}",
                                 parameter="beat_weight")
        if self.beat_weight > 0 and self.features.tempo is None:
            raise ParameterError("beat_weight: the features carry no beats (track them first: "
                                 "animate.beats.with_beats)", parameter="beat_weight")
        if len(self.keyframes.times) != self.keyframes.codes.shape[0] or not self.keyframes.times:
            raise ParameterError("keyframes: the times and codes do not match", parameter="keyframes")

    @property
    def timeline(self):
        return self.features.timeline

    @property
    def frames(self) -> int:
        return self.timeline.frames

    def path(self, offset: int = 0, count: int | None = None) -> torch.Tensor:
        """The smooth path alone (no reaction): ``[count, num_ws, w_dim]``."""
        at = self.timeline.frame_times(offset, count)
        return hermite_path(torch.tensor(self.keyframes.times, dtype=torch.float64), self.keyframes.codes, at)

    def codes(self, offset: int = 0, count: int | None = None) -> torch.Tensor:
        """One W+ code per frame of the chunk: ``[count, num_ws, w_dim]`` float32, computed
        :data:`~sgim_nodes.limits.TRAJECTORY_CHUNK_FRAMES` frames at a time (the float64 temporaries of a
        whole song would be gigabytes; every frame's code depends on its own time only, so the result is
        the same)."""
        from ..limits import TRAJECTORY_CHUNK_FRAMES

        offset, count = self.timeline.check_range(offset, count)
        if count <= TRAJECTORY_CHUNK_FRAMES:
            return self._codes(offset, count)
        out = torch.empty(count, *self.keyframes.codes.shape[1:], dtype=torch.float32,
                          device=self.keyframes.codes.device)
        for first in range(0, count, TRAJECTORY_CHUNK_FRAMES):
            part = min(TRAJECTORY_CHUNK_FRAMES, count - first)
            out[first:first + part] = self._codes(offset + first, part)
        return out

    def _codes(self, offset: int, count: int) -> torch.Tensor:
        path = self.path(offset, count)
        if self.reactivity == 0:
            return path.float()
        drive = layer_drive(self.features, path.shape[1], self.band_layers, offset, count)
        if self.beat_weight > 0:
            from .beats import beat_pulses

            pulses = torch.from_numpy(beat_pulses(self.features.beat_times, self.timeline, offset, count)).float()
            drive = (1 - self.beat_weight) * drive + self.beat_weight * pulses[:, None]
        displacement = path - self.keyframes.source.to(path)
        return (path + self.reactivity * drive[:, :, None].to(path) * displacement).float()

    def transforms(self, offset: int = 0, count: int | None = None) -> torch.Tensor:
        """StyleGAN3 input transforms of the chunk: ``[count, 3, 3]``."""
        offset, count = self.timeline.check_range(offset, count)
        fps = self.timeline.fps

        def slow(name: str) -> np.ndarray:
            curve = smooth(np.asarray(self.features.values[name], dtype=np.float64), fps, MOTION_SMOOTHING)
            return 2.0 * curve[offset:offset + count] - 1.0  # [-1, 1]

        angle, tx, ty = slow("loudness"), slow("centroid"), slow("low")
        return torch.stack([transform_matrix(self.rotation_degrees * a, self.translation * x, self.translation * y)
                            for a, x, y in zip(angle, tx, ty)])


def uses_motion(generator, trajectory: Trajectory) -> bool:
    """Whether frames get a per-frame input transform (a StyleGAN3 generator and some motion asked for)."""
    return (getattr(generator, "family", "stylegan2") == "stylegan3"
            and (trajectory.rotation_degrees > 0 or trajectory.translation > 0))
