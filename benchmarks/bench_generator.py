"""Generator speed and peak memory: StyleGAN2 (both modulation modes side by side) and StyleGAN3
(ours against NVlabs' own reference ops on the same weights).

    python benchmarks/bench_generator.py --resolution 256 --batch 1
    python benchmarks/bench_generator.py --resolution 1024 --dtype bfloat16 --device cuda
    python benchmarks/bench_generator.py --quick          # small smoke run (64 px, narrow)
    python benchmarks/bench_generator.py --family stylegan3 --config both --resolution 256
    python benchmarks/bench_generator.py --family stylegan3 --quick

StyleGAN3: random weights in the real configurations (T: 14 layers + ToRGB, channel base 32768,
max 512, 3x3 convs; R: 1x1 convs, radial filters, base and max doubled; 16 W+ rows). Three passes:
``forward``, ``backward`` (synthesis + backward to ws) and ``step`` (one optimiser step: Adam on
ws, synthesis, area resize to 224 px, a fixed linear read-out as the loss, backward, update; the
same for both implementations, so the ratio is the generator's). Where a checkout of
github.com/NVlabs/stylegan3 is on the machine (``NVLABS_STYLEGAN3_DIR``), the same weights also run
through NVlabs' networks_stylegan3.py with its pure-PyTorch reference ops (what it uses on CPU),
each in its own process, and the ratio is printed; its code is only imported from that folder.

Random weights in the real configurations (256: 14 W+ layers, 1024: 18; 512-wide mapping of 8
layers, standard channel table). Two passes are timed: ``forward`` (synthesis under no_grad) and
``backward`` (synthesis + backward to ws, what the W+ optimiser pays per step). Every
(modulation, pass) runs in its own subprocess so that the peak memory is its own: CPU peak RSS
from /proc/self/status VmHWM (minus the RSS after building the model = "work"), CUDA
``torch.cuda.max_memory_allocated``. "cpu s" is process CPU time per batch: on a shared machine
it is steadier than wall time (with N threads it is up to N x the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # macOS / no procfs: peak only (bytes on macOS, KiB on Linux)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _stylegan3_config(args):
    from sgim_nodes.stylegan import StyleGAN3Config

    make = StyleGAN3Config.stylegan3_r if args.config == "r" else StyleGAN3Config.stylegan3_t
    if args.quick:  # 64 px, 6 layers, narrow: a smoke run
        base = 4096 if args.config == "r" else 2048
        return make(64, z_dim=64, w_dim=64, num_layers=6, channel_base=base, channel_max=base // 32)
    return make(args.resolution)


def _import_nvlabs_generator():
    """NVlabs' StyleGAN3 Generator class from ``$NVLABS_STYLEGAN3_DIR`` (never part of this repo)."""
    import types

    folder = os.environ.get("NVLABS_STYLEGAN3_DIR")
    if not folder or not (Path(folder) / "training" / "networks_stylegan3.py").is_file():
        raise SystemExit("NVLABS_STYLEGAN3_DIR does not point to a stylegan3 checkout")
    sys.path.insert(0, folder)
    try:
        import pkg_resources  # noqa: F401  (its conv2d_gradfix imports parse_version from here)
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    from training.networks_stylegan3 import Generator as NVlabsGenerator

    return NVlabsGenerator


