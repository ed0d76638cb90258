"""Analyse a generator once for instant edits: the CLIP direction of every style channel, cached.

The result is cached (our .safetensors, keyed by the generator file's content and the CLIP model), so
this runs once per generator and CLIP; instant edits find the cache by themselves. Interrupted, it
resumes where it stopped when run again with the same options. The cost is printed at the end.
"""

from __future__ import annotations

from ..cli_help import command_parser

# The analysis defaults (sgim_nodes.instant.analysis.AnalysisSettings; a test keeps both equal).
DEFAULTS = dict(samples=64, k=1.0, truncation=0.7, seed=0, method="jacobian", std_samples=2048, batch=4)


def _parser():
    p = command_parser("analyze", __doc__)
    p.add_argument("--generator", required=True, help="StyleGAN2/StyleGAN3 file (.pt/.pkl/.safetensors), or its name in models/stylegan/")
    p.add_argument("--clip", required=True, help="CLIP model (OpenAI .pt, open_clip .bin/.safetensors)")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--samples", type=int, default=DEFAULTS["samples"], help="sample images averaged over")
    p.add_argument("--method", choices=("jacobian", "finite"), default=DEFAULTS["method"],
                   help="jacobian: exact derivative by reverse mode (fast); finite: StyleCLIP's +-k std differences")
    p.add_argument("--k", type=float, default=DEFAULTS["k"], help="finite differences: standard deviations moved")
    p.add_argument("--truncation", type=float, default=DEFAULTS["truncation"], help="truncation psi of the samples")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the sample codes")
    p.add_argument("--std-samples", type=int, default=DEFAULTS["std_samples"],
                   help="codes the channels' standard deviations are measured on")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="samples per pass (speed only)")
    p.add_argument("--cache", help="cache file (default: models/sgim_instant/<generator>.<clip>.safetensors)")
    p.add_argument("--recompute", action="store_true", help="analyse again even when the cache is valid")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    return p


def main(argv: list[str] | None = None) -> int:

    from ..errors import ParameterError

    from ..models import find_model_file

    args = _parser().parse_args(argv)
    for flag, folder in (("generator", "stylegan"), ("clip", "sgim_clip")):  # paths, or names in models/<folder>/
        found = find_model_file(folder, getattr(args, flag))
        if found is None:
            raise ParameterError(f"--{flag}: file not found: {getattr(args, flag)} (a path, or a file name in "
                                 f"models/{folder}/)", parameter=flag)
        setattr(args, flag, str(found))
    from ..clip import load_clip
    from ..jobs.instant import AnalyzeRequest, run_analyze
    from ..jobs.run import TqdmRun
    from ..stylegan import load_generator
    from .analysis import AnalysisSettings, analysis_cost

    try:
        settings = AnalysisSettings(samples=args.samples, k=args.k, truncation=args.truncation, seed=args.seed,
                                    method=args.method, std_samples=args.std_samples, batch=args.batch)
    except ParameterError as exc:  # name the flag the user typed
        name, _, rest = str(exc).partition(":")
        raise ParameterError(f"--{name.replace('_', '-')}:{rest}", parameter=exc.parameter) from None
    run = TqdmRun(args.device, unit="sample")
    run.status(f"loading {args.generator} and {args.clip}")
    generator = load_generator(args.generator, device=run.device)
    clip = load_clip(args.clip, model_name=args.clip_model, device=run.device)
    outcome = run_analyze(AnalyzeRequest(generator, clip, generator_file=args.generator, settings=settings,
                                         cache=args.cache, recompute=args.recompute), run)
    what = "cache hit" if outcome.cache_hit else "analysed"
    print(f"{what}: {outcome.cache_path}")
    print(analysis_cost(outcome.directions))
    return 0
