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

Beats: :func:`sgim_nodes.animate.beats.track_beats` (tempo estimate + beat DP) on the features of a
synthetic 120 BPM track, CPU seconds per second of music.

Render to a file (:func:`sgim_nodes.animate.segments.render_to_file`, closed-GOP segments joined by
stream copy, audio muxed) with 1 and 2 processes under ``torch.distributed.run`` (gloo on the CPU;
NCCL needs one GPU per process, so on a single-GPU machine the 2-process row is skipped): seconds of
wall time per second of music, from the start of rendering to the renamed file, and the speed-up.
The 1-process video then gives the flicker figures (:mod:`sgim_nodes.animate.flicker`: frame-to-frame
pixel and edge change against W+ change, spikes, keyframe steps apart); its plot is written to
``benchmarks/results/flicker_<config>.png``.

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

    from bench_device import autocast_context, synchronize, worker_autocast, worker_device

    device, autocast = worker_device(), worker_autocast()
    gen_config, clip_model, encoder, _ = build_models(config)
    generator = make_generator(gen_config, "activation").to(device)
    clip_model, encoder = clip_model.to(device), encoder.to(device)
    clip = ClipModel(clip_model, "ViT-B-32" if config != "quick" else "tiny", tokenizer=None)
    source = sample_source_ws(generator, 1, seed=2).to(device)
    features, features_s_per_s = synthetic_features(30.0)

    windows = torch.randn(3, 1, 128, 512, generator=torch.Generator().manual_seed(3)).to(device)
    started = time.perf_counter()
    with torch.no_grad():
        targets = torch.nn.functional.normalize(encoder(windows).float(), dim=-1)
    synchronize(device)
    target_s = (time.perf_counter() - started) / 3

    stamps: list[tuple[int, float]] = []

    def stamp(k, info):
        synchronize(device)
        stamps.append((k, time.perf_counter()))

    settings = KeyframeSettings(steps=timed_steps + 1, keyframe_steps=timed_steps + 1, seed=0)
    from sgim_nodes.memory import reuse_freed_memory

    # the command line's allocator policy (its TqdmRun asks for it); optimize_keyframes has no autocast option
    with reuse_freed_memory(), autocast_context(device, autocast):
        keyframes = optimize_keyframes(generator, clip, targets, source, [0.0, 4.0, 8.0], settings, callback=stamp)
    intervals = [b[1] - a[1] for a, b in zip(stamps, stamps[1:]) if a[0] == b[0] and a[0] > 0]  # warm-started ones
    s_per_step = sum(intervals) / len(intervals)

    trajectory = Trajectory(keyframes, features)
    rates = {}
    for batch in (1, DECODE_BATCH):
        frames, seen = 0, 0
        clock = None
        with autocast_context(device, autocast):
            for first, images in iter_frames(generator, trajectory, batch_size=batch,
                                             count=batch * (decode_batches + 2), reuse_cpu_memory=True):
                seen += 1
                if seen <= 2:  # the first two batches of a shape warm up the convolution kernels
                    synchronize(device)
                    clock = time.perf_counter()
                    continue
                frames += images.shape[0]
        synchronize(device)
        rates[batch] = frames / (time.perf_counter() - clock)

    keyframe_s = (KEYFRAME_STEPS / KEYFRAME_SECONDS + (STEPS - KEYFRAME_STEPS) / TRACK_SECONDS) * s_per_step
    decode_s = FPS / rates[DECODE_BATCH]
    return dict(config=config, resolution=generator.resolution, s_per_step=s_per_step,
                frames_per_s_batch1=rates[1], frames_per_s_batch=rates[DECODE_BATCH],
                keyframes_s_per_music_s=keyframe_s, decode_s_per_music_s=decode_s,
                features_s_per_music_s=features_s_per_s,
                targets_s_per_music_s=target_s / KEYFRAME_SECONDS, threads=torch.get_num_threads(),
                device=str(device), autocast=autocast)


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


