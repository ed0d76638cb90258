"""The live page and its websocket protocol, as aiohttp routes (standalone, or under a prefix in ComfyUI).

Routes (under ``prefix``, e.g. ``/sgim/live`` inside ComfyUI, nothing standalone):

    GET  /                  the page (static/index.html; it uses relative URLs, so any prefix works)
    GET  /static/<file>     its script, audio worklet and style sheet
    GET  /info              models and defaults, JSON
    GET  /recordings/<file> a finished recording (.mp4)
    GET  /ws                the session's websocket

Protocol. The page sends JSON text messages and binary audio:

    {"type": "start", "sample_rate": 48000, "settings": {...knobs...},     first, once ("models": a
     "models": {"generator": "file.pkl", ...}}                              choice where /info offers some)
    binary: float64 little-endian sender clock (ms) + float32 little-endian mono samples
    {"type": "settings", "settings": {"alpha": 1.5}}                          a knob moved
    {"type": "record", "on": true | false}
    {"type": "ack", "index": N}                                               frame N was shown
    {"type": "stop"}

and gets ``{"type": "ready" | "settings" | "recording" | "recorded" | "refused" | "error" | "end", ...}``
text messages and binary frames: uint32 little-endian header length, the JSON header (index,
stream time, the sender clock of the audio that completed the frame, features, drop count,
nearest prompts, ...), then the JPEG.

Bad input ends only its own session, always with a message (an ``error`` then an ``end``, and the
reason in the close frame): malformed or oversized messages, audio before ``start``, wrong sample
rates, NaN samples, a second client while one runs (refused: one renderer is what a machine
sustains), a page that stops acknowledging frames (at most ``max_in_flight`` frames are ever
unacknowledged: the renderer waits, and after ``stall_seconds`` the session ends), a client that
vanishes (its recording is finished and kept). The server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import math
import re
import struct
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SGIMError
from . import defaults

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"live.js": "text/javascript", "worklet.js": "text/javascript", "live.css": "text/css"}
RECORDING_NAME = re.compile(r"^live_[0-9]{8}_[0-9]{6}_[0-9]+\.mp4$")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PENDING_SECONDS = 30.0  # audio received and not analysed yet, at most (a client sending far too fast)


@dataclass
class LiveModels:
    """What sessions render with. ``meaning`` builds a session's meaning provider (None: reactivity only;
    :meth:`sgim_nodes.live.meaning.InstantAnalysis.provider`: instant edits); ``device_scope`` is entered
    around every render and update (ComfyUI: its model management)."""

    generator: Any
    encoder: Any = None
    clip: Any = None
    meaning: Callable[[], Any] | None = None
    names: dict = field(default_factory=dict)
    device_scope: Callable[[], Any] = contextlib.nullcontext


class FixedModels:
    """The models a standalone server was started with: no choice on the page."""

    def __init__(self, models: LiveModels):
        self.models = models

    def choices(self) -> dict[str, list[str]]:
        return {}

    def load(self, selection: dict) -> LiveModels:
        return self.models


def model_source(models):
    """``LiveModels`` (fixed) or anything with ``choices()`` (role -> file names the page offers) and
    ``load(selection)`` (role -> chosen name; -> ``LiveModels``, called on a worker thread), as the
    ComfyUI glue gives."""
    return FixedModels(models) if isinstance(models, LiveModels) else models


@dataclass
class ServerConfig:
    fps: float = defaults.DEFAULT_FPS
    out_dir: Path = Path("live_recordings")
    token: str | None = None  # required on every request when set (non-local hosts)
    max_sessions: int = defaults.MAX_SESSIONS
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    max_in_flight: int = 4  # frames sent and not yet acknowledged by the page
    stall_seconds: float = 5.0  # a page that acknowledges nothing for this long ends its session
    send_timeout: float = 5.0
    idle_seconds: float = 60.0  # no message at all for this long ends a session
    embed_every: float = defaults.DEFAULT_EMBED_EVERY
    seed: int = 0
    jpeg_quality: int = 85


class SessionEnded(Exception):
    def __init__(self, reason: str, code: int = 1000):
        super().__init__(reason)
        self.reason, self.code = reason, code


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS


def encode_frame(image: np.ndarray, header: dict, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + buffer.getvalue()


class Connection:
    """One websocket client and its session (which lives on one worker thread: torch work never blocks
    the event loop, and the session itself is never used from two threads)."""

    def __init__(self, server: "LiveServer", ws):
        self.server, self.ws, self.config = server, ws, server.config
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgim-live")
        self.session = None
        self.models: LiveModels | None = None
        self.pending: deque[tuple[np.ndarray, float | None]] = deque()  # audio received, not analysed yet
        self.pending_samples = 0
        self.new_audio = asyncio.Event()
        self.sent: deque[int] = deque()
        self.acked = -1
        self.last_progress = time.monotonic()
        self.sent_times: deque[float] = deque(maxlen=64)
        self.render_task: asyncio.Task | None = None
        self.ended: SessionEnded | None = None

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # messages from the page ----------------------------------------------------------------------
    async def run(self) -> None:
        from aiohttp import WSMsgType

        try:
            while True:
                try:
                    msg = await self.ws.receive(timeout=self.config.idle_seconds)
                except asyncio.TimeoutError:
                    raise SessionEnded(f"no message for {self.config.idle_seconds:g} s", 1000) from None
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.on_audio(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    raise SessionEnded(f"websocket error: {self.ws.exception()}", 1002)
                else:  # CLOSE, CLOSING, CLOSED: the page left
                    raise SessionEnded("the page closed the connection", 1000)
                if self.ended is not None:
                    raise self.ended
        except SessionEnded as end:
            await self.finish(end)
        except SGIMError as exc:
            await self.finish(SessionEnded(str(exc), 1008), error=True)
        except ConnectionError as exc:  # the transport vanished under us
            await self.finish(SessionEnded(f"connection lost ({type(exc).__name__})", 1006))
        except Exception as exc:  # noqa: BLE001  (a bug must end this session only, with its message)
            await self.finish(SessionEnded(f"internal error: {type(exc).__name__}: {exc}", 1011), error=True)

    async def on_text(self, data: str) -> None:
        if len(data.encode()) > 64 * 1024:
            raise SessionEnded("a text message over 64 KiB", 1009)
        try:
            message = json.loads(data)
        except ValueError:
            raise SessionEnded("a text message that is not JSON", 1003) from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise SessionEnded("a message without a \"type\"", 1003)
        kind = message["type"]
        if kind not in ("start", "settings", "ack", "record", "stop"):
            raise SessionEnded(f"unknown message type {kind[:40]!r}", 1003)
        if kind == "start":
            await self.on_start(message)
        elif self.session is None:
            raise SessionEnded(f"{kind!r} before \"start\"", 1008)
        elif kind == "settings":
            try:
                settings = await self.call(self.session.update, message.get("settings"))
            except SGIMError as exc:
                await self.send_json({"type": "refused", "message": str(exc)})
            else:
                await self.send_json({"type": "settings", "settings": settings.to_dict()})
        elif kind == "ack":
            index = message.get("index")
            if isinstance(index, bool) or not isinstance(index, int):
                raise SessionEnded("an ack without a frame index", 1003)
            if index > self.acked:
                self.acked = index
                self.last_progress = time.monotonic()
            while self.sent and self.sent[0] <= self.acked:
                self.sent.popleft()
            self.new_audio.set()
        elif kind == "record":
            await self.on_record(message.get("on"))
        else:  # stop
            raise SessionEnded("stopped", 1000)

    async def on_start(self, message: dict) -> None:
        from .session import LiveSession, LiveSettings

        if self.session is not None:
            raise SessionEnded("a second \"start\"", 1008)
        config = self.config
        settings = LiveSettings().updated(message.get("settings") or {})
        rate = message.get("sample_rate")
        selection = message.get("models") or {}
        if not isinstance(selection, dict) or not all(isinstance(v, str) for v in selection.values()):
            raise SessionEnded("\"models\": expected an object of file names", 1003)
        models = self.models = await self.call(self.server.source.load, selection)

        def create():
            with models.device_scope():
                return LiveSession(models.generator, sample_rate=rate, fps=config.fps, settings=settings,
                                   encoder=models.encoder, clip=models.clip,
                                   meaning=models.meaning() if models.meaning else None, seed=config.seed,
                                   embed_every=config.embed_every, scope=models.device_scope)

        self.session = await self.call(create)
        self.last_progress = time.monotonic()
        await self.send_json({"type": "ready", "fps": self.session.fps, "sample_rate": self.session.sample_rate,
                              "settings": self.session.settings.to_dict(), "meaning": self.session.meaning_status,
                              "models": models.names, "max_message_bytes": config.max_message_bytes})
        self.render_task = asyncio.ensure_future(self.render_loop())

    async def on_audio(self, data: bytes) -> None:
        if self.session is None:
            raise SessionEnded("audio before \"start\"", 1008)
        if len(data) > self.config.max_message_bytes:
            raise SessionEnded(f"an audio message of {len(data):,} bytes (at most "
                               f"{self.config.max_message_bytes:,})", 1009)
        if len(data) < 8 or (len(data) - 8) % 4:
            raise SessionEnded("an audio message that is not a float64 clock and float32 samples", 1003)
        from ..limits import MAX_AUDIO_ABS

        stamp = float(np.frombuffer(data, "<f8", count=1)[0])
        samples = np.frombuffer(data, "<f4", offset=8).astype(np.float32)
        if samples.size and not np.isfinite(samples).all():
            raise SessionEnded("audio: the stream contains NaN or infinite samples", 1007)
        if samples.size and float(np.abs(samples).max()) > MAX_AUDIO_ABS:
            raise SessionEnded(f"audio: samples beyond +-{MAX_AUDIO_ABS:g}; expected audio within about +-1", 1007)
        # queued here and analysed by the worker right before it renders: a slow render never holds up
        # the audio behind it one message at a time (which would make the latency grow)
        self.pending.append((samples, stamp if math.isfinite(stamp) else None))
        self.pending_samples += samples.size
        if self.pending_samples > MAX_PENDING_SECONDS * self.session.sample_rate:
            raise SessionEnded(f"audio arrives faster than it can be analysed ({MAX_PENDING_SECONDS:g} s queued)",
                               1008)
        self.new_audio.set()

    def _step(self, render: bool):
        """On the worker: analyse the queued audio, then render the newest frame (when the page can take one)."""
        with self.models.device_scope():
            while self.pending:
                samples, stamp = self.pending.popleft()
                self.pending_samples -= samples.size
                self.session.feed(samples, stamp)
            frame = self.session.render_latest() if render else None
        if frame is None:
            return None
        return frame.index, encode_frame(frame.image, frame.stats, self.config.jpeg_quality)

    async def on_record(self, on) -> None:
        if on is True:
            name = self.server.recording_name()
            self.server.config.out_dir.mkdir(parents=True, exist_ok=True)
            await self.call(self.session.start_recording, self.server.config.out_dir / name)
            await self.send_json({"type": "recording", "on": True, "file": name})
        elif on is False:
            result = await self.call(self.session.stop_recording)
            if result is not None:
                await self.send_json({"type": "recorded", "url": f"recordings/{Path(result['path']).name}",
                                      **{k: v for k, v in result.items() if k != "path"}})
        else:
            raise SessionEnded("a record message without \"on\": true or false", 1003)

    # frames to the page ----------------------------------------------------------------------------
    async def render_loop(self) -> None:
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.new_audio.wait(), 0.5)
                self.new_audio.clear()
                can_send = len(self.sent) < self.config.max_in_flight
                if not can_send and time.monotonic() - self.last_progress > self.config.stall_seconds:
                    raise SessionEnded(f"the page acknowledged no frame for {self.config.stall_seconds:g} s "
                                       f"({len(self.sent)} waiting): it stopped reading", 1008)
                # a page that is behind gets no new frame (frames are dropped, not queued); audio is still analysed
                result = await self.call(self._step, can_send)
                if result is None:
                    continue
                index, payload = result
                try:
                    await asyncio.wait_for(self.ws.send_bytes(payload), self.config.send_timeout)
                except asyncio.TimeoutError:
                    raise SessionEnded(f"a frame could not be sent in {self.config.send_timeout:g} s: "
                                       "the page stopped reading", 1008) from None
                if not self.sent:
                    self.last_progress = time.monotonic()
                self.sent.append(index)
                self.sent_times.append(time.monotonic())
        except asyncio.CancelledError:
            raise
        except SessionEnded as end:
            self.ended = end
        except SGIMError as exc:
            self.ended = SessionEnded(str(exc), 1011)
        except ConnectionError as exc:
            self.ended = SessionEnded(f"connection lost ({type(exc).__name__})", 1006)
        except Exception as exc:  # noqa: BLE001
            self.ended = SessionEnded(f"internal error: {type(exc).__name__}: {exc}", 1011)
        if self.ended is not None:  # wake the receive loop: close from here, it then sees the close
            await self.finish(self.ended, error=self.ended.code != 1000)

    async def send_json(self, message: dict) -> None:
        try:
            await asyncio.wait_for(self.ws.send_str(json.dumps(message)), self.config.send_timeout)
        except asyncio.TimeoutError:
            raise SessionEnded("the page stopped reading", 1008) from None

    # the end ---------------------------------------------------------------------------------------
    async def finish(self, end: SessionEnded, error: bool | None = None) -> None:
        if getattr(self, "_finished", False):
            return
        self._finished = True
        if self.render_task is not None and self.render_task is not asyncio.current_task():
            self.render_task.cancel()
            with contextlib.suppress(BaseException):
                await self.render_task
        recorded = None
        if self.session is not None:
            try:
                recorded = await self.call(self.session.stop_recording)  # a vanished page keeps its recording
            except Exception as exc:  # noqa: BLE001  (reported, the session ends anyway)
                end = SessionEnded(f"{end.reason}; the recording failed: {exc}", end.code)
            with contextlib.suppress(Exception):
                await self.call(self.session.close)
        self.executor.shutdown(wait=False)
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                if error if error is not None else end.code != 1000:
                    await asyncio.wait_for(self.ws.send_str(json.dumps({"type": "error", "message": end.reason})), 2)
                if recorded is not None:
                    await asyncio.wait_for(self.ws.send_str(json.dumps(
                        {"type": "recorded", "url": f"recordings/{Path(recorded['path']).name}",
                         **{k: v for k, v in recorded.items() if k != "path"}})), 2)
                await asyncio.wait_for(self.ws.send_str(json.dumps({"type": "end", "reason": end.reason})), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code=end.code, message=end.reason.encode()[:120]), 3)
        self.server.log(f"session ended: {end.reason}")


class LiveServer:
    def __init__(self, models, config: ServerConfig, log: Callable[[str], None] | None = None):
        self.source, self.config = model_source(models), config
        self.connections: set[Connection] = set()
        self.count = 0
        self.log = log or (lambda message: None)

    def recording_name(self) -> str:
        self.count += 1
        return f"live_{time.strftime('%Y%m%d_%H%M%S')}_{self.count}.mp4"

    def allowed(self, request) -> bool:
        if self.config.token is None:
            return True
        given = request.query.get("token") or request.headers.get("X-SGIM-Token") or ""
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    def _guard(self, request):
        from aiohttp import web

        if not self.allowed(request):
            raise web.HTTPForbidden(text="this live server needs its token: open the address it printed")

    async def page(self, request):
        from aiohttp import web

        self._guard(request)
        if not request.path.endswith("/"):  # relative URLs in the page need the trailing slash
            raise web.HTTPFound(request.path + "/" + (f"?{request.query_string}" if request.query_string else ""))
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(self, request):
        from aiohttp import web

        # no token here: the page's own code holds nothing secret, and <script>/<link> tags carry no query
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name],
                                                        "Cache-Control": "no-store"})

    async def info(self, request):
        from aiohttp import web

        from .session import LAYER_PRESETS, SIZES, LiveSettings

        self._guard(request)
        source = self.source
        fixed = source.models if isinstance(source, FixedModels) else None
        return web.json_response({"models": fixed.names if fixed else {}, "choices": source.choices(),
                                  "fps": self.config.fps, "sizes": list(SIZES), "layers": list(LAYER_PRESETS),
                                  "settings": LiveSettings().to_dict(),
                                  "busy": len(self.connections) >= self.config.max_sessions})

    async def recording(self, request):
        from aiohttp import web

        self._guard(request)
        name = request.match_info["name"]
        path = self.config.out_dir / name
        if not RECORDING_NAME.match(name) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "video/mp4"})

    async def websocket(self, request):
        from aiohttp import web

        self._guard(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="websocket from another site refused")
        # aiohttp's own limit is a backstop well above ours, so ours answers with a readable message
        ws = web.WebSocketResponse(max_msg_size=4 * self.config.max_message_bytes, timeout=3.0)
        await ws.prepare(request)
        if len(self.connections) >= self.config.max_sessions:
            reason = "busy: another live session is running on this server (one at a time); try again when it ends"
            with contextlib.suppress(Exception):
                await ws.send_str(json.dumps({"type": "error", "message": reason}))
                await ws.send_str(json.dumps({"type": "end", "reason": reason}))
                await ws.close(code=1013, message=b"busy: one live session at a time")
            return ws
        connection = Connection(self, ws)
        self.connections.add(connection)
        try:
            await connection.run()
        except asyncio.CancelledError:
            # aiohttp cancels the handler of a client that vanished: the session still ends properly (its
            # recording finished), in a task of its own that nothing cancels
            task = asyncio.ensure_future(connection.finish(SessionEnded("the page vanished", 1006)))
            task.add_done_callback(lambda _: self.connections.discard(connection))
            raise
        self.connections.discard(connection)
        return ws

    async def close_all(self) -> None:
        for connection in list(self.connections):
            await connection.finish(SessionEnded("the server is shutting down", 1001))


def add_live_routes(router, models, config: ServerConfig, prefix: str = "",
                    log: Callable[[str], None] | None = None) -> LiveServer:
    """Register the live routes on an aiohttp router (an app's, or ComfyUI's ``PromptServer.routes``);
    ``models``: ``LiveModels`` or a model source (see :func:`model_source`)."""
    server = LiveServer(models, config, log)
    prefix = prefix.rstrip("/")
    # an application's router (add_get) or a RouteTableDef (ComfyUI's PromptServer.routes: decorators)
    add = router.add_get if hasattr(router, "add_get") else (lambda path, handler: router.get(path)(handler))
    add(prefix + "/" if prefix else "/", server.page)
    if prefix:
        add(prefix, server.page)
    add(f"{prefix}/static/{{name}}", server.static)
    add(f"{prefix}/info", server.info)
    add(f"{prefix}/recordings/{{name}}", server.recording)
    add(f"{prefix}/ws", server.websocket)
    return server


def _app_key():
    from aiohttp import web

    return web.AppKey("sgim_live", LiveServer)


LIVE_SERVER = _app_key()


def make_app(models, config: ServerConfig, log: Callable[[str], None] | None = None):
    """A standalone aiohttp application serving the live page at its root."""
    from aiohttp import web

    app = web.Application(client_max_size=1 << 16)
    server = add_live_routes(app.router, models, config, log=log)
    app[LIVE_SERVER] = server

    async def on_shutdown(app):
        await server.close_all()

    app.on_shutdown.append(on_shutdown)
    return app
