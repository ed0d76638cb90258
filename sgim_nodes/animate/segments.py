"""A trajectory rendered straight to an .mp4 in closed-GOP segments, joined by stream copy with the track.

The frames are cut into segments of ``segment_frames`` (a multiple of the decode batch, so every
batch begins at the same frame however the work is shared). Each segment is its own H.264 stream
(it begins with an IDR frame and refers to nothing outside itself), encoded with a fixed x264
thread count, so a segment's bytes depend only on its frames. The join copies the segments'
packets into one stream (no re-encoding) and muxes the audio, cut to exactly ``frames / fps``,
as it goes. Hence one process, or N processes each encoding a share of the segments, give the
same file (:mod:`.distributed`).

Memory is one batch of frames plus one packet at a time; the disk holds the segments until the
join. Segments are written atomically into ``<out>.segments/<key>/`` (``key``: a digest of
everything that decides the pixels), so a cancelled or killed render resumes at the first missing
segment; the video is written under a temporary name and renamed at the end, so a cancel or a
failure never leaves a half file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable

import torch

from ..errors import ParameterError
from .distributed import Ranks
from . import render
from .render import DEFAULT_BATCH, VideoWriter, check_size, frame_rate_fraction, iter_frames, resize
from .timeline import Timeline
from .trajectory import Trajectory

DEFAULT_SEGMENT_SECONDS = 10.0
ENCODER_THREADS = 4  # fixed: x264's choices (and so the segments' bytes) depend on its thread count


def segment_length(fps: float, batch: int, seconds: float = DEFAULT_SEGMENT_SECONDS) -> int:
    """Frames per segment: about ``seconds``, a whole number of batches."""
    if not math.isfinite(float(seconds)) or seconds <= 0:
        raise ParameterError(f"segment_seconds: expected a number of seconds > 0, got {seconds!r}",
                             parameter="segment_seconds")
    return max(1, int(round(seconds * fps / batch))) * int(batch)


def plan_segments(frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """``(first frame, frame count)`` of each segment."""
    return [(first, min(segment_frames, frames - first)) for first in range(0, frames, segment_frames)]


def render_key(trajectory: Trajectory, generator_name: str, size, batch: int, crf: int, segment_frames: int,
               noise_mode: str) -> str:
    """Digest of everything that decides a segment's bytes."""
    t = trajectory
    digest = hashlib.sha256(json.dumps({
        "generator": generator_name, "size": size, "batch": batch, "crf": crf, "segment_frames": segment_frames,
        "noise": noise_mode, "threads": ENCODER_THREADS, "times": [round(v, 9) for v in t.keyframes.times],
        "reactivity": t.reactivity, "band_layers": t.band_layers, "rotation": t.rotation_degrees,
        "translation": t.translation, "beat_weight": t.beat_weight}, sort_keys=True).encode())
    digest.update(t.features.to_json().encode())
    for tensor in (t.keyframes.codes, t.keyframes.source):
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_segment(path: Path, generator, trajectory: Trajectory, first: int, count: int, *, size: int | None,
                   batch: int, crf: int, noise_mode: str, run, on_batch: Callable[[int, torch.Tensor], None]) -> None:
    """Frames ``first .. first+count-1`` as a video-only .mp4 at ``path`` (written atomically)."""
    from ..fileio import atomic_path

    segment_timeline = trajectory.timeline  # only its fps is used for a video without audio
    with atomic_path(path) as tmp:
        writer = None
        try:
            for _, images in iter_frames(generator, trajectory, offset=first, count=count, batch_size=batch,
                                         noise_mode=noise_mode, should_cancel=run.cancel_requested):
                images = resize(images, size)
                if writer is None:
                    writer = VideoWriter(tmp, segment_timeline, images.shape[-1], images.shape[-2], crf=crf,
                                         threads=ENCODER_THREADS)
                writer.write(render.to_uint8(images))
                on_batch(images.shape[0], images)
        finally:
            if writer is not None:
                writer.close()