def beats_worker(seconds: float) -> dict:
    """CPU seconds of beat tracking per second of music (features computed first, not counted)."""
    import torch

    from sgim_nodes.animate import features_of_waveform, make_timeline
    from sgim_nodes.animate.beats import track_beats

    rate = 22050
    g = torch.Generator().manual_seed(0)
    wave = 0.02 * torch.randn(1, int(seconds * rate), generator=g)
    wave[0, :: rate // 2] = 0.9  # 120 BPM
    features = features_of_waveform(wave, rate, make_timeline(seconds, FPS))
    started = time.process_time()
    beats = track_beats(features)
    cpu = time.process_time() - started
    return dict(seconds=seconds, cpu_s_per_music_s=cpu / seconds, tempo=beats.tempo, beats=len(beats.frames))


RENDER_KEYFRAME_SECONDS = 2.0


def render_worker(config: str, seconds: float, folder: Path, device: str) -> dict | None:
    """One rank of a render to a file under torch.distributed.run; rank 0 reports (None elsewhere)."""
    import torch

    from bench_optimize import build_models, make_generator
    from sgim_nodes.animate import Keyframes, Trajectory, features_of_file, keyframe_times, make_timeline
    from sgim_nodes.animate.distributed import ranks_from_environment
    from sgim_nodes.animate.segments import render_to_file
    from sgim_nodes.optimize import sample_source_ws

    ranks = ranks_from_environment(device)
    gen_config, *_ = build_models(config)
    generator = make_generator(gen_config, "activation").to(ranks.device)
    track = folder / f"track_{int(seconds)}.wav"
    timeline = make_timeline(seconds, FPS)
    features = features_of_file(track, timeline)
    times = keyframe_times(timeline, RENDER_KEYFRAME_SECONDS)
    source = sample_source_ws(generator, 1, seed=2).cpu()
    g = torch.Generator().manual_seed(3)
    codes = source + 0.5 * torch.randn(len(times), *source.shape[1:], generator=g)  # stand-ins for optimised codes
    trajectory = Trajectory(Keyframes(times, codes, source), features)
    out = folder / f"render_{config}_{ranks.world_size}.mp4"
    ranks.barrier()
    started = time.perf_counter()
    render_to_file(generator, trajectory, out, audio_path=track, batch_size=DECODE_BATCH, ranks=ranks)
    wall = time.perf_counter() - started
    result = None
    if ranks.is_main:
        result = dict(processes=ranks.world_size, seconds=seconds, wall_s=wall, s_per_music_s=wall / seconds,
                      video=str(out), resolution=generator.resolution)
        if ranks.world_size == 1:
            from sgim_nodes.animate.flicker import flicker_of_video, plot_flicker

            stats = flicker_of_video(out, trajectory)
            result["flicker"] = stats.summary()
            results = REPO / "benchmarks" / "results"
            results.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            figure = results / f"flicker_{config}.png"
            Image.fromarray(plot_flicker(stats)).save(figure)
            result["figure"] = str(figure)
    ranks.close()
    return result


def spawn_render(config: str, seconds: float, folder: Path, processes: int, device: str) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               __file__, "--render-worker", config, str(seconds), str(folder), device]
    out = subprocess.run(command, capture_output=True, text=True, timeout=7200, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"render with {processes} processes failed:\n{out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


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
    parser.add_argument("--beat-seconds", type=float, default=600.0, help="music analysed for the beat cost")
    parser.add_argument("--render-seconds", type=float, default=60.0, help="music rendered with 1 and 2 processes")
    parser.add_argument("--compute-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--render-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--beats-worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    from bench_device import add_device_arguments, describe, export, worker_autocast, worker_device

    add_device_arguments(parser)
    args = parser.parse_args(argv)
    export(args)
    if args.compute_worker:
        config, steps, batches = args.compute_worker
        print(json.dumps(compute_worker(config, int(steps), int(batches))))
        return 0
    if args.render_worker:
        config, seconds, folder, device = args.render_worker
        result = render_worker(config, float(seconds), Path(folder), device)
        if result is not None:
            print(json.dumps(result))
        return 0
    if args.beats_worker:
        print(json.dumps(beats_worker(args.beats_worker)))
        return 0
    if args.baseline_worker:
        print(json.dumps(import_baseline_worker()))
        return 0
    if args.memory_worker:
        print(json.dumps(memory_worker(float(args.memory_worker[0]), Path(args.memory_worker[1]))))
        return 0

    import torch

    configs = ["quick"] if args.quick else [c for c in args.configs.split(",") if c]  # "" = memory only
    print(f"{describe(worker_device(), worker_autocast())}, defaults: {FPS:g} fps, keyframe every {KEYFRAME_SECONDS:g} s, "
          f"{STEPS} steps then {KEYFRAME_STEPS} per keyframe, decode batch {DECODE_BATCH}")
    print("| config | s/step | keyframes s per music s | decode s per music s | frames/s batch 1 | "
          f"frames/s batch {DECODE_BATCH} | features s per music s | targets s per music s |")
    print("|---|---|---|---|---|---|---|---|")
    for config in configs:
        r = spawn(["--compute-worker", config, str(args.steps), str(args.decode_batches)], timeout=3600)
        print(f"| {config} ({r['resolution']} px) | {r['s_per_step']:.3f} | {r['keyframes_s_per_music_s']:.2f} | "
              f"{r['decode_s_per_music_s']:.2f} | {r['frames_per_s_batch1']:.2f} | {r['frames_per_s_batch']:.2f} | "
              f"{r['features_s_per_music_s']:.4f} | {r['targets_s_per_music_s']:.4f} |", flush=True)

    beat_seconds = 60.0 if args.quick else args.beat_seconds
    b = spawn(["--beats-worker", str(beat_seconds)], timeout=3600)
    print(f"\nbeat tracking: {b['cpu_s_per_music_s'] * 1000:.3f} ms CPU per second of music ({b['seconds']:g} s "
          f"analysed, tempo {b['tempo']:.1f} BPM, {b['beats']} beats)")

    render_seconds = 20.0 if args.quick else args.render_seconds
    from sgim_nodes.device import resolve_device

    device = resolve_device(args.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    print(f"\nrender to a file on {device.type} ({render_seconds:g} s of music at {FPS:g} fps, batch {DECODE_BATCH}, "
          "segments of 10 s joined by stream copy, audio muxed)")
    print("| config | processes | wall s | s per music s | speed-up |\n|---|---|---|---|---|")
    flicker_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", WRITE_TRACK, str(Path(tmp) / f"track_{int(render_seconds)}.wav"),
                        str(render_seconds)], check=True)
        for config in configs:
            one = None
            for processes in (1, 2):
                if device.type == "cuda" and processes > gpus:
                    print(f"| {config} | {processes} | skipped: {gpus} GPU(s), NCCL needs one per process | | |")
                    continue
                r = spawn_render(config, render_seconds, Path(tmp), processes, str(device))
                one = r if processes == 1 else one
                speedup = one["wall_s"] / r["wall_s"] if one else float("nan")
                print(f"| {config} ({r['resolution']} px) | {processes} | {r['wall_s']:.2f} | "
                      f"{r['s_per_music_s']:.3f} | "
                      f"{speedup:.2f} |", flush=True)
                if "flicker" in r:
                    flicker_rows.append((config, r["flicker"], r["figure"]))
    if flicker_rows:
        print("\nflicker of the 1-process video (per frame step; pixel/edge change in [0, 1] of the value range)")
        print("| config | pixel median | pixel p95 | edges median | edges p95 | pixel per W+ change | "
              "keyframe steps / inside | spikes (at keyframes) | figure |\n|---|---|---|---|---|---|---|---|---|")
        for config, f, figure in flicker_rows:
            print(f"| {config} | {f['pixel_median']:.4f} | {f['pixel_p95']:.4f} | {f['edges_median']:.4f} | "
                  f"{f['edges_p95']:.4f} | {f['pixel_per_code_median']:.4f} | {f['keyframe_over_inside']:.2f} | "
                  f"{f['spikes']} ({f['spikes_at_keyframes']}) | {Path(figure).relative_to(REPO)} |")

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
