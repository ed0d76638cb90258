"""The paper's audio preprocessing, in torch/torchaudio only (no librosa or OpenCV at run time).

Official inference (``run_optimization.py`` of the released code, librosa 0.8.1):

1. mono (channel mean), resample to 44.1 kHz (librosa 0.8.1: resampy ``kaiser_best``, reproduced here as a
   polyphase kernel; torchaudio's own Kaiser resampler is an option);
2. 128-band Slaney mel power spectrogram, n_fft 2048, hop 512, periodic Hann window, centred frames
   (librosa 0.8.1 pads with ``reflect``; today's librosa with zeros);
3. ``power_to_db(ref=max over the whole clip, top_db=80) / 80 + 1``  -> values in [0, 1];
4. crop or zero-pad the time axis to 864 frames (inference: first window, offset 0);
5. ``cv2.resize(a, (128, 512))``: bilinear, half-pixel centres, no antialiasing, 128x864 -> 512x128;
6. a RAW reshape of that 512x128 array to 1x1x128x512 (not a transpose).

:class:`FeatureSettings` holds every number so an encoder file can record how its inputs were made.

Long audio never becomes one giant spectrogram: :func:`mel_power_frames` computes any frame range
from the matching slice of the waveform only (resampling that slice with enough context that the
result equals the whole-clip computation), and the windowed helpers walk the clip chunk by chunk.
Memory then scales with the waveform itself plus one chunk.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..errors import AudioError, ParameterError

# resampy's "kaiser_best" filter (librosa 0.8.1's default): 64 zero crossings, rolloff, Kaiser beta.
KAISER_BEST = {"lowpass_filter_width": 64, "rolloff": 0.9475937167399596, "beta": 14.769656459379492}
RESAMPLING_METHODS = ("resampy_kaiser_best", "sinc_interp_kaiser", "sinc_interp_hann")
RESAMPY_TABLE_BITS = 9  # resampy's filter table: 2^9 samples per zero crossing
AMIN = 1e-10  # librosa power_to_db floor inside the log


@dataclass(frozen=True)
class FeatureSettings:
    """Every parameter of the audio -> encoder-input pipeline (JSON-serialisable via :meth:`to_dict`)."""

    sample_rate: int = 44100
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    frames: int = 864  # time frames per model window (about 10.03 s at 44.1 kHz)
    top_db: float = 80.0
    pad_mode: str = "reflect"  # STFT edge padding: "reflect" (librosa 0.8.1, default) | "constant" (librosa >= 0.10)
    # "resampy_kaiser_best" (default): resampy 0.2.2's kaiser_best filter, table and quirks, as a polyphase
    # kernel (what librosa 0.8.1 used); or a torchaudio method ("sinc_interp_kaiser", "sinc_interp_hann").
    resampling_method: str = "resampy_kaiser_best"
    lowpass_filter_width: int = KAISER_BEST["lowpass_filter_width"]  # resampy: num_zeros
    rolloff: float = KAISER_BEST["rolloff"]
    beta: float | None = KAISER_BEST["beta"]
    image_height: int = 512  # cv2.resize output rows (mel axis x4) ...
    image_width: int = 128  # ... and columns (time axis 864 -> 128)

    def __post_init__(self) -> None:
        if self.resampling_method not in RESAMPLING_METHODS:
            raise ParameterError(f"resampling_method: expected one of {', '.join(RESAMPLING_METHODS)}, "
                                 f"got {self.resampling_method!r}")
        if self.pad_mode not in ("reflect", "constant"):
            raise ParameterError(f"pad_mode: expected 'reflect' or 'constant', got {self.pad_mode!r}")
        for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "frames", "image_height", "image_width"):
            if int(getattr(self, name)) <= 0:
                raise ParameterError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.n_mels * self.image_height * self.image_width == 0 or \
                (self.image_height * self.image_width) % self.n_mels:
            raise ParameterError("image_height * image_width must be a multiple of n_mels (the raw reshape)")

    @property
    def model_input_shape(self) -> tuple[int, int, int]:
        """(1, n_mels, image_height*image_width/n_mels): the raw reshape target, (1, 128, 512) by default."""
        return 1, self.n_mels, self.image_height * self.image_width // self.n_mels

    @property
    def window_seconds(self) -> float:
        """Audio covered by one model window (frame centres 0 .. frames-1)."""
        return self.frames * self.hop_length / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "FeatureSettings":
        """Settings from a (possibly older or partial) dict; unknown keys are ignored, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


