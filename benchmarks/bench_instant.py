"""Instant edits against the W+ optimiser, side by side, at 256 and 1024 px (random-weight real architectures).

    python benchmarks/bench_instant.py --bounded       # at most ~10 min on an idle 2-core CPU (see below)
    python benchmarks/bench_instant.py                 # everything measured at 256 and 1024 (GPU: minutes;
                                                       # a 2-core CPU: many hours)
    python benchmarks/bench_instant.py --quick         # tiny models, few steps: checks that everything runs
    python benchmarks/bench_instant.py --device cuda --json out.json

Models as in bench_optimize.py: StyleGAN2 256 / 1024, open_clip ViT-B-32, ResNet-18 audio encoder, all with
fixed random weights; "tiny" is bench_optimize's quick model (StyleGAN2 32 px, w_dim 64, 32-d CLIP).

Per configuration:

- seconds per instant edit (prepared editor: the matrix products; and with the one render + CLIP pass of
  the source its reference needs), MEASURED, against seconds per 300-step optimiser edit, EXTRAPOLATED from
  ``--time-steps`` timed steps (step time is constant after the first; the first, warm-up step is not timed);
- the analysis cost: seconds per channel-image of the Jacobian method (one forward, then ``--dims`` of the
  D backward passes timed, extrapolated to D) and of finite differences (``--fd-channels`` channels timed:
  2 renders each), and the minutes EXTRAPOLATED for NVIDIA's 1024 px configurations (StyleGAN2 FFHQ;
  StyleGAN3-T and -R) with the default 64 samples;
- the music-video cost per second of music, EXTRAPOLATED from measured parts (one audio-window embedding,
  one edit, one optimiser step, one frame rendered at batch 1) with animate's defaults: ``--follow instant``
  (an embedding and an edit every 0.25 s, a render per frame) against keyframes (every 4 s, warm-started
  with 30 steps each, as every keyframe but the first; a render per frame);
- quality (where ``quality`` is in the row): the CLIP-distance reduction of the instant edit as a fraction
  of the optimiser's after ``--opt-steps`` steps at equal displacement (alpha rescaled; displacement is
  linear in alpha): the default W+ edit and the StyleSpace edit at the optimiser's ||ws - source||, and the
  StyleSpace edit (rendered from its styles) at the optimiser's style displacement; and the optimiser
  steps the run started from the instant warm start needs to reach the cold run's objective after
  ``--opt-steps`` steps. Both MEASURED by full runs.

Modes. Default: every row has everything, all at 256 and 1024 px (the edits use an analysis of
``--edit-samples`` samples; each costs D backward passes). ``--bounded``: speed, analysis cost and music
video at 256 and 1024 px from a few timed steps and passes (the 256/1024 rows' edits use random directions
of the analysed shape: an edit's cost does not depend on their values), and quality on the tiny model,
where full 300-step runs and an analysis take seconds; it says so in its output. ``--quick``: the tiny
model only, 20 optimiser steps.

Peak memory: VmHWM on CPU (monotone over the run, configurations run in order), max allocated on CUDA.
Timings are meaningful only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

FPS = 24.0
FOLLOW_SECONDS = 0.25  # animate --follow-seconds default
from sgim_nodes.animate.defaults import DEFAULT_KEYFRAME_SECONDS as KEYFRAME_SECONDS  # noqa: E402
from sgim_nodes.animate.defaults import DEFAULT_KEYFRAME_STEPS as KEYFRAME_STEPS  # noqa: E402  (later keyframes)
FULL_STEPS = 300


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int = 1):
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats, out


def peak_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024 ** 3
    from bench_optimize import vm_hwm_gb

    return vm_hwm_gb()


def nvidia_channels() -> dict[str, int]:
    """Style channels of NVIDIA's 1024 px configurations (conv + ToRGB; StyleGAN3 without the input's 4)."""
    from sgim_nodes.stylegan import GeneratorConfig, StyleGAN3Config
    from sgim_nodes.stylegan.stylegan3 import design_layers

    sg2 = GeneratorConfig.stylegan2(1024)
    res = sg2.block_resolutions
    total = sg2.channels[4] * 2 + sum(sg2.channels[p] + 2 * sg2.channels[c] for p, c in zip(res[:-1], res[1:]))
    out = {"stylegan2-ffhq-1024": total}
    for name, config in (("stylegan3-t-1024", StyleGAN3Config.stylegan3_t(1024)),
                         ("stylegan3-r-1024", StyleGAN3Config.stylegan3_r(1024))):
        out[name] = sum(layer.in_channels for layer in design_layers(config)[1])
    return out


def synthetic_directions(gen, dims: int, device):
    """Random directions of the analysed shape (real style statistics): for timing edits only, whose cost
    does not depend on the directions' values."""
    import torch

    from sgim_nodes.instant import AnalysisSettings, StyleDirections, style_statistics

    settings = AnalysisSettings(std_samples=256)
    mean, std = style_statistics(gen, settings)
    g = torch.Generator().manual_seed(3)
    table = gen.style_layers()
    return StyleDirections(torch.randn(table[-1].stop, dims, generator=g) * 1e-3, mean, std,
                           torch.nn.functional.normalize(torch.randn(dims, generator=g), dim=0), table,
                           {"settings": settings.key(), "synthetic": True})


