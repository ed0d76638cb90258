"""The music-video job: keyframes, trajectory and frames (Music Keyframes / Trajectory / Decode Frames, ``animate``).

    track --> per-frame features --> keyframe targets (sound [+ prompts]) --> keyframe W+ codes
          --> smooth audio-reactive trajectory --> frames in batches

The nodes run the three stages as three nodes over a track in memory; the command line and the
file-rendering node (:mod:`sgim_nodes.jobs.music_render`) run them over a file (or a folder, or
several torchrun processes) and render straight into an .mp4 with the track. All go through
:func:`run_keyframes` and :func:`plan_trajectory`.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    keyframes: str = ""  # 'beats:N', 'bars:N' or 'seconds:N' (animate.beats); empty: every keyframe_seconds
    bpm: float | None = None  # manual tempo for beats/bars keyframes (None: detected)
    tempo_correction: str = "none"  # none, double, half
    beats_per_bar: int = 4
    chain_length: int = 0  # restart the warm-start chain every this many keyframes (0: one chain)
    ranks: object = None  # animate.distributed.Ranks: the chains shared by torchrun's processes


@dataclass
class KeyframesResult:
    keyframes: object  # animate.Keyframes
    times: list[float]
    labels: list[str]
    beats: object = None  # animate.beats.Beats when the keyframes follow beats or bars
    features: object = None  # the request's features, carrying the beats when there are some


def run_keyframes(request: KeyframesRequest, run: Run) -> KeyframesResult:
    from ..animate import (Keyframes, KeyframeSettings, keyframe_targets, keyframe_times, optimize_keyframes,
                           parse_prompt_schedule)
    from ..animate.beats import keyframe_times_for, with_beats
    from ..animate.distributed import Ranks
    from ..audio import check_compatible, embed_audio

    generator, clip, encoder, features = request.generator, request.clip, request.encoder, request.features
    if request.follow not in FOLLOW_MODES:
        raise ParameterError(f"follow: expected one of {FOLLOW_MODES}, got {request.follow!r}", parameter="follow")
    if request.layer_weights is not None:
        request.layer_weights.check(generator.num_ws)
    check_compatible(encoder, clip)
    schedule = parse_prompt_schedule(request.prompts)
    timeline = features.timeline
    beats = None
    if request.follow == "instant":
        times = _follow_times(request, timeline)
    elif request.keyframes:
        times, beats = keyframe_times_for(request.keyframes, timeline, features, bpm=request.bpm,
                                          tempo_correction=request.tempo_correction,
                                          beats_per_bar=request.beats_per_bar, snap_to_onsets=request.snap_to_onsets)
        if beats is not None:
            features = with_beats(features, beats)
            run.status(f"tempo {beats.tempo:.1f} BPM, {len(beats.times)} beats")
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
                                lambda_sim=request.lambda_sim, layer_weights=request.layer_weights, seed=request.seed,
                                chain_length=int(request.chain_length))
    ranks = request.ranks or Ranks()
    chains = settings.chains(len(times))
    mine = [k for c in ranks.share(len(chains)) for k in chains[c]]  # every keyframe in one process

    def steps_of(k: int) -> int:
        return settings.steps if settings.chain_start(k) else settings.keyframe_steps

    total = max(1, sum(steps_of(k) for k in mine))
    done = {"steps": 0}

    def on_step(k, info):
        run.check_cancel()
        done["steps"] += 1
        terms = {name: sum(v) / len(v) for name, v in info.per_sample.items()}
        run.progress(done["steps"], total, preview=info.preview, terms=terms,
                     text=f"keyframe {k + 1}/{len(times)}" if info.step == 1 else None)

    def on_keyframe(k, cached):
        if cached:
            done["steps"] += steps_of(k)
            run.progress(done["steps"], total, text=f"keyframe {k + 1}/{len(times)} (cached)")

    device = next(iter(generator.parameters())).device
    keyframes = None
    if mine:
        with torch.inference_mode(False), torch.enable_grad(), run.cpu_memory():
            keyframes = optimize_keyframes(generator, clip, targets.clone(), request.source_ws[:1].clone().to(device),
                                           times, settings, target_weights=weights, cache_dir=request.cache_dir,
                                           callback=on_step, on_keyframe=on_keyframe,
                                           preview_every=request.preview_every, labels=labels,
                                           only=mine if ranks.enabled else None)
    if ranks.enabled:  # every process gets every chain's codes
        codes = {}
        for part in ranks.all_gather({} if keyframes is None else dict(zip(mine, keyframes.codes))):
            codes.update(part)
        keyframes = Keyframes(times=list(times), codes=torch.stack([codes[k] for k in range(len(times))]),
                              source=request.source_ws[:1].detach().float().cpu(),
                              generator=str(getattr(generator, "name", "")), labels=list(labels))
    return KeyframesResult(keyframes, list(times), list(labels), beats, features)


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
    return KeyframesResult(keyframes, list(times), list(labels), None, request.features)


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
    beat_weight: float = 0.0  # share of the reaction following beat pulses (the features must carry beats)


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
                      translation=request.translation, beat_weight=float(request.beat_weight))
    offset, count = path.timeline.check_range(request.frame_offset, request.frame_count or None)
    return TrajectoryChunk(path, offset, count)


def chunk_codes(chunk: TrajectoryChunk, available: int | None = None) -> torch.Tensor:
    """Every frame's W+ code of ``chunk`` held at once (Music Trajectory hands them on as one value), after the
    held-memory budget check: float32 codes, counted twice (the codes and a consumer's copy)."""
    import math

    from ..limits import check_held_bytes

    per_frame = math.prod(chunk.trajectory.keyframes.codes.shape[1:]) * 4
    check_held_bytes("frame_count", f"{chunk.count:,} frames' W+ codes", 2 * chunk.count * per_frame,
                     "at once (float32, the codes and a consumer's copy)", available, HELD_FRAMES_ADVICE)
    return chunk.trajectory.codes(chunk.offset, chunk.count)


HELD_FRAMES_ADVICE = ("render fewer frames at once (Audio Features' start_seconds / end_seconds, or Music "
                      "Trajectory's frame_offset / frame_count to render the song in parts) or a smaller size; "
                      "or use \"Render Music Video (SGIM)\", which writes the video to a "
                      "file batch by batch and holds no frames")


@dataclass
class FramesRequest:
    generator: object
    chunk: TrajectoryChunk
    batch_size: int = defaults.DEFAULT_BATCH
    size: int | None = None  # longer side in pixels (None / 0: the generator's resolution)
    codes: torch.Tensor | None = None  # the chunk's codes when computed (and perhaps changed) elsewhere
    hold_all: bool = True  # the caller keeps every frame (Decode Frames stacks them): budgeted before the work


def iter_video_frames(request: FramesRequest, run: Run) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first frame, images [b, 3, H, W] in [-1, 1], scaled to ``size``)`` per batch; cancel before each."""
    from ..animate.render import check_size, iter_frames, resize

    generator, chunk = request.generator, request.chunk
    size = check_size(request.size, generator.resolution)
    if request.codes is not None and request.codes.shape[0] != chunk.count:
        raise ParameterError(f"codes: {request.codes.shape[0]} codes for a chunk of {chunk.count} frames",
                             parameter="codes")

    if request.hold_all:
        from ..limits import check_held_frames

        side = size or generator.resolution
        check_held_frames(chunk.count, side, side, advice=HELD_FRAMES_ADVICE)

    def cancelled() -> bool:
        run.check_cancel()
        return False

    with run.cpu_memory():
        for first, images in iter_frames(generator, chunk.trajectory, offset=chunk.offset, count=chunk.count,
                                         batch_size=request.batch_size, codes=request.codes,
                                         should_cancel=cancelled):
            run.progress(first - chunk.offset + images.shape[0], chunk.count, preview=images[-1:])
            yield first, resize(images, size)