PAPER_SETTINGS = FeatureSettings()  # librosa-0.8.1 behaviour: what the released checkpoint was trained on
LIBROSA_CURRENT_SETTINGS = FeatureSettings(pad_mode="constant")  # today's librosa padding (resampler differs too)


# ----------------------------------------------------------------------------------------------
# Waveform checks and mono mix
# ----------------------------------------------------------------------------------------------

def to_mono(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """[C, T] or [T] -> float32 [T] (channel mean, as librosa), after checking the input is usable."""
    if not isinstance(waveform, torch.Tensor):
        raise AudioError(f"waveform: expected a torch tensor, got {type(waveform).__name__}")
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise AudioError(f"waveform: expected shape [channels, samples], got {list(waveform.shape)}")
    check_sample_rate(sample_rate)
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise AudioError(f"waveform: the audio is empty (shape {list(waveform.shape)}); need at least one sample")
    waveform = waveform.to(torch.float32)
    # A NaN/Inf makes the sum non-finite; only then (or on overflow) pay for the exact per-sample check.
    if not torch.isfinite(waveform.sum()) and not torch.isfinite(waveform).all():
        bad = int((~torch.isfinite(waveform)).sum())
        raise AudioError(f"waveform: {bad} sample(s) are NaN or infinite; the audio is corrupt")
    return waveform[0] if waveform.shape[0] == 1 else waveform.mean(dim=0)  # mono: a view, no copy


def check_sample_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0 \
            or int(sample_rate) != sample_rate:
        raise AudioError(f"sample_rate: expected a positive integer number of Hz, got {sample_rate!r}",
                         parameter="sample_rate")
    return int(sample_rate)


# ----------------------------------------------------------------------------------------------
# Resampling, by slices
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _resampler(orig: int, new: int, method: str, width: int, rolloff: float, beta: float | None):
    import torchaudio

    kwargs = {"beta": beta} if method == "sinc_interp_kaiser" and beta is not None else {}
    with torch.inference_mode(False):  # a cached kernel must stay usable outside inference mode too
        return torchaudio.transforms.Resample(orig, new, resampling_method=method, lowpass_filter_width=width,
                                              rolloff=rolloff, **kwargs)


def resampled_length(num_samples: int, orig: int, new: int) -> int:
    """ceil(n * new / orig): librosa's and torchaudio's output length."""
    return -(-num_samples * new // orig)


MAX_KERNEL_ELEMENTS = 1 << 24  # 64 MB of float32 filter bank; exact polyphase kernels beyond this are bridged


def _kernel_elements(orig: int, new: int, settings: FeatureSettings) -> int:
    """Size of the polyphase kernel, [new/g, orig/g + 2 * half_width] (g = gcd), either method."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if settings.resampling_method == "resampy_kaiser_best":
        return n * (o + 2 * _resampy_context(orig, new, settings) + 1)
    return n * (o + 2 * math.ceil(settings.lowpass_filter_width * o / (min(o, n) * settings.rolloff)))


def _resampy_context(orig: int, new: int, settings: FeatureSettings) -> int:
    """Input samples the resampy filter reaches on each side of an output sample (plus a margin)."""
    step = int(min(1.0, new / orig) * 2 ** RESAMPY_TABLE_BITS)
    return (settings.lowpass_filter_width * 2 ** RESAMPY_TABLE_BITS + 1) // step + 2


@lru_cache(maxsize=16)
def _resampy_kernel(orig: int, new: int, settings: FeatureSettings) -> torch.Tensor:
    """resampy 0.2.2 ``resample(filter='kaiser_best')`` as a polyphase kernel [new/g, 1, orig/g + 2M + 1].

    resampy evaluates, for every output sample, a windowed-sinc table (2^9 entries per zero crossing,
    linearly interpolated) on each side of it; the taps of output phase p depend only on p, so they are
    computed once here, in float64, including resampy's quirks: the table stride is truncated to an
    integer (``int(scale * 512)``) and the filter is scaled by the ratio when downsampling. Output block b,
    phase p reads input samples b*o - M + j for the kernel's column j.

    One difference remains: resampy accumulates the output time in floating point, so an output that falls
    exactly on an input sample (phase 0) is sometimes computed as "just before it", which moves a tap from
    one wing to the other; with the truncated stride that changes such outputs by up to ~2e-3 of the signal
    scale. Effect on the encoder input: 1.8e-4 / 2.9e-4 max abs for the two 48 kHz fixture clips.
    """
    import numpy as np

    table = 2 ** RESAMPY_TABLE_BITS
    entries = table * settings.lowpass_filter_width
    positions = np.linspace(0, settings.lowpass_filter_width, entries + 1)
    window = np.kaiser(2 * entries + 1, settings.beta if settings.beta is not None else KAISER_BEST["beta"])
    half = settings.rolloff * np.sinc(settings.rolloff * positions) * window[entries:]
    ratio = new / orig
    scale = min(1.0, ratio)
    if ratio < 1:
        half = half * ratio
    delta = np.zeros_like(half)
    delta[:-1] = np.diff(half)
    step = int(scale * table)
    g = math.gcd(orig, new)
    o, phases = orig // g, new // g
    margin = _resampy_context(orig, new, settings)
    kernel = np.zeros((phases, o + 2 * margin + 1))
    for phase in range(phases):
        anchor = (phase * o) // phases  # the input sample at or before this output's time
        frac = scale * (phase * o - anchor * phases) / phases
        for wing_frac, columns_of in ((frac, lambda i: anchor - i + margin),  # left wing: x[n - i]
                                      (scale - frac, lambda i: anchor + i + 1 + margin)):  # right: x[n + 1 + i]
            index = wing_frac * table
            offset = int(index)
            eta = index - offset
            taps = np.arange((len(half) - offset) // step)
            where = offset + taps * step
            np.add.at(kernel[phase], columns_of(taps), half[where] + eta * delta[where])
    with torch.inference_mode(False):
        return torch.from_numpy(kernel).to(torch.float32)[:, None, :]


def _resampy_slice(read, length: int, orig: int, settings: FeatureSettings, start: int, stop: int) -> torch.Tensor:
    """Output samples [start, stop) of the resampy-style resampling of ``read(a, b)`` (``length`` samples).

    resampy returns ``int(length * ratio)`` samples and librosa pads that with zeros to the ceil length."""
    new = settings.sample_rate
    total = resampled_length(length, orig, new)
    start, stop = max(0, start), min(total, stop)
    if stop <= start:
        return read(0, 0)
    if orig == new:  # librosa returns the input untouched
        return read(start, stop)
    valid = int(length * (float(new) / orig))
    stop_valid = min(stop, valid)
    if stop_valid <= start:
        return read(0, 0).new_zeros(stop - start)
    kernel = _resampy_kernel(orig, new, settings)
    g = math.gcd(orig, new)
    o, phases = orig // g, new // g
    margin = _resampy_context(orig, new, settings)
    first_block, end_block = start // phases, -(-stop_valid // phases)
    seg_start = first_block * o - margin
    seg_stop = (end_block - 1) * o - margin + kernel.shape[-1]
    segment = read(max(0, seg_start), min(length, seg_stop))
    segment = F.pad(segment, (max(0, -seg_start), max(0, seg_stop - length)))
    out = F.conv1d(segment[None, None], kernel.to(segment.device), stride=o)[0].T.reshape(-1)
    offset = first_block * phases
    out = out[start - offset:stop_valid - offset]
    return F.pad(out, (0, stop - stop_valid)) if stop > stop_valid else out


def _bridge_rate(orig: int, settings: FeatureSettings) -> int | None:
    """For rates like 44101 Hz (gcd 1 with 44100) the exact polyphase kernel would take gigabytes; such audio
    is first linearly interpolated to the nearest multiple of 100 Hz (a pitch change below 0.12 %), then
    resampled exactly. None when no bridge is needed."""
    if orig == settings.sample_rate or _kernel_elements(orig, settings.sample_rate, settings) <= MAX_KERNEL_ELEMENTS:
        return None
    return max(100, round(orig / 100) * 100)


def resampled_total(num_samples: int, orig: int, settings: FeatureSettings) -> int:
    """Length of the clip once resampled to ``settings.sample_rate`` (ceil, as librosa and torchaudio)."""
    bridge = _bridge_rate(orig, settings)
    if bridge is not None:
        num_samples, orig = resampled_length(num_samples, orig, bridge), bridge
    return resampled_length(num_samples, orig, settings.sample_rate)


def _linear_slice(mono: torch.Tensor, orig: int, new: int, start: int, stop: int) -> torch.Tensor:
    """Samples [start, stop) of ``mono`` linearly interpolated from ``orig`` to ``new`` Hz."""
    positions = torch.arange(start, stop, dtype=torch.float64, device=mono.device) * (orig / new)
    left = positions.floor().long().clamp(max=mono.shape[-1] - 1)
    right = (left + 1).clamp(max=mono.shape[-1] - 1)
    frac = (positions - left).clamp(0, 1).to(mono.dtype)
    return mono[left] * (1 - frac) + mono[right] * frac


def resample_slice(mono: torch.Tensor, orig: int, settings: FeatureSettings, start: int, stop: int) -> torch.Tensor:
    """Samples [start, stop) of ``mono`` resampled to ``settings.sample_rate``, equal (to float rounding) to
    slicing the resampled whole clip, computed from the needed input slice only."""
    method = _resampy_slice if settings.resampling_method == "resampy_kaiser_best" else _polyphase_slice
    bridge = _bridge_rate(orig, settings)
    if bridge is None:
        return method(lambda a, b: mono[a:b], mono.shape[-1], orig, settings, start, stop)
    length = resampled_length(mono.shape[-1], orig, bridge)
    return method(lambda a, b: _linear_slice(mono, orig, bridge, a, b), length, bridge, settings, start, stop)


def _polyphase_slice(read, length: int, orig: int, settings: FeatureSettings, start: int, stop: int) -> torch.Tensor:
    """torchaudio's windowed-sinc resampling of the input ``read(a, b)`` (``length`` samples at ``orig`` Hz),
    output samples [start, stop) only: the input slice it reads has enough context on both sides."""
    new = settings.sample_rate
    total = resampled_length(length, orig, new)
    start, stop = max(0, start), min(total, stop)
    if stop <= start:
        return read(0, 0)
    if orig == new:
        return read(start, stop)
    g = math.gcd(orig, new)
    o, n = orig // g, new // g  # o input samples <-> n output samples, exactly
    # Filter half-width in input samples (torchaudio's formula) plus a margin, in whole blocks of o.
    base = min(o, n) * settings.rolloff
    half_width = math.ceil(settings.lowpass_filter_width * o / base) + 2
    context_blocks = -(-half_width // o)
    first_block = max(0, start // n - context_blocks)
    last_block = -(-stop // n) + context_blocks
    in_start, in_stop = first_block * o, min(length, last_block * o)
    segment = read(in_start, in_stop)
    resampler = _resampler(orig, new, settings.resampling_method, settings.lowpass_filter_width,
                           settings.rolloff, settings.beta).to(segment.device)
    out = resampler(segment)
    offset = first_block * n
    return out[start - offset:stop - offset]


# ----------------------------------------------------------------------------------------------
# Mel spectrogram, by frame ranges
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _mel_filterbank(settings: FeatureSettings) -> torch.Tensor:
    import torchaudio

    with torch.inference_mode(False):
        fb = torchaudio.functional.melscale_fbanks(
            n_freqs=settings.n_fft // 2 + 1, f_min=0.0, f_max=settings.sample_rate / 2, n_mels=settings.n_mels,
            sample_rate=settings.sample_rate, norm="slaney", mel_scale="slaney")
    return fb.T.contiguous()  # [n_mels, n_freqs]


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> torch.Tensor:
    with torch.inference_mode(False):
        return torch.hann_window(n_fft, periodic=True)


def _reflect_index(idx: torch.Tensor, length: int) -> torch.Tensor:
    """numpy ``pad(mode='reflect')`` index mapping (repeats the reflection for pads longer than the signal)."""
    if length == 1:
        return torch.zeros_like(idx)
    period = 2 * (length - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= length, period - idx, idx)


def _edge_padding(mono: torch.Tensor, sample_rate: int, settings: FeatureSettings, start: int, stop: int,
                  total: int) -> torch.Tensor:
    """Padding samples at positions [start, stop) outside [0, total): zeros, or numpy-style reflection."""
    if settings.pad_mode == "constant":
        return mono.new_zeros(stop - start)
    positions = _reflect_index(torch.arange(start, stop, device=mono.device), total)
    first, last = int(positions.min()), int(positions.max()) + 1
    return resample_slice(mono, sample_rate, settings, first, last)[positions - first]


def num_frames(num_samples_resampled: int, settings: FeatureSettings) -> int:
    """Frames of a centred STFT: 1 + floor(samples / hop)."""
    return 1 + num_samples_resampled // settings.hop_length


def mel_power_frames(mono: torch.Tensor, sample_rate: int, settings: FeatureSettings,
                     frame_start: int, frame_stop: int) -> torch.Tensor:
    """Mel power spectrogram frames [frame_start, frame_stop) of the clip, [n_mels, frames] float32.

    Frames past the end of the clip are not returned (the result may be shorter than asked).
    """
    total = resampled_total(mono.shape[-1], sample_rate, settings)
    frame_stop = min(frame_stop, num_frames(total, settings))
    if frame_stop <= frame_start:
        return mono.new_zeros(settings.n_mels, 0)
    half = settings.n_fft // 2
    lo = frame_start * settings.hop_length - half  # first sample of the first frame (may be < 0: padding)
    hi = (frame_stop - 1) * settings.hop_length + half + (settings.n_fft % 2)  # one past the last one
    pieces = [resample_slice(mono, sample_rate, settings, max(lo, 0), min(hi, total))]
    if lo < 0:  # centred frames reach before the start: pad like librosa
        pieces.insert(0, _edge_padding(mono, sample_rate, settings, lo, 0, total))
    if hi > total:
        pieces.append(_edge_padding(mono, sample_rate, settings, total, hi, total))
    samples = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    spec = torch.stft(samples, settings.n_fft, hop_length=settings.hop_length, win_length=settings.n_fft,
                      window=_hann(settings.n_fft).to(mono.device), center=False, return_complex=True)
    power = spec.real.square() + spec.imag.square()
    return _mel_filterbank(settings).to(mono.device) @ power


def power_to_unit_db(mel_power: torch.Tensor, ref_power: float | torch.Tensor, settings: FeatureSettings) -> torch.Tensor:
    """``power_to_db(S, ref=ref_power, top_db) / top_db + 1`` with the floor at ``ref - top_db``: values in [0, 1].

    All-silent audio (ref 0) gives 1.0 everywhere, exactly as librosa (both sides clamp at 1e-10).
    """
    ref = torch.as_tensor(ref_power, dtype=mel_power.dtype, device=mel_power.device)
    db = 10.0 * torch.log10(mel_power.clamp(min=AMIN)) - 10.0 * torch.log10(ref.clamp(min=AMIN))
    return db.clamp(min=-settings.top_db) / settings.top_db + 1.0


def _chunk_frames(settings: FeatureSettings) -> int:
    return 2 * settings.frames  # ~20 s per chunk at the paper settings: ~60 MB of STFT work memory


def clip_max_power(mono: torch.Tensor, sample_rate: int, settings: FeatureSettings) -> torch.Tensor:
    """Maximum mel power over the whole clip (the ``ref=np.max`` of power_to_db), computed chunk by chunk."""
    total_frames = num_frames(resampled_total(mono.shape[-1], sample_rate, settings), settings)
    step = _chunk_frames(settings)
    best = mono.new_zeros(())
    for start in range(0, total_frames, step):
        best = torch.maximum(best, mel_power_frames(mono, sample_rate, settings, start, start + step).max())
    return best


def mel_db(waveform: torch.Tensor, sample_rate: int, settings: FeatureSettings = PAPER_SETTINGS) -> torch.Tensor:
    """The whole clip's ``power_to_db(ref=max)/80+1`` array, [n_mels, frames] (training reuses this).

    Builds the full spectrogram: meant for clips of dataset size, not hours (use :func:`iter_windows`).
    """
    mono = to_mono(waveform, sample_rate)
    total_frames = num_frames(resampled_total(mono.shape[-1], sample_rate, settings), settings)
    power = mel_power_frames(mono, sample_rate, settings, 0, total_frames)
    return power_to_unit_db(power, power.max(), settings)


# ----------------------------------------------------------------------------------------------
# Windows and the encoder input
# ----------------------------------------------------------------------------------------------

def fit_frames(mel: torch.Tensor, settings: FeatureSettings, offset: int = 0) -> torch.Tensor:
    """Crop ``[..., n_mels, T]`` to ``settings.frames`` frames starting at ``offset``, zero-padding the end
    (0.0 is the -80 dB floor, as the official ``np.pad``)."""
    window = mel[..., offset:offset + settings.frames]
    missing = settings.frames - window.shape[-1]
    return F.pad(window, (0, missing)) if missing > 0 else window


def random_crop_offset(num_mel_frames: int, settings: FeatureSettings, generator: torch.Generator | None = None) -> int:
    """A uniformly random window start for training (0 when the clip is not longer than a window)."""
    spare = num_mel_frames - settings.frames
    if spare <= 0:
        return 0
    return int(torch.randint(0, spare + 1, (1,), generator=generator))


def to_model_input(mel_windows: torch.Tensor, settings: FeatureSettings = PAPER_SETTINGS) -> torch.Tensor:
    """``[n_mels, frames]`` or ``[B, n_mels, frames]`` unit-dB windows -> encoder input ``[B, 1, 128, 512]``.

    Reproduces ``cv2.resize(a, (128, 512))`` (bilinear, half-pixel centres, no antialiasing: mel axis x4,
    time 864 -> 128) followed by the official RAW reshape to (1, 128, 512): each output row holds four
    consecutive resized rows end to end. A transpose here would be a different (wrong) input.
    """
    if mel_windows.dim() == 2:
        mel_windows = mel_windows[None]
    if mel_windows.shape[-2] != settings.n_mels:
        raise ParameterError(f"mel windows: expected {settings.n_mels} mel bands, got shape {list(mel_windows.shape)}")
    batch = mel_windows.shape[0]
    resized = F.interpolate(mel_windows[:, None].to(torch.float32), size=(settings.image_height, settings.image_width),
                            mode="bilinear", align_corners=False, antialias=False)
    return resized.reshape(batch, *settings.model_input_shape)


def window_offsets(total_frames: int, hop_frames: int, settings: FeatureSettings) -> list[int]:
    """Start frames of the windows covering a clip: 0, hop, 2*hop, ... until the end is covered
    (the last window may run past the end and is zero-padded like a short clip)."""
    if hop_frames <= 0:
        raise ParameterError(f"hop: expected a positive number of frames, got {hop_frames}")
    count = 1 + max(0, -(-(total_frames - settings.frames) // hop_frames))
    return [i * hop_frames for i in range(count)]


def iter_windows(waveform: torch.Tensor, sample_rate: int, settings: FeatureSettings = PAPER_SETTINGS, *,
                 hop_frames: int | None = None, batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Encoder inputs ``[b, 1, 128, 512]`` for every window of a clip of any length, ``batch_size`` at a time.

    dB values are relative to the maximum of the WHOLE clip (as the official code, which converts the
    whole file and then crops). Memory: one chunk of spectrogram at a time, never the whole clip's.
    """
    mono = to_mono(waveform, sample_rate)
    total_frames = num_frames(resampled_total(mono.shape[-1], sample_rate, settings), settings)
    hop_frames = settings.frames if hop_frames is None else int(hop_frames)
    offsets = window_offsets(total_frames, hop_frames, settings)
    if len(offsets) == 1:  # the clip fits one window: one pass, its own maximum is the clip's
        power = mel_power_frames(mono, sample_rate, settings, 0, settings.frames)
        yield to_model_input(fit_frames(power_to_unit_db(power, power.max(), settings), settings), settings)
        return
    ref = clip_max_power(mono, sample_rate, settings)
    batch_size = max(1, int(batch_size))
    for i in range(0, len(offsets), batch_size):
        windows = []
        for offset in offsets[i:i + batch_size]:
            power = mel_power_frames(mono, sample_rate, settings, offset, offset + settings.frames)
            windows.append(fit_frames(power_to_unit_db(power, ref, settings), settings))
        yield to_model_input(torch.stack(windows), settings)


def count_windows(num_samples: int, sample_rate: int, settings: FeatureSettings = PAPER_SETTINGS,
                  hop_frames: int | None = None) -> int:
    total_frames = num_frames(resampled_total(num_samples, sample_rate, settings), settings)
    return len(window_offsets(total_frames, settings.frames if hop_frames is None else hop_frames, settings))


def paper_input(waveform: torch.Tensor, sample_rate: int, settings: FeatureSettings = PAPER_SETTINGS) -> torch.Tensor:
    """The official inference input ``[1, 1, 128, 512]`` of a ``[C, T]`` clip: its first window (offset 0)."""
    return next(iter_windows(waveform, sample_rate, settings, batch_size=1))[:1]
