"""``train`` (also ``python -m sgim_nodes.train``): train an audio encoder into an open_clip model's space.

Example (a first CPU run on the synthetic dataset with the tiny random CLIP of make-demo-models; see
sgim_nodes/train/README.md):

    ./sgim make-demo-models demo-models
    ./sgim make-synthetic-dataset data/synth --per-class 24 --seed 0
    ./sgim train --data data/synth --split train --clip demo-models/sgim_clip/ViT-B-32.pt \\
        --features compact --epochs 24 --cycle-epochs 24 --batch-size 16 --lr 0.05 --out synth_encoder.safetensors

Several processes / machines: ``torchrun --nproc-per-node 2 -m sgim_nodes.train ...`` (``--batch-size``
is per process). ``--resume`` continues from ``<run-dir>/checkpoint.pt`` exactly; a run folder that
holds an earlier run is refused without ``--resume`` or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import DEFAULT_TEMPLATE, FEATURE_PRESETS, LAYOUTS, TrainConfig


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(data="", clip="", out="")
    from ..cli_help import command_parser

    p = command_parser("train", __doc__, full_doc=True)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="manifest CSV, VGGSound CSV, ESC-50 / UrbanSound8K root, or class folders")
    g.add_argument("--layout", choices=LAYOUTS, default="auto", help="dataset layout")
    g.add_argument("--audio-dir", help="VGGSound: folder holding the clips (default: next to the CSV)")
    g.add_argument("--split", help="train on rows of this split only (manifest / VGGSound), e.g. train")
    g.add_argument("--folds", type=int, nargs="+", help="train on these folds only (ESC-50 / UrbanSound8K)")
    g.add_argument("--classes", help="text file of class names, one a line: other labels are an error")
    g.add_argument("--template", default=DEFAULT_TEMPLATE, help="caption of a label; {} is the label")
    g.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    g.add_argument("--cache-dir", help="on-disk cache of spectrograms and CLIP text embeddings")
    g.add_argument("--max-bad-fraction", type=float, default=d.max_bad_fraction,
                   help="fail when more than this fraction of the files is unreadable")
    g = p.add_argument_group("models")
    g.add_argument("--clip", required=True, help="CLIP weights (OpenAI ViT-B-32.pt, open_clip .bin/.safetensors)")
    g.add_argument("--clip-model", help="open_clip model name (when it cannot be inferred from the file)")
    g.add_argument("--clip-config", help="custom open_clip model config NAME.json (then --clip-model NAME)")
    g.add_argument("--backbone", default=d.backbone, help="timm ResNet backbone")
    g.add_argument("--features", choices=list(FEATURE_PRESETS), default=d.features,
                   help="front-end preset: paper (default; 44.1 kHz, 128 mels, 10 s) or compact (16 kHz, 32 mels, 1 s)")
    g.add_argument("--frames", type=int, help="override the window length in spectrogram frames")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the data")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    g.add_argument("--accum-steps", type=int, default=d.accum_steps, help="gradient accumulation")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer, help="optimiser")
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    g.add_argument("--cycle-epochs", type=float, default=d.cycle_epochs, help="cosine cycle length")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="lowest lr of a cycle, relative to --lr")
    g.add_argument("--temperature", type=float, default=d.temperature, help="InfoNCE temperature")
    g.add_argument("--learnable-temperature", action="store_true", help="learn log(1/tau) as CLIP does")
    g.add_argument("--text-weight", type=float, default=d.text_weight, help="weight of the audio-text term")
    g.add_argument("--image-weight", type=float, default=d.image_weight, help="weight of the audio-image term")
    g.add_argument("--self-weight", type=float, default=d.self_weight, help="audio vs SpecAugmented audio term")
    g.add_argument("--text-variants", type=int, default=d.text_variants, help="offline text augmentations per caption")
    g.add_argument("--text-aug-prob", type=float, default=d.text_aug_prob, help="chance a draw uses an augmented caption")
    g.add_argument("--spec-augment", type=_bool, default=d.spec_augment, metavar="BOOL", help="SpecAugment the audio")
    g.add_argument("--random-pad", action="store_true", help="place short clips at a random offset (released code)")
    g.add_argument("--amp", type=_bool, default=d.amp, metavar="BOOL", help="float16 autocast on CUDA")
    g.add_argument("--sync-batchnorm", action="store_true", help="synchronise BatchNorm statistics across processes")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (initialisation, batches, augmentation)")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N, mps")
    g.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="the trained encoder (.safetensors)")
    g.add_argument("--run-dir", help="checkpoints and log.csv")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="optimiser steps")
    g.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint.pt if present")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in a run folder that holds an earlier run (without it, that is refused)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--tensorboard", action="store_true", help="also log to <run-dir>/tensorboard (if installed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    values = {k: v for k, v in vars(args).items() if k not in ("no_progress",)}
    cfg = TrainConfig(**values, progress=not args.no_progress)
    from .loop import train  # torch and open_clip load only now, so --help is instant

    out = train(cfg)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from ..errors import run_command

    raise SystemExit(run_command(main))