def _audio_source(timeline, audio_path: Path | None, waveform: tuple[torch.Tensor, int] | None,
                  waveform_start: float = 0.0) -> dict:
    """VideoWriter's audio arguments: the track from ``timeline.start``, from a file or a ``([C, T], rate)``
    whose first sample is at ``waveform_start`` seconds of the track."""
    from .stream import iter_samples, iter_tensor, probe

    if audio_path is not None:
        track = probe(audio_path)
        return dict(audio=iter_samples(audio_path, start=timeline.start, seek=True), sample_rate=track.sample_rate,
                    channels=track.channels)
    if waveform is not None:
        samples, rate = waveform
        samples = samples[0] if samples.dim() == 3 else samples
        first = max(0, int(round((timeline.start - waveform_start) * int(rate))))
        return dict(audio=iter_tensor(samples[:, first:].float()), sample_rate=int(rate), channels=samples.shape[0])
    return {}


def join_segments(paths: list[Path], out: Path, timeline, audio_path: Path | None = None,
                  waveform: tuple[torch.Tensor, int] | None = None, waveform_start: float = 0.0) -> None:
    """Segments' packets into one .mp4 at ``out`` (no re-encoding), with the track's audio (a file, or a
    ``([C, T], rate)`` waveform) from ``timeline.start`` cut to ``timeline.frames / fps`` (AAC,
    interleaved as the frames go in)."""
    import av

    with av.open(str(paths[0])) as first:
        template = first.streams.video[0]
        writer = VideoWriter(out, timeline, 0, 0, video_template=template,
                             **_audio_source(timeline, audio_path, waveform, waveform_start))
    try:
        offset = 0  # frames before this segment
        for path in paths:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                tick = Fraction(1) / frame_rate_fraction(timeline.fps) / stream.time_base
                if tick.denominator != 1:
                    raise ParameterError(f"fps: {timeline.fps} frames per second do not fit the segments' time base "
                                         f"{stream.time_base}", parameter="fps")
                shift = offset * int(tick)
                frames = 0
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.pts += shift
                    packet.dts += shift
                    writer.write_packets([packet], 1)
                    frames += 1
                offset += frames
    finally:
        writer.close()
    if offset != timeline.frames:
        raise ParameterError(f"segments: joined {offset} frames, expected {timeline.frames}", parameter="segments")


