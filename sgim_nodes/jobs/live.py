"""The live job: load the models once, then serve the live page until the host stops it.

``run_live(request, run)``: the command line calls it with a ``TqdmRun`` (Ctrl+C stops the server);
the models go to ``run.device``. Sessions themselves are the page's: see :mod:`sgim_nodes.live.server`.

Meaning (``meaning="instant"``, the default with an encoder and CLIP): the generator's instant-edit
directions come from the analysis cache; without one the generator is analysed on a background thread
(progress in the terminal, "analysing n/N" on the page) while the page already serves and sessions
follow loudness and bands; the meaning switches on at their next update after it (and the cache
serves every later start). See :mod:`sgim_nodes.live.meaning`.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import ParameterError
from ..limits import check_int
from ..live import defaults
from .run import Run

MEANINGS = ("instant", "none")


@dataclass
class LiveRequest:
    generator: Path
    encoder: Path | None = None  # None with clip None: reactivity alone (no embedding, no nearest prompts)
    clip: Path | None = None
    clip_model: str | None = None
    host: str = "127.0.0.1"
    port: int = defaults.DEFAULT_PORT
    fps: float = defaults.DEFAULT_FPS
    out_dir: Path = Path("live_recordings")
    embed_every: float = defaults.DEFAULT_EMBED_EVERY
    seed: int = 0
    token: str | None = None  # None on a non-local host: one is made up and printed
    meaning: str | None = None  # "instant" or "none"; None: instant with an encoder and CLIP, else none
    analysis_cache: Path | None = None  # the instant-edit analysis cache file (None: the default place)

    def checked(self) -> "LiveRequest":
        from ..live.server import is_local
        from ..limits import check_float

        check_int("port", self.port, 0, 65535, "a TCP port")
        check_float("fps", self.fps, 0.0, 120.0, exclusive_minimum=True, what="a frame rate")
        check_float("embed_every", self.embed_every, 0.05, 60.0, what="seconds")
        if (self.encoder is None) != (self.clip is None):
            raise ParameterError("encoder/clip: give both (the meaning needs the sound and the prompts in one "
                                 "CLIP space) or neither (reactivity alone)", parameter="encoder")
        if self.meaning is None:
            self.meaning = "instant" if self.encoder is not None else "none"
        if self.meaning not in MEANINGS:
            raise ParameterError(f"meaning: expected one of {', '.join(MEANINGS)}, got {self.meaning!r}",
                                 parameter="meaning")
        if self.meaning == "instant" and self.encoder is None:
            raise ParameterError("meaning: instant edits need the audio encoder and CLIP (give them, or choose "
                                 "none for loudness and bands only)", parameter="meaning")
        if not isinstance(self.host, str) or not self.host:
            raise ParameterError("host: expected an address to listen on", parameter="host")
        if not is_local(self.host) and self.token is None:
            self.token = secrets.token_urlsafe(18)
        return self


def load_live_models(request: LiveRequest, run: Run):
    """Generator, encoder and CLIP on ``run.device``, checked against each other."""
    from ..audio import check_compatible, load_audio_encoder
    from ..clip import load_clip
    from ..live.server import LiveModels
    from ..stylegan import load_generator

    run.status(f"loading {request.generator}")
    generator = load_generator(request.generator, device=run.device)
    encoder = clip = None
    if request.encoder is not None:
        run.status(f"loading {request.encoder}")
        encoder = load_audio_encoder(request.encoder, device=run.device)
        run.status(f"loading {request.clip}")
        clip = load_clip(request.clip, model_name=request.clip_model, device=run.device)
        check_compatible(encoder, clip)
    names = {"generator": Path(request.generator).name,
             "encoder": Path(request.encoder).name if request.encoder else None,
             "clip": Path(request.clip).name if request.clip else None, "device": str(run.device)}
    return LiveModels(generator=generator, encoder=encoder, clip=clip, names=names)


def live_url(request: LiveRequest, port: int) -> str:
    host = request.host if ":" not in request.host else f"[{request.host}]"
    return f"http://{host}:{port}/" + (f"?token={request.token}" if request.token else "")


async def serve(app, request: LiveRequest, run: Run, on_ready=None) -> None:
    """Serve ``app`` until the run is cancelled; ``on_ready(port)`` once listening."""
    from aiohttp import web

    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, request.host, request.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ParameterError(f"port: cannot listen on {request.host}:{request.port} ({exc.strerror or exc})",
                             parameter="port") from None
    port = runner.addresses[0][1] if runner.addresses else request.port
    if on_ready is not None:
        on_ready(port)
    try:
        while not run.cancel_requested():
            await asyncio.sleep(0.25)
    finally:
        await runner.cleanup()


def run_live(request: LiveRequest, run: Run, on_ready=None) -> None:
    """Load the models and serve until ``run`` is cancelled (Ctrl+C on the command line)."""
    from ..live.server import ServerConfig, make_app

    request = request.checked()
    models = load_live_models(request, run)
    analysis = None
    if request.meaning == "instant":
        from ..live.meaning import InstantAnalysis

        analysis = InstantAnalysis(models.generator, models.clip, generator_file=request.generator,
                                   cache=request.analysis_cache, log=run.status).start()
        models.meaning = analysis.provider
        if not analysis.wait(5.0) and analysis.state == "analysing":  # a cache is read in a moment
            what = ("no instant-edit analysis of this generator is cached yet: analysing it in the background "
                    "(once; cached after)" if analysis.progress[1] else "still reading the instant-edit analysis")
            run.status(f"meaning: {what}. The page serves now; the picture follows loudness and bands until "
                       "the meaning is on")
    else:
        run.status("meaning: none (the picture follows loudness and bands)")
    config = ServerConfig(fps=request.fps, out_dir=Path(request.out_dir), token=request.token,
                          embed_every=request.embed_every, seed=request.seed)
    app = make_app(models, config, log=run.status)

    def ready(port):
        run.status(f"live page: {live_url(request, port)}  (Ctrl+C stops)")
        if on_ready is not None:
            on_ready(port)

    try:
        with run.cpu_memory():
            asyncio.run(serve(app, request, run, ready))
    finally:
        if analysis is not None:
            analysis.stop()  # an unfinished analysis resumes from its partial cache next time
