"""The music-video jobs behind the graph's file-backed nodes (comfy_nodes/music_render.py).

    run_chunk_render(request, run)   a Music Trajectory (or a chunk of it) straight into a new .mp4
    run_folder_render(request, run)  a folder of songs (or a list of files) with the graph's models
    tempo_and_beats(features, ...)   tempo, beat times and a plot with the beats marked
    resolve_tracks(spec, base)       a folder of songs, or a list of files, under the input folder

Nothing here holds more than one batch of frames: the file is written segment by segment by
:func:`sgim_nodes.animate.segments.render_to_file` (a temporary name until it is complete).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..animate import defaults
from ..errors import ParameterError
from .music_render import AUDIO_EXTENSIONS, check_track_count
from .run import Run

SEGMENT_SECONDS = 10.0  # a cancelled render loses at most this much work
SEGMENTS_FOLDER = ".sgim_segments"  # finished segments of unfinished renders, beside the videos
_COUNTER = re.compile(r"_(\d{5,})\.mp4$")


def inside(base: Path, relative: str, parameter: str) -> Path:
    """``base / relative``, refusing absolute paths and ``..`` that leave ``base``."""
    text = str(relative).strip()
    if not text or os.path.isabs(text) or text.startswith("~"):
        raise ParameterError(f"{parameter}: expected a path relative to {base.name}/, got {relative!r}",
                             parameter=parameter)
    base = Path(os.path.abspath(base))
    path = Path(os.path.abspath(base / os.path.normpath(text)))
    if path != base and base not in path.parents:
        raise ParameterError(f"{parameter}: {relative!r} leaves the {base.name} folder", parameter=parameter)
    return path


def next_video_path(output_dir: str | os.PathLike, prefix: str) -> Path:
    """``<output>/<folder>/<name>_NNNNN.mp4`` for a ``folder/name`` prefix: the next counter after the
    highest already there (a file or an unfinished render's temporary), so nothing is overwritten."""
    from ..limits import check_file_name

    target = inside(Path(output_dir), prefix, "filename_prefix")
    name = target.name
    if not name or str(prefix).strip().endswith(("/", os.sep)) or target == Path(os.path.abspath(output_dir)):
        raise ParameterError(f"filename_prefix: expected 'folder/name' or 'name', got {prefix!r}",
                             parameter="filename_prefix")
    check_file_name("filename_prefix", f".{name}_00000.mp4.xxxxxxxx.tmp")
    folder = target.parent
    taken = [0]
    if folder.is_dir():
        for entry in os.scandir(folder):
            stem = entry.name.lstrip(".")
            if stem.startswith(name + "_"):
                match = _COUNTER.search(stem.split(".mp4")[0] + ".mp4")
                if match and stem[:match.start()] == name:
                    taken.append(int(match.group(1)))
    return folder / f"{name}_{max(taken) + 1:05d}.mp4"


@dataclass
class ChunkRenderRequest:
    generator: object
    chunk: object  # music_video.TrajectoryChunk
    audio: dict | None  # core AUDIO cut to the chunk (Music Trajectory's), or None: a silent video
    out: Path
    batch_size: int = defaults.DEFAULT_BATCH
    crf: int = 18
    size: int | None = None
    segment_seconds: float | None = None  # None: SEGMENT_SECONDS
    codes: torch.Tensor | None = None  # the codes handed on with the chunk: they must be the trajectory's


@dataclass
class ChunkRenderResult:
    path: Path
    frames: int
    fps: float
    duration: float


def check_codes_follow(chunk, codes: torch.Tensor | None) -> None:
    """The file is rendered from the trajectory (a batch at a time), so codes changed by another node
    since Music Trajectory would silently be ignored: refuse them (Decode Frames takes any codes)."""
    if codes is None:
        return
    if codes.shape[0] != chunk.count:
        raise ParameterError(f"codes: {codes.shape[0]} codes for a chunk of {chunk.count} frames", parameter="codes")
    for frame in sorted({0, chunk.count // 2, chunk.count - 1}):
        expected = chunk.trajectory.codes(chunk.offset + frame, 1)[0].to(codes.device, codes.dtype)
        if not torch.allclose(codes[frame], expected, atol=1e-5, rtol=1e-5):
            raise ParameterError("codes: they were changed after Music Trajectory; this node renders the "
                                 "trajectory itself (use Decode Frames + Create Video for changed codes)",
                                 parameter="codes")


def run_chunk_render(request: ChunkRenderRequest, run: Run) -> ChunkRenderResult:
    """The chunk's frames and audio into ``request.out`` (a new file; resumable from finished segments)."""
    from ..animate.segments import render_to_file
    from .music_video import check_audio

    chunk = request.chunk
    check_codes_follow(chunk, request.codes)
    timeline = chunk.trajectory.timeline
    waveform = None
    if request.audio is not None:
        samples, rate = check_audio(request.audio)
        waveform = (samples[0], rate)
    out = Path(request.out)
    if out.exists():
        raise ParameterError(f"filename_prefix: {out.name} exists already; it is never overwritten",
                             parameter="filename_prefix")
    path = render_to_file(request.generator, chunk.trajectory, out, audio_waveform=waveform,
                          audio_waveform_start=timeline.time_of(chunk.offset), size=request.size or None,
                          batch_size=request.batch_size, crf=request.crf,
                          segment_seconds=request.segment_seconds or SEGMENT_SECONDS, run=run,
                          segments_dir=out.parent / SEGMENTS_FOLDER, frame_offset=chunk.offset, frame_count=chunk.count)
    return ChunkRenderResult(path, chunk.count, timeline.fps, chunk.count / timeline.fps)


@dataclass
class BeatsReport:
    tempo: float
    times: list[float]  # seconds from the features' start
    features: object  # the AudioFeatures carrying the beats (plot, JSON, beat pulses)

    def to_json(self) -> str:
        return json.dumps({"tempo": round(self.tempo, 3), "beat_count": len(self.times),
                           "fps": self.features.timeline.fps, "start": self.features.timeline.start,
                           "beat_times": [round(t, 6) for t in self.times]})


def tempo_and_beats(features, bpm: float | None = None, tempo_correction: str = "none") -> BeatsReport:
    """Tempo and beats of ``features`` (``bpm`` 0/None: detect; ``tempo_correction``: none/double/half,
    as ``animate --bpm/--tempo-correction``)."""
    from ..animate.beats import track_beats, with_beats

    beats = track_beats(features, bpm=bpm or None, tempo_correction=tempo_correction)
    return BeatsReport(beats.tempo, list(beats.times), with_beats(features, beats))


def resolve_tracks(spec: str, base: str | os.PathLike) -> tuple[Path, list[Path] | None]:
    """``(folder, None)`` for a folder under ``base`` (its audio files are the tracks), or
    ``(base, files)`` for one file per line (each under ``base``, checked to exist)."""
    lines = [line.strip() for line in str(spec).splitlines() if line.strip()]
    if not lines:
        raise ParameterError("folder: give a folder of songs (relative to the input folder) or one file per line",
                             parameter="folder")
    base = Path(base)
    if len(lines) == 1 and inside(base, lines[0], "folder").is_dir():
        return inside(base, lines[0], "folder"), None
    check_track_count([Path(line) for line in lines])
    files = []
    for line in lines:
        path = inside(base, line, "folder")
        if not path.is_file():
            raise ParameterError(f"folder: {line!r} is neither a folder nor a file under {base.name}/",
                                 parameter="folder")
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            raise ParameterError(f"folder: {line!r} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})",
                                 parameter="folder")
        files.append(path)
    return base, files


@dataclass
class FolderRequest:
    """Music Videos from a Folder: its models, the tracks (``folder``, see :func:`resolve_tracks`), where the
    videos go (``output_folder`` under ``output_dir``) and its other inputs by their node names."""

    models: object  # music_render.Models
    folder: str
    input_dir: str | os.PathLike
    output_dir: str | os.PathLike
    output_folder: str
    options: dict
    source_ws: torch.Tensor | None = None


NODE_OPTION_NAMES = {"batch_size": "batch", "prompt_schedule": "prompts"}  # node input -> request field


def run_folder_render(request: FolderRequest, run: Run):
    """``(summary, videos written or already there, relative to output_dir)``; checked before any work."""
    from .music_render import MusicFolderRequest, MusicRenderRequest, run_music_folder

    options = {NODE_OPTION_NAMES.get(k, k): v for k, v in request.options.items()}
    options.update(bpm=options.get("bpm") or None, size=options.get("size") or None,
                   keyframes=str(options.get("keyframes", "")).strip())
    audio_dir, tracks = resolve_tracks(request.folder, request.input_dir)
    out_dir = inside(Path(request.output_dir), request.output_folder, "out")
    generator = request.models.generator
    settings = MusicRenderRequest(None, None, Path(str(getattr(generator, "name", "generator"))), Path("clip"),
                                  Path("encoder"), source_ws=request.source_ws, **options)
    summary = run_music_folder(MusicFolderRequest(audio_dir, out_dir, settings, tracks=tracks), run,
                               models=request.models)
    videos = [os.path.relpath(out_dir / t.video, request.output_dir) for t in summary.tracks if t.status != "failed"]
    return summary, videos