def bench_config(config: str, device, args, quality: bool) -> dict:
    import torch

    from bench_optimize import build_models, make_generator
    from sgim_nodes.audio import embed_audio
    from sgim_nodes.clip import ClipModel
    from sgim_nodes.instant import AnalysisSettings, InstantEditor, analyze_styles, reference_embedding
    from sgim_nodes.instant.analysis import _embed, sample_codes, style_statistics
    from sgim_nodes.instant.edit import target_direction
    from sgim_nodes.optimize import optimize_latent
    from sgim_nodes.optimize.loop import sample_source_ws
    from sgim_nodes.stylegan.stylespace import flatten_styles

    tiny = config == "quick"
    gen_config, clip_model, audio, _ = build_models(config)
    gen = make_generator(gen_config, "activation").to(device)
    clip = ClipModel(clip_model.to(device), f"random-{config}", tokenizer=None)
    audio = audio.to(device).eval().requires_grad_(False)
    table = gen.style_layers()
    channels, dims = table[-1].stop, int(clip.embed_dim)
    row = {"config": "tiny" if tiny else config, "resolution": gen.resolution, "style_channels": channels,
           "clip_dim": dims, "measured": [], "extrapolated": []}

    # ---- analysis cost
    if tiny:  # the whole analysis is affordable: measured
        settings = AnalysisSettings(samples=2, batch=1, std_samples=256)
        seconds, _ = _timed(lambda: analyze_styles(gen, clip, settings), device)
        jac_per_image = seconds / settings.samples
        row["measured"].append("jacobian_seconds_per_sample (a 2-sample analysis)")
    else:
        ws = sample_codes(gen, 1, 0, 0.7).to(device)
        with torch.enable_grad():
            flat = flatten_styles(gen.styles(ws)).detach().requires_grad_(True)
            forward, emb = _timed(lambda: _embed(gen, clip, flat, table, AnalysisSettings()), device)
            n = min(args.dims, dims)
            backward, _ = _timed(lambda: [torch.autograd.grad(emb[:, d].sum(), flat, retain_graph=True)
                                          for d in range(n)], device)
        jac_per_image = forward + backward / n * dims
        row["extrapolated"].append(f"jacobian_seconds_per_sample (1 forward + {n} of {dims} backward passes "
                                   "timed)")
    row["jacobian_seconds_per_sample"] = jac_per_image
    row["jacobian_seconds_per_channel_image"] = jac_per_image / channels
    ws = sample_codes(gen, 1, 0, 0.7).to(device)
    _, std = style_statistics(gen, AnalysisSettings(std_samples=64))
    probe_channels = min(args.fd_channels, channels)
    _fd_probe(gen, clip, ws, table, std.to(device), 1, AnalysisSettings(method="finite"))  # warm-up
    fd_seconds, _ = _timed(lambda: _fd_probe(gen, clip, ws, table, std.to(device), probe_channels,
                                             AnalysisSettings(method="finite")), device)
    row["finite_seconds_per_channel_image"] = fd_seconds / probe_channels
    row["measured"].append(f"finite_seconds_per_channel_image ({probe_channels} channels of one image)")
    # The Jacobian's cost per sample does not grow with the channel count (D backward passes), so the
    # per-sample time carries over to other configurations at this resolution (for StyleGAN3, whose
    # layers cost differently, an approximation); finite differences scale with the channels.
    samples = AnalysisSettings().samples
    row["extrapolated_minutes_64_samples"] = {
        name: {"jacobian": jac_per_image * samples / 60,
               "finite": row["finite_seconds_per_channel_image"] * n_ch * samples / 60}
        for name, n_ch in nvidia_channels().items()}
    row["extrapolated"].append("extrapolated_minutes_64_samples (this device's per-sample / per-channel-image "
                               "times x 64 samples; StyleGAN3 from StyleGAN2's per-sample time at this resolution)")

    # ---- directions for the edits: a short real analysis where quality is measured, else random ones
    if quality:
        directions = analyze_styles(gen, clip, AnalysisSettings(samples=args.edit_samples, batch=1,
                                                                std_samples=256))
        row["edit_directions"] = f"analysed, {args.edit_samples} samples"
    else:
        directions = synthetic_directions(gen, dims, device)
        row["edit_directions"] = "random, of the analysed shape (timing only)"
    editor = InstantEditor(gen, directions)
    source = sample_source_ws(gen, 1, seed=1).to(device)
    target = torch.nn.functional.normalize(torch.randn(1, dims, generator=torch.Generator().manual_seed(7)), dim=-1)
    target = target.to(device)
    with torch.no_grad():
        reference_embedding("source", generator=gen, clip=clip, source_ws=source)  # warm-up
        ref_time, ref = _timed(lambda: reference_embedding("source", generator=gen, clip=clip, source_ws=source),
                               device)
    delta_t = target_direction(target, ref)
    editor.edit(source, delta_t)  # warm-up
    edit_time, result = _timed(lambda: editor.edit(source, delta_t), device, repeats=5)
    row["instant_edit_seconds"] = edit_time
    row["instant_edit_with_source_render_seconds"] = edit_time + ref_time
    row["measured"] += ["instant_edit_seconds (mean of 5)", "instant_edit_with_source_render_seconds"]

    # ---- optimiser: time per step, extrapolated to 300 steps
    lambda_sim = 0.008

    def optimise(steps, init=None):
        return optimize_latent(gen, clip, target, source, steps=steps, lr=0.1, lambda_sim=lambda_sim,
                               return_images=False, init_ws=init, reuse_cpu_memory=device.type == "cpu")

    optimise(1)  # warm-up
    step_time, _ = _timed(lambda: optimise(args.time_steps), device)
    row["optimiser_seconds_per_step"] = step_time / args.time_steps
    row["optimiser_300_steps_seconds_extrapolated"] = row["optimiser_seconds_per_step"] * FULL_STEPS
    row["speedup_instant_vs_300_steps"] = row["optimiser_300_steps_seconds_extrapolated"] / row[
        "instant_edit_with_source_render_seconds"]
    row["measured"].append(f"optimiser_seconds_per_step ({args.time_steps} steps timed)")
    row["extrapolated"] += ["optimiser_300_steps_seconds_extrapolated (per step x 300)",
                            "speedup_instant_vs_300_steps"]

    # ---- music video per second of music (animate's defaults), from measured parts
    rate = int(audio.settings.sample_rate)
    window = torch.randn(1, int(round(audio.settings.window_seconds * rate)),
                         generator=torch.Generator().manual_seed(5)) * 0.1
    with torch.no_grad():
        embed_audio(audio, window, rate, pool="first")  # warm-up
        embed_time, _ = _timed(lambda: embed_audio(audio, window, rate, pool="first"), device, repeats=3)
        render_time, _ = _timed(lambda: gen.synthesis(source), device, repeats=2)
    row["audio_window_embedding_seconds"] = embed_time
    row["render_seconds_per_frame"] = render_time
    row["measured"] += ["audio_window_embedding_seconds (one encoder window)", "render_seconds_per_frame (batch 1)"]
    row["music_video_seconds_per_second"] = {
        "follow_instant": (embed_time + edit_time) / FOLLOW_SECONDS + FPS * render_time,
        "keyframes": (embed_time + KEYFRAME_STEPS * row["optimiser_seconds_per_step"]) / KEYFRAME_SECONDS
        + FPS * render_time}
    row["extrapolated"].append(f"music_video_seconds_per_second ({FPS:g} fps; follow: embedding + edit every "
                               f"{FOLLOW_SECONDS:g} s; keyframes: embedding + {KEYFRAME_STEPS} steps every "
                               f"{KEYFRAME_SECONDS:g} s; both + a render per frame)")
    if quality:
        row.update(quality_measures(gen, clip, editor, directions, source, target, delta_t, result, lambda_sim,
                                    args))
        row["measured"] += [f"quality ({args.opt_steps}-step cold and warm optimiser runs)"]
    row["peak_memory_gb"] = peak_gb(device)
    return row


