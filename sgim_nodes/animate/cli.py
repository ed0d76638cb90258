"""``python -m sgim_nodes animate``: a music video from a track (or a folder of tracks), rendered into an .mp4.

    track --> per-frame features --> (tempo, beats) --> keyframe targets (sound [+ prompts])
          --> keyframe W+ codes --> smooth audio-reactive trajectory --> frames in batches
          --> closed-GOP H.264 segments --> joined with the track (AAC) into the .mp4

Keyframes every N seconds, beats or bars (``--keyframes beats:4``). Keyframe codes are cached next to
the video (``<out>.keyframes/``, or ``--cache-dir``) and finished segments kept until the join, so an
interrupted run resumes and gives the same video; the video is written under a temporary name and
renamed at the end. ``--audio DIR --out OUTDIR`` renders every track of a folder (resumable, a
summary at the end). Under ``torchrun --nproc-per-node N -m sgim_nodes animate ...`` the processes
share the frames (and the keyframe chains with ``--chain-length``) and write the same video as one
process. This module is the flags; the jobs are in :mod:`sgim_nodes.jobs.music_render`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ParameterError
from ..options import flag


# Library parameters named otherwise than the flag that sets them (the rest follow the flags' dests).
FLAG_FOR_PARAMETER = {"prompt_schedule": "--prompts"}


def _parser() -> argparse.ArgumentParser:
    from ..cli_help import command_parser
    from ..models import launcher

    p = command_parser("animate", __doc__, epilog=f"Model files: {launcher()} download --list")
    p.add_argument("--audio", type=Path, required=True,
                   help="the track (wav, mp3, flac, ogg, ...), or a folder: one video per track")
    p.add_argument("--out", type=Path, required=True,
                   help="the video to write (.mp4); with a folder of tracks, the folder for the videos")
    p.add_argument("--fps", **flag("fps", help="frames per second (e.g. 29.97)"))
    p.add_argument("--start", **flag("start", help="start at this second of the track", default=None))
    p.add_argument("--end", **flag("end", help="end at this second of the track", default=None))
    p.add_argument("--size", **flag("size", help="scale frames so the longer side has this many pixels",
                                    default=None))
    p.add_argument("--generator", help="StyleGAN file (.pt/.pkl/.safetensors) or a name in models/stylegan")
    p.add_argument("--encoder", help="audio encoder (.pth/.safetensors) or a name in models/sgim_audio_encoders")
    p.add_argument("--clip", help="CLIP model or a name in models/sgim_clip")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--text", help="one prompt mixed into every keyframe's target")
    p.add_argument("--prompts", help="prompt schedule, e.g. '0: a calm sea | 12.5: a storm at sea'")
    p.add_argument("--text-weight", **flag("text_weight"))
    p.add_argument("--keyframe-seconds", **flag("keyframe_seconds"))
    p.add_argument("--keyframes", help="keyframes every N beats or bars, or seconds: beats:4, bars:1, seconds:2.5")
    p.add_argument("--bpm", type=float, help="the tempo, when detection gets it wrong (beats/bars keyframes)")
    p.add_argument("--tempo-correction", choices=("none", "double", "half"), default="none",
                   help="use twice or half the detected tempo")
    p.add_argument("--beats-per-bar", **flag("beats_per_bar"))
    p.add_argument("--beat-weight", **flag("beat_weight"))
    p.add_argument("--chain-length", **flag("chain_length"))
    p.add_argument("--snap-to-onsets", action="store_true", help="move keyframes to the nearest detected onset")
    p.add_argument("--steps", **flag("steps", "music"))
    p.add_argument("--keyframe-steps", **flag("keyframe_steps"))
    p.add_argument("--lr", **flag("lr", help="peak learning rate of the keyframe optimiser"))
    p.add_argument("--lambda-sim", **flag("lambda_sim", "music"))
    p.add_argument("--truncation", **flag("truncation", help="truncation of the random source code"))
    p.add_argument("--mask", help="layer freedom: a preset (all, coarse, middle, fine) or one number per W+ layer "
                                  "'f0,f1,...' in [0, 1] (0 = frozen, 1 = free), as edit's --mask")
    p.add_argument("--source-latent", type=Path, help="W+ file of the source image (default: random from --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random source code (without --source-latent)")
    p.add_argument("--reactivity", **flag("reactivity", help="how much the image pulses with loudness and onsets "
                                                             "(0 = none)"))
    p.add_argument("--no-band-layers", dest="band_layers", action="store_false",
                   help="every layer follows the same envelope (default: bass -> coarse, highs -> fine)")
    p.add_argument("--smoothing", **flag("smoothing", help="centred smoothing of the audio features, seconds"))
    p.add_argument("--rotation", dest="rotation_degrees", **flag("rotation_degrees", help="StyleGAN3: max rotation, "
                                                                                           "degrees"))
    p.add_argument("--translation", **flag("translation", help="StyleGAN3: max translation (input coordinates)"))
    p.add_argument("--batch", **flag("frame_batch", help="frames decoded at once"))
    p.add_argument("--crf", **flag("crf"))
    p.add_argument("--segment-seconds", **flag("segment_seconds"))
    p.add_argument("--private-segments", action="store_true",
                   help="torchrun over several nodes without a shared file system: send segments to rank 0")
    p.add_argument("--cache-dir", type=Path, help="where keyframe codes are kept (default: <out>.keyframes)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing video (else refused before any work). An interrupted render needs no "
                        "flag: it resumes from <out>.keyframes and <out>.segments. With a folder of tracks a video "
                        "already there is done and skipped (delete it to render it again), so this flag is refused")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    g = p.add_argument_group("instant following (docs/instant.md)")
    g.add_argument("--follow", choices=["keyframes", "instant"], default="keyframes",
                   help="keyframes: optimised keyframe codes; instant: no optimisation, every moment follows its "
                        "own sound through the generator's analysed directions (analysed once, cached)")
    g.add_argument("--follow-seconds", **flag("follow_seconds"))
    g.add_argument("--alpha", **flag("alpha", help="instant strength (default 1, see edit --alpha)", default=None))
    g.add_argument("--beta", **flag("beta", help="instant relevance threshold (default 0.1, see edit --beta)",
                                    default=None))
    g.add_argument("--analysis-cache", type=Path, help="instant analysis cache file (default: models/sgim_instant/)")
    return p


def check_outputs(args: argparse.Namespace) -> None:
    """Every file and folder the render will write, before any work: the video (an existing one only with
    --overwrite), the keyframe cache and the segments folder (existing ones are reused: that is how a render
    resumes). A folder of tracks: each track's video name, its cache and segments, and the summary; a video
    already there is a finished track, skipped by the render, not an error."""
    from ..fileio import check_output_file, check_output_folder
    from ..jobs.music_render import SUMMARY_NAME, list_tracks, video_names

    if Path(args.audio).is_dir():
        if args.overwrite:
            raise ParameterError("--overwrite: a folder of tracks skips the videos already rendered (that is how it "
                                 "resumes); delete the videos to render again", parameter="overwrite")
        out_dir = check_output_folder(args.out, "--out")
        tracks = list_tracks(args.audio)
        for name in video_names(tracks):
            check_output_file(out_dir / name, "--out", overwrite=True)  # existing: done, skipped
            check_output_folder(out_dir / (name + ".segments"), "--out")
            check_output_folder(out_dir / ".keyframes" / Path(name).stem, "--out")
        check_output_file(out_dir / SUMMARY_NAME, "--out", overwrite=True)  # the summary is rewritten as tracks finish
        return
    out = check_output_file(args.out, "--out", create_folders=False, overwrite=args.overwrite)
    check_output_folder(Path(str(out) + ".segments"), "--out")
    if args.cache_dir is not None:
        check_output_folder(args.cache_dir, "--cache-dir")
    else:
        check_output_folder(Path(str(out) + ".keyframes"), "--out")


def request_from_args(args: argparse.Namespace):
    """The :class:`~sgim_nodes.jobs.music_render.MusicRenderRequest` of the parsed flags (models found or fetched)."""
    import dataclasses

    from ..jobs.music_render import MusicRenderRequest, check_request
    from ..models import KNOWN_MODELS, find_model_file
    from ..pipeline import DEFAULT_FILES, fetch_missing_models

    if args.text and args.prompts:
        raise ParameterError("give --text or --prompts, not both")
    for name, given in (("--text", args.text), ("--prompts", args.prompts)):
        if given is not None and not given.strip():
            raise ParameterError(f"{name}: the prompt is empty; give words (or leave {name} out)")
    check_outputs(args)  # before the models are looked for
    if args.follow != "instant":
        for name, value in (("--alpha", args.alpha), ("--beta", args.beta), ("--analysis-cache", args.analysis_cache)):
            if value is not None:
                raise ParameterError(f"{name}: only used with --follow instant", parameter=name[2:])
    elif args.snap_to_onsets:
        raise ParameterError("--snap-to-onsets: --follow instant follows every --follow-seconds; nothing to snap",
                             parameter="snap_to_onsets")
    if args.keyframes and args.snap_to_onsets:
        raise ParameterError("--snap-to-onsets: only with seconds keyframes (beats and bars are on onsets already)")
    request = _request(args, MusicRenderRequest, generator=None, clip=None, encoder=None)
    check_request(request, per_track=not Path(args.audio).is_dir())  # every option before any model is looked for
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
    return dataclasses.replace(request, **paths)


def _request(args: argparse.Namespace, MusicRenderRequest, **paths):
    return MusicRenderRequest(
        audio=args.audio, out=args.out, fps=args.fps, start=args.start, end=args.end, size=args.size,
        clip_model=args.clip_model, prompts=args.prompts or (args.text or ""), text_weight=args.text_weight,
        keyframe_seconds=args.keyframe_seconds, snap_to_onsets=args.snap_to_onsets, steps=args.steps,
        keyframe_steps=args.keyframe_steps, lr=args.lr, lambda_sim=args.lambda_sim, truncation=args.truncation,
        mask=args.mask, source_latent=args.source_latent, seed=args.seed, reactivity=args.reactivity,
        band_layers=args.band_layers, smoothing=args.smoothing, rotation_degrees=args.rotation_degrees,
        translation=args.translation, batch=args.batch, cache_dir=args.cache_dir, device=args.device,
        follow="instant" if args.follow == "instant" else "optimise", follow_seconds=args.follow_seconds,
        alpha=args.alpha, beta=args.beta, analysis_cache=args.analysis_cache,
        keyframes=args.keyframes or "", bpm=args.bpm, tempo_correction=args.tempo_correction,
        beats_per_bar=args.beats_per_bar, beat_weight=args.beat_weight, chain_length=args.chain_length, crf=args.crf,
        segment_seconds=args.segment_seconds, private_segments=args.private_segments, **paths)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    request = request_from_args(args)
    from ..animate.distributed import ranks_from_environment
    from ..jobs.music_render import MusicFolderRequest, run_music_folder, run_music_render
    from ..jobs.run import TqdmRun

    ranks = ranks_from_environment(request.device)  # one process unless torchrun started this one
    try:
        run = TqdmRun(ranks.device, show_progress=ranks.is_main)
        if Path(args.audio).is_dir():
            summary = run_music_folder(MusicFolderRequest(args.audio, args.out, request), run, ranks)
            if ranks.is_main:
                print(summary.describe())
            code = 1 if summary.failed else 0
        else:
            result = run_music_render(request, run, ranks)
            if ranks.is_main:
                if result.tempo is not None:
                    print(f"tempo {result.tempo:.1f} BPM")
                print(result.describe())
                print(f"wrote {result.path}")
            code = 0
    finally:
        ranks.close()
    if ranks.enabled:
        # gloo's background threads can abort the interpreter's teardown after the work is done and the
        # process group destroyed (seen once as SIGABRT of a finished rank under load): leave directly
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
