"""The music-video job: keyframes, trajectory and frames (Music Keyframes / Trajectory / Decode Frames, ``animate``).

    track --> per-frame features --> keyframe targets (sound [+ prompts]) --> keyframe W+ codes
          --> smooth audio-reactive trajectory --> frames in batches

The nodes run the three stages as three nodes over a track in memory; the command line
(:func:`run_music_video`) runs them over a file and streams the frames into an .mp4 with the track.
Both go through :func:`run_keyframes`, :func:`plan_trajectory` and :func:`iter_video_frames`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..animate import defaults
from ..errors import ParameterError
from .run import Run


@dataclass(frozen=True)
class TrackAudio:
    """Where keyframe windows are read from: ``read(start, seconds)`` -> ``[channels, n]`` at ``sample_rate``."""

    read: Callable[[float, float], torch.Tensor]
    sample_rate: int
    seconds: float
    channels: int = 0

    @classmethod
    def of_waveform(cls, waveform: torch.Tensor, sample_rate: int) -> "TrackAudio":
        """A track in memory, ``[channels, T]`` (the first clip of a ``[B, C, T]`` batch)."""
        waveform = waveform[0] if waveform.dim() == 3 else waveform
        rate = int(sample_rate)

        def read(start: float, seconds: float) -> torch.Tensor:  # zero-padded past the end, as a file's read is
            first, need = max(0, int(round(start * rate))), int(round(seconds * rate))
            piece = waveform[:, first:first + need]
            return torch.nn.functional.pad(piece, (0, need - piece.shape[-1])) if piece.shape[-1] < need else piece

        return cls(read, rate, waveform.shape[-1] / rate, waveform.shape[0])

    @classmethod
    def of_file(cls, path) -> "TrackAudio":
        from ..animate.stream import probe, read_segment

        track = probe(path)
        return cls(lambda start, seconds: read_segment(path, start, seconds)[0], track.sample_rate, track.seconds,
                   track.channels)


def check_audio(audio) -> tuple[torch.Tensor, int]:
    """A core AUDIO ``{'waveform': [B, C, T], 'sample_rate'}`` checked: ``(waveform [B, C, T], rate)``."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ParameterError("audio: expected core AUDIO {'waveform': [B, C, T], 'sample_rate': int}",
                             parameter="audio")
    waveform = audio["waveform"]
    if waveform.dim() == 2:
        waveform = waveform[None]
    if waveform.dim() != 3 or waveform.shape[-1] == 0:
        raise ParameterError(f"audio: expected a waveform [B, C, T] with samples, got shape {list(waveform.shape)}",
                             parameter="audio")
    return waveform, int(audio["sample_rate"])


@dataclass
class KeyframesRequest:
    """Keyframe codes of a track: models, its features and audio, the source code ``[1, num_ws, w_dim]``."""

    generator: object
    clip: object
    encoder: object
    features: object  # animate.AudioFeatures (carries the timeline and the onsets)
    audio: TrackAudio
    source_ws: torch.Tensor
    keyframe_seconds: float = defaults.DEFAULT_KEYFRAME_SECONDS
    snap_to_onsets: bool = False
    steps: int = defaults.DEFAULT_STEPS
    keyframe_steps: int = defaults.DEFAULT_KEYFRAME_STEPS
    lr: float = 0.1
    lambda_sim: float = 0.002
    layer_weights: object = None  # LayerMask or None
    prompts: str = ""  # one prompt or a schedule '0: a calm sea | 12.5: a storm at sea'
    text_weight: float = 0.3
    seed: int = 0
    preview_every: int = 0
    cache_dir: Path | None = None  # one file per keyframe as soon as it is done (resumable)
    # follow="instant": no optimisation, a keyframe every follow_seconds from the instant directions
    # (sgim_nodes.instant; analysed once per generator and CLIP, cached)
    follow: str = "optimise"
    follow_seconds: float = 0.25
    follow_smoothing: float = 0.5
    alpha: float | None = None
    beta: float | None = None
    generator_file: str | None = None
    analysis_cache: Path | None = None


