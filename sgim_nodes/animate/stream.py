"""Reading a track piece by piece with PyAV, so that a song's length never sets the memory used.

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

import numpy as np
import torch

from ..errors import AudioError


@dataclass(frozen=True)
class TrackInfo:
    path: Path
    sample_rate: int
    channels: int
    seconds: float


def _open(path: str | os.PathLike):
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise AudioError(f"{path}: not a readable audio file ({type(exc).__name__}: {exc})") from None
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        container.close()
        raise AudioError(f"{path}: the file has no audio stream")
    return container, streams[0]


def probe(path: str | os.PathLike) -> TrackInfo:
    """Rate, channels and length; the length is counted by decoding when the header does not say it."""
    container, stream = _open(path)
    try:
        rate = int(stream.codec_context.sample_rate or stream.sample_rate or 0)
        channels = int(stream.codec_context.channels or len(stream.layout.channels) or 0)
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
    finally:
        container.close()
    if rate <= 0:
        raise AudioError(f"{path}: the audio stream has no valid sample rate")
    if seconds is None or seconds <= 0:  # count the samples (streamed)
        seconds = sum(chunk.shape[-1] for chunk in iter_samples(path)) / rate
    if seconds <= 0:
        raise AudioError(f"{path}: the audio stream contains no samples")
    return TrackInfo(Path(path), rate, channels, seconds)


def iter_samples(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False,
                 start: float = 0.0, seek: bool = False) -> Iterator[torch.Tensor]:
    """The track from ``start`` seconds on as float32 ``[channels, n]`` chunks (``[1, n]`` if mono).

    ``sample_rate`` resamples with FFmpeg's streaming resampler. ``seek`` jumps near ``start``
    first (for reading a short piece of a long file); the chunks always begin exactly at ``start``.
    """
    import av

    container, stream = _open(path)
    try:
        native = int(stream.codec_context.sample_rate or stream.sample_rate)
        rate = int(sample_rate or native)
        layout = "mono" if mono else None
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        skip = int(round(start * rate))  # samples still to drop before ``start``
        if seek and start > 1.0:
            container.seek(int((start - 1.0) * 1_000_000))  # microseconds; lands on an earlier packet
            skip = None  # known from the first frame's timestamp
        try:
            for frame in container.decode(stream):
                if skip is None:
                    first_time = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    skip = int(round((start - first_time) * rate))
                    if skip < 0:  # the seek landed after ``start``: the missing samples are silence
                        yield torch.zeros(len(frame.layout.channels) if not mono else 1, -skip)
                        skip = 0
                for out in resampler.resample(frame):
                    chunk = _frame_array(out)
                    if skip > 0:
                        drop = min(skip, chunk.shape[1])
                        chunk, skip = chunk[:, drop:], skip - drop
                    if chunk.shape[1]:
                        yield torch.from_numpy(chunk)
            for out in resampler.resample(None):
                chunk = _frame_array(out)
                if skip and skip > 0:
                    drop = min(skip, chunk.shape[1])
                    chunk, skip = chunk[:, drop:], skip - drop
                if chunk.shape[1]:
                    yield torch.from_numpy(chunk)
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"{path}: audio decoding failed ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()


def _frame_array(frame) -> np.ndarray:
    data = frame.to_ndarray()  # fltp: [channels, samples]
    return np.ascontiguousarray(data.astype(np.float32, copy=False))


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
    container, stream = _open(path)
    try:
        return int(stream.codec_context.sample_rate or stream.sample_rate)
    finally:
        container.close()


def iter_tensor(waveform: torch.Tensor, chunk: int = 1 << 16) -> Iterator[torch.Tensor]:
    """An in-memory ``[channels, T]`` waveform as chunks, so one analysis code serves files and tensors."""
    for begin in range(0, waveform.shape[-1], chunk):
        yield waveform[..., begin:begin + chunk]
