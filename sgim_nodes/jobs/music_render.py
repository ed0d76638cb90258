"""Music videos rendered straight to files: one track (keyframes on the clock, the beat or the bar), a
folder of tracks, and either one shared by the processes ``torchrun`` starts.

    run_music_render(request, run, ranks)   one track -> one .mp4 (rank 0 returns the path)
    run_music_folder(request, run, ranks)   every track of a folder -> one .mp4 each, and a summary

Pipeline per track: features -> (beats) -> keyframe times -> keyframe targets -> keyframe codes ->
trajectory -> :func:`sgim_nodes.animate.segments.render_to_file`. With several processes the
keyframe chains (``chain_length``: independent chains) and the video's segments are shared out; the
result is the same file as with one process and the same options.

Resuming: keyframe codes are cached (``<out>.keyframes/``) and finished segments kept
(``<out>.segments/``) until the video is joined and renamed into place; in a folder, a track whose
video exists is skipped (videos only ever appear complete), so a killed folder render continues
where it stopped. A track that fails is reported in the summary and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..animate import defaults
from ..errors import Cancelled, ParameterError, SGIMError
from .run import QuietRun, Run

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma")
SUMMARY_NAME = "summary.json"
MAX_FOLDER_ENTRIES = 10_000  # entries looked at in a folder of songs (an album has tens)
MAX_TRACKS = 1_000  # tracks in one folder render


@dataclass
class MusicRenderRequest:
    """One music video (the same fields serve every track of a folder; ``audio``/``out`` are then set per track)."""

    audio: Path | None
    out: Path | None
    generator: Path
    clip: Path
    encoder: Path
    fps: float = 24.0
    start: float | None = None
    end: float | None = None
    size: int | None = None
    clip_model: str | None = None
    prompts: str = ""
    text_weight: float = 0.3
    keyframe_seconds: float = defaults.DEFAULT_KEYFRAME_SECONDS
    keyframes: str = ""  # 'beats:N', 'bars:N' or 'seconds:N'; empty: every keyframe_seconds
    bpm: float | None = None  # manual tempo (beats/bars keyframes)
    tempo_correction: str = "none"  # none, double, half
    beats_per_bar: int = 4
    snap_to_onsets: bool = False
    chain_length: int = 0  # restart the keyframe chain every this many keyframes (0: one chain)
    steps: int = defaults.DEFAULT_STEPS
    keyframe_steps: int = defaults.DEFAULT_KEYFRAME_STEPS
    lr: float = 0.1
    lambda_sim: float = 0.002
    truncation: float = 0.7
    mask: str | None = None
    source_latent: Path | None = None
    source_ws: object = None  # a [1, num_ws, w_dim] code in memory (the graph's), before source_latent
    seed: int = 0
    reactivity: float = defaults.DEFAULT_REACTIVITY
    band_layers: bool = True
    beat_weight: float = 0.0  # share of the reaction that follows beat pulses
    smoothing: float = defaults.DEFAULT_SMOOTHING
    rotation_degrees: float = defaults.DEFAULT_ROTATION_DEGREES
    translation: float = defaults.DEFAULT_TRANSLATION
    batch: int = defaults.DEFAULT_BATCH
    crf: int = 18
    segment_seconds: float = 10.0
    cache_dir: Path | None = None  # keyframe codes (default: <out>.keyframes)
    private_segments: bool = False  # ranks without a shared file system send rank 0 their segments
    device: str = "auto"
    follow: str = "optimise"  # "instant": keyframes every follow_seconds from instant edits, no optimisation
    follow_seconds: float = 0.25
    alpha: float | None = None
    beta: float | None = None
    analysis_cache: Path | None = None


@dataclass
class MusicRenderResult:
    path: Path | None  # None on ranks other than 0
    frames: int
    fps: float
    duration: float
    keyframe_times: list[float]
    tempo: float | None = None
    beat_times: list[float] = field(default_factory=list)
    start: float = 0.0
    seconds: float = 0.0

    def describe(self) -> str:
        return (f"{self.frames} frames at {self.fps:g} fps ({self.duration:.3f} s from {self.start:g} s), "
                f"{len(self.keyframe_times)} keyframes")


def check_request(request: MusicRenderRequest, *, per_track: bool = True) -> None:
    """The options that need no file or model, checked before any work."""
    from ..animate.beats import check_bpm, check_tempo_correction, parse_keyframe_spec
    from ..animate.segments import segment_length
    from ..animate.timeline import check_fps
    from ..options import MUSIC_RENDER_FIELDS, check_fields

    check_fields(request, MUSIC_RENDER_FIELDS)  # the bounds the command line and the nodes share
    check_fps(request.fps)
    unit, _ = parse_keyframe_spec(request.keyframes) if request.keyframes else ("seconds", None)
    check_bpm(request.bpm)
    check_tempo_correction(request.tempo_correction)
    if unit != "seconds" and request.snap_to_onsets:
        raise ParameterError("snap_to_onsets: keyframes on beats or bars are on onsets already; use seconds:N",
                             parameter="snap_to_onsets")
    for name in ("chain_length", "beats_per_bar", "batch"):
        value = getattr(request, name)
        low = 0 if name == "chain_length" else 1
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}", parameter=name)
    if not 0 <= float(request.beat_weight) <= 1:
        raise ParameterError(f"beat_weight: expected a number in [0, 1], got {request.beat_weight!r}",
                             parameter="beat_weight")
    segment_length(request.fps, int(request.batch), request.segment_seconds)
    if per_track:
        if request.out is None or Path(request.out).suffix.lower() != ".mp4":
            raise ParameterError(f"out: expected a .mp4 file name, got {request.out}", parameter="out")
        from ..fileio import check_output_file

        check_output_file(request.out, "out")


@dataclass
class Models:
    generator: object
    clip: object
    encoder: object


def load_models(request: MusicRenderRequest, run: Run) -> Models:
    from ..audio import check_compatible, load_audio_encoder
    from ..clip import load_clip
    from ..stylegan import load_generator

    run.status(f"loading {Path(request.generator).name}, {Path(request.clip).name}, {Path(request.encoder).name}")
    generator = load_generator(request.generator, device=run.device)
    clip = load_clip(request.clip, model_name=request.clip_model, device=run.device)
    encoder = load_audio_encoder(request.encoder, device=run.device)
    check_compatible(encoder, clip)
    return Models(generator, clip, encoder)


def render_track(request: MusicRenderRequest, models: Models, run: Run, ranks=None) -> MusicRenderResult:
    """One track into ``request.out`` with already loaded models (see the module docstring)."""
    from ..animate.distributed import Ranks
    from ..animate.features import features_of_file
    from ..animate.keyframes import parse_prompt_schedule
    from ..animate.render import check_size
    from ..animate.segments import render_to_file
    from ..animate.timeline import make_timeline
    from ..latents import check_wplus_fits, load_wplus
    from ..optimize.rules import freedom_mask, parse_freedom
    from .edit import source_codes
    from .music_video import KeyframesRequest, TrackAudio, TrajectoryRequest, plan_trajectory, run_keyframes

    check_request(request)
    ranks = ranks or Ranks(device=run.device)
    started = time.perf_counter()
    generator = models.generator
    parse_prompt_schedule(request.prompts)  # a bad schedule stops before any analysis
    size = check_size(request.size, generator.resolution)
    run.status(f"analysing {Path(request.audio).name}")
    track = TrackAudio.of_file(request.audio)
    timeline = make_timeline(track.seconds, request.fps, request.start, request.end)
    features = features_of_file(request.audio, timeline, request.smoothing)
    if request.source_ws is not None:
        source = check_wplus_fits(request.source_ws, generator, "source")[:1].to(run.device)
    elif request.source_latent is not None:
        ws, _, _ = load_wplus(request.source_latent)
        source = check_wplus_fits(ws, generator, "source_latent")[:1].to(run.device)
    else:
        source = source_codes(generator, "random", 1, request.seed, request.truncation)
    mask = None if request.mask is None else freedom_mask(parse_freedom(
        request.mask, int(generator.num_ws), "mask", getattr(generator, "ws_resolutions", None)))
    keyframes = run_keyframes(KeyframesRequest(
        generator, models.clip, models.encoder, features, track, source, keyframe_seconds=request.keyframe_seconds,
        snap_to_onsets=request.snap_to_onsets, steps=request.steps, keyframe_steps=request.keyframe_steps,
        lr=request.lr, lambda_sim=request.lambda_sim, layer_weights=mask, prompts=request.prompts,
        text_weight=request.text_weight, seed=request.seed,
        cache_dir=request.cache_dir or Path(str(request.out) + ".keyframes"), keyframes=request.keyframes,
        bpm=request.bpm, tempo_correction=request.tempo_correction, beats_per_bar=request.beats_per_bar,
        chain_length=request.chain_length, ranks=ranks, follow=request.follow,
        follow_seconds=request.follow_seconds, alpha=request.alpha, beta=request.beta,
        generator_file=str(request.generator), analysis_cache=request.analysis_cache), run)
    features, beats = keyframes.features, keyframes.beats
    if beats is None and request.beat_weight > 0:  # beat pulses on clock keyframes: track the beats for them
        from ..animate.beats import track_beats, with_beats

        beats = track_beats(features, bpm=request.bpm, tempo_correction=request.tempo_correction)
        features = with_beats(features, beats)
        run.status(f"tempo {beats.tempo:.1f} BPM, {len(beats.times)} beats")
    chunk = plan_trajectory(TrajectoryRequest(keyframes.keyframes, features, reactivity=request.reactivity,
                                              band_layers=request.band_layers,
                                              rotation_degrees=request.rotation_degrees,
                                              translation=request.translation, beat_weight=request.beat_weight))
    run.status(f"rendering {timeline.frames} frames")
    path = render_to_file(generator, chunk.trajectory, request.out, audio_path=request.audio, size=size,
                          batch_size=int(request.batch), crf=int(request.crf), segment_seconds=request.segment_seconds,
                          run=run, ranks=ranks, private_segments=request.private_segments)
    return MusicRenderResult(path=path, frames=timeline.frames, fps=timeline.fps, duration=timeline.duration,
                             keyframe_times=list(keyframes.times), tempo=None if beats is None else beats.tempo,
                             beat_times=[] if beats is None else list(beats.times),
                             start=timeline.start, seconds=time.perf_counter() - started)


def run_music_render(request: MusicRenderRequest, run: Run | None = None, ranks=None) -> MusicRenderResult:
    """Load the models and render one track (the job behind ``animate`` with a file and torchrun)."""
    run = run or QuietRun("cpu")
    check_request(request)
    return render_track(request, load_models(request, run), run, ranks)


# ------------------------------------------------------------------------------------------ folders

@dataclass
class MusicFolderRequest:
    audio_dir: Path
    out_dir: Path
    options: MusicRenderRequest  # every track's settings (its audio/out are ignored)
    keep_going: bool = True  # False: stop at the first failing track
    tracks: list[Path] | None = None  # these files instead of the audio files in audio_dir


@dataclass
class TrackOutcome:
    track: str
    video: str
    status: str  # rendered, skipped (its video existed), failed
    message: str = ""
    tempo: float | None = None
    frames: int = 0
    seconds: float = 0.0


@dataclass
class MusicFolderSummary:
    audio_dir: str
    out_dir: str
    tracks: list[TrackOutcome]

    def count(self, status: str) -> int:
        return sum(1 for t in self.tracks if t.status == status)

    @property
    def failed(self) -> list[TrackOutcome]:
        return [t for t in self.tracks if t.status == "failed"]

    def describe(self) -> str:
        lines = [f"{len(self.tracks)} tracks: {self.count('rendered')} rendered, {self.count('skipped')} skipped "
                 f"(video already there), {self.count('failed')} failed"]
        for t in self.tracks:
            detail = {"rendered": f"{t.frames} frames" + (f", tempo {t.tempo:.1f} BPM" if t.tempo else "")
                      + f", {t.seconds:.1f} s", "skipped": "already rendered", "failed": t.message}[t.status]
            lines.append(f"  {t.status:8s} {t.track} -> {t.video}: {detail}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"audio_dir": self.audio_dir, "out_dir": self.out_dir,
                           "rendered": self.count("rendered"), "skipped": self.count("skipped"),
                           "failed": self.count("failed"), "tracks": [dataclasses.asdict(t) for t in self.tracks]},
                          indent=1)


def list_tracks(folder: Path) -> list[Path]:
    """Audio files directly in ``folder`` (by extension), sorted by name; a folder of more than
    MAX_FOLDER_ENTRIES entries or MAX_TRACKS tracks is refused before anything is rendered."""
    import itertools

    folder = Path(folder)
    if not folder.is_dir():
        raise ParameterError(f"audio: {folder} is not a folder", parameter="audio")
    entries = list(itertools.islice(folder.iterdir(), MAX_FOLDER_ENTRIES + 1))
    if len(entries) > MAX_FOLDER_ENTRIES:
        raise ParameterError(f"audio: {folder} holds more than {MAX_FOLDER_ENTRIES} entries; give a folder of "
                             "songs (an album), not a whole library", parameter="audio")
    tracks = sorted(p for p in entries if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                    and not p.name.startswith("."))
    if not tracks:
        raise ParameterError(f"audio: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {folder}", parameter="audio")
    return check_track_count(tracks)


def check_track_count(tracks: list[Path]) -> list[Path]:
    if len(tracks) > MAX_TRACKS:
        raise ParameterError(f"audio: {len(tracks)} tracks; at most {MAX_TRACKS} in one run (split the folder)",
                             parameter="audio")
    return tracks


def video_names(tracks: list[Path]) -> list[str]:
    """``song.mp4`` per track; tracks sharing a stem (``a.wav``, ``a.mp3``) keep their extension in the name."""
    stems = [t.stem for t in tracks]
    return [f"{t.stem}.mp4" if stems.count(t.stem) == 1 else f"{t.stem}{t.suffix.replace('.', '_')}.mp4"
            for t in tracks]


def run_music_folder(request: MusicFolderRequest, run: Run | None = None, ranks=None,
                     models: Models | None = None) -> MusicFolderSummary:
    """One video per track of ``request.audio_dir`` into ``request.out_dir`` (see the module docstring);
    ``models``: already loaded ones (a graph's), else the options' files are loaded once for all tracks.

    The summary is written to ``out_dir/summary.json`` after every track (so a killed run leaves one)."""
    from ..animate.distributed import Ranks
    from ..fileio import atomic_path

    run = run or QuietRun("cpu")
    ranks = ranks or Ranks(device=run.device)
    check_request(request.options, per_track=False)
    tracks = (check_track_count([Path(t) for t in request.tracks]) if request.tracks is not None
              else list_tracks(request.audio_dir))
    out_dir = Path(request.out_dir)
    if out_dir.suffix.lower() == ".mp4" or (out_dir.exists() and not out_dir.is_dir()):
        raise ParameterError(f"out: {out_dir} is a file; expected a folder for the videos", parameter="out")
    out_dir.mkdir(parents=True, exist_ok=True)
    models = models or load_models(request.options, run)
    summary = MusicFolderSummary(str(request.audio_dir), str(out_dir), [])

    def save_summary():
        if ranks.is_main:
            with atomic_path(out_dir / SUMMARY_NAME) as tmp:
                tmp.write_text(summary.to_json())

    for index, (track, name) in enumerate(zip(tracks, video_names(tracks))):
        video = out_dir / name
        outcome = TrackOutcome(track=track.name, video=name, status="skipped")
        if video.is_file():
            summary.tracks.append(outcome)
            save_summary()
            continue
        run.status(f"[{index + 1}/{len(tracks)}] {track.name}")
        options = dataclasses.replace(request.options, audio=track, out=video,
                                      cache_dir=out_dir / ".keyframes" / Path(name).stem)
        try:
            result = render_track(options, models, run, ranks)
            outcome.status, outcome.tempo, outcome.frames = "rendered", result.tempo, result.frames
            outcome.seconds = round(result.seconds, 3)
        except (Cancelled, KeyboardInterrupt):
            save_summary()
            raise
        except SGIMError as exc:
            outcome.status, outcome.message = "failed", str(exc)
        except Exception as exc:  # a bug or a decoder crash on one track must not lose the album
            outcome.status, outcome.message = "failed", f"{type(exc).__name__}: {exc}"
        summary.tracks.append(outcome)
        save_summary()
        if outcome.status == "failed" and not request.keep_going:
            break
    return summary