def render_to_file(generator, trajectory: Trajectory, out: str | Path, *, audio_path: str | Path | None = None,
                   audio_waveform: tuple[torch.Tensor, int] | None = None,
                   size: int | None = None, batch_size: int = DEFAULT_BATCH, crf: int = 18,
                   segment_seconds: float = DEFAULT_SEGMENT_SECONDS, noise_mode: str = "const", run=None,
                   ranks: Ranks | None = None, segments_dir: str | Path | None = None,
                   private_segments: bool = False, frame_offset: int = 0, frame_count: int | None = None,
                   audio_waveform_start: float = 0.0) -> Path | None:
    """Render every frame of ``trajectory`` into the .mp4 ``out`` with the track muxed in; returns ``out``
    (on rank 0; other ranks return None after their share). See the module docstring.

    The audio: the file ``audio_path`` or an in-memory ``audio_waveform=([C, T], sample_rate)`` (both
    the whole track; the timeline's start and length pick the span), or none.
    ``run``: progress (frames done of this rank's share, previews when the host wants them) and cancel.
    ``ranks``: the processes sharing the work (default: this one). ``private_segments``: each rank
    keeps its segments in a folder of its own and sends rank 0 what it needs (several nodes
    without a shared file system). ``frame_offset`` / ``frame_count``: only that chunk of the trajectory
    (a video of its own, its audio from the chunk's first frame); ``audio_waveform_start``: the track
    time of ``audio_waveform``'s first sample (a waveform already cut to the chunk starts there).
    """
    from ..fileio import atomic_path
    from ..jobs.run import QuietRun

    run = run or QuietRun("cpu")
    ranks = ranks or Ranks()
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ParameterError(f"out: expected a .mp4 file name, got {out}", parameter="out")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ParameterError(f"batch_size: expected an integer >= 1, got {batch_size!r}", parameter="batch_size")
    if isinstance(crf, bool) or int(crf) != crf or not 0 <= crf <= 51:
        raise ParameterError(f"crf: expected an integer in 0..51, got {crf!r}", parameter="crf")
    size = check_size(size, getattr(generator, "resolution", 0))
    whole = trajectory.timeline
    frame_offset, frame_count = whole.check_range(frame_offset, frame_count)
    # the chunk as a video of its own: its frame 0 is the trajectory's frame_offset
    timeline = Timeline(fps=whole.fps, start=whole.time_of(frame_offset), frames=frame_count)
    segment_frames = segment_length(timeline.fps, int(batch_size), segment_seconds)
    segments = [(frame_offset + first, count) for first, count in plan_segments(timeline.frames, segment_frames)]
    key = render_key(trajectory, str(getattr(generator, "name", "")), size, int(batch_size), int(crf),
                     segment_frames, noise_mode)
    if (frame_offset, frame_count) != (0, whole.frames):
        key = hashlib.sha256(f"{key}:{frame_offset}:{frame_count}".encode()).hexdigest()[:16]
    base = Path(segments_dir) if segments_dir is not None else Path(str(out) + ".segments")
    shared_folder = base / key
    folder = shared_folder / f"rank{ranks.rank}" if private_segments else shared_folder
    folder.mkdir(parents=True, exist_ok=True)

    def segment_path(index: int, where: Path = folder) -> Path:
        return where / f"segment_{index:05d}.mp4"

    mine = ranks.share(len(segments))
    total = sum(segments[i][1] for i in mine)
    done = 0
    previews = run.wants_previews()

    def on_batch(frames: int, images: torch.Tensor) -> None:
        nonlocal done
        done += frames
        run.progress(done, total, preview=images[-1:] if previews else None)

    with run.cpu_memory():
        for index in mine:
            first, count = segments[index]
            path = segment_path(index)
            if path.is_file():  # done by an earlier, interrupted render of the same frames
                done += count
                run.progress(done, total)
                continue
            run.check_cancel()
            encode_segment(path, generator, trajectory, first, count, size=size, batch=int(batch_size), crf=int(crf),
                           noise_mode=noise_mode, run=run, on_batch=on_batch)
    ranks.barrier()
    paths = [segment_path(i, shared_folder / "rank0" if private_segments else shared_folder)
             for i in range(len(segments))]
    _collect_segments(ranks, paths, len(segments), private_segments, segment_path)
    if not ranks.is_main:
        ranks.barrier()  # rank 0 has joined them
        if private_segments:
            shutil.rmtree(folder, ignore_errors=True)
        return None
    try:
        run.status(f"joining {len(segments)} segments into {out.name}")
        with atomic_path(out) as tmp:
            join_segments(paths, tmp, timeline, None if audio_path is None else Path(audio_path), audio_waveform,
                          float(audio_waveform_start))
        shutil.rmtree(shared_folder, ignore_errors=True)
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()
    finally:
        ranks.barrier()
    return out


def _collect_segments(ranks: Ranks, paths: list[Path], count: int, private: bool, segment_path) -> None:
    """Rank 0 gets the segments it cannot see from the ranks that encoded them (no shared file system)."""
    if not ranks.enabled:
        return
    missing = ranks.broadcast([i for i, p in enumerate(paths) if not p.is_file()] if ranks.is_main else None)
    if not missing:
        return
    owner = {}
    for r in range(ranks.world_size):
        for i in Ranks(rank=r, world_size=ranks.world_size).share(count):
            owner[i] = r
    for i in missing:  # one segment at a time: memory stays at one segment's bytes
        if ranks.rank == owner[i]:
            ranks.send_file(segment_path(i), dst=0)
        elif ranks.is_main:
            ranks.receive_file(paths[i], src=owner[i])
