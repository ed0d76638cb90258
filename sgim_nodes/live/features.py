"""The features of ``animate`` (loudness, onset, centroid, three bands), computed causally from a stream.

The analysis is animate's own (:class:`sgim_nodes.animate.features.SpectralAnalysis`: mono at
22050 Hz, 1024-sample Hann window every 256 samples, frame k centred on sample k * 256). Only what
has to change for a live stream differs:

- an analysis frame counts once its last sample has arrived, and video frame ``i`` (at ``i / fps``
  seconds of stream) takes the analysis frames completed in ``((i-1)/fps, i/fps]``: the mean, or
  the maximum for the onset, as animate does; nothing from after ``i / fps`` is used;
- animate divides each curve by its maximum over the whole track; here by a running reference that
  follows peaks at once and halves over ``NORM_HALF_LIFE`` seconds (never below a floor, so that
  silence stays dark instead of amplified noise);
- animate smooths with a centred window; here a peak rises at once and falls back over ``release``
  seconds (a causal envelope: a click shows on the frame after it, no earlier and no later).

Everything is deterministic in the stream: the same samples give the same values whatever the chunk
sizes they arrive in (the resampler is FFmpeg's streaming one, the analysis runs per whole frame).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..animate.features import ANALYSIS_RATE, FEATURE_NAMES, HOP, N_FFT, SpectralAnalysis
from ..errors import AudioError

NORM_HALF_LIFE = 8.0  # seconds for the running reference of a feature to halve
MOTION_SMOOTHING = 2.0  # seconds (time constant) of the slow curves that drive StyleGAN3 motion
# Below these raw values a feature counts as silence (rms -60 dBFS; flux, centroid, band magnitudes).
FLOORS = np.array([1e-3, 2e-2, 300.0, 2e-2, 2e-2, 2e-2])


class _StreamResampler:
    """Incoming mono float32 at any rate -> ANALYSIS_RATE, FFmpeg's streaming resampler (seamless)."""

    def __init__(self, sample_rate: int):
        self.rate = int(sample_rate)
        self.resampler = None
        self.pts = 0
        if self.rate != ANALYSIS_RATE:
            import av

            self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=ANALYSIS_RATE)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.resampler is None:
            return samples
        from fractions import Fraction

        import av

        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = Fraction(1, self.rate)
        self.pts += samples.shape[0]
        pieces = [out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in self.resampler.resample(frame)]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


class CausalFeatures:
    """Feed mono chunks; per completed video frame, the six features in [0, 1] (and the slow motion curves).

    ``feed`` returns the frames completed by the chunk as ``(index, values)`` with ``values`` a dict
    of the six :data:`FEATURE_NAMES` plus ``slow_loudness``, ``slow_centroid``, ``slow_low`` (the
    motion curves). The resampler's delay is accounted for: frame ``i`` completes once the analysis
    stream itself reaches ``i / fps``.
    """

    def __init__(self, sample_rate: int, fps: float, release: float):
        self.fps = float(fps)
        self.resample = _StreamResampler(sample_rate)
        self.analysis = SpectralAnalysis()
        self.buffer = np.zeros(N_FFT // 2, np.float32)  # centred frames, as animate's: frame k at sample k * HOP
        self.buffer_start = -(N_FFT // 2)  # stream sample of buffer[0]
        self.next_analysis = 0  # next analysis frame to compute
        self.samples = 0  # analysis-rate samples received
        self.next_frame = 0  # next video frame to complete
        self.acc_sum = np.zeros(len(FEATURE_NAMES))
        self.acc_count = 0
        self.acc_onset = 0.0
        self.last_raw = np.zeros(len(FEATURE_NAMES))
        self.reference = FLOORS.copy()
        self.envelope = np.zeros(len(FEATURE_NAMES))
        self.slow = np.full(3, 0.5)
        self.norm_decay = 0.5 ** (1.0 / (self.fps * NORM_HALF_LIFE))
        self.release_decay = math.exp(-1.0 / (self.fps * release)) if release > 0 else 0.0
        self.slow_rate = 1.0 - math.exp(-1.0 / (self.fps * MOTION_SMOOTHING))

    def feed(self, mono: np.ndarray) -> list[tuple[int, dict[str, float]]]:
        mono = np.asarray(mono, dtype=np.float32).reshape(-1)
        if not np.isfinite(mono).all():
            raise AudioError("audio: the stream contains NaN or infinite samples", parameter="audio")
        resampled = self.resample(mono)
        self.samples += resampled.shape[0]
        self.buffer = np.concatenate([self.buffer, resampled])
        frames = []
        # analysis frame k needs stream samples up to k * HOP + N_FFT / 2 (exclusive)
        available = (self.buffer_start + self.buffer.shape[0] - N_FFT // 2) // HOP - self.next_analysis + 1
        values = None
        if available > 0:
            first = self.next_analysis * HOP - N_FFT // 2 - self.buffer_start
            block = torch.from_numpy(self.buffer[first:first + (available - 1) * HOP + N_FFT].copy())
            values = self.analysis(block)  # [6, available]
        completed = 0
        while True:
            # video frame i takes the analysis frames whose last sample is at or before i / fps
            frame_end = self.next_frame / self.fps * ANALYSIS_RATE
            if self.samples < frame_end:
                break
            while completed < available:
                k = self.next_analysis + completed
                if k * HOP + N_FFT // 2 > frame_end:
                    break
                self.acc_sum += values[:, completed]
                self.acc_onset = max(self.acc_onset, float(values[1, completed]))
                self.acc_count += 1
                completed += 1
            frames.append((self.next_frame, self._close_frame()))
            self.next_frame += 1
        # analysis frames past the last completed video frame stay in the accumulator for the next one
        for column in range(completed, available):
            self.acc_sum += values[:, column]
            self.acc_onset = max(self.acc_onset, float(values[1, column]))
            self.acc_count += 1
        if available > 0:
            self.next_analysis += available
            keep_from = self.next_analysis * HOP - N_FFT // 2 - self.buffer_start
            self.buffer = self.buffer[keep_from:]
            self.buffer_start += keep_from
        return frames

    def _close_frame(self) -> dict[str, float]:
        if self.acc_count:
            raw = self.acc_sum / self.acc_count
            raw[1] = self.acc_onset
        else:  # fps above the analysis rate: the frame repeats the last analysis
            raw = self.last_raw
        self.last_raw = raw.copy()
        self.acc_sum[:] = 0.0
        self.acc_count, self.acc_onset = 0, 0.0
        self.reference = np.maximum(np.maximum(raw, self.reference * self.norm_decay), FLOORS)
        normalised = np.clip(raw / self.reference, 0.0, 1.0)
        self.envelope = np.maximum(normalised, self.envelope * self.release_decay)
        slow_target = normalised[[0, 2, 3]]
        self.slow += self.slow_rate * (slow_target - self.slow)
        out = {name: float(v) for name, v in zip(FEATURE_NAMES, self.envelope)}
        out.update(slow_loudness=float(self.slow[0]), slow_centroid=float(self.slow[1]), slow_low=float(self.slow[2]))
        return out
