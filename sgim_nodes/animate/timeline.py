"""The one frame-count rule shared by the features, the trajectory, the frames and the audio handed on.

A music video covers ``[start, end)`` of a track at ``fps`` frames per second (any positive rate,
29.97 too). Frame ``i`` shows the music at ``start + i / fps``, and

    frame_count = round((end - start) * fps)          (Python's round: halves to even)

The audio handed on with the frames is cut to exactly ``frame_count / fps`` seconds
(``round(frame_count / fps * sample_rate)`` samples, zero-padded if the track ends half a frame
early), so video and sound end together. The node, the command line and the muxer all call
:func:`make_timeline` and :meth:`Timeline.audio_samples`; nothing else counts frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AudioError, ParameterError


@dataclass(frozen=True)
class Timeline:
    fps: float
    start: float  # seconds into the track of frame 0
    frames: int

    @property
    def duration(self) -> float:
        """Seconds covered by the frames (= the length of the audio handed on)."""
        return self.frames / self.fps

    def time_of(self, frame: int) -> float:
        """Track time shown by ``frame``."""
        return self.start + frame / self.fps

    def frame_times(self, offset: int = 0, count: int | None = None) -> torch.Tensor:
        """Times (seconds, relative to ``start``) of frames ``offset .. offset+count-1``, float64."""
        offset, count = self.check_range(offset, count)
        return torch.arange(offset, offset + count, dtype=torch.float64) / self.fps

    def check_range(self, offset: int = 0, count: int | None = None) -> tuple[int, int]:
        """``(offset, count)`` of a chunk of frames; ``count`` None or 0 means up to the last frame."""
        if isinstance(offset, bool) or int(offset) != offset or not 0 <= int(offset) < self.frames:
            raise ParameterError(f"frame_offset: expected a frame number in 0..{self.frames - 1} "
                                 f"(the video has {self.frames} frames), got {offset!r}", parameter="frame_offset")
        offset = int(offset)
        if not count:
            count = self.frames - offset
        if int(count) != count or count < 0:
            raise ParameterError(f"frame_count: expected a number of frames >= 0, got {count!r}",
                                 parameter="frame_count")
        return offset, min(int(count), self.frames - offset)

    def audio_samples(self, sample_rate: int, frames: int | None = None) -> int:
        """Samples of audio that go with ``frames`` frames (default: all of them)."""
        frames = self.frames if frames is None else frames
        return int(round(frames / self.fps * sample_rate))

    def audio_span(self, sample_rate: int, offset: int = 0, count: int | None = None) -> tuple[int, int]:
        """``(first sample, number of samples)`` in the track of the audio of a chunk of frames."""
        offset, count = self.check_range(offset, count)
        first = int(round(self.start * sample_rate)) + self.audio_samples(sample_rate, offset)
        return first, self.audio_samples(sample_rate, offset + count) - self.audio_samples(sample_rate, offset)


def check_fps(fps) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ParameterError(f"fps: expected a frame rate in frames per second, got {fps!r}", parameter="fps") from None
    if not math.isfinite(value) or not 0 < value <= 1000:
        raise ParameterError(f"fps: expected a frame rate in (0, 1000] frames per second, got {fps!r}",
                             parameter="fps")
    return value


def make_timeline(track_seconds: float, fps: float, start: float | None = None, end: float | None = None) -> Timeline:
    """Frames of ``[start, end)`` of a track of ``track_seconds`` (``end`` None or 0: the end of the track)."""
    fps = check_fps(fps)
    start = 0.0 if start is None else float(start)
    end = track_seconds if end is None or end == 0 else float(end)
    if not math.isfinite(start) or start < 0 or start >= track_seconds:
        raise ParameterError(f"start: expected a time in [0, {track_seconds:.3f}) s (the track's length), got {start}",
                             parameter="start")
    end = min(end, track_seconds)
    if not math.isfinite(end) or end <= start:
        raise ParameterError(f"end: expected a time after start ({start} s), got {end}", parameter="end")
    frames = int(round((end - start) * fps))
    if frames < 1:
        raise ParameterError(f"start/end: [{start}, {end}] s is shorter than one frame at {fps} fps",
                             parameter="end")
    return Timeline(fps=fps, start=start, frames=frames)


def trim_audio(waveform: torch.Tensor, sample_rate: int, timeline: Timeline, offset: int = 0,
               count: int | None = None) -> torch.Tensor:
    """The samples of ``[..., T]`` audio that go with a chunk of frames, zero-padded past the track's end."""
    if waveform.shape[-1] == 0:
        raise AudioError("audio: the waveform is empty")
    first, length = timeline.audio_span(int(sample_rate), offset, count)
    piece = waveform[..., first:first + length]
    if piece.shape[-1] < length:
        pad = torch.zeros(*waveform.shape[:-1], length - piece.shape[-1], dtype=waveform.dtype)
        piece = torch.cat([piece, pad], dim=-1)
    return piece.clone()