def quality_measures(gen, clip, editor, directions, source, target, delta_t, result, lambda_sim, args) -> dict:
    """Reduction fraction at equal displacement and warm-start steps, from full optimiser runs."""
    import torch

    from sgim_nodes.instant import WARM_ALPHAS, InstantEditor, warm_start_codes
    from sgim_nodes.optimize import optimize_latent
    from sgim_nodes.stylegan.stylespace import flatten_styles

    def optimise(steps, init=None):
        return optimize_latent(gen, clip, target, source, steps=steps, lr=0.1, lambda_sim=lambda_sim,
                               return_images=False, init_ws=init)

    cold = optimise(args.opt_steps)

    def distance(ws):
        with torch.no_grad():
            return float(1 - (clip.image_features(gen.synthesis(ws)) * target).sum())

    d0 = distance(source)
    opt_shift = float((cold.ws - source).norm())
    with torch.no_grad():
        opt_style_shift = float((flatten_styles(gen.styles(cold.ws)) - flatten_styles(gen.styles(source))).norm())
    style_editor = InstantEditor(gen, directions, space="style")
    unit_style = style_editor.edit(source, delta_t, alpha=1.0)
    wplus_equal = editor.edit(source, delta_t, alpha=opt_shift / editor.w_spread)
    style_equal_w = style_editor.edit(source, delta_t, alpha=opt_shift / max(float((unit_style.ws - source).norm()),
                                                                             1e-12))
    style_equal_s = style_editor.edit(source, delta_t, alpha=opt_style_shift / max(float(unit_style.delta.norm()),
                                                                                   1e-12))
    with torch.no_grad():
        styles_distance = float(1 - (clip.image_features(gen.synthesis_styles(style_equal_s.styles)) * target).sum())
    out = {"displacement": {"wplus": opt_shift, "style": opt_style_shift}}
    out["clip_distance"] = {"source": d0, "optimiser": distance(cold.ws), "instant_default_alpha": distance(result.ws),
                            "instant_wplus_equal_wplus_displacement": distance(wplus_equal.ws),
                            "instant_style_equal_wplus_displacement": distance(style_equal_w.ws),
                            "instant_style_equal_style_displacement": styles_distance}
    opt_gain = d0 - out["clip_distance"]["optimiser"]
    out["instant_reduction_fraction_of_optimiser"] = {
        key[len("instant_"):]: (d0 - value) / opt_gain if opt_gain > 0 else math.nan
        for key, value in out["clip_distance"].items() if key.endswith("displacement")}
    # the cold run's objective after all its steps: row 0 of a run started at its final codes (same
    # source, so the same similarity anchor; no adaptive mask or identity term)
    cold_final = float(optimise(1, init=cold.ws).history["total"][0].sum())
    init, chosen = warm_start_codes(gen, clip, editor, target, source, lambda_sim=lambda_sim)
    out["warm_start_alpha"] = float(chosen[0])
    warm = optimise(args.opt_steps, init=init)
    reached = (warm.history["total"].sum(dim=1) <= cold_final).nonzero()  # row i: after i updates
    out["warm_start_steps_to_cold_objective"] = int(reached[0]) if len(reached) else None
    # the control: where the cold run itself first reaches its own final objective. Adam at lr 0.1 keeps the
    # objective above it until the schedule's cool-down, so any start (even a good one) is judged against that
    own = (cold.history["total"].sum(dim=1) <= cold_final).nonzero()
    out["cold_steps_to_own_final_objective"] = int(own[0]) if len(own) else None
    out["warm_start_cost"] = f"{len(WARM_ALPHAS) + 1} renders + CLIP passes (forward only), batched"
    out["opt_steps"] = args.opt_steps
    return out


