"""Per-frame audio features of a track: loudness, onsets, brightness and three band energies.

Analysis: the audio, mixed to mono and resampled to 22050 Hz, goes through a short-time Fourier
transform (torchaudio, 1024-sample Hann window every 256 samples = 11.6 ms, frames centred on
their time). Per analysis frame:

- ``loudness``  RMS of the samples;
- ``onset``     spectral flux: the summed increase of log magnitude since the previous frame
                (how much new sound starts; peaks on beats and attacks);
- ``centroid``  spectral centroid (brightness), in Hz;
- ``low`` / ``mid`` / ``high``  RMS magnitude in 20-250 Hz, 250-2000 Hz and 2-11 kHz.

Each video frame takes the analysis frames whose times round to it (centred, never only the past):
the mean, or the maximum for ``onset`` (a click lasts one analysis frame). Every curve is then
smoothed with a centred Hann window of ``smoothing_seconds`` (symmetric, so a peak stays on its
frame: no lag behind the beat) and divided by its maximum over the range, so it lies in [0, 1].

The audio is consumed as a stream of chunks (a file through PyAV, or an in-memory waveform), and
only the per-frame sums are kept: an hour of music needs a few MB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from ..errors import AudioError, ParameterError
from .timeline import Timeline

FEATURE_NAMES = ("loudness", "onset", "centroid", "low", "mid", "high")
ANALYSIS_RATE = 22050
N_FFT = 1024
HOP = 256
BANDS = {"low": (20.0, 250.0), "mid": (250.0, 2000.0), "high": (2000.0, 11025.0)}
from .defaults import DEFAULT_SMOOTHING  # noqa: F401  (re-exported)
FLUX_COMPRESSION = 100.0  # log(1 + C |X|): makes the flux follow loudness ratios, not absolute level


@dataclass
class AudioFeatures:
    """Per-frame curves in [0, 1] (plain float lists, one value per video frame) and their timeline."""

    timeline: Timeline
    values: dict[str, list[float]]
    smoothing_seconds: float = DEFAULT_SMOOTHING
    onset_times: list[float] = field(default_factory=list)  # detected onsets, seconds from the start
    tempo: float | None = None  # BPM, once the beats are tracked (animate.beats.with_beats)
    beat_times: list[float] = field(default_factory=list)  # seconds from the start, each on a frame

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self.values:
            raise ParameterError(f"feature: expected one of {', '.join(FEATURE_NAMES)}, got {name!r}")
        return torch.tensor(self.values[name], dtype=torch.float32)

    def to_json(self) -> str:
        beats = {} if self.tempo is None else {"tempo": round(self.tempo, 3), "beat_times": self.beat_times}
        return json.dumps({"fps": self.timeline.fps, "start": self.timeline.start, "frames": self.timeline.frames,
                           "smoothing_seconds": self.smoothing_seconds, "onset_times": self.onset_times, **beats,
                           **{name: [round(v, 5) for v in self.values[name]] for name in FEATURE_NAMES}})


class SpectralAnalysis:
    """The six raw values of consecutive analysis frames (``N_FFT`` samples every ``HOP``), in stream order.

    Called with blocks of ``(count - 1) * HOP + N_FFT`` samples that overlap by ``N_FFT - HOP``; keeps the
    last log magnitude so that the flux runs on across blocks. Shared by the offline features and the
    causal live ones (``sgim_nodes.live``), so both measure the same thing.
    """

    def __init__(self):
        import torchaudio.functional as AF

        self._spectrogram = AF.spectrogram
        self.previous_log_magnitude: torch.Tensor | None = None
        self.window = torch.hann_window(N_FFT)
        freqs = torch.linspace(0, ANALYSIS_RATE / 2, N_FFT // 2 + 1)
        self.freqs = freqs
        self.band_masks = [((freqs >= lo) & (freqs < hi)) for lo, hi in BANDS.values()]

    def __call__(self, block: torch.Tensor) -> np.ndarray:
        """``[6, count]`` float64: rms, flux, centroid and the three band magnitudes per analysis frame."""
        spec = self._spectrogram(block, pad=0, window=self.window, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                                 power=None, normalized=False, center=False).abs()  # [bins, count]
        magnitude = spec.T  # [count, bins]
        samples = block.unfold(0, N_FFT, HOP)  # [count, N_FFT]
        rms = samples.square().mean(dim=1).sqrt()
        log_mag = torch.log1p(FLUX_COMPRESSION * magnitude)
        previous = log_mag[:1] if self.previous_log_magnitude is None else self.previous_log_magnitude
        flux = (log_mag - torch.cat([previous, log_mag[:-1]])).clamp_min(0).mean(dim=1)
        self.previous_log_magnitude = log_mag[-1:]
        total = magnitude.sum(dim=1)
        centroid = torch.where(total > 1e-8, (magnitude * self.freqs).sum(dim=1) / total.clamp_min(1e-12),
                               torch.zeros_like(total))
        power = magnitude.square()
        bands = [power[:, mask].mean(dim=1).sqrt() for mask in self.band_masks]
        return torch.stack([rms, flux, centroid, *bands]).double().numpy()


class _FrameAccumulator:
    """Streaming STFT over mono chunks at ANALYSIS_RATE, reduced to per-video-frame sums."""

    BLOCK = 1 << 17  # samples analysed at once (6 s at 22050 Hz)

    def __init__(self, timeline: Timeline):
        self.timeline = timeline
        self.frames = timeline.frames
        self.sums = np.zeros((len(FEATURE_NAMES), self.frames), dtype=np.float64)
        self.counts = np.zeros(self.frames, dtype=np.int64)
        self.onset_max = np.zeros(self.frames, dtype=np.float64)
        self.buffer = torch.zeros(N_FFT // 2)  # centred frames: frame k is centred on sample k * HOP
        self.next_frame = 0
        self.analysis = SpectralAnalysis()
        self.samples_needed = int(math.ceil(timeline.duration * ANALYSIS_RATE))
        self.samples_seen = 0
        self.pending: list[torch.Tensor] = []
        self.pending_samples = 0

    @property
    def done(self) -> bool:
        return self.samples_seen >= self.samples_needed

    def feed(self, mono: torch.Tensor) -> None:
        from ..limits import MAX_AUDIO_ABS

        mono = mono.reshape(-1)[: max(0, self.samples_needed - self.samples_seen)].float()
        if not torch.isfinite(mono).all():
            raise AudioError("audio: the waveform contains NaN or infinite samples", parameter="audio")
        peak = float(mono.abs().max()) if mono.numel() else 0.0
        if peak > MAX_AUDIO_ABS:  # squares of finite float32 samples this large overflow into inf, then NaN
            raise AudioError(f"audio: samples reach {peak:.3g}, beyond the {MAX_AUDIO_ABS:g} this accepts (audio is "
                             "nominally within +-1); rescale it", parameter="audio")
        self.samples_seen += mono.numel()
        self.pending.append(mono)
        self.pending_samples += mono.numel()
        if self.pending_samples >= self.BLOCK:  # decoders hand over small frames: analyse in larger blocks
            self._flush_pending()

    def _flush_pending(self) -> None:
        self.buffer = torch.cat([self.buffer, *self.pending])
        self.pending, self.pending_samples = [], 0
        self._process()

    def finish(self) -> None:
        self._flush_pending()
        missing = self.samples_needed - self.samples_seen  # the track ended early: silence
        self.buffer = torch.cat([self.buffer, torch.zeros(max(0, missing) + N_FFT // 2)])
        self.samples_seen = self.samples_needed
        self._process()

    def _process(self) -> None:
        available = (self.buffer.numel() - N_FFT) // HOP + 1
        last = self.samples_needed // HOP  # the last analysis frame centred inside the range
        count = min(available, last - self.next_frame + 1)
        if count <= 0:
            if self.next_frame > last:
                self.buffer = self.buffer[:0]
            return
        used = (count - 1) * HOP + N_FFT
        block = self.buffer[:used]
        self.buffer = self.buffer[count * HOP:]
        values = self.analysis(block)  # [6, count]
        times = (np.arange(self.next_frame, self.next_frame + count) * HOP) / ANALYSIS_RATE
        video = np.floor(times * self.timeline.fps + 0.5).astype(np.int64)
        keep = (video >= 0) & (video < self.frames)
        video, values = video[keep], values[:, keep]
        for row in range(values.shape[0]):
            np.add.at(self.sums[row], video, values[row])
        np.add.at(self.counts, video, 1)
        # The flux of frame k rises as a new sound enters the leading half of its window, about a quarter
        # window after the frame's centre: credit it to that time, so onsets land on their own frame.
        onset_video = np.floor((times[keep] + N_FFT / 4 / ANALYSIS_RATE) * self.timeline.fps + 0.5).astype(np.int64)
        onset_keep = onset_video < self.frames
        np.maximum.at(self.onset_max, onset_video[onset_keep], values[1][onset_keep])
        self.next_frame += count

    def result(self) -> np.ndarray:
        """[6, frames] means (onset: max) per video frame; frames no analysis frame fell on are interpolated."""
        out = self.sums / np.maximum(self.counts, 1)
        out[1] = self.onset_max
        filled = self.counts > 0
        if not filled.all():
            index = np.arange(self.frames)
            for row in range(out.shape[0]):
                out[row] = np.interp(index, index[filled], out[row][filled]) if filled.any() else 0.0
        return out


def smooth(curve: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """Centred Hann smoothing over ``seconds`` (a symmetric window: peaks stay on their frame)."""
    width = int(round(seconds * fps))
    if width < 2:
        return curve.copy()
    width += 1 - width % 2  # odd: one centre tap
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    half = width // 2
    padded = np.pad(curve, half, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def detect_onsets(onset: np.ndarray, fps: float, threshold: float = 0.3, min_gap_seconds: float = 0.1) -> list[float]:
    """Times (seconds) of local maxima of a normalised onset curve above ``threshold``."""
    times, last = [], -math.inf
    for i in range(len(onset)):
        left = onset[i - 1] if i > 0 else -math.inf
        right = onset[i + 1] if i + 1 < len(onset) else -math.inf
        if onset[i] >= threshold and onset[i] > left and onset[i] >= right and i / fps - last >= min_gap_seconds:
            times.append(i / fps)
            last = i / fps
    return times


def compute_features(chunks: Iterable[torch.Tensor], timeline: Timeline,
                     smoothing_seconds: float = DEFAULT_SMOOTHING) -> AudioFeatures:
    """Features of ``timeline``'s frames from mono chunks at :data:`ANALYSIS_RATE` beginning at its start."""
    if not math.isfinite(float(smoothing_seconds)) or smoothing_seconds < 0:
        raise ParameterError(f"smoothing_seconds: expected a number of seconds >= 0, got {smoothing_seconds!r}",
                             parameter="smoothing_seconds")
    accumulator = _FrameAccumulator(timeline)
    for chunk in chunks:
        accumulator.feed(chunk.mean(dim=0) if chunk.dim() == 2 else chunk)
        if accumulator.done:
            break
    accumulator.finish()
    raw = accumulator.result()
    if not np.isfinite(raw).all():  # never hand on a NaN curve
        raise AudioError("audio: the analysis went non-finite (extreme sample values?); rescale the audio",
                         parameter="audio")
    values, onset_times = {}, []
    for row, name in enumerate(FEATURE_NAMES):
        curve = smooth(raw[row], timeline.fps, smoothing_seconds)
        peak = float(curve.max()) if curve.size else 0.0
        curve = curve / peak if peak > 1e-12 else np.zeros_like(curve)
        values[name] = [float(v) for v in np.clip(curve, 0.0, 1.0)]
        if name == "onset":
            onset_times = detect_onsets(curve, timeline.fps)
    return AudioFeatures(timeline=timeline, values=values, smoothing_seconds=float(smoothing_seconds),
                         onset_times=onset_times)


