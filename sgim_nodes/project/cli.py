"""``python -m sgim_nodes project IMAGE --generator G --out CODE.safetensors [--tune]``.

Writes the W+ code (our W+ file: ``edit --source-latent CODE.safetensors`` and the Load W+ Code node read
it) and ``CODE_projection.png`` (the code rendered). With ``--tune`` (or ``--noise on``) the generator
that renders the fit is a modified copy, written as ``CODE_generator.safetensors`` (``--tuned-generator``
to choose); edit with it: ``edit --generator CODE_generator.safetensors --source-latent CODE.safetensors``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ParameterError
from ..options import flag


def _parser() -> argparse.ArgumentParser:
    from ..cli_help import command_parser
    from .options import DISTANCES, FIT_MODES, SPACES

    p = command_parser("project", "Project a picture into a StyleGAN generator's W+ (and optionally tune a copy "
                                  "of the generator around it), to edit it with sound.",
                       epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("image", type=Path, nargs="+", help="picture(s): any format Pillow reads; several = one batch")
    p.add_argument("--out", type=Path, required=True, help="W+ code to write (.safetensors)")
    p.add_argument("--generator", help="StyleGAN file (.pt/.pkl/.safetensors) or a name in models/stylegan")
    p.add_argument("--distance", choices=DISTANCES, default="lpips",
                   help="lpips (needs --vgg), pixel, multiscale (no file), clip (needs --clip); see README")
    p.add_argument("--vgg", help="torchvision's vgg16-397923af.pth (default: models/sgim_vgg/)")
    p.add_argument("--clip", help="CLIP model for --distance clip (file or a name in models/sgim_clip)")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--steps", **flag("steps", "project"))
    p.add_argument("--space", choices=SPACES, default="wplus", help="wplus: W first, then W+ (default); w: W only")
    p.add_argument("--w-fraction", **flag("w_fraction"))
    p.add_argument("--lr", **flag("lr", "project"))
    p.add_argument("--wplus-lr", **flag("wplus_lr", "project", help="peak learning rate in W+ (default: half of "
                                                                    "--lr, 0.05)"))
    p.add_argument("--pixel-weight", **flag("pixel_weight", help="add this much pixel MSE to the distance"))
    p.add_argument("--noise", choices=["auto", "on", "off"], default="auto",
                   help="optimise StyleGAN2's noise maps: auto = only with --tune (they are stored in the tuned "
                        "generator); on without --tune also writes a generator file carrying them")
    p.add_argument("--fit", choices=FIT_MODES, default="crop",
                   help="crop: centre square (default); pad: whole picture, border repeats its edges")
    p.add_argument("--tune", action="store_true", help="pivotal tuning of a copy of the generator (for edits of real "
                                                       "pictures that look right)")
    p.add_argument("--tune-steps", **flag("tune_steps", help="tuning steps with --tune (PTI's)"))
    p.add_argument("--tune-lr", **flag("tune_lr"))
    p.add_argument("--tuned-generator", type=Path, help="where to write the tuned generator "
                                                        "(default: <out>_generator.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (the starting noise maps)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (else refused before any work)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--lean-memory", action="store_true", help="CPU: give freed memory back every step (lower peak, slower)")
    return p


def _find_all(wanted: list[tuple[str, str | None, str, str]]) -> dict[str, Path]:
    """``{arg: path}`` of ``[(folder, given, known default, arg)]``; missing known defaults are fetched
    on first use, as ``edit`` does (``$SGIM_OFFLINE`` turns that into the missing-models message)."""
    from ..models import KNOWN_MODELS, find_model_file
    from ..pipeline import fetch_missing_models

    paths, missing = {}, []
    for folder, given, known, arg in wanted:
        found = find_model_file(folder, given, KNOWN_MODELS[known].filename)
        if found is None and given:
            raise ParameterError(f"--{arg}: file not found: {given}", parameter=arg)
        if found is None:
            missing.append((arg, known))
        paths[arg] = found
    if missing:
        paths.update(fetch_missing_models(missing))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # before the heavy imports: --help stays fast

    from ..jobs.project import ProjectFilesRequest, ProjectRequest, read_pictures, run_project
    from ..jobs.run import TqdmRun
    from ..models import launcher
    from .options import VGG_FOLDER

    if Path(args.out).suffix != ".safetensors":
        raise ParameterError(f"--out: expected a .safetensors file name, got {args.out}", parameter="out")
    from ..jobs.project import check_outputs

    # every output (the code, its rendering(s), the generator copy), before any work
    check_outputs(args.out, len(args.image), args.tune or args.noise == "on", args.tuned_generator, args.overwrite)
    pictures = read_pictures(args.image)  # a typo in a picture's name stops before the models are looked for
    wanted = [("stylegan", args.generator, "landscape", "generator")]
    if args.distance == "lpips":
        wanted.append((VGG_FOLDER, args.vgg, "vgg16", "vgg"))
    if args.distance == "clip":
        wanted.append(("sgim_clip", args.clip, "clip-vit-b-32", "clip"))
    paths = _find_all(wanted)
    generator, vgg, clip = paths["generator"], paths.get("vgg"), paths.get("clip")
    math = ProjectRequest(None, None, distance=args.distance, steps=args.steps, space=args.space,
                          w_fraction=args.w_fraction, lr=args.lr, wplus_lr=args.wplus_lr,
                          pixel_weight=args.pixel_weight, optimize_noise=args.noise, fit=args.fit,
                          tune_steps=args.tune_steps if args.tune else 0, tune_lr=args.tune_lr, seed=args.seed)
    run = TqdmRun(args.device, lean_memory=args.lean_memory)
    outcome = run_project(ProjectFilesRequest(pictures, args.out, generator, vgg=vgg, clip=clip,
                                              clip_model=args.clip_model, projection=math,
                                              tuned_generator=args.tuned_generator), run)
    result = outcome.result
    figures = ", ".join(f"{v:.2f}" for v in result.psnr)
    if outcome.tuned:
        figures = ", ".join(f"{a:.2f} -> {b:.2f} (tuned)" for a, b in zip(result.psnr_before_tuning, result.psnr))
    print(f"PSNR to the picture at {outcome.generator_resolution} px: {figures} dB")
    for path in outcome.written:
        print(f"wrote {path}")
    if result.generator is not None:
        print(f"edit it with: {launcher()} edit --generator {outcome.written[0]} --source-latent {args.out} "
              "--audio ...")
    return 0


if __name__ == "__main__":
    from ..errors import run_command

    raise SystemExit(run_command(main))
