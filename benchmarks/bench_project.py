"""Speed and memory of picture projection and pivotal tuning, with NVlabs' projector side by side.

    python benchmarks/bench_project.py                 # 256 and 1024 px, a few timed steps each (minutes on a CPU)
    python benchmarks/bench_project.py --quick         # 32 px, tiny models: checks that everything runs
    NVLABS_STYLEGAN2_ADA=/path/to/stylegan2-ada-pytorch python benchmarks/bench_project.py

What is measured, per resolution, each in a fresh subprocess (so that its peak resident memory,
``VmHWM``, is its own; reset after the warm-up steps, so it covers the timed steps and includes the
weights and PyTorch itself):

- **project**: ``project_image`` steps in W with the LPIPS-VGG16 distance and the noise maps optimised,
  exactly what NVlabs' projector does per step (our default W+ phase costs the same per step);
- **tune**: pivotal-tuning steps (weight gradients through the weight-modulation generator, LPIPS
  plus pixel MSE);
- **nvlabs** (only when ``$NVLABS_STYLEGAN2_ADA`` points to a checkout of NVlabs/stylegan2-ada-pytorch):
  that repository's own ``projector.project`` on the same generator weights, in the same run. Its
  generator is built with its own code and random initialisation (seeded) and converted to ours with
  our NVlabs loader, so both sides render the same function (the script prints the largest pixel
  difference). ``projector.project`` downloads NVlabs' TorchScript ``vgg16.pt``; offline, the script
  hands it a TorchScript LPIPS-VGG16 of the same layers and the same random weights as ours instead.
  Its step times are read from its verbose per-step log line. No NVlabs code is in this repository.

VGG16 and the generators have random weights (no files needed). Random weights can drive activations
and gradients into the denormal range, where CPU arithmetic is many times slower: it hit the NVlabs side
here (1.1 s/step at 256 px became 8-9 s/step after a few steps), depending on the trajectory rather than on
the implementation. Every worker therefore flushes denormals to zero (``torch.set_flush_denormal``), so
both sides are timed on ordinary numbers.
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
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_device import add_device_arguments, export  # noqa: E402
from bench_optimize import reset_vm_hwm, vm_hwm_gb  # noqa: E402  (the same peak-memory probe)

NVLABS_ENV = "NVLABS_STYLEGAN2_ADA"


def nvlabs_path() -> Path | None:
    value = os.environ.get(NVLABS_ENV)
    if not value:
        return None
    path = Path(value)
    return path if (path / "projector.py").is_file() and (path / "training" / "networks.py").is_file() else None


def build_generators(resolution: int, seed: int = 0):
    """(ours, theirs or None): the same random StyleGAN2 weights in both implementations."""
    import torch

    from sgim_nodes.stylegan import Generator, GeneratorConfig

    quick = resolution < 256
    nvlabs = nvlabs_path()
    if nvlabs is None:
        torch.manual_seed(seed)
        config = (GeneratorConfig(resolution=resolution, z_dim=64, w_dim=64, n_mapping=2,
                                  channels={2 ** i: 32 for i in range(2, resolution.bit_length())})
                  if quick else GeneratorConfig.stylegan2(resolution))
        ours = Generator(config, name=f"random{resolution}")
        with torch.no_grad():
            ours.w_avg.copy_(ours.estimate_w_avg(1024))
            for conv in ours.synthesis_network.convs:
                conv.noise_strength.fill_(0.05)
        return ours, None
    sys.path.insert(0, str(nvlabs))
    from training.networks import Generator as NVGenerator  # type: ignore[import-not-found]

    from sgim_nodes.stylegan.loaders import _from_nvlabs_flat

    torch.manual_seed(seed)
    dims = dict(z_dim=64, w_dim=64) if quick else dict(z_dim=512, w_dim=512)
    theirs = NVGenerator(c_dim=0, img_resolution=resolution, img_channels=3,
                         mapping_kwargs=dict(num_layers=2 if quick else 8),
                         synthesis_kwargs=dict(channel_base=32 * resolution if quick else 32768,
                                               channel_max=32 if quick else 512, num_fp16_res=0, conv_clamp=None),
                         **dims).eval().requires_grad_(False)
    with torch.no_grad():
        theirs.mapping.w_avg.copy_(theirs.mapping(torch.randn(1024, dims["z_dim"]), None)[:, 0].mean(0))
        for name, buf in theirs.named_parameters():
            if name.endswith("noise_strength"):
                buf.fill_(0.05)  # random init leaves the noise inputs off
    config, state, _ = _from_nvlabs_flat({k: v.detach().clone() for k, v in theirs.state_dict().items()}, {},
                                         Path("nvlabs-random"))
    ours = Generator(config, name=f"random{resolution}")
    ours.load_state_dict(state, strict=True)
    return ours, theirs


def nvlabs_style_vgg(lpips_module, path: Path) -> None:
    """Write a TorchScript module with the call signature of NVlabs' ``vgg16.pt``:
    ``vgg16(images_0_255, resize_images=False, return_lpips=True)`` -> features whose squared
    distance summed is LPIPS (our LPIPS-VGG16, same weights)."""
    import torch
    from torch import nn

    class Wrapper(nn.Module):
        def __init__(self, lpips):
            super().__init__()
            self.vgg = torch.jit.trace(lpips.vgg, torch.zeros(1, 3, 64, 64), check_trace=False)
            self.register_buffer("shift", lpips.shift.clone())
            self.register_buffer("scale", lpips.scale.clone())
            self.register_buffer("lin", torch.cat([getattr(lpips, f"lin{k}").flatten() for k in range(5)]).sqrt())

        def forward(self, img: torch.Tensor, resize_images: bool = False, return_lpips: bool = False) -> torch.Tensor:
            x = (img / 127.5 - 1 - self.shift) / self.scale
            out = []
            start = 0
            for tap in self.vgg(x):
                channels = tap.shape[1]
                unit = tap / (tap.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                weight = self.lin[start:start + channels].reshape(1, -1, 1, 1)
                out.append((unit * weight).flatten(1) / float(tap.shape[2] * tap.shape[3]) ** 0.5)
                start += channels
            return torch.cat(out, dim=1)

    torch.jit.script(Wrapper(lpips_module)).save(str(path))


def run_worker(kind: str, resolution: int, steps: int, warmup: int) -> dict:
    import torch

    from sgim_nodes.project import LPIPSVGG, project_image
    from sgim_nodes.project.distance import VGG16Features, lpips_linear_weights

    from bench_device import autocast_context, cuda_peak_gb, reset_peak, synchronize, worker_autocast, worker_device

    device, autocast = worker_device(), worker_autocast()
    torch.set_flush_denormal(True)  # see the module doc: random weights, denormal slowdowns
    t0 = time.perf_counter()
    ours, theirs = build_generators(resolution)
    torch.manual_seed(1)
    lpips = LPIPSVGG(VGG16Features(), lpips_linear_weights())
    with torch.no_grad():  # the target: a picture the generator did not make (smooth random colours)
        target = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)),
                                                 size=(resolution, resolution), mode="bicubic").clamp(0, 1)
    build_s = time.perf_counter() - t0
    stamps: list[float] = []
    extra: dict = {}

    if kind in ("project", "tune"):
        ours, lpips, target = ours.to(device), lpips.to(device), target.to(device)

        def on_step(info):
            if kind == "project" or info.phase == "tune":
                synchronize(device)
                stamps.append(time.perf_counter())
            if len(stamps) == warmup:
                reset_vm_hwm()
                reset_peak(device)

        picture = target.permute(0, 2, 3, 1)
        stamps.append(time.perf_counter())
        with autocast_context(device, autocast):
            if kind == "project":
                project_image(ours, picture, distance="lpips", lpips=lpips, steps=steps + warmup, space="w",
                              optimize_noise=True, callback=on_step, reuse_cpu_memory=True)  # the CLI's policy
            else:
                project_image(ours, picture, distance="lpips", lpips=lpips, steps=1, space="w",
                              tune_steps=steps + warmup, callback=on_step, reuse_cpu_memory=True)
        if kind == "tune":
            stamps.pop(0)  # timing starts at the first tuning step's end
        extra.update(device=str(device), autocast=autocast)
        if device.type == "cuda":
            extra["cuda_peak_gb"] = cuda_peak_gb(device)
    else:
        nvlabs = nvlabs_path()
        sys.path.insert(0, str(nvlabs))
        import dnnlib  # type: ignore[import-not-found]
        import projector  # type: ignore[import-not-found]

        with torch.no_grad():  # both implementations render the same function
            ws = ours.mapping(torch.randn(2, ours.z_dim, generator=torch.Generator().manual_seed(4)))
            extra["max_abs_pixel_difference"] = float((ours.synthesis(ws) - theirs.synthesis(ws, noise_mode="const"))
                                                      .abs().max())
        vgg_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"sgim_bench_vgg16_{os.getpid()}.pt"
        nvlabs_style_vgg(lpips, vgg_file)
        dnnlib.util.open_url = lambda url, *a, **k: open(vgg_file, "rb")  # offline: our TorchScript LPIPS-VGG16

        def log(*_args):
            stamps.append(time.perf_counter())
            if len(stamps) == warmup + 1:
                reset_vm_hwm()

        projector.print = log  # its verbose mode prints one line per step
        try:
            projector.project(theirs, (target[0] * 255).to(torch.float32), num_steps=steps + warmup, verbose=True,
                              device=torch.device("cpu"))
        finally:
            vgg_file.unlink(missing_ok=True)
        stamps = stamps[1:]  # its first line reports the w statistics, before the steps
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    timed = per_step[warmup - 1:] if len(per_step) >= warmup else per_step
    seconds = sum(timed) / max(1, len(timed))
    return dict(kind=kind, resolution=resolution, s_per_step=seconds, steps_per_s=1 / seconds if seconds else 0.0,
                step_times=per_step, vm_hwm_gb=extra.pop("cuda_peak_gb", None) or vm_hwm_gb(), build_s=build_s, threads=torch.get_num_threads(), **extra)


def spawn(kind: str, resolution: int, steps: int, warmup: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(resolution), str(steps), str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} at {resolution} px failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 px tiny models, few steps")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    export(args)
    if args.worker:
        kind, resolution, steps, warmup = args.worker
        print(json.dumps(run_worker(kind, int(resolution), int(steps), int(warmup))))
        return 0
    resolutions = [32] if args.quick else args.resolutions
    steps = 2 if args.quick else args.steps
    kinds = ["project", "tune"]
    if args.device != "cpu":
        print("NVlabs column skipped: it is timed on the CPU only")
    elif nvlabs_path() is not None:
        kinds.append("nvlabs")
        print(f"NVlabs projector: {nvlabs_path()}")
    else:
        print(f"NVlabs column skipped: set {NVLABS_ENV} to a checkout of NVlabs/stylegan2-ada-pytorch to time its "
              "projector on the same weights")
    import torch

    from bench_device import describe, worker_autocast, worker_device

    print(f"torch {torch.__version__}, {describe(worker_device(), worker_autocast())}; {args.warmup} warm-up + "
          f"{steps} timed steps each" + ("; peak GB = CUDA memory allocated" if args.device != "cpu" else ""))
    rows = []
    for resolution in resolutions:
        results = {kind: spawn(kind, resolution, steps, args.warmup, args.timeout) for kind in kinds}
        rows.append((resolution, results))
        line = (f"{resolution:>5} px  projection {results['project']['s_per_step']:.3f} s/step "
                f"({results['project']['steps_per_s']:.2f} steps/s, peak {results['project']['vm_hwm_gb']:.2f} GB)  "
                f"tuning {results['tune']['s_per_step']:.3f} s/step ({results['tune']['steps_per_s']:.2f} steps/s, "
                f"peak {results['tune']['vm_hwm_gb']:.2f} GB)")
        if "nvlabs" in results:
            nv = results["nvlabs"]
            line += (f"  NVlabs projector {nv['s_per_step']:.3f} s/step (peak {nv['vm_hwm_gb']:.2f} GB; same function "
                     f"within {nv['max_abs_pixel_difference']:.1e}); ours/NVlabs step time "
                     f"{results['project']['s_per_step'] / nv['s_per_step']:.2f}")
        print(line, flush=True)
    print(json.dumps([{"resolution": r, **{k: {x: v[x] for x in ("s_per_step", "steps_per_s", "vm_hwm_gb")}
                                           for k, v in res.items()}} for r, res in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
