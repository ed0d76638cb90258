"""Training throughput with cached vs per-batch recomputed frozen CLIP text embeddings, in one run.

The released training script re-encoded every batch's captions with the frozen CLIP text tower; our
trainer embeds each distinct caption (and its offline augmentations) once. This runs the real
training loop (``sgim_nodes.train.loop.train``) twice on the same synthetic data, seed and batches,
once per mode, and prints the samples/s of each (mean over the steps after the first epoch, which
also decodes the audio).

    python benchmarks/bench_train.py --quick         # tiny random CLIP, compact features (~1 min)
    python benchmarks/bench_train.py                 # random-weight ViT-B-32 text tower, compact features
    python benchmarks/bench_train.py --clip ViT-B-32.pt   # your CLIP file
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _make_clip(folder: Path, quick: bool) -> tuple[str, str | None, str]:
    """(weights path, config path or None, model name) of a random-weight CLIP."""
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    if quick:
        name = "bench-tiny-clip"
        config = folder / f"{name}.json"
        config.write_text(json.dumps(tiny_clip_config(32)))
        save_open_clip_state_dict(build_tiny_clip(32, seed=0, name=name), folder / "clip.safetensors")
        return str(folder / "clip.safetensors"), str(config), name
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_open_clip_state_dict(model, folder / "clip.safetensors")
    return str(folder / "clip.safetensors"), None, "ViT-B-32"


def _throughput(run_dir: Path, steps_per_epoch: int) -> float:
    with open(run_dir / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > steps_per_epoch]
    return sum(float(r["samples_per_s"]) for r in rows) / len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny CLIP, fewer steps")
    p.add_argument("--clip", help="CLIP weights to use instead of a random one")
    p.add_argument("--clip-model", help="open_clip model name for --clip")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="default 3 (steps of the first are not counted)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from sgim_nodes.train.loop import TrainConfig, train
    from sgim_nodes.train.synthetic import make_dataset

    torch.set_num_threads(args.threads)
    epochs = args.epochs or 3
    with tempfile.TemporaryDirectory(prefix="sgim_bench_train_") as tmp:
        folder = Path(tmp)
        per_class = 4 if args.quick else 8
        make_dataset(folder / "data", per_class=per_class, classes=8, seed=0, test_fraction=0.25)
        clips_train = 8 * (per_class - max(1, round(per_class * 0.25)))
        steps_per_epoch = clips_train // args.batch_size
        if args.clip:
            clip, config, name = args.clip, None, args.clip_model
        else:
            clip, config, name = _make_clip(folder, args.quick)
        results = {}
        for mode in ("cached", "recomputed"):
            start = time.perf_counter()
            train(TrainConfig(data=str(folder / "data"), split="train", clip=clip, clip_model=name, clip_config=config,
                              features="compact", epochs=epochs, batch_size=args.batch_size,
                              out=str(folder / f"{mode}.safetensors"), progress=False, checkpoint_every=10**6,
                              recompute_text=mode == "recomputed", device="cpu"))
            results[mode] = (_throughput(folder / f"{mode}_run", steps_per_epoch), time.perf_counter() - start)
    print(f"CLIP {name}, batch {args.batch_size}, {epochs} epochs of {steps_per_epoch} steps, {args.threads} thread(s)")
    for mode, (rate, seconds) in results.items():
        print(f"  {mode:<11} text embeddings: {rate:7.2f} samples/s  (wall time incl. start-up and loading: {seconds:.1f} s)")
    print(f"  speed-up of caching: x{results['cached'][0] / results['recomputed'][0]:.2f}")
    if args.quick and not args.clip:
        print("  (--quick uses a tiny CLIP whose text tower costs almost nothing, so expect about x1;\n"
              "   run without --quick for the ViT-B-32 text tower the paper used)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
