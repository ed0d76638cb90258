"""Reading a track piece by piece, so that a song's length never sets the memory used (decoding itself is
:mod:`..audio.decode`'s, the library's one decoder).

- :func:`probe` : sample rate, channels and length of the first audio stream;
- :func:`iter_samples` : the track as float32 ``[channels, n]`` chunks, optionally resampled by
  FFmpeg (a streaming resampler: no seams between chunks), from a start time on;
- :func:`read_segment` : ``[start, start + seconds)`` at the native rate (seeks first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch


@dataclass(frozen=True)
class TrackInfo:
    path: Path
    sample_rate: int
    channels: int
    seconds: float


def probe(path: str | os.PathLike) -> TrackInfo:
    """Rate, channels and length, the length counted from the decoded samples (streamed, constant memory):
    a header's duration is only a claim, and every plan (frames, windows, buffers) is sized from this."""
    from ..audio.decode import decoded_length

    rate, channels, samples = decoded_length(path)
    return TrackInfo(Path(path), rate, channels, samples / rate)


def iter_samples(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False,
                 start: float = 0.0, seek: bool = False) -> Iterator[torch.Tensor]:
    """The track from ``start`` seconds on as float32 ``[channels, n]`` chunks (``[1, n]`` if mono), through
    the library's one decoder (:func:`..audio.decode.iter_audio`, which says what each option does)."""
    from ..audio.decode import iter_audio

    return iter_audio(path, sample_rate=sample_rate, mono=mono, start=start, seek=seek)


def read_segment(path: str | os.PathLike, start: float, seconds: float, *,
                 sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """``[channels, n]`` float32 audio of ``[start, start + seconds)``, zero-padded past the end, and its rate."""
    rate = int(sample_rate or _native_rate(path))
    need = int(round(seconds * rate))
    pieces, have = [], 0
    for chunk in iter_samples(path, sample_rate=sample_rate, start=max(0.0, start), seek=True):
        pieces.append(chunk[:, : need - have])
        have += pieces[-1].shape[1]
        if have >= need:
            break
    if not pieces:
        return torch.zeros(1, need), rate
    audio = torch.cat(pieces, dim=1)
    if audio.shape[1] < need:
        audio = torch.cat([audio, audio.new_zeros(audio.shape[0], need - audio.shape[1])], dim=1)
    return audio, rate


def _native_rate(path) -> int:
    from ..audio.decode import native_rate

    return native_rate(path)


def iter_tensor(waveform: torch.Tensor, chunk: int = 1 << 16) -> Iterator[torch.Tensor]:
    """An in-memory ``[channels, T]`` waveform as chunks, so one analysis code serves files and tensors."""
    for begin in range(0, waveform.shape[-1], chunk):
        yield waveform[..., begin:begin + chunk]
