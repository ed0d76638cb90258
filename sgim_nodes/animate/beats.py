"""Tempo and beats of a track from its per-frame onset curve, and keyframes on the beat or the bar.

Tempo. The onset curve (``AudioFeatures.values["onset"]``, one value per video frame) minus its
one-second running mean is autocorrelated; each lag's strength is weighted by a log-normal tempo
prior (centred on :data:`PRIOR_BPM`, one octave wide) and the strongest lag is refined to a
fraction of a frame by a parabola through its neighbours. Isochronous material is ambiguous by an
octave (a pulse at 174 BPM is also one at 87), so where half that period is nearly as strong
(:data:`FASTER_LEVEL_RATIO` of it) and no faster than :data:`MAX_PREFERRED_BPM`, the faster pulse
is taken. ``tempo_correction`` (``double`` / ``half``) moves to the next metrical level by hand and
``bpm`` skips the estimate altogether.

Beats. A dynamic programme over the onset strength (the standard Ellis tracker): the score of a
beat at frame ``t`` is its onset strength plus the best score of a previous beat ``tau`` in
``[t - 2P, t - P/2]`` penalised by ``tightness * log((t - tau) / P)^2``; the beats are read back
from the best-scoring frame of the last period, and weak beats at the ends (silence) are dropped.
The reported tempo comes from the beats themselves (their span over the periods they cover), which
is exact to a fraction of a percent where the frame-resolution lag is not.

Everything here is numpy on the features already computed: an hour at 24 fps is ~86,000 frames,
well under a second of work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from .features import AudioFeatures
from .timeline import Timeline

PRIOR_BPM = 120.0  # centre of the log-normal tempo prior
PRIOR_OCTAVES = 1.0  # its width (standard deviation in octaves)
MIN_BPM, MAX_BPM = 30.0, 300.0  # tempi considered by the estimate
MAX_PREFERRED_BPM = 200.0  # the faster of two octave-related pulses is taken only up to here
FASTER_LEVEL_RATIO = 0.8  # ... and only if it is nearly as strong as the slower one
TIGHTNESS = 100.0  # how strongly the beat tracker holds to the tempo
PULSE_SECONDS = 0.1  # beat pulses decay with this time constant
TEMPO_CORRECTIONS = {"none": 1.0, "double": 2.0, "half": 0.5}
KEYFRAME_UNITS = ("seconds", "beats", "bars")


@dataclass(frozen=True)
class Beats:
    """Tempo (BPM) and beat times (seconds from the timeline's start; each on a frame)."""

    tempo: float
    times: list[float]
    frames: list[int]
    period_frames: float  # the period the tracker followed (after corrections)
    estimated_bpm: float | None  # the autocorrelation's estimate (None with a manual BPM)


def check_bpm(bpm) -> float | None:
    if bpm in (None, 0):
        return None
    try:
        value = float(bpm)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or not MIN_BPM / 2 <= value <= MAX_BPM * 2:
        raise ParameterError(f"bpm: expected a tempo in [{MIN_BPM / 2:g}, {MAX_BPM * 2:g}] BPM (0 = detect), "
                             f"got {bpm!r}", parameter="bpm")
    return value


def check_tempo_correction(correction) -> float:
    if isinstance(correction, str):
        if correction.strip().lower() not in TEMPO_CORRECTIONS:
            raise ParameterError(f"tempo_correction: expected one of {', '.join(TEMPO_CORRECTIONS)}, "
                                 f"got {correction!r}", parameter="tempo_correction")
        return TEMPO_CORRECTIONS[correction.strip().lower()]
    if correction not in TEMPO_CORRECTIONS.values():
        raise ParameterError(f"tempo_correction: expected one of {', '.join(TEMPO_CORRECTIONS)}, got {correction!r}",
                             parameter="tempo_correction")
    return float(correction)


def _running_mean(x: np.ndarray, width: int) -> np.ndarray:
    if width < 2:
        return np.zeros_like(x)
    kernel = np.ones(width) / width
    return np.convolve(np.pad(x, width // 2, mode="edge"), kernel, mode="same")[width // 2: width // 2 + len(x)]


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    n = len(x)
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spectrum = np.fft.rfft(x, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    return acf / acf[0] if acf[0] > 1e-12 else np.zeros(n)


def _at(curve: np.ndarray, lag: float) -> float:
    """Linear interpolation of ``curve`` at a fractional index."""
    if lag >= len(curve) - 1:
        return 0.0
    i = int(math.floor(lag))
    return float(curve[i] + (lag - i) * (curve[i + 1] - curve[i]))


def estimate_tempo(onset: Sequence[float], fps: float) -> float:
    """Tempo (BPM) of an onset curve sampled at ``fps`` (see the module docstring)."""
    o = np.asarray(onset, dtype=np.float64)
    o = o - _running_mean(o, int(round(fps)))
    acf = _autocorrelation(o)
    lo = max(1, int(math.floor(60.0 * fps / MAX_BPM)))
    hi = min(len(acf) - 2, int(math.ceil(60.0 * fps / MIN_BPM)))
    if hi <= lo + 1:
        raise ParameterError(f"features: {len(o)} frames are too few to estimate a tempo (a few seconds are needed)",
                             parameter="features")
    lags = np.arange(lo, hi + 1)
    bpm = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    strength = np.maximum(acf[lags], 0.0) * prior
    best = int(lags[int(np.argmax(strength))])
    period = float(best)
    if 1 <= best < len(acf) - 1:  # a parabola through the peak and its neighbours
        a, b, c = acf[best - 1], acf[best], acf[best + 1]
        denom = a - 2 * b + c
        if denom < 0:
            period = best + float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    while (60.0 * fps / (period / 2) <= MAX_PREFERRED_BPM and period / 2 >= 1
           and _at(acf, period / 2) >= FASTER_LEVEL_RATIO * _at(acf, period)):
        period /= 2
    return 60.0 * fps / period


def _track(strength: np.ndarray, period: float, tightness: float) -> list[int]:
    """Ellis's dynamic programme: beat frames following ``period`` (frames) through ``strength``."""
    n = len(strength)
    score = np.zeros(n)
    back = np.full(n, -1, dtype=np.int64)
    near, far = max(1, int(round(period / 2))), max(2, int(round(2 * period)))
    for t in range(n):
        first, last = t - far, t - near
        if last < 0:
            score[t] = strength[t]
            continue
        first = max(0, first)
        candidates = np.arange(first, last + 1)
        cost = -tightness * np.log((t - candidates) / period) ** 2
        total = score[first:last + 1] + cost
        j = int(np.argmax(total))
        if total[j] > 0:
            score[t] = strength[t] + total[j]
            back[t] = candidates[j]
        else:
            score[t] = strength[t]
    tail = max(1, int(round(period)))
    t = n - tail + int(np.argmax(score[n - tail:]))
    beats = []
    while t >= 0:
        beats.append(t)
        t = int(back[t])
    return beats[::-1]


def track_beats(features: AudioFeatures, bpm=None, tempo_correction="none", tightness: float = TIGHTNESS) -> Beats:
    """Tempo and beats of ``features`` (``bpm``: a manual tempo; ``tempo_correction``: none/double/half)."""
    manual = check_bpm(bpm)
    factor = check_tempo_correction(tempo_correction)
    if not math.isfinite(float(tightness)) or tightness <= 0:
        raise ParameterError(f"tightness: expected a number > 0, got {tightness!r}", parameter="tightness")
    fps = features.timeline.fps
    onset = np.asarray(features.values["onset"], dtype=np.float64)
    estimated = None if manual is not None else estimate_tempo(onset, fps)
    target_bpm = (manual if manual is not None else estimated) * factor
    period = 60.0 * fps / target_bpm
    if period < 1.0:
        raise ParameterError(f"bpm: {target_bpm:.1f} BPM is faster than one beat a frame at {fps:g} fps",
                             parameter="bpm")
    strength = onset / (onset.std() + 1e-9)
    frames = _track(strength, period, float(tightness))
    frames = _trim_weak_ends(frames, onset)
    tempo = _tempo_of(frames, period, fps) if len(frames) >= 4 else target_bpm
    if manual is not None:
        tempo = manual * factor  # the user said so: report their number, not a re-measurement
    return Beats(tempo=float(tempo), times=[f / fps for f in frames], frames=[int(f) for f in frames],
                 period_frames=float(period), estimated_bpm=estimated)


def _trim_weak_ends(frames: list[int], onset: np.ndarray) -> list[int]:
    """Drop beats at either end that the tracker placed through silence (well below the typical beat)."""
    if len(frames) < 3:
        return frames
    level = 0.3 * float(np.median(onset[frames]))
    first, last = 0, len(frames)
    while first < last and onset[frames[first]] < level:
        first += 1
    while last > first and onset[frames[last - 1]] < level:
        last -= 1
    return frames[first:last]


def _tempo_of(frames: list[int], period: float, fps: float) -> float:
    """BPM from the beats: their span over the number of periods it covers (a skipped beat counts)."""
    gaps = np.diff(np.asarray(frames, dtype=np.float64))
    periods = np.maximum(1, np.round(gaps / period))
    return 60.0 * fps * float(periods.sum()) / float(gaps.sum())


def with_beats(features: AudioFeatures, beats: Beats) -> AudioFeatures:
    """``features`` carrying the tempo and beat times (for the plot, the JSON and beat pulses)."""
    return dataclasses.replace(features, tempo=float(beats.tempo), beat_times=list(beats.times))


def beats_of(features: AudioFeatures) -> Beats:
    """The beats ``features`` carry (see :func:`with_beats`)."""
    if features.tempo is None:
        raise ParameterError("features: no beats tracked yet", parameter="features")
    fps = features.timeline.fps
    return Beats(tempo=float(features.tempo), times=list(features.beat_times),
                 frames=[int(round(t * fps)) for t in features.beat_times], period_frames=60.0 * fps / features.tempo,
                 estimated_bpm=None)


def downbeat_phase(features: AudioFeatures, beats: Beats, beats_per_bar: int = 4) -> int:
    """Which beat (0 .. beats_per_bar - 1) starts the bars: the phase whose beats have the most bass and onset."""
    if len(beats.frames) < beats_per_bar:
        return 0
    weight = (np.asarray(features.values["onset"]) + np.asarray(features.values["low"]))[beats.frames]
    means = [float(weight[p::beats_per_bar].mean()) for p in range(beats_per_bar)]
    best = max(means)
    return next(p for p, m in enumerate(means) if m >= best - 1e-6)  # ties: the first beat


def parse_keyframe_spec(spec) -> tuple[str, float]:
    """``"beats:4"`` -> ("beats", 4); ``"bars:1"``; ``"seconds:2.5"``; a bare number means seconds."""
    text = str(spec).strip().lower()
    unit, sep, amount = text.partition(":")
    if not sep:
        unit, amount = "seconds", text
    unit = unit.strip()
    if unit not in KEYFRAME_UNITS:
        raise ParameterError(f"keyframes: expected 'beats:N', 'bars:N' or 'seconds:N', got {spec!r}",
                             parameter="keyframes")
    try:
        value = float(amount)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0 or (unit != "seconds" and value != int(value)):
        kind = "a number of seconds > 0" if unit == "seconds" else f"a whole number of {unit} >= 1"
        raise ParameterError(f"keyframes: expected {kind} in {spec!r}", parameter="keyframes")
    return unit, value


def beat_keyframe_times(timeline: Timeline, beats: Beats, every: int, unit: str = "beats",
                        beats_per_bar: int = 4, phase: int = 0) -> list[float]:
    """Keyframe times on every ``every``-th beat (or bar), plus the first and last frame.

    Bars begin at beat ``phase``. A chosen beat within a quarter interval of the first or the last
    frame is left out (it would make a segment too short to be worth a keyframe).
    """
    if isinstance(beats_per_bar, bool) or int(beats_per_bar) != beats_per_bar or beats_per_bar < 1:
        raise ParameterError(f"beats_per_bar: expected an integer >= 1, got {beats_per_bar!r}",
                             parameter="beats_per_bar")
    step = int(every) * (int(beats_per_bar) if unit == "bars" else 1)
    start = int(phase) % step if unit == "bars" else 0
    last = (timeline.frames - 1) / timeline.fps
    spacing = step * beats.period_frames / timeline.fps
    chosen = [t for t in beats.times[start::step] if 0.25 * spacing <= t <= last - 0.25 * spacing]
    times = sorted({0.0, *chosen, last})
    return sorted({round(t * timeline.fps) / timeline.fps for t in times})


def beat_pulses(beat_times: Sequence[float], timeline: Timeline, offset: int = 0, count: int | None = None,
                seconds: float = PULSE_SECONDS) -> np.ndarray:
    """Per-frame pulse in [0, 1]: 1 on each beat, decaying with time constant ``seconds`` until the next."""
    offset, count = timeline.check_range(offset, count)
    at = np.arange(offset, offset + count, dtype=np.float64) / timeline.fps
    beats = np.asarray(sorted(beat_times), dtype=np.float64)
    if beats.size == 0:
        return np.zeros(count)
    previous = np.searchsorted(beats, at + 0.5 / timeline.fps, side="right") - 1
    since = at - beats[np.maximum(previous, 0)]
    return np.where(previous >= 0, np.exp(-np.maximum(since, 0.0) / seconds), 0.0)


def keyframe_times_for(spec, timeline: Timeline, features: AudioFeatures, *, bpm=None, tempo_correction="none",
                       beats_per_bar: int = 4, snap_to_onsets: bool = False
                       ) -> tuple[list[float], Beats | None]:
    """Keyframe times for a spec (``seconds:N`` as :func:`keyframes.keyframe_times`; ``beats:N``, ``bars:N``)
    and the beats when they were tracked."""
    from .keyframes import keyframe_times

    unit, amount = parse_keyframe_spec(spec)
    if unit == "seconds":
        return keyframe_times(timeline, amount, features.onset_times, snap_to_onsets), None
    if features.tempo is not None and check_bpm(bpm) is None and check_tempo_correction(tempo_correction) == 1.0:
        beats = beats_of(features)  # tracked before (the Beats node, with its own BPM and correction)
    else:
        beats = track_beats(features, bpm=bpm, tempo_correction=tempo_correction)
    if len(beats.frames) < 2:
        raise ParameterError(f"keyframes: no beats found in the range for {spec!r}; give --bpm or use seconds:N",
                             parameter="keyframes")
    phase = downbeat_phase(features, beats, beats_per_bar) if unit == "bars" else 0
    return beat_keyframe_times(timeline, beats, int(amount), unit, beats_per_bar, phase), beats
