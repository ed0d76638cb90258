"""Audio throughput: clips per second for the paper preprocessing and for the ResNet-18 encoder.

    python benchmarks/bench_audio.py [--quick] [--device cpu|cuda] [--threads N]

Preprocessing runs on the eight shared clips (or synthetic 10 s clips when ../shared is absent), split by
sample rate (44.1 kHz clips need no resampling; 48 kHz ones go through the Kaiser resampler). Encoding uses
a randomly initialised official-layout ResNet-18 at batch 1 and batch 8. The exact CLIP-input resize of
the optimiser is timed too. ``--quick`` does one round of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgim_nodes.audio import build_audio_encoder, load_audio, paper_input  # noqa: E402
from sgim_nodes.clip import paper_resize  # noqa: E402
from sgim_nodes.device import resolve_device  # noqa: E402


def _clips() -> list[tuple[str, torch.Tensor, int]]:
    shared = Path(os.environ.get("SGIM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "audio"
    files = sorted(shared.glob("*.wav"))
    if files:
        return [(f.stem, *load_audio(f)) for f in files]
    gen = torch.Generator().manual_seed(0)
    return [(f"synthetic{i}", torch.randn(2, rate * 10, generator=gen) * 0.1, rate)
            for i, rate in enumerate([44100] * 6 + [48000] * 2)]


def _rate(fn, rounds: int) -> float:
    fn()  # warm-up: kernels, caches
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return rounds / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timed round of everything")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else 5
    device = resolve_device(args.device)
    clips = _clips()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    for label, group in (("44.1 kHz", [c for c in clips if c[2] == 44100]),
                         ("other rates (resampled)", [c for c in clips if c[2] != 44100])):
        if group:
            per_second = _rate(lambda: [paper_input(w, r) for _, w, r in group], rounds) * len(group)
            print(f"preprocessing, {label}: {per_second:.1f} clips/s ({len(group)} clips)")
    encoder = build_audio_encoder("resnet18", device=device).eval()
    for batch in (1, 8):
        inputs = torch.rand(batch, 1, 128, 512, device=device)

        def encode():
            with torch.inference_mode():
                encoder(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()

        print(f"encoding, resnet18 batch {batch}: {_rate(encode, rounds) * batch:.1f} clips/s")
    for size in (256, 1024):  # the optimiser's CLIP input: exact paper resize, forward + backward
        image = (torch.rand(1, 3, size, size, device=device) * 2 - 1).requires_grad_(True)

        def resize():
            paper_resize(image).sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()

        print(f"paper_resize {size}->224, forward+backward: {1000 / _rate(resize, rounds * 4):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
