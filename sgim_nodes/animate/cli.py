"""``python -m sgim_nodes animate``: a music video from a track, streamed into an .mp4 with the track.

    track --> per-frame features --> keyframe targets (sound [+ prompts]) --> keyframe W+ codes
          --> smooth audio-reactive trajectory --> frames in batches --> H.264 + AAC .mp4

Keyframe codes are cached next to the video (``<out>.keyframes/``, or ``--cache-dir``), one file
per keyframe as soon as it is done, so an interrupted run resumes at the first missing keyframe
and gives the same video. The video is written to a temporary file and renamed at the end.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParameterError
from . import defaults
from .defaults import DEFAULT_BATCH


@dataclass
class AnimateRequest:
    """Everything one music video needs; the command line fills it, Python callers may build it."""

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
    batch: int = DEFAULT_BATCH
    cache_dir: Path | None = None
    device: str = "auto"
    timings: dict = field(default_factory=dict)  # filled by render_music_video: seconds per stage


def _parser() -> argparse.ArgumentParser:
    from ..cli_help import command_parser
    from ..models import launcher

    p = command_parser("animate", __doc__, epilog=f"Model files: {launcher()} download --list")
    p.add_argument("--audio", type=Path, required=True, help="the track (wav, mp3, flac, ogg, ...)")
    p.add_argument("--out", type=Path, required=True, help="the video to write (.mp4)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second (any positive rate, e.g. 29.97)")
    p.add_argument("--start", type=float, help="start at this second of the track")
    p.add_argument("--end", type=float, help="end at this second of the track")
    p.add_argument("--size", type=int, help="scale frames so the longer side has this many pixels")
    p.add_argument("--generator", help="StyleGAN file (.pt/.pkl/.safetensors) or a name in models/stylegan")
    p.add_argument("--encoder", help="audio encoder (.pth/.safetensors) or a name in models/sgim_audio_encoders")
    p.add_argument("--clip", help="CLIP model or a name in models/sgim_clip")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--text", help="one prompt mixed into every keyframe's target")
    p.add_argument("--prompts", help="prompt schedule, e.g. '0: a calm sea | 12.5: a storm at sea'")
    p.add_argument("--text-weight", type=float, default=0.3, help="weight of the prompt against the sound (0..1)")
    p.add_argument("--keyframe-seconds", type=float, default=defaults.DEFAULT_KEYFRAME_SECONDS,
                   help="time between keyframes")
    p.add_argument("--snap-to-onsets", action="store_true", help="move keyframes to the nearest detected onset")
    p.add_argument("--steps", type=int, default=defaults.DEFAULT_STEPS,
                   help="optimiser steps of the first keyframe")
    p.add_argument("--keyframe-steps", type=int, default=defaults.DEFAULT_KEYFRAME_STEPS,
                   help="steps of each later keyframe (warm-started from the previous one)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lambda-sim", type=float, default=0.002, help="how strongly codes stay near the source")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation of the random source code")
    p.add_argument("--mask", help="layer freedom: a preset (all, coarse, middle, fine) or one number per W+ layer "
                                  "'f0,f1,...' in [0, 1] (0 = frozen, 1 = free), as edit's --mask")
    p.add_argument("--source-latent", type=Path, help="W+ file of the source image (default: random from --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reactivity", type=float, default=defaults.DEFAULT_REACTIVITY,
                   help="how much the image pulses with loudness and onsets (0 = none)")
    p.add_argument("--no-band-layers", dest="band_layers", action="store_false",
                   help="every layer follows the same envelope (default: bass -> coarse, highs -> fine)")
    p.add_argument("--smoothing", type=float, default=defaults.DEFAULT_SMOOTHING,
                   help="centred smoothing of the audio features, seconds")
    p.add_argument("--rotation", dest="rotation_degrees", type=float,
                   default=defaults.DEFAULT_ROTATION_DEGREES, help="StyleGAN3: max rotation, degrees")
    p.add_argument("--translation", type=float, default=defaults.DEFAULT_TRANSLATION,
                   help="StyleGAN3: max translation (input coordinates)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="frames decoded at once")
    p.add_argument("--cache-dir", type=Path, help="where keyframe codes are kept (default: <out>.keyframes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    return p


def request_from_args(args: argparse.Namespace) -> AnimateRequest:
    from ..models import KNOWN_MODELS, find_model_file
    from ..pipeline import DEFAULT_FILES, fetch_missing_models

    if args.text and args.prompts:
        raise ParameterError("give --text or --prompts, not both")
    paths, missing = {}, []
    for arg in ("generator", "clip", "encoder"):
        folder, default_name = DEFAULT_FILES[arg]
        given = getattr(args, arg)
        found = find_model_file(folder, given, KNOWN_MODELS[default_name].filename)
        if found is None:
            if given:
                raise ParameterError(f"--{arg}: file not found: {given}")
            missing.append((arg, default_name))
        paths[arg] = found
    if missing:  # the known defaults are fetched on first use, as `edit` does (SGIM_OFFLINE forbids it)
        paths.update(fetch_missing_models(missing))
    return AnimateRequest(
        audio=args.audio, out=args.out, fps=args.fps, start=args.start, end=args.end, size=args.size,
        clip_model=args.clip_model, prompts=args.prompts or (args.text or ""), text_weight=args.text_weight,
        keyframe_seconds=args.keyframe_seconds, snap_to_onsets=args.snap_to_onsets, steps=args.steps,
        keyframe_steps=args.keyframe_steps, lr=args.lr, lambda_sim=args.lambda_sim, truncation=args.truncation,
        mask=args.mask, source_latent=args.source_latent, seed=args.seed, reactivity=args.reactivity,
        band_layers=args.band_layers, smoothing=args.smoothing, rotation_degrees=args.rotation_degrees,
        translation=args.translation, batch=args.batch, cache_dir=args.cache_dir, device=args.device, **paths)


def render_music_video(request: AnimateRequest, progress: bool = True):
    """Write ``request.out``; returns ``(timeline, keyframes)``. Stage times land in ``request.timings``."""
    import torch
    from tqdm import tqdm

    from ..audio import check_compatible, embed_audio, load_audio_encoder
    from ..clip import load_clip
    from ..device import resolve_device
    from ..fileio import atomic_path
    from ..latents import check_wplus_fits, load_wplus
    from ..optimize import sample_source_ws
    from ..optimize.rules import freedom_mask, parse_freedom
    from ..stylegan import load_generator
    from .features import features_of_file
    from .keyframes import KeyframeSettings, keyframe_targets, keyframe_times, optimize_keyframes, parse_prompt_schedule
    from .render import VideoWriter, check_size, iter_frames, resize, to_uint8
    from .stream import iter_samples, probe, read_segment
    from .timeline import make_timeline
    from .trajectory import Trajectory

    timings = request.timings
    clock = time.perf_counter()
    if Path(request.out).suffix.lower() != ".mp4":
        raise ParameterError(f"--out: expected a .mp4 file name, got {request.out}", parameter="out")
    schedule = parse_prompt_schedule(request.prompts)
    device = resolve_device(request.device)
    track = probe(request.audio)
    timeline = make_timeline(track.seconds, request.fps, request.start, request.end)
    features = features_of_file(request.audio, timeline, request.smoothing)
    timings["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    generator = load_generator(request.generator, device=device)
    size = check_size(request.size, generator.resolution)
    clip = load_clip(request.clip, model_name=request.clip_model, device=device)
    encoder = load_audio_encoder(request.encoder, device=device)
    check_compatible(encoder, clip)
    if request.source_latent is not None:
        ws, _, _ = load_wplus(request.source_latent)
        source = check_wplus_fits(ws, generator, "--source-latent")[:1].to(device)
    else:
        source = sample_source_ws(generator, 1, request.seed, request.truncation)
    times = keyframe_times(timeline, request.keyframe_seconds, features.onset_times, request.snap_to_onsets)
    window = encoder.settings.window_seconds

    def read_window(start: float, seconds: float) -> torch.Tensor:
        return read_segment(request.audio, start, seconds)[0]

    def embed_window(audio: torch.Tensor) -> torch.Tensor:
        return embed_audio(encoder, audio, track.sample_rate, pool="first")[0]

    targets, weights, labels = keyframe_targets(
        times, timeline, read_window, embed_window, window, track.seconds,
        text_embed=lambda prompts: clip.encode_text(prompts), schedule=schedule, text_weight=request.text_weight)
    timings["targets"] = time.perf_counter() - clock

    clock = time.perf_counter()
    settings = KeyframeSettings(steps=request.steps, keyframe_steps=request.keyframe_steps, lr=request.lr,
                                lambda_sim=request.lambda_sim,
                                layer_weights=None if request.mask is None else
                                freedom_mask(parse_freedom(request.mask, int(generator.num_ws), "--mask",
                                                               getattr(generator, "ws_resolutions", None))),
                                seed=request.seed)
    total_steps = settings.steps + settings.keyframe_steps * (len(times) - 1)
    bar = tqdm(total=total_steps, desc=f"keyframes (0/{len(times)})", unit="step", disable=not progress)

    def on_step(k, info):
        bar.update(1)

    def on_keyframe(k, cached):
        if cached:
            bar.update(settings.steps if k == 0 else settings.keyframe_steps)
        bar.set_description(f"keyframes ({k + 1}/{len(times)})")

    cache_dir = request.cache_dir or Path(str(request.out) + ".keyframes")
    try:
        keyframes = optimize_keyframes(generator, clip, targets, source, times, settings, target_weights=weights,
                                       cache_dir=cache_dir, callback=on_step, on_keyframe=on_keyframe, labels=labels)
    finally:
        bar.close()
    timings["keyframes"] = time.perf_counter() - clock

    clock = time.perf_counter()
    trajectory = Trajectory(keyframes, features, reactivity=request.reactivity, band_layers=request.band_layers,
                            rotation_degrees=request.rotation_degrees, translation=request.translation)
    side = size or generator.resolution
    audio_chunks = iter_samples(request.audio, start=timeline.start, seek=True)
    with atomic_path(request.out) as tmp:
        writer = VideoWriter(tmp, timeline, side, side, audio=audio_chunks, sample_rate=track.sample_rate,
                             channels=track.channels)
        try:
            with tqdm(total=timeline.frames, desc="frames", unit="frame", disable=not progress) as frames_bar:
                for first, images in iter_frames(generator, trajectory, batch_size=request.batch):
                    writer.write(to_uint8(resize(images, size)))
                    frames_bar.update(images.shape[0])
        finally:
            writer.close()
    timings["frames"] = time.perf_counter() - clock
    return timeline, keyframes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    request = request_from_args(args)
    timeline, keyframes = render_music_video(request)
    print(f"{timeline.frames} frames at {timeline.fps:g} fps ({timeline.duration:.3f} s from {timeline.start:g} s), "
          f"{len(keyframes.times)} keyframes")
    print(f"wrote {request.out}")
    return 0