def features_of_waveform(waveform: torch.Tensor, sample_rate: int, timeline: Timeline,
                         smoothing_seconds: float = DEFAULT_SMOOTHING) -> AudioFeatures:
    """Features of an in-memory ``[channels, T]`` (or ``[1, channels, T]``) waveform."""
    import torchaudio.functional as AF

    from .stream import iter_tensor

    from ..audio.features import check_sample_rate

    sample_rate = check_sample_rate(sample_rate)  # 44100.5 Hz would otherwise be truncated silently
    if waveform.dim() == 3:
        waveform = waveform[0]
    if waveform.dim() == 1:
        waveform = waveform[None]
    first = int(round(timeline.start * sample_rate))
    last = first + timeline.audio_samples(sample_rate)
    mono = waveform[:, first:last].float().mean(dim=0)
    if mono.numel() == 0:
        raise AudioError(f"audio: no samples in [{timeline.start}, {timeline.start + timeline.duration}] s")
    if int(sample_rate) != ANALYSIS_RATE:
        mono = AF.resample(mono, int(sample_rate), ANALYSIS_RATE)
    return compute_features(iter_tensor(mono[None]), timeline, smoothing_seconds)


def features_of_file(path, timeline: Timeline, smoothing_seconds: float = DEFAULT_SMOOTHING) -> AudioFeatures:
    """Features of a file's ``timeline`` range, decoded and resampled as a stream (bounded memory)."""
    from .stream import iter_samples

    chunks = iter_samples(path, sample_rate=ANALYSIS_RATE, mono=True, start=timeline.start, seek=True)
    return compute_features(chunks, timeline, smoothing_seconds)


