"""Decoding audio files to float32 waveforms with PyAV (which ComfyUI itself ships).

``torchaudio.load`` needs torchcodec and Python's ``wave`` rejects WAVE_FORMAT_EXTENSIBLE files, so
we decode through FFmpeg (PyAV) for every container: wav (any PCM flavour), flac, mp3, ogg, ...

Integer PCM is scaled by 2^(bits-1) exactly like libsndfile, so that the samples equal what
``soundfile``/``librosa`` returned when the reference fixtures were made (FFmpeg hands 24-bit PCM
over as 32-bit integers shifted left by 8 bits; dividing by 2^31 gives the same float32 values).
"""

from __future__ import annotations

import os
from pathlib import Path

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


def _frame_to_array(frame) -> np.ndarray:
    """One decoded frame as a [channels, samples] float32 array."""
    fmt = frame.format
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not fmt.is_planar:  # packed formats come as [1, samples * channels], interleaved
        data = data.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base in _INT_FORMATS:
        scale, offset = _INT_FORMATS[base]
        out = data.astype(np.float64 if base in ("s32", "s64") else np.float32)
        out = ((out - offset) / scale) if offset else (out / scale)
        return out.astype(np.float32)
    return data.astype(np.float32, copy=False)


def _check_rate(path: Path, sample_rate: int) -> None:
    from .features import check_sample_rate

    try:
        check_sample_rate(sample_rate)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}", parameter="audio") from None


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of ``path``: (waveform [channels, samples] float32, sample_rate).

    Raises :class:`AudioError` naming the file if it is missing, not decodable audio, or empty.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        container = av.open(str(path))
    except Exception as exc:  # FFmpeg reports garbage as InvalidDataError, unknown formats variously
        raise AudioError(f"{path}: not a readable audio file ({type(exc).__name__}: {exc})") from None
    chunks: list[np.ndarray] = []
    try:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise AudioError(f"{path}: the file has no audio stream")
        stream = streams[0]
        sample_rate = int(stream.codec_context.sample_rate or stream.sample_rate or 0)
        if sample_rate > 0:  # before decoding: a header can claim any rate
            _check_rate(path, sample_rate)
        try:
            for frame in container.decode(stream):
                sample_rate = int(frame.sample_rate or sample_rate)
                if frame.samples:
                    chunks.append(_frame_to_array(frame))
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"{path}: audio decoding failed ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    if not chunks:
        raise AudioError(f"{path}: the audio stream contains no samples")
    if sample_rate <= 0:
        raise AudioError(f"{path}: the audio stream has no valid sample rate")
    _check_rate(path, sample_rate)
    channels = {c.shape[0] for c in chunks}
    if len(channels) != 1:
        raise AudioError(f"{path}: the channel count changes mid-stream ({sorted(channels)}); not supported")
    waveform = torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks, axis=1)))
    return waveform, sample_rate
