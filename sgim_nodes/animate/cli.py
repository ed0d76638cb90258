"""``python -m sgim_nodes animate``: a music video from a track, streamed into an .mp4 with the track.

    track --> per-frame features --> keyframe targets (sound [+ prompts]) --> keyframe W+ codes
          --> smooth audio-reactive trajectory --> frames in batches --> H.264 + AAC .mp4

Keyframe codes are cached next to the video (``<out>.keyframes/``, or ``--cache-dir``), one file
per keyframe as soon as it is done, so an interrupted run resumes at the first missing keyframe
and gives the same video. The video is written to a temporary file and renamed at the end. This module is the flags; the
job is :func:`sgim_nodes.jobs.music_video.run_music_video`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ParameterError
from . import defaults
from .defaults import DEFAULT_BATCH


# Library parameters named otherwise than the flag that sets them (the rest follow the flags' dests).
FLAG_FOR_PARAMETER = {"prompt_schedule": "--prompts"}


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
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the keyframe optimiser")
    p.add_argument("--lambda-sim", type=float, default=0.002, help="how strongly codes stay near the source")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation of the random source code")
    p.add_argument("--mask", help="layer freedom: a preset (all, coarse, middle, fine) or one number per W+ layer "
                                  "'f0,f1,...' in [0, 1] (0 = frozen, 1 = free), as edit's --mask")
    p.add_argument("--source-latent", type=Path, help="W+ file of the source image (default: random from --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random source code (without --source-latent)")
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
    g = p.add_argument_group("instant following (docs/instant.md)")
    g.add_argument("--follow", choices=["keyframes", "instant"], default="keyframes",
                   help="keyframes: optimised keyframe codes; instant: no optimisation, every moment follows its "
                        "own sound through the generator's analysed directions (analysed once, cached)")
    g.add_argument("--follow-seconds", type=float, default=0.25,
                   help="instant: time between the followed moments (0 = every frame)")
    g.add_argument("--alpha", type=float, help="instant strength (default 1, see edit --alpha)")
    g.add_argument("--beta", type=float, help="instant relevance threshold (default 0.1, see edit --beta)")
    g.add_argument("--analysis-cache", type=Path, help="instant analysis cache file (default: models/sgim_instant/)")
    return p


def request_from_args(args: argparse.Namespace):
    """The :class:`~sgim_nodes.jobs.music_video.AnimateRequest` of the parsed flags (models found or fetched)."""
    from ..jobs.music_video import AnimateRequest
    from ..models import KNOWN_MODELS, find_model_file
    from ..pipeline import DEFAULT_FILES, fetch_missing_models

    from ..fileio import check_output_file

    if args.text and args.prompts:
        raise ParameterError("give --text or --prompts, not both")
    for flag, given in (("--text", args.text), ("--prompts", args.prompts)):
        if given is not None and not given.strip():
            raise ParameterError(f"{flag}: the prompt is empty; give words (or leave {flag} out)")
    check_output_file(args.out, "--out", create_folders=False)  # before the models are looked for
    if args.follow != "instant":
        for flag, value in (("--alpha", args.alpha), ("--beta", args.beta), ("--analysis-cache", args.analysis_cache)):
            if value is not None:
                raise ParameterError(f"{flag}: only used with --follow instant", parameter=flag[2:])
    elif args.snap_to_onsets:
        raise ParameterError("--snap-to-onsets: --follow instant follows every --follow-seconds; nothing to snap",
                             parameter="snap_to_onsets")
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
        translation=args.translation, batch=args.batch, cache_dir=args.cache_dir, device=args.device,
        follow="instant" if args.follow == "instant" else "optimise", follow_seconds=args.follow_seconds,
        alpha=args.alpha, beta=args.beta, analysis_cache=args.analysis_cache, **paths)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    request = request_from_args(args)
    from ..jobs.music_video import run_music_video
    from ..jobs.run import TqdmRun

    timeline, keyframes = run_music_video(request, TqdmRun(request.device))
    print(f"{timeline.frames} frames at {timeline.fps:g} fps ({timeline.duration:.3f} s from {timeline.start:g} s), "
          f"{len(keyframes.times)} keyframes")
    print(f"wrote {request.out}")
    return 0
