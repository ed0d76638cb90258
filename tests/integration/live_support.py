"""Helpers of the live tests: click tracks, tiny live models, a live server on a thread, a websocket client.

The click track: short bursts of broadband noise (3 ms, decaying) every ``period`` seconds on a quiet
hum, so loudness and onset both peak on every click and nowhere else.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)


def click_track(seconds: float, sample_rate: int = 48000, period: float = 0.5, first: float = 0.25,
                seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Mono float32 clicks and their times (s)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    audio = 0.01 * np.sin(2 * np.pi * 110 * t)
    times = list(np.arange(first, seconds - 0.05, period))
    length = int(0.003 * sample_rate)
    burst = rng.uniform(-0.9, 0.9, length) * np.exp(-np.arange(length) / (length / 3))
    for c in times:
        i = int(round(c * sample_rate))
        audio[i:i + length] += burst[: n - i]
    return audio.astype(np.float32), [float(c) for c in times]


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit mono PCM (what Chromium's fake audio capture reads)."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return Path(path)


def click_times_in(audio: np.ndarray, sample_rate: int, threshold: float = 0.3, gap: float = 0.1) -> list[float]:
    """Where the bursts start, found in received/recorded audio."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    times, last = [], -1e9
    for i in loud:
        if i - last > gap * sample_rate:
            times.append(i / sample_rate)
        last = i
    return times


def load_live_models(models_dir: Path, with_meaning: bool = True, generator: str = "tiny_rosinality.pt"):
    import torch

    from sgim_nodes.audio import load_audio_encoder
    from sgim_nodes.clip import load_clip
    from sgim_nodes.live.server import LiveModels
    from sgim_nodes.stylegan import load_generator

    torch.set_num_threads(1)
    g = load_generator(models_dir / "stylegan" / generator)
    encoder = load_audio_encoder(models_dir / "sgim_audio_encoders" / "tiny_encoder.safetensors") if with_meaning else None
    clip = load_clip(models_dir / "sgim_clip" / "tiny_clip.pt") if with_meaning else None
    return LiveModels(generator=g, encoder=encoder, clip=clip, names={"generator": generator})


class ThreadServer:
    """A live app served on 127.0.0.1:<free port> from a background thread (for the browser tests)."""

    def __init__(self, models, config, host: str = "127.0.0.1"):
        self.models, self.config, self.host = models, config, host
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.port = None
        self.app = None

    def _main(self):
        from aiohttp import web

        from sgim_nodes.live.server import make_app

        asyncio.set_event_loop(self.loop)
        self.app = make_app(self.models, self.config)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self):
        self.thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the live server did not start")
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
