"""Instant edits against the W+ optimiser, side by side, at 256 and 1024 px (random-weight real architectures).

    python benchmarks/bench_instant.py                 # StyleGAN2 256 and 1024 + ViT-B/32 (long on a CPU)
    python benchmarks/bench_instant.py --quick         # tiny models: checks that everything runs
    python benchmarks/bench_instant.py --device cuda --json out.json

Per configuration (models as in bench_optimize.py: StyleGAN2 256 / 1024, open_clip ViT-B-32, ResNet-18 audio
encoder, all with fixed random weights):

- seconds per instant edit (prepared editor: the matrix products; and with the one render of the source its
  reference needs) against seconds per 300-step optimiser edit, EXTRAPOLATED from ``--time-steps`` timed steps
  (step time is constant after the first; the first, warm-up step is not timed);
- the CLIP-distance reduction of the instant edit as a fraction of the optimiser's after ``--opt-steps`` steps,
  at equal displacement (alpha rescaled; displacement is linear in alpha): the default W+ edit and the
  StyleSpace edit at the optimiser's ||ws - source||, and the StyleSpace edit (rendered from its styles)
  at the optimiser's style displacement ||s(ws) - s(source)||;
- the steps the optimiser started from the instant edit (``init_ws``) needs to reach the cold optimiser's
  final objective after ``--opt-steps`` steps;
- the analysis cost: seconds per channel-image of the Jacobian method (one forward, then ``--dims`` of the
  D backward passes timed and extrapolated to D) and of finite differences (64 channels timed), and the
  minutes extrapolated for NVIDIA's 1024 px configurations (StyleGAN2 FFHQ; StyleGAN3-T and -R) with the
  default 64 samples;
- the music-video cost per second of music: follow-instant (per frame: audio window embedding + edit +
  render) against keyframes (one optimiser edit and one embedding per keyframe, every 4 s, + render per frame).

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
KEYFRAME_SECONDS = 4.0
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


def bench_config(config: str, device, args) -> dict:
    import torch

    from bench_optimize import build_models, make_generator
    from sgim_nodes.clip import ClipModel
    from sgim_nodes.instant import AnalysisSettings, InstantEditor, analyze_styles, reference_embedding
    from sgim_nodes.instant.analysis import _embed, sample_codes, style_statistics
    from sgim_nodes.instant.edit import target_direction
    from sgim_nodes.optimize import optimize_latent
    from sgim_nodes.optimize.loop import sample_source_ws
    from sgim_nodes.stylegan.stylespace import flatten_styles

    quick = config == "quick"
    gen_config, clip_model, audio, _ = build_models(config)
    gen = make_generator(gen_config, "activation").to(device)
    clip = ClipModel(clip_model.to(device), f"random-{config}", tokenizer=None)
    audio = audio.to(device).eval().requires_grad_(False)
    table = gen.style_layers()
    channels, dims = table[-1].stop, int(clip.embed_dim)
    row = {"config": config, "resolution": gen.resolution, "style_channels": channels, "clip_dim": dims}

    # ---- analysis cost
    settings = AnalysisSettings(samples=2 if quick else 1, batch=1, std_samples=256)
    if quick:
        seconds, _ = _timed(lambda: analyze_styles(gen, clip, settings), device)
        jac_per_image = seconds / settings.samples
    else:
        ws = sample_codes(gen, 1, 0, 0.7).to(device)
        with torch.enable_grad():
            flat = flatten_styles(gen.styles(ws)).detach().requires_grad_(True)
            forward, emb = _timed(lambda: _embed(gen, clip, flat, table, settings), device)
            n = min(args.dims, dims)
            backward, _ = _timed(lambda: [torch.autograd.grad(emb[:, d].sum(), flat, retain_graph=True)
                                          for d in range(n)], device)
        jac_per_image = forward + backward / n * dims
    row["jacobian_seconds_per_sample"] = jac_per_image
    row["jacobian_seconds_per_channel_image"] = jac_per_image / channels
    ws = sample_codes(gen, 1, 0, 0.7).to(device)
    _, std = style_statistics(gen, AnalysisSettings(std_samples=64))
    probe_channels = min(64, channels)
    fd_seconds, _ = _timed(lambda: _fd_probe(gen, clip, ws, table, std.to(device), probe_channels,
                                             AnalysisSettings(method="finite")), device)
    row["finite_seconds_per_channel_image"] = fd_seconds / probe_channels
    # The Jacobian's cost per sample does not grow with the channel count (D backward passes), so the
    # per-sample time carries over to other configurations at this resolution (for StyleGAN3, whose
    # layers cost differently, an approximation); finite differences scale with the channels.
    samples = AnalysisSettings().samples
    row["extrapolated_minutes_64_samples"] = {
        name: {"jacobian": jac_per_image * samples / 60,
               "finite": row["finite_seconds_per_channel_image"] * n_ch * samples / 60}
        for name, n_ch in nvidia_channels().items()}

    # ---- directions for the edits (a short analysis; cost measured above)
    directions = analyze_styles(gen, clip, AnalysisSettings(samples=2 if quick else args.edit_samples, batch=1,
                                                            std_samples=256))
    editor = InstantEditor(gen, directions)
    source = sample_source_ws(gen, 1, seed=1).to(device)
    target = torch.nn.functional.normalize(torch.randn(1, dims, generator=torch.Generator().manual_seed(7)), dim=-1)
    target = target.to(device)
    with torch.no_grad():
        ref_time, ref = _timed(lambda: reference_embedding("source", generator=gen, clip=clip, source_ws=source),
                               device)
    delta_t = target_direction(target, ref)
    editor.edit(source, delta_t)  # warm-up
    edit_time, result = _timed(lambda: editor.edit(source, delta_t), device, repeats=5)
    row["instant_edit_seconds"] = edit_time
    row["instant_edit_with_source_render_seconds"] = edit_time + ref_time

    # ---- optimiser: time per step, extrapolated to 300 steps
    def optimise(steps, init=None):
        return optimize_latent(gen, clip, target, source, steps=steps, lr=0.1, lambda_sim=0.008,
                               return_images=False, init_ws=init, reuse_cpu_memory=device.type == "cpu")

    optimise(1)  # warm-up
    step_time, _ = _timed(lambda: optimise(args.time_steps), device)
    row["optimiser_seconds_per_step"] = step_time / args.time_steps
    row["optimiser_300_steps_seconds_extrapolated"] = row["optimiser_seconds_per_step"] * FULL_STEPS
    row["speedup_instant_vs_300_steps"] = row["optimiser_300_steps_seconds_extrapolated"] / row[
        "instant_edit_with_source_render_seconds"]

    # ---- quality at equal displacement, warm start
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
    row["displacement"] = {"wplus": opt_shift, "style": opt_style_shift}
    row["clip_distance"] = {"source": d0, "optimiser": distance(cold.ws), "instant_default_alpha": distance(result.ws),
                            "instant_wplus_equal_wplus_displacement": distance(wplus_equal.ws),
                            "instant_style_equal_wplus_displacement": distance(style_equal_w.ws),
                            "instant_style_equal_style_displacement": styles_distance}
    opt_gain = d0 - row["clip_distance"]["optimiser"]
    row["instant_reduction_fraction_of_optimiser"] = {
        key[len("instant_"):]: (d0 - value) / opt_gain if opt_gain > 0 else math.nan
        for key, value in row["clip_distance"].items() if key.endswith("displacement")}
    cold_final = float(cold.history["total"][-1].sum())
    from sgim_nodes.instant import warm_start_codes

    init, chosen = warm_start_codes(gen, clip, editor, target, source, lambda_sim=0.008)
    row["warm_start_alpha"] = float(chosen[0])
    warm = optimize_latent(gen, clip, target, source, steps=args.opt_steps, lr=0.1, lambda_sim=0.008,
                           return_images=False, init_ws=init)
    reached = (warm.history["total"].sum(dim=1) <= cold_final).nonzero()
    row["warm_start_steps_to_cold_objective"] = int(reached[0]) + 1 if len(reached) else None
    row["opt_steps"] = args.opt_steps

    # ---- music video per second of music
    audio_input = torch.zeros(1, 1, 128, 512, device=device)
    with torch.no_grad():
        embed_time, _ = _timed(lambda: audio(audio_input), device, repeats=3)
        render_time, _ = _timed(lambda: gen.synthesis(source), device, repeats=2)
    follow_frame = embed_time + edit_time + render_time
    row["music_video_seconds_per_second"] = {
        "follow_instant": FPS * follow_frame,
        "keyframes": (embed_time + row["optimiser_300_steps_seconds_extrapolated"]) / KEYFRAME_SECONDS
        + FPS * render_time}
    row["peak_memory_gb"] = peak_gb(device)
    return row


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and few steps (checks that it runs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--configs", default="256,1024")
    p.add_argument("--time-steps", type=int, default=3, help="optimiser steps timed (extrapolated to 300)")
    p.add_argument("--opt-steps", type=int, default=FULL_STEPS, help="steps of the cold / warm optimiser runs")
    p.add_argument("--dims", type=int, default=8, help="backward passes timed for the Jacobian (of D)")
    p.add_argument("--edit-samples", type=int, default=2,
                   help="samples of the analysis the edits use (each costs D backward passes: minutes at 1024 px on a GPU, about an hour on a 2-core CPU)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import torch

    from sgim_nodes.device import resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    if args.quick:
        args.time_steps, args.opt_steps, args.dims = 2, min(args.opt_steps, 20), 4
    configs = ["quick"] if args.quick else [c.strip() for c in args.configs.split(",")]
    rows = []
    for config in configs:
        row = bench_config(config, device, args)
        row["reduction_fraction_wplus"] = row["instant_reduction_fraction_of_optimiser"][
            "wplus_equal_wplus_displacement"]
        rows.append(row)
        print(json.dumps(row, indent=1))
    print(f"\ndevice: {device} ({torch.get_num_threads()} threads)")
    print(f"{'config':>6} {'instant s':>10} {'opt 300 s*':>10} {'speedup':>8} {'red. frac':>9} {'warm steps':>10} "
          f"{'jac s/ch-img':>12} {'fd s/ch-img':>11} {'mv follow':>9} {'mv keyfr':>9}")
    for r in rows:
        mv = r["music_video_seconds_per_second"]
        print(f"{r['config']:>6} {r['instant_edit_with_source_render_seconds']:>10.4f} "
              f"{r['optimiser_300_steps_seconds_extrapolated']:>10.1f} {r['speedup_instant_vs_300_steps']:>8.0f} "
              f"{r['reduction_fraction_wplus']:>9.2f} {str(r['warm_start_steps_to_cold_objective']):>10} "
              f"{r['jacobian_seconds_per_channel_image']:>12.2e} {r['finite_seconds_per_channel_image']:>11.2e} "
              f"{mv['follow_instant']:>9.2f} {mv['keyframes']:>9.2f}")
    print("* extrapolated from timed steps; 'red. frac': default W+ edit at equal W+ displacement; "
          "'warm steps': of the cold run's --opt-steps")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
