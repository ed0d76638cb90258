"""Frames from a trajectory, decoded in batches, and an .mp4 writer that muxes the track in as it goes.

Memory is bounded by one batch of frames: the codes of a batch are computed from the keyframes
when it is decoded, each batch is encoded and dropped, and the audio is read from the file in
step with the video (interleaved in the file), never as a whole. Where the host allows it (the
command line's run, or ``reuse_cpu_memory=True``), the freed activations of one batch stay mapped
for the next (``sgim_nodes.memory``), which bounds them by one batch too.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import Cancelled, ParameterError
from ..memory import reuse_freed_memory
from .timeline import Timeline
from .trajectory import Trajectory, uses_motion

from .defaults import DEFAULT_BATCH  # noqa: F401  (re-exported)


def check_size(size, resolution: int) -> int | None:
    """Output size in pixels (the generator's own when None/0), even for the video encoder."""
    if size in (None, 0):
        return None
    if isinstance(size, bool) or int(size) != size or not 16 <= int(size) <= 8192:
        raise ParameterError(f"size: expected an output size in pixels (16 .. 8192), got {size!r}", parameter="size")
    return int(size)


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``[B, 3, H, W]`` scaled so the longer side is ``size`` (area-correct when shrinking)."""
    if size is None or max(images.shape[-2:]) == size:
        return images
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    out = (max(2, int(round(h * scale))), max(2, int(round(w * scale))))
    return torch.nn.functional.interpolate(images.float(), size=out, mode="bilinear", antialias=scale < 1,
                                           align_corners=False)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output ``[B, 3, H, W]`` in [-1, 1] -> uint8 ``[B, H, W, 3]`` on the CPU."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().contiguous().numpy()


def iter_frames(generator, trajectory: Trajectory, *, offset: int = 0, count: int | None = None,
                batch_size: int = DEFAULT_BATCH, noise_mode: str = "const", codes: torch.Tensor | None = None,
                should_cancel: Callable[[], bool] | None = None,
                reuse_cpu_memory: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first frame, images [b, 3, H, W])`` for consecutive batches of a chunk of frames.

    ``codes`` ``[count, num_ws, w_dim]``: the chunk's codes when they were computed (and perhaps
    changed) elsewhere; by default each batch's codes come from the trajectory as it is decoded.

    ``should_cancel`` is polled before each batch. With a StyleGAN3 generator and motion, every
    frame has its own input transform, so frames are rendered one by one (the transform is the
    generator's state); the transform is reset to identity afterwards.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ParameterError(f"batch_size: expected an integer >= 1, got {batch_size!r}", parameter="batch_size")
    offset, count = trajectory.timeline.check_range(offset, count)
    device = next(iter(generator.parameters())).device
    if codes is not None and codes.shape[0] != count:
        raise ParameterError(f"codes: {codes.shape[0]} codes for a chunk of {count} frames", parameter="codes")
    motion = uses_motion(generator, trajectory)
    step = 1 if motion else int(batch_size)
    try:
        # every batch allocates the same large activations: keep the freed ones mapped (sgim_nodes.memory)
        with torch.no_grad(), reuse_freed_memory(reuse_cpu_memory and device.type == "cpu"):
            for first in range(offset, offset + count, step):
                if should_cancel is not None and should_cancel():
                    raise Cancelled(f"rendering cancelled before frame {first + 1} of {trajectory.frames}")
                n = min(step, offset + count - first)
                if codes is None:
                    batch = trajectory.codes(first, n)
                else:
                    batch = codes[first - offset:first - offset + n]
                if motion:
                    generator.set_input_transform(trajectory.transforms(first, 1)[0].to(device))
                yield first, generator.synthesis(batch.to(device), noise_mode=noise_mode).float()
    finally:
        if motion:
            generator.set_input_transform(torch.eye(3, device=device))


def frame_rate_fraction(fps: float) -> Fraction:
    """29.97 -> 2997/100; 30000/1001 given as 29.97002997 -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


# The rates FFmpeg's AAC encoder accepts (the MPEG-4 sampling-frequency table); any other rate is
# resampled for the muxer, so a 100 Hz or 192 kHz track never fails after the whole render.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def muxer_sample_rate(sample_rate: int) -> int:
    """The AAC rate a track of ``sample_rate`` Hz is written at: its own when AAC takes it, else the
    nearest rate above it (96 kHz for anything higher), so that no band of the track is lost."""
    from ..limits import MAX_SAMPLE_RATE, check_int

    rate = check_int("sample_rate", sample_rate, 1, MAX_SAMPLE_RATE, "a sample rate in Hz")
    return next((r for r in AAC_SAMPLE_RATES if r >= rate), AAC_SAMPLE_RATES[-1])


def check_video_audio(sample_rate: int, channels: int) -> int:
    """Before any rendering: the rate the video's AAC track will use for a ``sample_rate`` Hz,
    ``channels``-channel track, the encoder opened once to confirm it (returns the muxer rate)."""
    import io

    import av

    from ..limits import check_int

    check_int("channels", channels, 1, 1024, "a channel count")
    rate = muxer_sample_rate(sample_rate)
    with av.open(io.BytesIO(), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono" if channels == 1 else "stereo")
        try:
            stream.codec_context.open()
        except Exception as exc:  # pragma: no cover - an FFmpeg build without its AAC encoder
            raise ParameterError(f"sample_rate: the AAC encoder refuses {rate} Hz ({exc})",
                                 parameter="sample_rate") from None
    return rate


def _resampled(chunks: Iterator[torch.Tensor], channels: int, source_rate: int, rate: int) -> Iterator[torch.Tensor]:
    """``chunks`` fitted to ``channels`` (1 or 2) and resampled from ``source_rate`` to ``rate`` with
    FFmpeg's streaming resampler (packed samples: no plane limit, no seams between chunks)."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
    pts = 0
    for chunk in chunks:
        chunk = _fit_channels(chunk.float(), channels)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.numpy().T.reshape(1, -1)), format="flt",
                                           layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = source_rate, pts, Fraction(1, source_rate)
        pts += chunk.shape[1]
        for out in resampler.resample(frame):
            yield torch.from_numpy(out.to_ndarray().reshape(-1, channels).T.copy())
    for out in resampler.resample(None):
        yield torch.from_numpy(out.to_ndarray().reshape(-1, channels).T.copy())


class VideoWriter:
    """H.264 .mp4 with an AAC track: ``write(frames)`` per batch, ``close()`` at the end.

    ``audio`` is an iterator of float32 ``[channels, n]`` chunks at ``sample_rate`` starting at the
    first frame's time; exactly ``timeline.audio_samples(sample_rate)`` samples are written (silence
    if the track ends early), interleaved with the video as frames arrive.

    ``open_ended``: the number of frames is not known in advance (a live session); the audio then
    ends with the last frame written, by the same rule, and ``timeline.frames`` is not used.
    """

    def __init__(self, path: str | Path, timeline: Timeline, width: int, height: int,
                 audio: Iterator[torch.Tensor] | None = None, sample_rate: int = 0, channels: int = 0,
                 crf: int = 18, threads: int | None = None, video_template=None, open_ended: bool = False):
        import av

        self.timeline = timeline
        self.open_ended = open_ended
        self.container = av.open(str(path), mode="w", format="mp4")
        rate = frame_rate_fraction(timeline.fps)
        self.encoding = video_template is None
        if self.encoding:
            self.video = self.container.add_stream("libx264", rate=rate)
            self.video.width, self.video.height = width - width % 2, height - height % 2  # yuv420p: even sizes
            self.video.pix_fmt = "yuv420p"
            # x264's output depends on its thread count: a fixed count makes it the same on any machine
            self.video.options = {"crf": str(crf), **({} if threads is None else {"threads": str(threads)})}
            self.video.codec_context.time_base = 1 / rate
        else:  # packets encoded elsewhere (segments of the same settings) are muxed by write_packets
            self.video = self.container.add_stream_from_template(video_template)
        self.frames_written = 0
        self.audio = None
        if audio is not None:
            self.sample_rate = muxer_sample_rate(sample_rate)
            self.audio_chunks = audio if self.sample_rate == sample_rate else _resampled(
                audio, 1 if channels == 1 else 2, int(sample_rate), self.sample_rate)
            self.layout = "mono" if channels == 1 else "stereo"
            self.audio = self.container.add_stream("aac", rate=self.sample_rate, layout=self.layout)
            self.audio_total = timeline.audio_samples(self.sample_rate)
            self.audio_written = 0
            self.pending = torch.zeros(1 if channels == 1 else 2, 0)

    def write(self, frames: np.ndarray) -> None:
        """uint8 ``[B, H, W, 3]`` frames."""
        import av

        for image in frames:
            image = image[: self.video.height, : self.video.width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            for packet in self.video.encode(frame):
                self.container.mux(packet)
            self.frames_written += 1
        if self.audio is not None:
            self._write_audio(self.timeline.audio_samples(self.sample_rate, self.frames_written))

    def write_packets(self, packets, frames: int) -> None:
        """Mux already encoded video packets (their pts/dts in this stream's time base, the
        ``video_template`` one) standing for ``frames`` more frames, and the audio up to them."""
        for packet in packets:
            packet.stream = self.video
            self.container.mux(packet)
        self.frames_written += frames
        if self.audio is not None:
            self._write_audio(self.timeline.audio_samples(self.sample_rate, self.frames_written))

    def _write_audio(self, until: int) -> None:
        import av

        while self.audio_written < until:
            need = until - self.audio_written
            while self.pending.shape[1] < need:
                chunk = next(self.audio_chunks, None)
                if chunk is None:  # the track ended: silence up to the last frame
                    chunk = torch.zeros(self.pending.shape[0], need - self.pending.shape[1])
                self.pending = torch.cat([self.pending, _fit_channels(chunk.float(), self.pending.shape[0])], dim=1)
            piece, self.pending = self.pending[:, :need], self.pending[:, need:]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece.numpy()), format="fltp", layout=self.layout)
            frame.sample_rate = self.sample_rate
            frame.pts = self.audio_written
            frame.time_base = Fraction(1, self.sample_rate)
            for packet in self.audio.encode(frame):
                self.container.mux(packet)
            self.audio_written += need

    def close(self) -> None:
        try:
            for packet in self.video.encode(None) if self.encoding else ():
                self.container.mux(packet)
            if self.audio is not None:
                self._write_audio(self.timeline.audio_samples(self.sample_rate, self.frames_written)
                                  if self.open_ended else self.audio_total)
                for packet in self.audio.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()


def _fit_channels(chunk: torch.Tensor, channels: int) -> torch.Tensor:
    if chunk.shape[0] == channels:
        return chunk
    if channels == 1:
        return chunk.mean(dim=0, keepdim=True)
    if chunk.shape[0] == 1:
        return chunk.expand(2, -1)
    return _downmix_stereo(chunk)


def _downmix_stereo(chunk: torch.Tensor) -> torch.Tensor:
    """More than two channels: left = mean of the even channels, right = mean of the odd ones."""
    return torch.stack([chunk[0::2].mean(dim=0), chunk[1::2].mean(dim=0)])


def video_frame_count(path: str | Path) -> tuple[int, float, float]:
    """(video frames, video seconds, audio seconds) of a written file, by decoding it (for tests and checks)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        video_seconds = float(video.duration * video.time_base) if video.duration else math.nan
        audio_seconds = math.nan
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_seconds = float(stream.duration * stream.time_base) if stream.duration else math.nan
    return frames, video_seconds, audio_seconds