def stylegan3_worker(args) -> dict:
    """One StyleGAN3 measurement (implementation ``args.impl``, pass ``args.pass_``) in this process."""
    import torch
    import torch.nn.functional as F

    from sgim_nodes.stylegan import StyleGAN3Generator, nvlabs_stylegan3_state

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    ours = StyleGAN3Generator(_stylegan3_config(args))
    if args.impl == "nvlabs":
        init_kwargs, state = nvlabs_stylegan3_state(ours)
        nvlabs = _import_nvlabs_generator()(**init_kwargs).eval().requires_grad_(False)
        nvlabs.load_state_dict(state)
        nvlabs = nvlabs.to(device=device, dtype=dtype)
        del ours

        def synthesis(ws):
            return nvlabs.synthesis(ws, force_fp32=dtype == torch.float32).float()
        num_ws, w_dim, resolution = nvlabs.num_ws, nvlabs.w_dim, nvlabs.img_resolution
    else:
        ours = ours.to(device=device, dtype=dtype)
        synthesis = ours.synthesis
        num_ws, w_dim, resolution = ours.num_ws, ours.w_dim, ours.resolution
    generator = torch.Generator().manual_seed(1)
    ws = torch.randn(args.batch, num_ws, w_dim, generator=generator).to(device, dtype)
    readout = torch.randn(1, 3, 224, 224, generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    variable = ws.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([variable], lr=0.01)

    def step():
        if args.pass_ == "forward":
            with torch.no_grad():
                synthesis(ws)
        elif args.pass_ == "backward":
            synthesis(ws.clone().requires_grad_(True)).square().mean().backward()
        else:
            optimiser.zero_grad(set_to_none=True)
            img = F.interpolate(synthesis(variable), size=(224, 224), mode="area")
            (img * readout).mean().backward()
            optimiser.step()

    base_rss = _rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.iters
    out = {"impl": args.impl, "pass": args.pass_, "s_per_batch": seconds,
           "cpu_s_per_batch": (time.process_time() - start_cpu) / args.iters,
           "images_per_s": args.batch / seconds, "resolution": resolution, "num_ws": num_ws}
    if device.type == "cuda":
        out["peak_mb"] = out["work_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        out["peak_mb"] = _rss_mb("VmHWM")
        out["work_mb"] = out["peak_mb"] - base_rss
    return out


def _run_stylegan3_worker(args, config: str, impl: str, pass_: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--family", "stylegan3", "--config", config, "--impl", impl,
           "--pass", pass_, "--resolution", str(args.resolution), "--batch", str(args.batch), "--dtype", args.dtype,
           "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({config}, {impl}, {pass_}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stylegan3_main(args) -> int:
    configs = ["t", "r"] if args.config == "both" else [args.config]
    passes = ["forward", "backward", "step"] if args.pass_ == "both" else [args.pass_]
    nvlabs_dir = os.environ.get("NVLABS_STYLEGAN3_DIR")
    impls = ["ours"]
    if nvlabs_dir and (Path(nvlabs_dir) / "training" / "networks_stylegan3.py").is_file():
        impls.append("nvlabs")
    else:
        print("NVlabs column skipped: set NVLABS_STYLEGAN3_DIR to a checkout of github.com/NVlabs/stylegan3 "
              "to time its reference ops on the same weights")
    what = "quick 64px config" if args.quick else f"{args.resolution}px"
    print(f"StyleGAN3 synthesis, {what}, batch {args.batch}, {args.dtype}, {args.device}, {args.iters} iters "
          f"(+{args.warmup} warm-up)")
    print(f"{'cfg':<4} {'pass':<9} {'impl':<7} {'img/s':>8} {'s/batch':>9} {'cpu s':>9} {'peak MB':>8} {'work MB':>8}")
    for config in configs:
        for pass_ in passes:
            results = {impl: _run_stylegan3_worker(args, config, impl, pass_) for impl in impls}
            for impl, r in results.items():
                print(f"{config.upper():<4} {pass_:<9} {impl:<7} {r['images_per_s']:8.4f} {r['s_per_batch']:9.3f} "
                      f"{r['cpu_s_per_batch']:9.3f} {r['peak_mb']:8.0f} {r['work_mb']:8.0f}", flush=True)
            if len(results) == 2:
                ours, theirs = results["ours"], results["nvlabs"]
                print(f"{config.upper():<4} {pass_:<9} ours is {theirs['s_per_batch'] / ours['s_per_batch']:.2f}x as "
                      f"fast as NVlabs' reference ops (CPU time {theirs['cpu_s_per_batch'] / ours['cpu_s_per_batch']:.2f}x); "
                      f"work memory {ours['work_mb'] / max(theirs['work_mb'], 1e-9):.2f}x theirs", flush=True)
    return 0


def _config(args):
    from sgim_nodes.stylegan import GeneratorConfig

    if args.quick:
        return GeneratorConfig.stylegan2(resolution=64, z_dim=128, w_dim=128, n_mapping=2, channel_max=128)
    return GeneratorConfig.stylegan2(resolution=args.resolution)


def worker(args) -> dict:
    """One measurement in this process; returns a JSON-able dict."""
    import torch

    from sgim_nodes.stylegan import Generator

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    gen = Generator(_config(args), modulation=args.modulation, channels_last=args.channels_last)
    gen = gen.to(device=device, dtype=dtype)
    ws = torch.randn(args.batch, gen.num_ws, gen.w_dim, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        if args.pass_ == "forward":
            with torch.no_grad():
                gen.synthesis(ws)
        else:
            ws_var = ws.clone().requires_grad_(True)
            gen.synthesis(ws_var).square().mean().backward()

    base_rss = _rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.iters
    cpu_seconds = (time.process_time() - start_cpu) / args.iters  # robust to other load on a shared machine
    out = {"modulation": args.modulation, "pass": args.pass_, "s_per_batch": seconds, "cpu_s_per_batch": cpu_seconds,
           "images_per_s": args.batch / seconds, "resolution": gen.resolution, "num_ws": gen.num_ws}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["work_mb"] = out["peak_mb"] - sum(t.numel() * t.element_size() for t in gen.state_dict().values()) / 2 ** 20
    else:
        out["peak_mb"] = _rss_mb("VmHWM")
        out["work_mb"] = out["peak_mb"] - base_rss
    return out


def _run_worker(args, modulation: str, pass_: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--modulation", modulation, "--pass", pass_,
           "--resolution", str(args.resolution), "--batch", str(args.batch), "--dtype", args.dtype,
           "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--threads", str(args.threads)] + (["--quick"] if args.quick else []) \
        + (["--channels-last"] if args.channels_last else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({modulation}, {pass_}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modulation", default="both", choices=["both", "activation", "weight"])
    parser.add_argument("--pass", dest="pass_", default="both", choices=["both", "forward", "backward", "step"])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations (activation mode)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: 64 px, narrow, 1 iteration")
    parser.add_argument("--family", default="stylegan2", choices=["stylegan2", "stylegan3"])
    parser.add_argument("--config", default="both", choices=["both", "t", "r"], help="StyleGAN3 configuration")
    parser.add_argument("--impl", default="ours", choices=["ours", "nvlabs"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 1, 1
    if args.worker:
        print(json.dumps(stylegan3_worker(args) if args.family == "stylegan3" else worker(args)))
        return 0
    if args.family == "stylegan3":
        return stylegan3_main(args)
    if args.pass_ == "step":
        parser.error("--pass step (one optimiser step) is measured for --family stylegan3; for StyleGAN2 "
                     "see benchmarks/bench_optimize.py")

    modes = ["activation", "weight"] if args.modulation == "both" else [args.modulation]
    passes = ["forward", "backward"] if args.pass_ == "both" else [args.pass_]
    what = "quick 64px config" if args.quick else f"{args.resolution}px"
    print(f"StyleGAN2 synthesis, {what}, batch {args.batch}, {args.dtype}, {args.device}, {args.iters} iters")
    print(f"{'pass':<9} {'modulation':<11} {'img/s':>8} {'s/batch':>8} {'cpu s':>8} {'peak MB':>8} {'work MB':>8}")
    for pass_ in passes:
        results = {m: _run_worker(args, m, pass_) for m in modes}
        for mode, r in results.items():
            print(f"{pass_:<9} {mode:<11} {r['images_per_s']:8.3f} {r['s_per_batch']:8.3f} "
                  f"{r['cpu_s_per_batch']:8.3f} {r['peak_mb']:8.0f} {r['work_mb']:8.0f}")
        if len(results) == 2:
            ratio = results["weight"]["s_per_batch"] / results["activation"]["s_per_batch"]
            cpu_ratio = results["weight"]["cpu_s_per_batch"] / results["activation"]["cpu_s_per_batch"]
            print(f"{pass_:<9} activation is {ratio:.2f}x as fast as weight (CPU time: {cpu_ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