@dataclass
class KeyframesResult:
    keyframes: object  # animate.Keyframes
    times: list[float]
    labels: list[str]


def run_keyframes(request: KeyframesRequest, run: Run) -> KeyframesResult:
    from ..animate import KeyframeSettings, keyframe_targets, keyframe_times, optimize_keyframes, parse_prompt_schedule
    from ..audio import check_compatible, embed_audio

    generator, clip, encoder, features = request.generator, request.clip, request.encoder, request.features
    if request.follow not in FOLLOW_MODES:
        raise ParameterError(f"follow: expected one of {FOLLOW_MODES}, got {request.follow!r}", parameter="follow")
    if request.layer_weights is not None:
        request.layer_weights.check(generator.num_ws)
    check_compatible(encoder, clip)
    schedule = parse_prompt_schedule(request.prompts)
    timeline = features.timeline
    if request.follow == "instant":
        times = _follow_times(request, timeline)
    else:
        times = keyframe_times(timeline, request.keyframe_seconds, features.onset_times, request.snap_to_onsets)
    audio = request.audio
    targets, weights, labels = keyframe_targets(
        times, timeline, read_window=audio.read,
        embed_window=lambda piece: embed_audio(encoder, piece, audio.sample_rate, pool="first")[0],
        window_seconds=encoder.settings.window_seconds, track_seconds=audio.seconds,
        text_embed=lambda prompts: clip.encode_text(prompts), schedule=schedule, text_weight=request.text_weight)
    if request.follow == "instant":
        return _instant_keyframes(request, times, targets, weights, labels, run)
    settings = KeyframeSettings(steps=request.steps, keyframe_steps=request.keyframe_steps, lr=request.lr,
                                lambda_sim=request.lambda_sim, layer_weights=request.layer_weights, seed=request.seed)
    total = settings.steps + settings.keyframe_steps * (len(times) - 1)
    done = {"steps": 0}

    def on_step(k, info):
        run.check_cancel()
        done["steps"] += 1
        terms = {name: sum(v) / len(v) for name, v in info.per_sample.items()}
        run.progress(done["steps"], total, preview=info.preview, terms=terms,
                     text=f"keyframe {k + 1}/{len(times)}" if info.step == 1 else None)

    def on_keyframe(k, cached):
        if cached:
            done["steps"] += settings.steps if k == 0 else settings.keyframe_steps
            run.progress(done["steps"], total, text=f"keyframe {k + 1}/{len(times)} (cached)")

    device = next(iter(generator.parameters())).device
    with torch.inference_mode(False), torch.enable_grad(), run.cpu_memory():
        keyframes = optimize_keyframes(generator, clip, targets.clone(), request.source_ws[:1].clone().to(device),
                                       times, settings, target_weights=weights, cache_dir=request.cache_dir,
                                       callback=on_step, on_keyframe=on_keyframe,
                                       preview_every=request.preview_every, labels=labels)
    return KeyframesResult(keyframes, list(times), list(labels))


FOLLOW_MODES = ("optimise", "instant")


