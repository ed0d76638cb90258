"""Decoding real and synthetic audio files with PyAV, and clear errors for bad files."""

from __future__ import annotations

import math
import struct
import wave

import numpy as np
import pytest
import torch

from sgim_nodes.audio import load_audio
from sgim_nodes.errors import AudioError

EXPECTED = {  # stem: (channels, samples, rate), from the files' headers
    "drill": (2, 192000, 48000), "explosion": (2, 414380, 44100), "fire": (2, 441000, 44100),
    "giggling": (2, 441000, 44100), "raining": (2, 441000, 44100), "sobbing": (1, 480000, 48000),
    "thunderstorm": (1, 411516, 44100), "wind": (2, 441000, 44100),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wav_pcm(path) -> tuple[np.ndarray, int, int]:
    """Minimal RIFF reader (fmt + data chunks) for checking the decoder: int samples [C, T], bits, rate."""
    raw = path.read_bytes()
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        tag, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        if tag == b"fmt ":
            fmt = struct.unpack("<HHIIHH", raw[pos + 8:pos + 24])
        elif tag == b"data":
            data = raw[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    _tag, channels, rate, _, _, bits = fmt
    width = bits // 8
    frames = np.frombuffer(data, dtype=np.uint8).reshape(-1, channels, width).astype(np.int64)
    value = sum(frames[..., i] << (8 * i) for i in range(width))
    value = np.where(value >= 1 << (bits - 1), value - (1 << bits), value)
    return value.T, bits, rate


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_shared_clips_decode_exactly(audio_dir, stem):
    waveform, rate = load_audio(audio_dir / f"{stem}.wav")
    assert (waveform.shape[0], waveform.shape[1], rate) == EXPECTED[stem]
    assert waveform.dtype == torch.float32
    ints, bits, header_rate = _wav_pcm(audio_dir / f"{stem}.wav")
    assert header_rate == rate
    expected = torch.from_numpy((ints / 2.0 ** (bits - 1)).astype(np.float32))
    assert torch.equal(waveform, expected)  # libsndfile scaling, bit for bit (drill: 24-bit EXTENSIBLE)


def test_drill_is_24_bit_extensible(audio_dir):
    raw = (audio_dir / "drill.wav").read_bytes()
    fmt = raw.index(b"fmt ")
    assert struct.unpack("<H", raw[fmt + 8:fmt + 10])[0] == 0xFFFE and _wav_pcm(audio_dir / "drill.wav")[1] == 24


def _write_wav(path, data: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((data.T * 32767).round().astype("<i2").tobytes())


@pytest.mark.parametrize("channels,rate", [(8, 44100), (1, 8000), (2, 192000)])
def test_wav_channel_counts_and_rates(tmp_path, channels, rate):
    t = np.arange(rate // 4) / rate
    data = np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * 300 * t) for c in range(channels)])
    _write_wav(tmp_path / "x.wav", data, rate)
    waveform, got_rate = load_audio(tmp_path / "x.wav")
    assert got_rate == rate and waveform.shape == (channels, rate // 4)
    expected = torch.from_numpy((data * 32767).round() / 32768).float()  # int16 / 2^15, channel order kept
    assert torch.equal(waveform, expected)


@pytest.mark.parametrize("codecs,ext", [(("flac",), "flac"), (("libvorbis", "vorbis"), "ogg"),
                                        (("libmp3lame", "mp3"), "mp3")])
def test_compressed_formats(tmp_path, codecs, ext):
    av = pytest.importorskip("av")
    available = [c for c in codecs if c in av.codecs_available]
    if not available:
        pytest.skip(f"this FFmpeg build has none of the encoders {codecs}")
    codec = available[0]
    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([tone, -tone])
    path = tmp_path / f"tone.{ext}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        stream.codec_context.options = {"strict": "experimental"}  # FFmpeg's native vorbis encoder
        sample_format = stream.codec_context.codec.audio_formats[0].name
        frame_size = 1152
        for start in range(0, stereo.shape[1], frame_size):
            chunk = stereo[:, start:start + frame_size]
            if sample_format == "s16":
                frame = av.AudioFrame.from_ndarray((chunk.T.reshape(1, -1) * 32767).astype(np.int16), "s16", "stereo")
            elif sample_format == "s32":
                frame = av.AudioFrame.from_ndarray((chunk.T.reshape(1, -1) * 2**31 * 0.99).astype(np.int32), "s32",
                                                   "stereo")
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), "fltp", "stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    waveform, got_rate = load_audio(path)
    assert got_rate == rate and waveform.shape[0] == 2
    assert abs(waveform.shape[1] - stereo.shape[1]) < 0.1 * rate  # codecs add priming/padding
    # the decoded tone correlates with the original (allowing the codec's delay)
    decoded = waveform[0].numpy()
    lag = int(np.argmax(np.correlate(decoded[:12000], tone[5000:7000], mode="valid")))
    best = np.corrcoef(decoded[lag:lag + 20000], tone[5000:25000])[0, 1]
    assert best > 0.99
    assert float(waveform.abs().max()) < 0.5


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="notes.wav"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_wav_without_samples(tmp_path):
    _write_wav(tmp_path / "empty.wav", np.zeros((1, 0)), 44100)
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav")


def test_truncated_wav_header(tmp_path, audio_dir):
    path = tmp_path / "cut.wav"
    path.write_bytes((audio_dir / "fire.wav").read_bytes()[:30])
    with pytest.raises(AudioError, match="cut.wav"):
        load_audio(path)


def test_no_nan_in_decoded_audio(audio_dir):
    waveform, _ = load_audio(audio_dir / "thunderstorm.wav")
    assert torch.isfinite(waveform).all() and float(waveform.abs().max()) <= 1.0 and not math.isnan(float(waveform.sum()))
