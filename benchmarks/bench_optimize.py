"""Speed and memory of the W+ optimiser against a faithful re-implementation of the released loop.

    python benchmarks/bench_optimize.py            # 256/14-ws and 1024/18-ws, batch 1 and 4 (many minutes)
    python benchmarks/bench_optimize.py --quick    # tiny models, two steps: checks that everything runs
    python benchmarks/bench_optimize.py --device cuda [--autocast bf16]   # on a GPU (peak = CUDA memory)

Peak memory is the worker's VmHWM over the timed steps (reset after the FLOP-counted warm-up step,
which runs under a dispatch mode that changes allocations); it includes the models' weights and
PyTorch itself (about 1.6 GB at 1024 px), which both sides share.

Both sides use the same random-weight networks in the real configurations: StyleGAN2 256 (14 W+
rows) and 1024 (18), open_clip ViT-B-32 (``pretrained=None``), the ResNet-18 audio encoder of
``sgim_nodes.audio`` and ArcFace IR-SE50. Each (implementation, configuration, batch) runs in a
fresh subprocess so that its peak resident memory (``VmHWM``) is its own.

"original" re-implements ``optimization/run_optimization.py`` per image, as the paper notes
describe it: weight modulation (per-sample weights, grouped convolution); the CLIP input made by
nearest x7 upsampling then ``AvgPool2d(size // 32)``; the audio re-encoded every step; no network
frozen (backward also computes every weight gradient); the adaptive mask as a 14-iteration Python
loop with two ``.item()`` host syncs per layer; ``id_loss(img_orig, img_gen)`` in that order (two
ArcFace passes per step, also at lambda_id = 0); ``backward(retain_graph=True)``; ``loss.item()``
per step. Its batch 4 is four images one after another (4x the time of one, same memory).
Not reproduced: the intermediate PNG written every 20 steps.

"ours" is ``optimize_latent`` with the activation-modulation generator (its hand-written backward),
the exact box resize, targets embedded once, frozen nets, the vectorised adaptive mask, freed CPU
memory kept mapped between steps (``sgim_nodes.memory``); identity only where it is used (the face
setting at 1024: lambda_id 0.005; the landscape setting at 256: lambda_id 0). "lean" is the same
with ``reuse_cpu_memory=False``: every step's activations come fresh from the kernel, slower (page
faults) but with a lower peak (no heap fragmentation).

Throughput is reported as FLOPs counted by ``torch.utils.flop_counter`` (matmuls and convolutions,
forward and backward) per second, and as a share of a measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_device import add_device_arguments, export  # noqa: E402

# Settings per configuration: the released landscape example at 256, the face defaults at 1024.
CONFIGS = {
    "quick": dict(resolution=32, lambda_sim=0.008, lambda_id=0.005),
    "256": dict(resolution=256, lambda_sim=0.002, lambda_id=0.0),
    "1024": dict(resolution=1024, lambda_sim=0.008, lambda_id=0.005),
}
LR = 0.1


# ----------------------------------------------------------------------------- models

def build_models(config: str, seed: int = 0):
    """(generator_config, clip open_clip model, audio encoder, arcface) with fixed random weights."""
    import torch

    from sgim_nodes.audio.encoder import build_audio_encoder
    from sgim_nodes.optimize import IRSE50, TINY_IRSE, IRSEBackbone
    from sgim_nodes.stylegan import GeneratorConfig

    torch.manual_seed(seed)
    if config == "quick":
        from sgim_nodes.clip import build_tiny_clip

        gen_config = GeneratorConfig(resolution=32, z_dim=64, w_dim=64, n_mapping=2,
                                     channels={4: 32, 8: 32, 16: 32, 32: 32})
        clip_model = build_tiny_clip(embed_dim=32, seed=seed)
        arcface = IRSEBackbone(TINY_IRSE)
        embed_dim = 32
    else:
        import open_clip

        gen_config = GeneratorConfig.stylegan2(int(config))
        clip_model = open_clip.create_model("ViT-B-32", pretrained=None)
        arcface = IRSEBackbone(IRSE50)
        embed_dim = 512
    audio = build_audio_encoder("resnet18", embed_dim=embed_dim)
    return gen_config, clip_model.eval(), audio.eval(), arcface.eval()


def make_generator(gen_config, modulation: str, seed: int = 1):
    import torch

    from sgim_nodes.stylegan import Generator

    torch.manual_seed(seed)
    gen = Generator(gen_config, modulation=modulation)
    with torch.no_grad():
        gen.w_avg.copy_(gen.estimate_w_avg(1024))
    return gen


# ----------------------------------------------------------------------------- the original loop

def original_loop(gen, clip_model, audio, arcface, source_ws, audio_input, steps, lambda_sim, lambda_id,
                  on_step):
    """One image, the released loop's structure and costs (see the module docstring)."""
    import torch

    from sgim_nodes.optimize import face_crop
    from sgim_nodes.optimize.loop import lr_schedule

    for net in (gen, clip_model, audio, arcface):
        net.requires_grad_(True)  # nothing is frozen in the original
    clip_size = clip_model.visual.image_size
    clip_size = clip_size[0] if isinstance(clip_size, (tuple, list)) else clip_size
    upsample = torch.nn.Upsample(scale_factor=7)
    avg_pool = torch.nn.AvgPool2d(kernel_size=gen.resolution * 7 // clip_size)  # size // 32 for CLIP's 224
    with torch.no_grad():
        img_orig = gen.synthesis(source_ws, noise_mode="const")
    latent = source_ws.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=LR)
    masking = torch.ones(14)  # hard-coded to 14 layers, also for 18-layer generators

    def extract_feats(x):  # pool to 256, crop [35:223, 32:220], pool to 112 (the same as IDLoss)
        return arcface(face_crop(x))

    for i in range(steps):
        optimizer.param_groups[0]["lr"] = lr_schedule(i / steps, LR)
        img_gen = gen.synthesis(latent, noise_mode="const")
        image_features = clip_model.encode_image(avg_pool(upsample(img_gen))).float()
        audio_features = audio(audio_input).float()  # re-encoded every step, with parameter gradients
        audio_features = audio_features / audio_features.norm(dim=-1, keepdim=True)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        cosine_loss = 1 - (image_features @ audio_features.T)[0] * math.exp(0.07)
        similarity = 0
        for idx in range(min(14, latent.shape[1])):
            layer = torch.sigmoid(masking[idx]) * ((source_ws[:, idx, :] - latent[:, idx, :]) ** 2).sum()
            similarity = similarity + layer
            masking[idx] = masking[idx] - 0.1 * layer.item() * (1 - layer.item())
        # id_loss(img_orig, img_gen): the second argument's features are detached.
        y_feats = extract_feats(img_gen).detach()
        y_hat_feats = extract_feats(img_orig)
        identity = 1 - (y_hat_feats[0] * y_feats[0]).sum()
        loss = lambda_sim * similarity + cosine_loss + lambda_id * identity
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        optimizer.step()
        loss.item()
        on_step()
    return latent.detach()


