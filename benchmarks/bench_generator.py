"""StyleGAN2 generator speed and peak memory, both modulation modes side by side.

    python benchmarks/bench_generator.py --resolution 256 --batch 1
    python benchmarks/bench_generator.py --resolution 1024 --dtype bfloat16 --device cuda
    python benchmarks/bench_generator.py --quick          # small smoke run (64 px, narrow)

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
    parser.add_argument("--pass", dest="pass_", default="both", choices=["both", "forward", "backward"])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations (activation mode)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: 64 px, narrow, 1 iteration")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 1, 1
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

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
