"""``edit``: the main job from a terminal: argparse, then :func:`sgim_nodes.jobs.edit.run_edit`.

    sound (and/or text) --> CLIP-space target(s) --> optimise W+ --> source.png, edited.png, W+ codes

Targets: every ``--audio`` file and every ``--text`` prompt becomes one target; with several, the
optimiser pulls toward their weighted combination (``--weights``, relative: normalised to sum 1 as in
the Mix Embeddings node), which is the paper's audio+text mixing in the embedding space. (Layer-wise
mixing of two edits is the Style Mix node, or :func:`sgim_nodes.latents.style_mix` from Python.) The
words shared with the nodes (layer freedom, weights, seed, batch) follow ``sgim_nodes.optimize.rules``.

Model files default to the pack's ``models/`` folders (see ``download --list``). A missing known
model is downloaded on first use (size, progress bar, resumable, checksum verified where published)
before any other work; with ``--offline`` or ``SGIM_OFFLINE=1`` the command instead stops and prints
the ``download`` commands to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ParameterError
from .options import flag
from .models import KNOWN_MODELS, find_model_file, is_bare_name, launcher, model_source, models_dir, offline
from .presets import PRESETS

# Output formats by extension (Pillow format name); the source image and a batch use the same one.
if TYPE_CHECKING:  # torch is imported where it is used: command help must not pay for it
    import torch

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

DEFAULT_FILES = {  # argument -> (folder, default registry model)
    "generator": ("stylegan", "landscape"),
    "encoder": ("sgim_audio_encoders", "audio-encoder"),
    "clip": ("sgim_clip", "clip-vit-b-32"),
    "identity": ("sgim_identity", "ir-se50"),
}


def _preset_text() -> str:
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items()) for name, values in PRESETS.items())


def _parser() -> argparse.ArgumentParser:
    from .cli_help import command_parser

    p = command_parser("edit", __doc__, epilog=f"Model files: {launcher()} download --list. Presets (the "
                                                f"paper's released settings): {_preset_text()}.")
    p.add_argument("--audio", type=Path, action="append", default=[], help="sound file (repeatable)")
    p.add_argument("--text", action="append", default=[], help="text prompt (repeatable)")
    p.add_argument("--weights", help="comma-separated relative weights of the targets, audio first then text "
                                     "(normalised to sum 1; default: equal)")
    p.add_argument("--out", type=Path, required=True,
                   help="edited image, .png, .jpg or .webp; source image and W+ file go beside it")
    p.add_argument("--generator", help="StyleGAN2/StyleGAN3 file (.pt/.pkl/.safetensors) or a name in models/stylegan "
                                       "(default: landscape.pt, downloaded on first use)")
    p.add_argument("--encoder", help="audio encoder (.pth/.safetensors) or a name in models/sgim_audio_encoders "
                                     "(default: resnet18_57.pth, downloaded on first use)")
    p.add_argument("--clip", help="CLIP model (OpenAI .pt, open_clip .bin/.safetensors) or a name in "
                                  "models/sgim_clip (default: ViT-B-32.pt, downloaded on first use)")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--identity", help="ArcFace IR-SE50 file (needed when --lambda-id > 0)")
    p.add_argument("--offline", action="store_true",
                   help="never download; print the download commands for missing models (also SGIM_OFFLINE=1)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="landscape",
                   help="the paper's released settings (values below); the options below override single values")
    for name, flag_name, what in (("steps", "--steps", "optimiser steps"), ("lr", "--lr", "learning rate"),
                             ("lambda_sim", "--lambda-sim", "weight of the latent-similarity term"),
                             ("lambda_id", "--lambda-id", "weight of the identity term (faces)"),
                             ("truncation", "--truncation", "truncation of the random source code")):
        by_preset = ", ".join(f"{preset} {values[name]}" for preset, values in PRESETS.items())
        p.add_argument(flag_name, **flag(name, help=f"{what}; preset: {by_preset}", default=None))
    p.add_argument("--mask", help="layer freedom: a preset (all, coarse, middle, fine) or one number per W+ layer "
                                  "'f0,f1,...' in [0, 1]: 0 = frozen, 1 = free, between = held back (as the "
                                  "Layer Mask node; default: all free)")
    p.add_argument("--adaptive-mask", action="store_true", help="the released code's adaptive layer masking")
    p.add_argument("--source-latent", type=Path, help="W+ file to edit, all its codes (default: random codes "
                                                      "from --seed)")
    p.add_argument("--mode", choices=["edit", "generate"], default="edit",
                   help="edit a source code, or generate freely from the mean latent")
    p.add_argument("--seed", type=int, help="draws the random source codes (default 0); an error where nothing "
                                            "is random (--source-latent, --mode generate)")
    p.add_argument("--batch", **flag("batch", help="number of random source codes edited together; only with "
                                                   "random source codes"))
    p.add_argument("--class", dest="class_label", metavar="N",
                   help="conditional generators: class of the random source code, an index (0-based) or a "
                        "name the file carries; default: a random class per image from --seed")
    p.add_argument("--hop", dest="hop_seconds", **flag("hop_seconds", help="window hop in seconds for long audio",
                                                       default=None))
    p.add_argument("--start", dest="start_seconds", **flag("start", help="use the audio from this second", default=None))
    p.add_argument("--end", dest="end_seconds", **flag("end", help="use the audio up to this second", default=None))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--lean-memory", action="store_true",
                   help="CPU: return freed memory to the system every step (about 10%% lower peak at 1024 px, "
                        "but page faults make each step up to 2x slower; see README, Measured figures)")
    _instant_arguments(p)
    return p


def _instant_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("instant edits (docs/instant.md)")
    g.add_argument("--instant", action="store_true",
                   help="no optimisation: one step along the generator's analysed StyleSpace directions "
                        "(analysed once per generator and CLIP, then cached)")
    g.add_argument("--init", choices=["source", "instant"], default="source",
                   help="where the optimiser starts: the source, or the best point along the instant edit")
    g.add_argument("--alpha", **flag("alpha", default=None, help="instant strength (default 1: the code moves one "
                                    "typical W+ row spread; with --space style: standard deviations, try 3-6)"))
    g.add_argument("--beta", **flag("beta", default=None, help="instant edits use only style channels whose relevance "
                                   "(a cosine) is at least this (default 0.1; larger: fewer channels)"))
    g.add_argument("--reference", choices=["source", "mean"], default="source",
                   help="what the target is measured from: the source image's CLIP embedding, or the "
                        "generator's mean image embedding")
    g.add_argument("--neutral", metavar="PROMPT", help="measure the target from this neutral prompt instead "
                                                       "(StyleCLIP's way; e.g. 'a photo of a landscape')")
    g.add_argument("--space", choices=["wplus", "style"], default="wplus",
                   help="move the W+ code (default) or StyleCLIP's style channels (saved as the nearest W+ code)")
    g.add_argument("--analysis-cache", type=Path, help="analysis cache file (default: "
                                                       "models/sgim_instant/<generator>.<clip>.safetensors)")
    g.add_argument("--analysis-samples", type=int, help="sample images of the analysis when it runs (default 64)")


def missing_models_message(missing: list[tuple[str, str]], why: str = "not given") -> str:
    """One short block: which files are missing and the exact commands that fetch them."""
    lines = [f"{why}; these model files are needed and missing (models folder {models_dir()}):"]
    for arg, default_name in missing:
        model = KNOWN_MODELS[default_name]
        lines.append(f"  --{arg}: {model.filename} -> {model.default_path}")
    lines.append("fetch them with:")
    for _, default_name in missing:
        model = model_source(KNOWN_MODELS[default_name])
        lines.append(f"  {launcher()} download {model.name}" + ("" if model.url else "   (explains the manual download)"))
    lines.append("or pass --generator/--encoder/--clip/--identity with your own files.")
    return "\n".join(lines)


def fetch_missing_models(missing: list[tuple[str, str]], offline_requested: bool = False) -> dict[str, Path]:
    """Download the known default models ``[(argument, registry name)]``; ``{argument: path}``.

    Offline (``--offline`` or ``$SGIM_OFFLINE``), for files without a direct address, or when the
    network fails, raises ParameterError with the download commands instead.
    """
    import urllib.error

    from .download import download

    if offline_requested or offline():
        raise ParameterError(missing_models_message(missing, "offline, so nothing was downloaded"))
    manual = [(arg, name) for arg, name in missing if model_source(KNOWN_MODELS[name]).url is None]
    if manual:
        raise ParameterError(missing_models_message(manual, "no direct download address"))
    print(f"[sgim] first use: downloading {len(missing)} model file(s) into {models_dir()}", file=sys.stderr)
    paths = {}
    for arg, name in missing:
        try:
            paths[arg] = download(KNOWN_MODELS[name])
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ParameterError(missing_models_message(missing, f"download failed ({reason})")) from None
    return paths


def _check_arguments(args: argparse.Namespace) -> None:
    """Numbers and the output path, checked before any model is loaded or step run."""
    from .device import resolve_device
    from .fileio import check_output_file
    from .limits import MAX_SEED, check_int

    if args.seed is not None:  # the numbers of the options table were checked while parsing
        check_int("--seed", args.seed, 0, MAX_SEED, "a seed")
    _check_instant_arguments(args)
    resolve_device(args.device)
    if args.source_latent is not None:  # a bad code file is refused before the models are loaded
        from .latents import load_wplus

        load_wplus(args.source_latent)
    if any(not text.strip() for text in args.text):
        raise ParameterError("--text: a prompt is empty; give words (or leave --text out)", parameter="text")
    out = check_output_file(args.out, "--out", create_folders=False)
    stem = out.with_suffix("")
    for extra in (stem.with_name(stem.name + "_source" + out.suffix), stem.with_name(stem.name + "_wplus.safetensors"),
                  out.with_name(f"{out.stem}_0{out.suffix}")):
        check_output_file(extra, "--out", create_folders=False)


def _check_instant_arguments(args: argparse.Namespace) -> None:
    from .instant.analysis import MAX_SAMPLES
    from .limits import check_int

    instant_flags = [f"--{name.replace('_', '-')}" for name in ("alpha", "beta", "neutral", "analysis_samples")
                     if getattr(args, name) is not None]
    if args.reference != "source":
        instant_flags.append("--reference")
    if args.space != "wplus":
        instant_flags.append("--space")
    if instant_flags and not (args.instant or args.init == "instant"):
        raise ParameterError(f"{instant_flags[0]}: only used with --instant or --init instant", parameter="instant")
    if args.instant and args.init == "instant":
        raise ParameterError("--init instant: starts the optimiser from an instant edit; --instant skips the "
                             "optimiser. Give one of them", parameter="init")
    if args.instant:
        unused = [flag for flag, value in (("--steps", args.steps), ("--lr", args.lr), ("--lambda-sim", args.lambda_sim),
                                           ("--lambda-id", args.lambda_id)) if value is not None]
        unused += ["--adaptive-mask"] if args.adaptive_mask else []
        if unused:
            raise ParameterError(f"{unused[0]}: an optimiser setting; --instant does not optimise", parameter="instant")
    if (args.instant or args.init == "instant") and args.mode == "generate":
        raise ParameterError("--instant: an instant edit moves a source code; generate mode has none",
                             parameter="instant")
    if args.analysis_samples is not None:
        check_int("--analysis-samples", args.analysis_samples, 1, MAX_SAMPLES, "a number of samples")
    if args.neutral is not None and args.reference != "source":
        raise ParameterError("--neutral: already sets the reference; leave --reference out", parameter="neutral")


def request_from_args(args: argparse.Namespace):
    """The :class:`~sgim_nodes.jobs.edit.EditRequest` of the parsed flags (models found or fetched)."""
    from .jobs.edit import EditRequest
    from .optimize.rules import check_source_options, normalize_target_weights

    _check_arguments(args)
    if not args.audio and not args.text and args.mode == "edit":
        raise ParameterError("give at least one --audio FILE or --text PROMPT to steer the edit")
    if not args.audio and not args.text:
        raise ParameterError("generate mode needs at least one --audio FILE or --text PROMPT")
    if Path(args.out).suffix.lower() not in IMAGE_FORMATS:
        raise ParameterError(f"--out: {args.out} has no image extension this command writes; use one of "
                             f"{', '.join(IMAGE_FORMATS)}", parameter="out")
    weights = None
    if args.weights:
        try:
            weights = [float(v) for v in args.weights.split(",")]
        except ValueError:
            raise ParameterError(f"--weights: expected comma-separated numbers, got {args.weights!r}") from None
        count = len(args.audio) + len(args.text)
        if len(weights) != count:
            raise ParameterError(f"--weights: got {len(weights)} weights for {count} targets (audio first, then text)")
        normalize_target_weights(weights, count, parameter="--weights")  # refuses negatives and all-zero now
    try:
        check_source_options(args.mode, batch=args.batch, seed_given=args.seed is not None,
                             source_given=args.source_latent is not None, class_given=args.class_label is not None)
    except ParameterError as exc:
        raise ParameterError(f"--{exc}", parameter=exc.parameter) from None
    for path in args.audio:  # before any download: a typo must not cost a first-run download
        if not Path(path).is_file():
            raise ParameterError(f"--audio: file not found: {path}", parameter="audio")
    if args.source_latent is not None and not Path(args.source_latent).is_file():
        raise ParameterError(f"--source-latent: file not found: {args.source_latent}", parameter="source_latent")
    needed = ["generator", "clip"] + (["encoder"] if args.audio else [])
    if (args.lambda_id or 0) > 0 or (args.preset == "face" and args.lambda_id is None):
        needed.append("identity")
    paths, missing = {}, []
    for arg in needed:
        folder, default_name = DEFAULT_FILES[arg]
        given = getattr(args, arg)
        found = find_model_file(folder, given, KNOWN_MODELS[default_name].filename)
        if found is None:
            if given:
                where = "" if not is_bare_name(given) else f" (looked in {models_dir() / folder} too)"
                raise ParameterError(f"--{arg}: file not found: {given}{where}", parameter=arg)
            missing.append((arg, default_name))
        paths[arg] = found
    if missing:
        paths.update(fetch_missing_models(missing, args.offline))
    return EditRequest(out=args.out, audio=list(args.audio), text=list(args.text), weights=weights,
                       clip_model=args.clip_model, preset=args.preset, steps=args.steps, lr=args.lr,
                       lambda_sim=args.lambda_sim, lambda_id=args.lambda_id, truncation=args.truncation,
                       mask=args.mask, adaptive_mask=args.adaptive_mask, source_latent=args.source_latent,
                       mode=args.mode, seed=args.seed, batch=args.batch, class_label=args.class_label,
                       hop_seconds=args.hop_seconds,
                       start_seconds=args.start_seconds, end_seconds=args.end_seconds, device=args.device,
                       lean_memory=args.lean_memory, instant=args.instant, init=args.init, alpha=args.alpha,
                       beta=args.beta, reference=args.reference, neutral=args.neutral, space=args.space,
                       analysis_cache=args.analysis_cache, analysis_samples=args.analysis_samples, **paths)


def save_images(images: torch.Tensor, path: Path) -> list[Path]:
    """Save generator output ``[B, 3, H, W]`` in [-1, 1] in the format ``path``'s extension names
    (PNG, JPEG quality 95, WebP quality 95): ``path``, or ``path_<i>`` for a batch."""
    import numpy as np
    import torch
    from PIL import Image

    from .fileio import atomic_path
    from .limits import check_finite

    path = Path(path)
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ParameterError(f"{path}: cannot write images with extension {path.suffix!r}; use one of "
                             f"{', '.join(IMAGE_FORMATS)}", parameter="out")
    options = {} if image_format == "PNG" else {"quality": 95}
    check_finite("images", images, what="the rendered images", hint="; nothing was written")
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    paths = [path] if pixels.shape[0] == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}")
                                                  for i in range(pixels.shape[0])]
    for image, target in zip(pixels, paths):
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(tmp, format=image_format,
                                                                                       **options)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    request = request_from_args(args)
    from .jobs.edit import run_edit
    from .jobs.run import TqdmRun

    outcome = run_edit(request, TqdmRun(request.device, lean_memory=request.lean_memory))
    print(f"targets: {', '.join(outcome.labels)}")
    print(f"CLIP cosine distance to the target (mean per edit): {outcome.clip_before:.4f} -> "
          f"{outcome.clip_after:.4f}")
    for path in outcome.written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