def _fd_probe(gen, clip, ws, table, std, count, settings):
    """Central differences of the first ``count`` channels for one sample (2 renders per channel)."""
    import torch

    from sgim_nodes.instant.analysis import _embed
    from sgim_nodes.stylegan.stylespace import flatten_styles

    with torch.no_grad():
        flat = flatten_styles(gen.styles(ws)).detach()
        for first in range(0, count, 8):
            idx = torch.arange(first, min(first + 8, count), device=flat.device)
            m = idx.numel()
            probe = flat[:1].repeat(2 * m, 1)
            probe[torch.arange(m), idx] += std[idx].to(flat.dtype)
            probe[torch.arange(m, 2 * m), idx] -= std[idx].to(flat.dtype)
            _embed(gen, clip, probe, table, settings)


def _steps(steps, limit) -> str:
    return f"not reached in {limit}" if steps is None else str(steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny model and few steps (checks that it runs)")
    mode.add_argument("--bounded", action="store_true",
                      help="at most ~10 min on an idle 2-core CPU: speed and analysis cost at 256/1024 px from "
                           "timed parts (extrapolated), quality on the tiny model with full runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--configs", default="256,1024")
    p.add_argument("--time-steps", type=int, help="optimiser steps timed (extrapolated to 300; default 3, "
                                                  "--bounded 2)")
    p.add_argument("--opt-steps", type=int, help=f"steps of the cold / warm optimiser runs (default {FULL_STEPS}, "
                                                 "--quick 20)")
    p.add_argument("--dims", type=int, help="backward passes timed for the Jacobian (of D; default 8, --bounded 2)")
    p.add_argument("--fd-channels", type=int, help="channels timed for finite differences (default 64, --bounded 2)")
    p.add_argument("--edit-samples", type=int,
                   help="samples of the analysis the quality edits use (default 2; --bounded, on the tiny model: "
                        "16; each costs D backward passes: minutes at 1024 px on a GPU, about an hour on a 2-core CPU)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import torch

    from sgim_nodes.device import resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    if args.quick:
        defaults = dict(time_steps=2, opt_steps=20, dims=4, fd_channels=16, edit_samples=2)
    elif args.bounded:
        defaults = dict(time_steps=2, opt_steps=FULL_STEPS, dims=2, fd_channels=2, edit_samples=16)
    else:
        defaults = dict(time_steps=3, opt_steps=FULL_STEPS, dims=8, fd_channels=64, edit_samples=2)
    for key, value in defaults.items():
        setattr(args, key, pick(getattr(args, key), value))
    configs = [c.strip() for c in args.configs.split(",")]
    if args.quick:
        plan = [("quick", True)]
    elif args.bounded:
        plan = [(c, False) for c in configs] + [("quick", True)]
    else:
        plan = [(c, True) for c in configs]
    started = time.perf_counter()
    rows = []
    for config, quality in plan:
        t0 = time.perf_counter()
        row = bench_config(config, device, args, quality)
        row["wall_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    print(f"\ndevice: {device} ({torch.get_num_threads()} threads); total {time.perf_counter() - started:.0f} s")
    print("Speed (instant: measured; 300-step optimiser: EXTRAPOLATED from timed steps; goal >= 100x) and "
          "analysis cost (EXTRAPOLATED from timed passes except on the tiny model)")
    print(f"{'config':>6} {'instant s':>10} {'opt 300 s*':>10} {'speedup*':>9} {'jac s/ch-img':>12} "
          f"{'fd s/ch-img':>11} {'FFHQ-1024 jac min*':>18} {'SG3-T jac min*':>14} {'SG3-R jac min*':>14}")
    for r in rows:
        mins = r["extrapolated_minutes_64_samples"]
        print(f"{r['config']:>6} {r['instant_edit_with_source_render_seconds']:>10.4f} "
              f"{r['optimiser_300_steps_seconds_extrapolated']:>10.1f} {r['speedup_instant_vs_300_steps']:>9.0f} "
              f"{r['jacobian_seconds_per_channel_image']:>12.2e} {r['finite_seconds_per_channel_image']:>11.2e} "
              f"{mins['stylegan2-ffhq-1024']['jacobian']:>18.1f} {mins['stylegan3-t-1024']['jacobian']:>14.1f} "
              f"{mins['stylegan3-r-1024']['jacobian']:>14.1f}")
    print("  FFHQ/SG3 minutes: 64 samples at this config's per-sample time on this device (meaningful for the "
          "1024 row); finite differences in the JSON")
    print("Music video, seconds of compute per second of music (EXTRAPOLATED from measured parts):")
    for r in rows:
        mv = r["music_video_seconds_per_second"]
        print(f"{r['config']:>6} follow instant {mv['follow_instant']:>9.2f}   keyframes {mv['keyframes']:>9.2f}")
    quality_rows = [r for r in rows if "warm_start_steps_to_cold_objective" in r]
    if quality_rows:
        print(f"Quality (MEASURED by full {args.opt_steps}-step runs"
              f"{' on the tiny model only' if args.bounded else ''}; warm-start goal <= 100 steps):")
        for r in quality_rows:
            frac = r["instant_reduction_fraction_of_optimiser"]
            print(f"{r['config']:>6} reduction fraction at equal W+ displacement "
                  f"{frac['wplus_equal_wplus_displacement']:.2f} (StyleSpace edit: "
                  f"{frac['style_equal_wplus_displacement']:.2f} at equal W+, "
                  f"{frac['style_equal_style_displacement']:.2f} at equal style displacement); warm start alpha "
                  f"{r['warm_start_alpha']:g}, steps to the cold run's {args.opt_steps}-step objective: "
                  f"{_steps(r['warm_start_steps_to_cold_objective'], args.opt_steps)} (goal <= 100; the cold run "
                  f"itself first reaches it at step {_steps(r['cold_steps_to_own_final_objective'], args.opt_steps)}; "
                  f"warm start cost: {r['warm_start_cost']})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
