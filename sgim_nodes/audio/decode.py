"""The library's one audio decoder: every file-reading path (``load_audio``, the music-video streams of
:mod:`..animate.stream`) decodes through :func:`iter_audio`, with PyAV (which ComfyUI itself ships).

``torchaudio.load`` needs torchcodec and Python's ``wave`` rejects WAVE_FORMAT_EXTENSIBLE files, so
we decode through FFmpeg (PyAV) for every container: wav (any PCM flavour), flac, mp3, ogg, ...

Integer PCM is scaled by 2^(bits-1) exactly like libsndfile, so that the samples equal what
``soundfile``/``librosa`` returned when the reference fixtures were made (FFmpeg hands 24-bit PCM
over as 32-bit integers shifted left by 8 bits; dividing by 2^31 gives the same float32 values).

What a file claims is never trusted for sizes: frames of more than 8 planar channels are interleaved
into one plane before they are read, so any channel count is safe (PyAV reads at most 8 planes of a
planar frame; a 12-channel planar frame crashed the interpreter), lengths are counted from what is
decoded (a header may claim 99 days for one second of sound), and the decoded total is bounded by
``limits.MAX_AUDIO_INFLATION`` times the file's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import AudioError

# FFmpeg sample format -> (scale, offset): float = (int - offset) / scale.
_INT_FORMATS = {
    "u8": (128.0, 128.0),
    "s16": (32768.0, 0.0),
    "s32": (2147483648.0, 0.0),
    "s64": (9223372036854775808.0, 0.0),
}
_MAGIC_NAMES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                b"%PDF": "a PDF document", b"PK\x03\x04": "a zip archive (or a PyTorch .pt file)",
                b"\x80\x02": "a Python pickle (or a model file)", b"\x1f\x8b": "a gzip archive"}


MAX_PLANES = 8  # PyAV's to_ndarray reads at most this many planes of a planar frame (FFmpeg's data[8])


class _Packer:
    """Planar frames of more than :data:`MAX_PLANES` channels, interleaved into one plane (same format,
    rate and layout: no value changes) before they are read; other frames pass as they are. One
    converter per stream, made on the first frame that needs it."""

    def __init__(self):
        self.converter = None

    def __call__(self, frame):
        if not frame.format.is_planar or frame.layout.nb_channels <= MAX_PLANES:
            return [frame]
        if self.converter is None:
            import av

            self.converter = av.AudioResampler(format=frame.format.packed.name, layout=frame.layout,
                                               rate=frame.sample_rate)
        return self.converter.resample(frame)

    def flush(self):
        return self.converter.resample(None) if self.converter is not None else []


def _packed_to_array(frame) -> np.ndarray:
    """One frame (packed, or planar with at most 8 channels) as a [channels, samples] float32 array
    (integer PCM scaled exactly)."""
    channels = frame.layout.nb_channels
    data = frame.to_ndarray()
    if not frame.format.is_planar:  # packed formats come as [1, samples * channels], interleaved
        data = data.reshape(-1, channels).T
    base = frame.format.name.rstrip("p")
    if base in _INT_FORMATS:
        scale, offset = _INT_FORMATS[base]
        out = data.astype(np.float64 if base in ("s32", "s64") else np.float32)
        out = ((out - offset) / scale) if offset else (out / scale)
        return np.ascontiguousarray(out.astype(np.float32))
    return np.ascontiguousarray(data.astype(np.float32, copy=False))


def describe_non_audio(path: Path) -> str:
    """What a file FFmpeg cannot open looks like, in words ("a text file", "a PNG image", ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not head:
        return "the file is empty"
    for magic, what in _MAGIC_NAMES.items():
        if head.startswith(magic):
            return f"this is {what}, not audio"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "this is a text file, not audio"
    return "FFmpeg recognises no audio format in it"


def open_audio(path: str | os.PathLike):
    """(container, first audio stream) of ``path``, or an :class:`AudioError` saying what the file is not."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found" if not path.is_dir() else f"{path}: is a folder, not an "
                         "audio file")
    try:
        container = av.open(str(path))
    except Exception:  # FFmpeg reports garbage as InvalidDataError ("[Errno 1094995529]"): say what it is instead
        raise AudioError(f"{path}: not a readable audio file ({describe_non_audio(path)})") from None
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        container.close()
        raise AudioError(f"{path}: the file has no audio stream")
    return container, streams[0]


def check_rate(path: Path, sample_rate: int) -> None:
    from .features import check_sample_rate

    try:
        check_sample_rate(sample_rate)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}", parameter="audio") from None


def native_rate(path: str | os.PathLike) -> int:
    """The stream's sample rate as its header states it (checked against the accepted range)."""
    container, stream = open_audio(path)
    try:
        rate = int(stream.codec_context.sample_rate or stream.sample_rate or 0)
        if rate <= 0:  # some streams state it only in their frames
            try:
                rate = next((int(f.sample_rate or 0) for f in container.decode(stream) if f.samples), 0)
            except Exception:
                rate = 0
    finally:
        container.close()
    if rate <= 0:
        raise AudioError(f"{path}: the audio stream has no valid sample rate")
    check_rate(Path(path), rate)
    return rate


def iter_audio(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False, start: float = 0.0,
               seek: bool = False) -> Iterator[torch.Tensor]:
    """The first audio stream from ``start`` seconds on as float32 ``[channels, n]`` chunks (``[1, n]`` if mono).

    At the native rate and layout the samples are exact (integer PCM scaled by 2^(bits-1)); ``sample_rate``
    or ``mono`` go through FFmpeg's streaming resampler (no seams between chunks). ``seek`` jumps near
    ``start`` first (for a short piece of a long file); the chunks always begin exactly at ``start``.
    Raises :class:`AudioError` naming the file for anything it cannot decode, and once the decoded
    audio passes ``MAX_AUDIO_INFLATION`` x the file's size.
    """
    import av

    from ..limits import MAX_AUDIO_INFLATION, MIN_AUDIO_BUDGET_BYTES

    path = Path(path)
    container, stream = open_audio(path)
    budget = max(MIN_AUDIO_BUDGET_BYTES, MAX_AUDIO_INFLATION * path.stat().st_size)
    decoded = 0
    try:
        native = int(stream.codec_context.sample_rate or stream.sample_rate or 0) or native_rate(path)
        check_rate(path, native)  # before decoding: a header can claim any rate
        rate = int(sample_rate or native)
        convert = sample_rate is not None or mono
        resampler = av.AudioResampler(format="flt", layout="mono" if mono else None, rate=rate) if convert else None
        packer = _Packer()
        skip = int(round(start * rate)) if rate else 0  # samples still to drop before ``start``
        if seek and start > 1.0:
            container.seek(int((start - 1.0) * 1_000_000))  # microseconds; lands on an earlier packet
            skip = None  # known from the first frame's timestamp

        def emit(frames):
            nonlocal skip, decoded
            for out in frames:
                chunk = _packed_to_array(out)
                decoded += chunk.nbytes
                if decoded > budget:
                    raise AudioError(f"{path}: decodes to more than {budget:,} bytes of samples from a "
                                     f"{path.stat().st_size:,}-byte file (limit {MAX_AUDIO_INFLATION}x); real audio "
                                     "never compresses that far, so the file is damaged or crafted")
                if skip:
                    drop = min(skip, chunk.shape[1])
                    chunk, skip = chunk[:, drop:], skip - drop
                if chunk.shape[1]:
                    yield torch.from_numpy(chunk)

        try:
            for frame in container.decode(stream):
                if not frame.samples:
                    continue
                if frame.sample_rate and frame.sample_rate != native and not convert:
                    raise AudioError(f"{path}: the sample rate changes mid-stream ({native} -> "
                                     f"{frame.sample_rate} Hz); not supported")
                if skip is None:
                    # in whole samples, rounded as an in-memory track's read rounds ``start``: rounding the
                    # float difference put half-sample starts one sample off that read
                    first = (round(frame.pts * frame.time_base * rate)
                             if frame.pts is not None and frame.time_base is not None else 0)
                    skip = int(round(start * rate)) - int(first)
                    if skip < 0:  # the seek landed after ``start``: the missing samples are silence
                        yield torch.zeros(frame.layout.nb_channels if not mono else 1, -skip)
                        skip = 0
                yield from emit(resampler.resample(frame) if convert else packer(frame))
            yield from emit(resampler.resample(None) if convert else packer.flush())
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"{path}: audio decoding failed ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of ``path``: (waveform [channels, samples] float32, sample_rate).

    Raises :class:`AudioError` naming the file if it is missing, not decodable audio, or empty.
    """
    path = Path(path)
    rate = native_rate(path)
    chunks = list(iter_audio(path))
    if not chunks:
        raise AudioError(f"{path}: the audio stream contains no samples")
    channels = {c.shape[0] for c in chunks}
    if len(channels) != 1:
        raise AudioError(f"{path}: the channel count changes mid-stream ({sorted(channels)}); not supported")
    return torch.cat(chunks, dim=1).contiguous(), rate


def decoded_length(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample rate, channels, samples) of the first audio stream, counted by decoding it (streamed, in
    constant memory): a header's duration is a claim, and a planner sized from it could be asked for
    days of frames by a file of a few kilobytes."""
    path = Path(path)
    rate = native_rate(path)
    samples, channels = 0, 0
    for chunk in iter_audio(path):
        samples += chunk.shape[1]
        channels = chunk.shape[0]
    if samples == 0:
        raise AudioError(f"{path}: the audio stream contains no samples")
    return rate, channels, samples