# ----------------------------------------------------------------------------- worker

def vm_hwm_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def reset_vm_hwm() -> None:
    """Restart VmHWM from the current resident size (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak includes the warm-up step


class _GlobalOnlyTracker:
    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def run_worker(impl: str, config: str, batch: int, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sgim_nodes.clip import ClipModel
    from sgim_nodes.optimize import optimize_latent, sample_source_ws

    from bench_device import cuda_peak_gb, reset_peak, synchronize, worker_autocast, worker_device

    device = worker_device()
    autocast = worker_autocast() if impl != "original" else None  # the released loop ran in float32
    settings = CONFIGS[config]
    t0 = time.perf_counter()
    gen_config, clip_model, audio, arcface = build_models(config)
    gen = make_generator(gen_config, "weight" if impl == "original" else "activation")
    gen, clip_model, audio, arcface = (net.to(device) for net in (gen, clip_model, audio, arcface))
    reuse_memory = impl == "ours"
    source = sample_source_ws(gen, batch, seed=2, truncation=0.7).to(device)
    audio_input = torch.randn(1, 1, 128, 512, generator=torch.Generator().manual_seed(3)).to(device)
    build_s = time.perf_counter() - t0
    stamps: list[float] = []

    def stamp(*_):
        synchronize(device)
        stamps.append(time.perf_counter())

    if impl == "original":
        def run(n, on_step):
            original_loop(gen, clip_model, audio, arcface, source[:1], audio_input, n,
                          settings["lambda_sim"], settings["lambda_id"], on_step)
    else:
        clip = ClipModel(clip_model, "ViT-B-32", tokenizer=None)
        use_id = settings["lambda_id"] > 0
        with torch.no_grad():  # embedded once (what embed_audio does for a clip); normalised
            targets = torch.nn.functional.normalize(audio(audio_input).float(), dim=-1).expand(batch, -1)

        def run(n, on_step):
            optimize_latent(gen, clip, targets, source, steps=n, lr=LR, lambda_sim=settings["lambda_sim"],
                            lambda_id=settings["lambda_id"], id_model=arcface if use_id else None,
                            adaptive_mask=True, return_images=False, callback=on_step,
                            reuse_cpu_memory=reuse_memory, autocast=autocast)

    counter = FlopCounterMode(display=False)
    # Its per-module tracker asserts on no_grad forwards of nets whose parameters require grad (the
    # original's source render); we only need the global total, so count without it.
    counter.mod_tracker = _GlobalOnlyTracker()
    with counter:  # one counted warm-up step
        run(1, lambda *_: None)
    flops = counter.get_total_flops()
    reset_vm_hwm()  # the peak reported is that of the timed run, without the FLOP counter's dispatch layer
    reset_peak(device)
    stamp()
    run(steps, stamp)
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    timed = per_step[1:] or per_step  # the first timed step also carries one-time setup (source render...)
    seconds = sum(timed) / len(timed)
    return dict(impl=impl, config=config, batch=batch, s_per_step=seconds, steps=per_step,
                gflop_per_step=flops / 1e9, vm_hwm_gb=cuda_peak_gb(device) or vm_hwm_gb(), build_s=build_s,
                threads=torch.get_num_threads(), device=str(device), autocast=autocast)


# ----------------------------------------------------------------------------- driver

def matmul_peak_gflops(n: int = 2048, repeats: int = 8, device=None) -> float:
    import torch

    from bench_device import synchronize

    device = device or torch.device("cpu")
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = math.inf
    for _ in range(3):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * repeats / best / 1e9


def spawn(impl: str, config: str, batch: int, steps: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, config, str(batch), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, two timed steps")
    parser.add_argument("--configs", default="256,1024", help="comma list of 256, 1024 (ignored with --quick)")
    parser.add_argument("--batches", default="1,4", help="batch sizes for ours (the original runs one image)")
    parser.add_argument("--no-lean", action="store_true", help="skip the reuse_cpu_memory=False run (batch 1)")
    parser.add_argument("--steps", type=int, default=3,
                        help="steps per run after one FLOP-counted warm-up; the mean excludes the first")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "CONFIG", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    export(args)
    if args.worker:
        impl, config, batch, steps = args.worker
        if config == "quick":  # a smoke test: tiny models only lose to thread contention on a shared machine
            import torch

            torch.set_num_threads(1)
        print(json.dumps(run_worker(impl, config, int(batch), int(steps))))
        return 0

    configs = ["quick"] if args.quick else args.configs.split(",")
    steps = 2 if args.quick else args.steps
    batches = [int(b) for b in args.batches.split(",")]
    import torch

    from bench_device import describe, worker_autocast, worker_device

    device = worker_device()
    peak = matmul_peak_gflops(1024 if args.quick else 2048, device=device)
    print(f"torch {torch.__version__}, {describe(device, worker_autocast())}, fp32 matmul peak {peak:.0f} GFLOP/s"
          + ("; peak GB = CUDA memory allocated" if device.type == "cuda" else ""))
    header = (f"{'config':>6} {'impl':>8} {'batch':>5} {'s/step':>8} {'s/edit':>8} {'peak GB':>8} "
              f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'% peak':>7}")
    print(header)
    for config in configs:
        rows = [spawn("original", config, 1, steps, args.timeout)]
        rows += [spawn("ours", config, b, steps, args.timeout) for b in batches]
        lean = None if args.no_lean else spawn("lean", config, 1, steps, args.timeout)
        for r in rows + ([lean] if lean else []):
            rate = r["gflop_per_step"] / r["s_per_step"]
            print(f"{config:>6} {r['impl']:>8} {r['batch']:>5} {r['s_per_step']:8.3f} "
                  f"{r['s_per_step'] / r['batch']:8.3f} {r['vm_hwm_gb']:8.2f} {r['gflop_per_step']:10.1f} "
                  f"{rate:8.1f} {100 * rate / peak:6.1f}%")
        orig, ours1 = rows[0], rows[1]
        print(f"{config:>6} ratios: speed-up per edit, batch 1: {orig['s_per_step'] / ours1['s_per_step']:.2f}x; "
              f"peak memory ours/original: {ours1['vm_hwm_gb'] / orig['vm_hwm_gb']:.2f}")
        for r in rows[2:]:
            per_edit = r["s_per_step"] / r["batch"]
            print(f"{config:>6} ratios: batch {r['batch']}: speed-up per edit vs original "
                  f"{orig['s_per_step'] / per_edit:.2f}x; per-edit time vs our batch 1 "
                  f"{per_edit / ours1['s_per_step']:.2f}; peak memory vs original "
                  f"{r['vm_hwm_gb'] / orig['vm_hwm_gb']:.2f}")
        if lean:
            print(f"{config:>6} ratios: lean batch 1: speed-up per edit {orig['s_per_step'] / lean['s_per_step']:.2f}x; "
                  f"peak memory vs original {lean['vm_hwm_gb'] / orig['vm_hwm_gb']:.2f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