def _follow_times(request: KeyframesRequest, timeline) -> list[float]:
    """Evenly spaced keyframe times over the timeline for ``follow="instant"`` (0 = one per frame)."""
    from ..limits import check_float

    step = check_float("follow_seconds", request.follow_seconds, 0.0, 600.0, what="seconds between instant keyframes")
    if request.snap_to_onsets:
        raise ParameterError("snap_to_onsets: instant following has a keyframe every follow_seconds; there is "
                             "nothing to snap", parameter="snap_to_onsets")
    step = step or 1.0 / timeline.fps
    count = max(1, int(timeline.duration // step) + 1)
    return [k * step for k in range(count)]


def _instant_keyframes(request: KeyframesRequest, times, targets, weights, labels, run: Run) -> KeyframesResult:
    """Keyframes that follow their moments through instant edits (no optimisation), smoothed over time."""
    from ..instant import InstantEditor, cached_directions, instant_keyframes, reference_embedding
    from ..instant.edit import DEFAULT_ALPHA, DEFAULT_BETA, freedom_of_mask

    generator, clip = request.generator, request.clip
    directions, _ = cached_directions(generator, clip, generator_file=request.generator_file,
                                      cache=request.analysis_cache, run=run)
    editor = InstantEditor(generator, directions, layer_freedom=freedom_of_mask(request.layer_weights))
    source = request.source_ws[:1].detach().float().to(generator.device)
    reference = reference_embedding("source", generator=generator, clip=clip, source_ws=source)
    run.status(f"following {len(times)} moments with instant edits")
    keyframes = instant_keyframes(editor, source, reference, times, targets, target_weights=weights, labels=labels,
                                  alpha=DEFAULT_ALPHA if request.alpha is None else request.alpha,
                                  beta=DEFAULT_BETA if request.beta is None else request.beta,
                                  smoothing_seconds=request.follow_smoothing)
    run.progress(1, 1)
    return KeyframesResult(keyframes, list(times), list(labels))


@dataclass
class TrajectoryRequest:
    keyframes: object  # animate.Keyframes
    features: object  # animate.AudioFeatures
    reactivity: float = defaults.DEFAULT_REACTIVITY
    band_layers: bool = True
    rotation_degrees: float = defaults.DEFAULT_ROTATION_DEGREES
    translation: float = defaults.DEFAULT_TRANSLATION
    frame_offset: int = 0
    frame_count: int | None = None  # None or 0: up to the end


@dataclass
class TrajectoryChunk:
    trajectory: object  # animate.Trajectory
    offset: int
    count: int


def plan_trajectory(request: TrajectoryRequest) -> TrajectoryChunk:
    """The per-frame path through the keyframes and the chunk of frames to render (checked)."""
    from ..animate import Trajectory

    path = Trajectory(request.keyframes, request.features, reactivity=request.reactivity,
                      band_layers=request.band_layers, rotation_degrees=request.rotation_degrees,
                      translation=request.translation)
    offset, count = path.timeline.check_range(request.frame_offset, request.frame_count or None)
    return TrajectoryChunk(path, offset, count)


@dataclass
class FramesRequest:
    generator: object
    chunk: TrajectoryChunk
    batch_size: int = defaults.DEFAULT_BATCH
    size: int | None = None  # longer side in pixels (None / 0: the generator's resolution)
    codes: torch.Tensor | None = None  # the chunk's codes when computed (and perhaps changed) elsewhere


def iter_video_frames(request: FramesRequest, run: Run) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first frame, images [b, 3, H, W] in [-1, 1], scaled to ``size``)`` per batch; cancel before each."""
    from ..animate.render import check_size, iter_frames, resize

    generator, chunk = request.generator, request.chunk
    size = check_size(request.size, generator.resolution)
    if request.codes is not None and request.codes.shape[0] != chunk.count:
        raise ParameterError(f"codes: {request.codes.shape[0]} codes for a chunk of {chunk.count} frames",
                             parameter="codes")

    def cancelled() -> bool:
        run.check_cancel()
        return False

    with run.cpu_memory():
        for first, images in iter_frames(generator, chunk.trajectory, offset=chunk.offset, count=chunk.count,
                                         batch_size=request.batch_size, codes=request.codes,
                                         should_cancel=cancelled):
            run.progress(first - chunk.offset + images.shape[0], chunk.count, preview=images[-1:])
            yield first, resize(images, size)


# --- the command line's music video: a file in, an .mp4 out -----------------------------------

@dataclass
class AnimateRequest:
    """Everything one music video from files needs; the command line fills it, Python callers may build it."""

    audio: Path
    out: Path
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
    snap_to_onsets: bool = False
    steps: int = defaults.DEFAULT_STEPS
    keyframe_steps: int = defaults.DEFAULT_KEYFRAME_STEPS
    lr: float = 0.1
    lambda_sim: float = 0.002
    truncation: float = 0.7
    mask: str | None = None
    source_latent: Path | None = None
    seed: int = 0
    reactivity: float = defaults.DEFAULT_REACTIVITY
    band_layers: bool = True
    smoothing: float = defaults.DEFAULT_SMOOTHING
    rotation_degrees: float = defaults.DEFAULT_ROTATION_DEGREES
    translation: float = defaults.DEFAULT_TRANSLATION
    batch: int = defaults.DEFAULT_BATCH
    cache_dir: Path | None = None
    device: str = "auto"
    follow: str = "optimise"  # "instant": keyframes every follow_seconds from instant edits, no optimisation
    follow_seconds: float = 0.25
    alpha: float | None = None
    beta: float | None = None
    analysis_cache: Path | None = None
    timings: dict = field(default_factory=dict)  # filled by run_music_video: seconds per stage


def run_music_video(request: AnimateRequest, run: Run):
    """Write ``request.out``; returns ``(timeline, keyframes)``. Stage times land in ``request.timings``."""
    from ..animate.features import features_of_file
    from ..animate.keyframes import parse_prompt_schedule
    from ..animate.render import VideoWriter, check_size, to_uint8
    from ..animate.stream import iter_samples
    from ..animate.timeline import make_timeline
    from ..audio import load_audio_encoder
    from ..clip import load_clip
    from ..fileio import atomic_path
    from ..latents import check_wplus_fits, load_wplus
    from ..optimize.rules import freedom_mask, parse_freedom
    from ..stylegan import load_generator

    timings = request.timings
    clock = time.perf_counter()
    if Path(request.out).suffix.lower() != ".mp4":
        raise ParameterError(f"--out: expected a .mp4 file name, got {request.out}", parameter="out")
    parse_prompt_schedule(request.prompts)  # a bad schedule stops before any analysis
    device = run.device
    track = TrackAudio.of_file(request.audio)
    timeline = make_timeline(track.seconds, request.fps, request.start, request.end)
    features = features_of_file(request.audio, timeline, request.smoothing)
    timings["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    generator = load_generator(request.generator, device=device)
    size = check_size(request.size, generator.resolution)
    clip = load_clip(request.clip, model_name=request.clip_model, device=device)
    encoder = load_audio_encoder(request.encoder, device=device)
    if request.source_latent is not None:
        ws, _, _ = load_wplus(request.source_latent)
        source = check_wplus_fits(ws, generator, "--source-latent")[:1].to(device)
    else:
        from .edit import source_codes

        source = source_codes(generator, "random", 1, request.seed, request.truncation)
    mask = None if request.mask is None else freedom_mask(
        parse_freedom(request.mask, int(generator.num_ws), "--mask", getattr(generator, "ws_resolutions", None)))
    timings["targets"] = time.perf_counter() - clock

    clock = time.perf_counter()
    keyframes = run_keyframes(KeyframesRequest(
        generator, clip, encoder, features, track, source, keyframe_seconds=request.keyframe_seconds,
        snap_to_onsets=request.snap_to_onsets, steps=request.steps, keyframe_steps=request.keyframe_steps,
        lr=request.lr, lambda_sim=request.lambda_sim, layer_weights=mask, prompts=request.prompts,
        text_weight=request.text_weight, seed=request.seed,
        cache_dir=request.cache_dir or Path(str(request.out) + ".keyframes"), follow=request.follow,
        follow_seconds=request.follow_seconds, alpha=request.alpha, beta=request.beta,
        generator_file=str(request.generator), analysis_cache=request.analysis_cache), run).keyframes
    timings["keyframes"] = time.perf_counter() - clock

    clock = time.perf_counter()
    chunk = plan_trajectory(TrajectoryRequest(keyframes, features, reactivity=request.reactivity,
                                              band_layers=request.band_layers,
                                              rotation_degrees=request.rotation_degrees,
                                              translation=request.translation))
    side = size or generator.resolution
    audio_chunks = iter_samples(request.audio, start=timeline.start, seek=True)
    with atomic_path(request.out) as tmp:
        writer = VideoWriter(tmp, timeline, side, side, audio=audio_chunks, sample_rate=track.sample_rate,
                             channels=track.channels)
        try:
            for _, images in iter_video_frames(FramesRequest(generator, chunk, request.batch, size), run):
                writer.write(to_uint8(images))
        finally:
            writer.close()
    timings["frames"] = time.perf_counter() - clock
    return timeline, keyframes
