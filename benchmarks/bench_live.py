"""Live sessions: sustained frames per second and end-to-end latency, and the meaning update apart.

    python benchmarks/bench_live.py [--device cuda]    # tiny and full-size architectures at 256 and 1024 px (~4-6 min CPU)
    python benchmarks/bench_live.py --quick            # the tiny generator only, ~15 s: checks that it runs

Each case runs the real server (aiohttp on 127.0.0.1, the page's protocol) and a client that streams
a click track in real time (40 ms messages, each stamped with the client's clock) and acknowledges
every frame as it arrives, as the page does. Measured:

- frames/s: frames received per second of stream, after a 2 s warm-up (the target is ``--fps``;
  the server drops frames rather than fall behind, so a slow renderer shows as fewer frames/s);
- latency: frame received minus the stamp of the audio message that completed the frame (audio
  in -> frame out, encoding and the local socket included; the page's decoding and display are not);
- render: milliseconds per frame inside the session (code + synthesis + resize + JPEG);
- update: milliseconds per meaning update on the session's update thread (the audio encoder on the
  last 10 s window + the instant-edit direction; every ``--embed-every`` seconds, off the frame
  thread, applied 0.5 s of stream later);
- wait: the longest a frame waited for an update not finished by its apply time (0: updates never
  held a frame up; more means the update costs more than its delay on this machine);
- direction: milliseconds of the instant-edit direction alone (``InstantMeaning.direction``: the
  channel relevances and the pull-back to W+; median of 50 calls outside the stream), and "editor":
  seconds to prepare the instant editor once per generator (the per-row pseudo-inverses, the W+ spread).

Cases: the tiny 32 px generator of the tests and NVIDIA's StyleGAN2 configurations at 256 and
1024 px (random weights: the cost is the architecture's), frames sent at 256 and at 1024 px; the
ResNet-18 audio encoder with the paper's preprocessing in each. The meaning is the real instant-edit
path (:class:`sgim_nodes.live.meaning.InstantMeaning`) over *random* directions of the generator's
StyleSpace shape and a random reference embedding: the cost is that of real ones, and no CLIP model
nor an analysis (hours for 1024 px on a CPU) is needed. No CLIP: the nearest-prompts readout (a matrix
product over 31 prompts, once per update) is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests" / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def build(arch: str, device):
    import torch

    from sgim_nodes.audio.encoder import build_audio_encoder
    from sgim_nodes.stylegan import Generator, GeneratorConfig

    torch.manual_seed(0)
    if arch == "tiny":
        config = GeneratorConfig(resolution=32, z_dim=64, w_dim=64, n_mapping=2, channels={4: 16, 8: 16, 16: 16, 32: 16})
    else:
        config = GeneratorConfig.stylegan2(int(arch))
    generator = Generator(config, name=f"random-{arch}")
    with torch.no_grad():
        generator.w_avg.copy_(generator.estimate_w_avg(256))
    encoder = build_audio_encoder("resnet18", embed_dim=512 if arch != "tiny" else 32).eval()
    encoder.requires_grad_(False)
    return generator.to(device).eval(), encoder.to(device)


def random_meaning(generator, embed_dim: int = 512):
    """(meaning factory for ``LiveModels``, editor seconds, direction ms): the instant path over random directions."""
    import torch

    from sgim_nodes.instant.analysis import StyleDirections
    from sgim_nodes.live.meaning import InstantAnalysis, InstantMeaning
    from sgim_nodes.live.session import LiveSettings
    from sgim_nodes.optimize import sample_source_ws
    from sgim_nodes.stylegan.stylespace import style_table

    g = torch.Generator().manual_seed(1)
    layers = style_table(generator)
    channels = layers[-1].stop
    directions = StyleDirections(torch.randn(channels, embed_dim, generator=g) * 0.01, torch.zeros(channels),
                                 torch.rand(channels, generator=g) + 0.5,
                                 torch.nn.functional.normalize(torch.randn(embed_dim, generator=g), dim=0),
                                 layers=layers, info={"settings": {"truncation": 0.7}})
    clock = time.perf_counter()
    analysis = InstantAnalysis(generator, None, directions=directions).start()
    if not analysis.wait(600):
        raise RuntimeError(f"the instant editor failed: {analysis.error}")
    editor_seconds = time.perf_counter() - clock
    reference = torch.nn.functional.normalize(torch.randn(embed_dim, generator=g), dim=0).to(generator.device)

    def make():
        meaning = InstantMeaning(analysis)
        meaning.prepare = lambda generator, clip, source: setattr(meaning, "reference", reference)
        return meaning

    meaning = make()
    meaning.prepare(None, None, None)
    source = sample_source_ws(generator, 1, 0, 0.7)
    settings, times = LiveSettings(), []
    for k in range(55):
        target = torch.nn.functional.normalize(torch.randn(embed_dim, generator=g), dim=0).to(generator.device)
        clock = time.perf_counter()
        meaning.direction(target, source, settings)
        if generator.device.type == "cuda":
            torch.cuda.synchronize(generator.device)
        if k >= 5:
            times.append(1000 * (time.perf_counter() - clock))
    return make, editor_seconds, statistics.median(times)


async def stream(models, size: int, seconds: float, fps: float, embed_every: float) -> dict:
    import numpy as np
    from aiohttp import ClientSession, web

    from live_support import click_track
    from sgim_nodes.live.server import LIVE_SERVER, ServerConfig, make_app

    app = make_app(models, ServerConfig(fps=fps, embed_every=embed_every, idle_seconds=600))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rate, chunk = 48000, 1920  # 40 ms messages, as the page's worklet sends
    audio, _ = click_track(seconds, rate)
    received: list[tuple[float, dict]] = []
    t0 = time.perf_counter()
    clock = lambda: 1000 * (time.perf_counter() - t0)  # noqa: E731  (ms, the client's clock)
    async with ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=64 << 20)
        await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, "settings": {"size": size}}))
        assert (await ws.receive_json(timeout=120))["type"] == "ready"

        async def read():
            async for msg in ws:
                if msg.type.name != "BINARY":
                    if json.loads(msg.data)["type"] == "end":
                        return
                    continue
                n = struct.unpack("<I", msg.data[:4])[0]
                header = json.loads(msg.data[4:4 + n])
                received.append((clock(), header))
                await ws.send_str(json.dumps({"type": "ack", "index": header["index"]}))

        reader = asyncio.ensure_future(read())
        start = time.perf_counter()
        for k, begin in enumerate(range(0, audio.size, chunk)):
            await ws.send_bytes(struct.pack("<d", clock()) + np.asarray(audio[begin:begin + chunk], "<f4").tobytes())
            delay = start + (k + 1) * chunk / rate - time.perf_counter()  # real time, not faster
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(1.0)
        server = app[LIVE_SERVER]
        connection = next(iter(server.connections))
        update_ms = [1000 * s for s in connection.session.update_seconds]
        wait_ms = [1000 * s for s in connection.session.update_waits]
        meaning = connection.session.meaning_status
        await ws.send_str(json.dumps({"type": "stop"}))
        await asyncio.wait_for(reader, 60)
        await ws.close()
    await runner.cleanup()
    warm = [(t, h) for t, h in received if h["t"] >= 2.0]
    stream_span = (warm[-1][1]["t"] - warm[0][1]["t"]) if len(warm) > 1 else float("nan")
    latencies = [t - h["stamp"] for t, h in warm if h["stamp"] is not None]
    return {"frames_per_s": (len(warm) - 1) / stream_span if len(warm) > 1 else 0.0,
            "latency_ms_median": statistics.median(latencies) if latencies else float("nan"),
            "latency_ms_p90": float(np.percentile(latencies, 90)) if latencies else float("nan"),
            "render_ms": statistics.median(h["render_ms"] for _, h in warm) if warm else float("nan"),
            "update_ms": statistics.median(update_ms) if update_ms else float("nan"),
            "wait_ms": max(wait_ms) if wait_ms else float("nan"), "updates": len(update_ms), "meaning": meaning,
            "frames": len(warm)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--quick", action="store_true", help="the tiny generator for a few seconds only")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of stream per case")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate aimed at")
    parser.add_argument("--embed-every", type=float, default=0.75, help="seconds between direction updates")
    args = parser.parse_args(argv)

    import torch

    from sgim_nodes.device import resolve_device
    from sgim_nodes.live.server import LiveModels

    device = resolve_device(args.device)
    archs, seconds = (["tiny"], 4.0) if args.quick else (["tiny", "256", "1024"], args.seconds)
    if seconds < 3.0:
        parser.error("--seconds: at least 3 (2 s of warm-up, then the measured part)")
    if args.quick:
        torch.set_num_threads(1)  # tiny models only lose to thread contention on a shared machine
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, target {args.fps:g} fps, "
          f"{seconds:g} s of stream per case")
    print(f"{'generator':>10} {'frame px':>8} {'frames/s':>9} {'latency ms':>11} {'p90 ms':>8} {'render ms':>10} "
          f"{'update ms':>10} {'wait ms':>8} {'direction ms':>13} {'editor s':>9}")
    results = []
    for arch in archs:
        generator, encoder = build(arch, device)
        meaning, editor_seconds, direction_ms = random_meaning(generator, int(encoder.embed_dim))
        models = LiveModels(generator=generator, encoder=encoder, meaning=meaning, names={"generator": f"random-{arch}"})
        for size in (256, 1024):
            row = asyncio.run(stream(models, size, seconds, args.fps, args.embed_every))
            row.update(generator=arch, size=size, device=str(device), direction_ms=direction_ms,
                       editor_seconds=editor_seconds)
            if row["meaning"] != "instant" or not row["updates"]:
                raise RuntimeError(f"the meaning did not run ({row['meaning']}, {row['updates']} updates)")
            results.append(row)
            print(f"{arch:>10} {size:>8} {row['frames_per_s']:>9.1f} {row['latency_ms_median']:>11.0f} "
                  f"{row['latency_ms_p90']:>8.0f} {row['render_ms']:>10.1f} {row['update_ms']:>10.1f} "
                  f"{row['wait_ms']:>8.1f} {direction_ms:>13.2f} {editor_seconds:>9.2f}", flush=True)
        del generator, encoder, models
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
