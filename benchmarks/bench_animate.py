"""Cost of a music video: compute per second of music, decoding throughput, and the CLI's peak memory.

    python benchmarks/bench_animate.py            # 256 and 1024 px (random-weight StyleGAN2 + ViT-B-32), minutes
    python benchmarks/bench_animate.py --quick    # tiny 32 px models: checks that everything runs

Compute (one subprocess per resolution, random weights in the real configurations, as
``bench_optimize.py``): the keyframe optimiser's seconds per step (warm-started keyframes, the
first step of each keyframe excluded), the decoder's frames per second at batch 1 and at the batch
the CLI and the node use (8), the features' and the keyframe targets' cost. Seconds of compute per
second of music at the defaults (24 fps, a keyframe every 4 s with 30 steps, 100 for the first one,
for a 3-minute track) are computed from those measured rates:

    keyframes = (keyframe_steps / keyframe_seconds + (steps - keyframe_steps) / 180 s) x s/step
    decoding  = fps / (frames per second at batch 8)

Memory: the ``animate`` command itself, in a subprocess, on a 30 s and a 5 min synthetic track with
the tiny models (2 steps per keyframe: the steps do not change the memory), as the child's peak
resident size (``ru_maxrss``). It must not grow with the track's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks", REPO / "tests" / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

FPS = 24.0
KEYFRAME_SECONDS = 4.0
STEPS, KEYFRAME_STEPS = 100, 30
TRACK_SECONDS = 180.0
DECODE_BATCH = 8


def synthetic_features(seconds: float):
    import torch

    from sgim_nodes.animate import features_of_waveform, make_timeline

    g = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(2, int(seconds * 44100), generator=g)
    timeline = make_timeline(seconds, FPS)
    started = time.perf_counter()
    features = features_of_waveform(wave, 44100, timeline)
    return features, (time.perf_counter() - started) / seconds


def compute_worker(config: str, timed_steps: int, decode_batches: int) -> dict:
    import torch

    from bench_optimize import build_models, make_generator
    from sgim_nodes.animate import KeyframeSettings, Trajectory, iter_frames, optimize_keyframes
    from sgim_nodes.clip import ClipModel
    from sgim_nodes.optimize import sample_source_ws

    gen_config, clip_model, encoder, _ = build_models(config)
    generator = make_generator(gen_config, "activation")
    clip = ClipModel(clip_model, "ViT-B-32" if config != "quick" else "tiny", tokenizer=None)
    source = sample_source_ws(generator, 1, seed=2)
    features, features_s_per_s = synthetic_features(30.0)

    windows = torch.randn(3, 1, 128, 512, generator=torch.Generator().manual_seed(3))
    started = time.perf_counter()
    with torch.no_grad():
        targets = torch.nn.functional.normalize(encoder(windows).float(), dim=-1)
    target_s = (time.perf_counter() - started) / 3

    stamps: list[tuple[int, float]] = []
    settings = KeyframeSettings(steps=timed_steps + 1, keyframe_steps=timed_steps + 1, seed=0)
    from sgim_nodes.memory import reuse_freed_memory

    with reuse_freed_memory():  # the command line's allocator policy (its TqdmRun asks for it)
        keyframes = optimize_keyframes(generator, clip, targets, source, [0.0, 4.0, 8.0], settings,
                                       callback=lambda k, info: stamps.append((k, time.perf_counter())))
    intervals = [b[1] - a[1] for a, b in zip(stamps, stamps[1:]) if a[0] == b[0] and a[0] > 0]  # warm-started ones
    s_per_step = sum(intervals) / len(intervals)

    trajectory = Trajectory(keyframes, features)
    rates = {}
    for batch in (1, DECODE_BATCH):
        frames, seen = 0, 0
        clock = None
        for first, images in iter_frames(generator, trajectory, batch_size=batch, count=batch * (decode_batches + 2),
                                        reuse_cpu_memory=True):
            seen += 1
            if seen <= 2:  # the first two batches of a shape warm up the convolution kernels
                clock = time.perf_counter()
                continue
            frames += images.shape[0]
        rates[batch] = frames / (time.perf_counter() - clock)

    keyframe_s = (KEYFRAME_STEPS / KEYFRAME_SECONDS + (STEPS - KEYFRAME_STEPS) / TRACK_SECONDS) * s_per_step
    decode_s = FPS / rates[DECODE_BATCH]
    return dict(config=config, resolution=generator.resolution, s_per_step=s_per_step,
                frames_per_s_batch1=rates[1], frames_per_s_batch=rates[DECODE_BATCH],
                keyframes_s_per_music_s=keyframe_s, decode_s_per_music_s=decode_s,
                features_s_per_music_s=features_s_per_s,
                targets_s_per_music_s=target_s / KEYFRAME_SECONDS, threads=torch.get_num_threads())


WRITE_TRACK = """
import sys, numpy as np, av
path, seconds, rate = sys.argv[1], float(sys.argv[2]), 44100
with av.open(path, "w") as out:
    stream = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
    rng = np.random.default_rng(0)
    for second in range(int(seconds)):
        pcm = (rng.standard_normal((rate, 2)) * 3000).astype(np.int16)
        pcm[:: rate // 2] = 30000  # two beats a second
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
"""


def memory_worker(seconds: float, folder: Path) -> dict:
    """Run the CLI on a synthetic track; the child's peak RSS (this worker runs nothing else heavy)."""
    track = folder / f"track_{int(seconds)}.wav"
    subprocess.run([sys.executable, "-c", WRITE_TRACK, str(track), str(seconds)], check=True)
    models = folder / "models"
    command = [sys.executable, "-m", "sgim_nodes", "animate", "--audio", str(track), "--out",
               str(folder / f"video_{int(seconds)}.mp4"), "--generator", str(models / "stylegan" / "tiny_rosinality.pt"),
               "--clip", str(models / "sgim_clip" / "tiny_clip.pt"), "--encoder",
               str(models / "sgim_audio_encoders" / "tiny_encoder.safetensors"), "--device", "cpu",
               "--steps", "2", "--keyframe-steps", "2", "--fps", str(FPS)]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    from sgim_nodes.animate.render import video_frame_count

    frames, video_s, audio_s = video_frame_count(folder / f"video_{int(seconds)}.mp4")
    return dict(seconds=seconds, peak_mb=peak_kib / 1024, wall_s=wall, frames=frames, video_s=video_s,
                audio_s=audio_s)


def import_baseline_worker() -> dict:
    """Peak RSS of a child that only imports what the command imports (PyTorch, open_clip, timm, PyAV)."""
    code = "import torch, timm, open_clip, av, torchaudio, tqdm, sgim_nodes.animate.cli"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return dict(peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def spawn(args: list[str], timeout: float) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only")
    parser.add_argument("--configs", default="256,1024",
                        help="comma list of 256, 1024 (ignored with --quick; empty: the memory figures only)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per keyframe")
    parser.add_argument("--decode-batches", type=int, default=3, help="timed batches per decode batch size")
    parser.add_argument("--memory-seconds", default="30,300", help="track lengths for the CLI memory figure")
    parser.add_argument("--compute-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compute_worker:
        config, steps, batches = args.compute_worker
        print(json.dumps(compute_worker(config, int(steps), int(batches))))
        return 0
    if args.baseline_worker:
        print(json.dumps(import_baseline_worker()))
        return 0
    if args.memory_worker:
        print(json.dumps(memory_worker(float(args.memory_worker[0]), Path(args.memory_worker[1]))))
        return 0

    import torch

    configs = ["quick"] if args.quick else [c for c in args.configs.split(",") if c]  # "" = memory only
    print(f"threads {torch.get_num_threads()}, defaults: {FPS:g} fps, keyframe every {KEYFRAME_SECONDS:g} s, "
          f"{STEPS} steps then {KEYFRAME_STEPS} per keyframe, decode batch {DECODE_BATCH}")
    print("| config | s/step | keyframes s per music s | decode s per music s | frames/s batch 1 | "
          f"frames/s batch {DECODE_BATCH} | features s per music s | targets s per music s |")
    print("|---|---|---|---|---|---|---|---|")
    for config in configs:
        r = spawn(["--compute-worker", config, str(args.steps), str(args.decode_batches)], timeout=3600)
        print(f"| {config} ({r['resolution']} px) | {r['s_per_step']:.3f} | {r['keyframes_s_per_music_s']:.2f} | "
              f"{r['decode_s_per_music_s']:.2f} | {r['frames_per_s_batch1']:.2f} | {r['frames_per_s_batch']:.2f} | "
              f"{r['features_s_per_music_s']:.4f} | {r['targets_s_per_music_s']:.4f} |", flush=True)

    if not args.memory_seconds:
        return 0
    from tiny_models import write_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_models(Path(tmp) / "models", REPO.parent / "shared")
        rows = [spawn(["--memory-worker", seconds, tmp], timeout=3600) for seconds in args.memory_seconds.split(",")]
    baseline = spawn(["--baseline-worker"], timeout=600)["peak_mb"]
    print(f"\nimports alone (torch, open_clip, timm, PyAV, the command's modules): peak RSS {baseline:.0f} MB")
    print("| track | CLI peak RSS | above the imports | wall | frames | video s | audio s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seconds']:g} s | {r['peak_mb']:.0f} MB | {r['peak_mb'] - baseline:.0f} MB | {r['wall_s']:.1f} s | "
              f"{r['frames']} | {r['video_s']:.3f} | {r['audio_s']:.3f} |")
    if len(rows) > 1:
        print(f"peak ratio longest/shortest: {rows[-1]['peak_mb'] / rows[0]['peak_mb']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