LANE_COLOURS = {"loudness": (235, 235, 235), "onset": (255, 170, 60), "centroid": (120, 200, 255),
                "low": (230, 80, 80), "mid": (110, 220, 110), "high": (170, 130, 255)}


def plot_features(features: AudioFeatures, width: int = 1024, lane_height: int = 64) -> np.ndarray:
    """The six curves as stacked lanes, uint8 RGB ``[H, W, 3]`` (per pixel column: the maximum)."""
    from PIL import Image, ImageDraw

    frames = features.timeline.frames
    width = int(max(64, width))
    height = lane_height * len(FEATURE_NAMES)
    image = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    edges = np.linspace(0, frames, width + 1).astype(np.int64)
    starts = np.minimum(edges[:-1], frames - 1)
    for lane, name in enumerate(FEATURE_NAMES):
        curve = np.asarray(features.values[name], dtype=np.float64)
        column = np.maximum.reduceat(curve, starts)
        top = lane * lane_height
        points = [(x, top + lane_height - 4 - v * (lane_height - 18)) for x, v in enumerate(column)]
        draw.line([(0, top + lane_height - 1), (width, top + lane_height - 1)], fill=(60, 60, 66))
        draw.line(points, fill=LANE_COLOURS[name], width=1)
        draw.text((4, top + 2), name, fill=LANE_COLOURS[name])
    for t in features.onset_times:
        x = int(t / features.timeline.duration * width)
        draw.line([(x, lane_height), (x, 2 * lane_height - 1)], fill=(255, 120, 40))
    if features.tempo is not None:  # beats: ticks along the top of the loudness lane, the tempo in its corner
        for t in features.beat_times:
            x = int(t / features.timeline.duration * width)
            draw.line([(x, 0), (x, 10)], fill=(255, 255, 120))
        label = f"tempo {features.tempo:.1f} BPM"
        draw.text((width - 8 * len(label) - 4, 12), label, fill=(255, 255, 120))
    return np.asarray(image)
