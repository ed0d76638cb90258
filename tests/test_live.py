"""Live sessions: causal features, determinism, meaning blend, click following, recording, and the
websocket protocol against every kind of bad input (no browser: aiohttp's client)."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
from live_support import click_times_in, click_track, load_live_models  # noqa: E402
from tiny_models import write_tiny_models  # noqa: E402

from sgim_nodes.errors import ParameterError  # noqa: E402
from sgim_nodes.live.features import CausalFeatures  # noqa: E402
from sgim_nodes.live.session import LiveSession, LiveSettings  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 48000


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("live_models")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="module")
def models(models_dir):
    return load_live_models(models_dir)


class LinearMeaning:
    """A stand-in meaning provider: a fixed random linear map from CLIP space to W+ (deterministic)."""

    name = "linear-test"

    def __init__(self, dim: int, num_ws: int, w_dim: int, scale: float = 2.0):
        g = torch.Generator().manual_seed(7)
        self.map = torch.randn(dim, num_ws * w_dim, generator=g) * scale / dim ** 0.5
        self.shape = (num_ws, w_dim)

    def direction(self, target, source, settings=None):
        return (target.float() @ self.map).reshape(self.shape)


def session(models, meaning=None, **kwargs) -> LiveSession:
    kwargs.setdefault("settings", LiveSettings(size=64))
    return LiveSession(models.generator, sample_rate=RATE, fps=kwargs.pop("fps", 10), encoder=models.encoder,
                       clip=models.clip, meaning=meaning, **kwargs)


def linear_meaning(models):
    src = models.generator.mapping(torch.zeros(1, models.generator.z_dim))
    return LinearMeaning(models.encoder.embed_dim, src.shape[1], src.shape[2])


def test_features_are_causal_and_a_click_shows_on_the_next_frame():
    quiet, _ = click_track(3.0, RATE, period=10.0, first=5.0)  # no click inside
    clicked = quiet.copy()
    click_at = 1.53
    clicked[int(click_at * RATE):int(click_at * RATE) + 144] += 0.8
    fps = 10
    features_q, features_c = CausalFeatures(RATE, fps, 0.1), CausalFeatures(RATE, fps, 0.1)
    frames_q = [f for chunk in np.array_split(quiet, 37) for f in features_q.feed(chunk)]
    frames_c = [f for chunk in np.array_split(clicked, 23) for f in features_c.feed(chunk)]
    assert [i for i, _ in frames_q] == list(range(len(frames_q))) == [i for i, _ in frames_c]
    for (i, q), (_, c) in zip(frames_q, frames_c):
        if i / fps < click_at:  # no look-ahead: before the click, not one value differs
            assert q == c, i
    first_after = int(np.ceil(click_at * fps))
    onset = [c["onset"] for _, c in frames_c]
    assert onset[first_after] == 1.0 and max(onset[:first_after]) < 0.5
    assert frames_c[first_after][1]["loudness"] > 0.9


def test_same_stream_same_frames_whatever_the_chunks_and_the_drops(models):
    audio, _ = click_track(3.0, RATE)
    meaning = linear_meaning(models)
    one = session(models, meaning)
    every = {}
    for chunk in np.array_split(audio, 71):
        one.feed(chunk)
        while one.last_rendered < one.newest_frame:
            frame = one.render(one.last_rendered + 1)
            every[frame.index] = frame.image
    two = session(models, meaning)
    some = {}
    for chunk in np.array_split(audio, 17):  # other chunk sizes, and only the newest frame each time
        two.feed(chunk)
        frame = two.render_latest()
        if frame is not None:
            some[frame.index] = frame.image
    assert len(some) >= 10 and two.dropped > 0
    for index, image in some.items():
        assert np.array_equal(image, every[index]), index
    assert len(set(im.tobytes() for im in every.values())) > len(every) // 2  # the picture moves


def test_meaning_direction_blends_in_smoothly(models):
    audio, _ = click_track(6.0, RATE)
    meaning = linear_meaning(models)
    live = session(models, meaning, settings=LiveSettings(size=64, reactivity=0.0), embed_every=1.0,
                   blend_seconds=1.0)
    offsets = []
    for chunk in np.array_split(audio, 60):
        live.feed(chunk)
        while live.last_rendered < live.newest_frame:
            index = live.last_rendered + 1
            code, _ = live.code(index)
            live.last_rendered = index
            offsets.append((code - live.source)[0])
    steps = torch.stack([(b - a).norm() for a, b in zip(offsets, offsets[1:])])
    total = torch.stack([o.norm() for o in offsets])
    assert float(total[:10].max()) == 0.0  # before the first update (1 s = frame 10): the source itself
    assert float(total[-1]) > 0.5  # the direction is in
    assert float(steps.max()) < 0.25 * float(total.max())  # no jump: the smoothstep spreads each change over 1 s


def test_reactive_displacement_peaks_follow_the_clicks(models):
    fps = 20
    audio, clicks = click_track(6.0, RATE, period=0.5, first=0.3)
    live = session(models, fps=fps, settings=LiveSettings(size=64))
    displacement = []
    for chunk in np.array_split(audio, 150):
        live.feed(chunk)
        while live.last_rendered < live.newest_frame:
            frame = live.render(live.last_rendered + 1)
            displacement.append(frame.stats["displacement"])
    d = np.array(displacement)
    lags = []
    for c in clicks[1:]:  # the first click also sets the running reference
        lo, hi = int(c * fps) - 2, int(c * fps) + 4
        peak = lo + int(np.argmax(d[lo:hi]))
        lags.append(peak / fps - c)
        assert d[peak] > 1.5 * np.median(d), c
    assert min(lags) >= 0 and max(lags) <= 1 / fps + 256 / 22050  # the next frame, never before the click


def test_layer_preset_leaves_other_rows_alone(models):
    audio, _ = click_track(2.0, RATE)
    live = session(models, linear_meaning(models), settings=LiveSettings(size=64, layers="middle"), embed_every=0.5,
                   blend_seconds=0.0)
    live.feed(audio)
    code, _ = live.code(live.newest_frame)
    from sgim_nodes.optimize.layer_mask import preset_layers

    fine = preset_layers("middle", live.num_ws)
    others = [i for i in range(live.num_ws) if i not in fine]
    assert torch.equal(code[0, others], live.source[0, others])
    assert float((code[0, fine] - live.source[0, fine]).abs().max()) > 0


def test_bad_knobs_and_rates_are_refused_by_name(models):
    with pytest.raises(ParameterError, match="^alpha:"):
        LiveSettings().updated({"alpha": -1})
    with pytest.raises(ParameterError, match="unknown knob 'speed'"):
        LiveSettings().updated({"speed": 2})
    with pytest.raises(ParameterError, match="^size:"):
        LiveSettings().updated({"size": 100})
    with pytest.raises(ParameterError, match="^layers:"):
        LiveSettings().updated({"layers": "top"})
    from sgim_nodes.errors import AudioError

    for rate in (0, 4000, 48000.5, "48000", 10 ** 9):
        with pytest.raises(AudioError, match="sample_rate"):
            LiveSession(models.generator, sample_rate=rate)
    live = session(models)
    with pytest.raises(AudioError, match="NaN"):
        live.feed(np.array([0.0, np.nan], np.float32))


def test_recording_is_frame_exact_even_with_dropped_frames(models, tmp_path):
    from sgim_nodes.animate.render import video_frame_count

    fps = 10
    audio, _ = click_track(5.0, RATE)
    live = session(models, fps=fps)
    chunks = np.array_split(audio, 50)
    for chunk in chunks[:5]:
        live.feed(chunk)
        live.render_latest()
    live.start_recording(tmp_path / "rec.mp4")
    start = live.recorder.first_frame
    for k, chunk in enumerate(chunks[5:45]):
        live.feed(chunk)
        if k == 20:
            live.update({"size": 128})  # the resolution knob moves: the file keeps its size
        if k % 3 == 0:  # a slow renderer: most frames dropped
            live.render_latest()
    result = live.stop_recording()
    end = live.newest_frame
    frames, video_seconds, audio_seconds = video_frame_count(tmp_path / "rec.mp4")
    assert frames == result["frames"] == end - start + 1
    import av

    with av.open(str(tmp_path / "rec.mp4")) as container:
        assert {(f.width, f.height) for f in container.decode(video=0)} == {(64, 64)}
    assert abs(audio_seconds - frames / fps) < 0.03  # AAC frames of 1024 samples: at most ~21 ms more
    assert abs(video_seconds - frames / fps) < 1e-6
    # the recorded audio is the stream from the first frame's time: the clicks are where they were
    import av

    with av.open(str(tmp_path / "rec.mp4")) as container:
        recorded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    expected = click_times_in(audio[int(round(start / fps * RATE)):], RATE)
    got = click_times_in(recorded, RATE)
    assert len(got) >= len(expected) - 1 and all(abs(a - b) < 0.03 for a, b in zip(got, expected))


def test_ten_minute_session_keeps_memory_flat(models, tmp_path):
    import psutil

    process = psutil.Process()
    fps, seconds = 4, 600
    live = session(models, fps=fps, embed_every=5.0)
    live.start_recording(tmp_path / "long.mp4")
    chunk_seconds = 0.5
    base, _ = click_track(chunk_seconds * 8, RATE)  # 4 s of clicks, repeated: faster than real time
    pieces = np.array_split(base, 8)
    rss = {}
    for k in range(int(seconds / chunk_seconds)):
        live.feed(pieces[k % 8])
        live.render_latest()
        t = (k + 1) * chunk_seconds
        if t in (120.0, 300.0, 600.0):
            rss[t] = process.memory_info().rss
    result = live.stop_recording()
    assert result["frames"] == seconds * fps and result["first_frame"] == 0
    growth = (rss[600.0] - rss[120.0]) / 2 ** 20
    print(f"resident memory: {rss[120.0] / 2 ** 20:.0f} MiB at 2 min, {rss[300.0] / 2 ** 20:.0f} at 5, "
          f"{rss[600.0] / 2 ** 20:.0f} at 10 ({growth:+.1f} MiB)")
    assert growth < 25, f"resident memory grew {growth:.1f} MiB from minute 2 to minute 10"
    assert len(live.frame_values) <= live.frame_values.maxlen and len(live.pending_updates) <= 8


# ------------------------------------------------------------------------------------------------
# The websocket protocol
# ------------------------------------------------------------------------------------------------

async def gone(server, seconds: float = 5.0) -> bool:
    """Whether the server dropped every connection within ``seconds``."""
    for _ in range(int(seconds * 20)):
        if not server.connections:
            return True
        await asyncio.sleep(0.05)
    return not server.connections


def audio_message(samples: np.ndarray, stamp: float = 0.0) -> bytes:
    return struct.pack("<d", stamp) + np.asarray(samples, "<f4").tobytes()


def run_server(models, scenario, **config):
    """Run ``scenario(client, server)`` against a fresh app on a test server; returns its result."""
    from aiohttp.test_utils import TestClient, TestServer

    from sgim_nodes.live.server import LIVE_SERVER, ServerConfig, make_app

    async def main():
        cfg = ServerConfig(out_dir=config.pop("out_dir", Path("live_recordings")), **config)
        app = make_app(models, cfg)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client, app[LIVE_SERVER])

    return asyncio.run(main())


async def messages_until_end(ws, timeout=20.0, ack=True):
    """Text messages (and the count of frames) until the server ends the session."""
    from aiohttp import WSMsgType

    texts, frames = [], 0
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.TEXT:
            texts.append(json.loads(msg.data))
            if texts[-1]["type"] == "end":
                return texts, frames
        elif msg.type == WSMsgType.BINARY:
            frames += 1
            if ack:
                n = struct.unpack("<I", msg.data[:4])[0]
                await ws.send_str(json.dumps({"type": "ack", "index": json.loads(msg.data[4:4 + n])["index"]}))
        else:
            return texts, frames


async def good_session(client, seconds=2.0, settings=None):
    """A normal session: start, stream clicks at twice real time while reading and acknowledging frames,
    stop; returns ``([(header, jpeg)], text messages)``."""
    ws = await client.ws_connect("/ws")
    await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "settings": settings or {"size": 64}}))
    ready = await ws.receive_json(timeout=20)
    assert ready["type"] == "ready", ready
    headers, texts = [], []

    async def read():
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type.name == "BINARY":
                n = struct.unpack("<I", msg.data[:4])[0]
                header = json.loads(msg.data[4:4 + n])
                headers.append((header, msg.data[4 + n:]))
                await ws.send_str(json.dumps({"type": "ack", "index": header["index"]}))
            elif msg.type.name == "TEXT":
                texts.append(json.loads(msg.data))
                if texts[-1]["type"] == "end":
                    return
            else:
                return

    reader = asyncio.ensure_future(read())
    audio, _ = click_track(seconds, RATE)
    for chunk in np.array_split(audio, int(seconds * 10)):
        await ws.send_bytes(audio_message(chunk, 1.0))
        await asyncio.sleep(0.05)  # twice real time
    await asyncio.sleep(1.5)
    await ws.send_str(json.dumps({"type": "stop"}))
    await asyncio.wait_for(reader, 30)
    await ws.close()
    return headers, texts


@pytest.mark.parametrize("bad, expect", [
    (("text", "not json"), "not JSON"),
    (("text", "[1, 2]"), "without a \"type\""),
    (("text", json.dumps({"type": "dance"})), "unknown message type"),
    (("bytes", audio_message(np.zeros(100))), "audio before \"start\""),
    (("start", 0), "sample_rate"),
    (("start", 4000), "at least 8000"),
    (("start", "48000"), "sample_rate"),
    (("start", 10 ** 12), "sample_rate"),
    (("audio", b"\x00" * 7), "not a float64 clock"),
    (("audio", b"\x00" * 14), "not a float64 clock"),
    (("audio", audio_message(np.array([np.nan] * 8))), "NaN"),
    (("audio", audio_message(np.full(16, 1e6))), "beyond"),
    (("audio", audio_message(np.zeros(300_000))), "at most"),  # 1.2 MB > 1 MiB: our own limit, with a message
    (("text", json.dumps({"type": "ack", "index": "x"})), "ack without a frame index"),
])
def test_bad_input_ends_that_session_with_a_message_and_the_server_keeps_serving(models, bad, expect):
    kind, payload = bad

    async def scenario(client, server):
        ws = await client.ws_connect("/ws")
        if kind in ("start", "audio") or (kind == "text" and "ack" in payload):
            rate = payload if kind == "start" else RATE
            await ws.send_str(json.dumps({"type": "start", "sample_rate": rate}))
        if kind == "audio":
            assert (await ws.receive_json(timeout=20))["type"] == "ready"
            await ws.send_bytes(payload)
        elif kind == "bytes":
            await ws.send_bytes(payload)
        elif kind == "text":
            if "ack" in payload:
                assert (await ws.receive_json(timeout=20))["type"] == "ready"
            await ws.send_str(payload)
        texts, _ = await messages_until_end(ws)
        assert any(expect in t.get("message", "") or expect in t.get("reason", "") for t in texts), texts
        assert texts[-1]["type"] == "end"
        await ws.close()
        assert await gone(server)
        headers, _ = await good_session(client, 1.0)  # the next client is served as usual
        assert headers

    run_server(models, scenario)


def test_far_oversized_message_is_cut_by_the_websocket_limit(models):
    async def scenario(client, server):
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        try:  # beyond aiohttp's own limit (4 x ours): the server closes with 1009 while it still arrives
            await ws.send_bytes(b"\x00" * (5 << 20))
            msg = await ws.receive(timeout=20)
            while msg.type.name in ("TEXT", "BINARY"):
                msg = await ws.receive(timeout=20)
            assert ws.close_code == 1009
        except ConnectionError:
            pass
        assert await gone(server)
        assert (await good_session(client, 1.0))[0]

    run_server(models, scenario)


def test_a_good_session_streams_changing_frames_and_takes_knobs(models):
    async def scenario(client, server):
        headers, texts = await good_session(client, 3.0)
        assert [t["type"] for t in texts][-1] == "end" and texts[-1]["reason"] == "stopped"
        indices = [h["index"] for h, _ in headers]
        assert indices == sorted(indices) and len(indices) >= 10
        assert len({jpeg for _, jpeg in headers}) > len(headers) // 2
        assert all(h["stamp"] == 1.0 for h, _ in headers)
        assert any(h["nearest"] for h, _ in headers)  # the embedding names the nearest prompts
        # a knob: the resolution
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": 44100, "settings": {"size": 64}}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        await ws.send_str(json.dumps({"type": "settings", "settings": {"size": 128, "alpha": 2.0}}))
        reply = await ws.receive_json(timeout=20)
        assert reply["type"] == "settings" and reply["settings"]["size"] == 128
        await ws.send_str(json.dumps({"type": "settings", "settings": {"alpha": "lots"}}))
        refused = await ws.receive_json(timeout=20)
        assert refused["type"] == "refused" and refused["message"].startswith("alpha:")
        await ws.send_bytes(audio_message(click_track(1.0, 44100)[0]))
        msg = await ws.receive(timeout=20)
        from PIL import Image
        import io

        n = struct.unpack("<I", msg.data[:4])[0]
        assert Image.open(io.BytesIO(msg.data[4 + n:])).size == (128, 128)
        await ws.close()

    run_server(models, scenario)


def test_a_second_client_is_refused_clearly_while_the_first_runs(models):
    async def scenario(client, server):
        first = await client.ws_connect("/ws")
        await first.send_str(json.dumps({"type": "start", "sample_rate": RATE}))
        assert (await first.receive_json(timeout=20))["type"] == "ready"
        second = await client.ws_connect("/ws")
        texts, _ = await messages_until_end(second)
        assert (await second.receive(timeout=20)).type.name == "CLOSE"
        assert "busy" in texts[0]["message"] and second.close_code == 1013
        await first.send_bytes(audio_message(click_track(1.0, RATE)[0]))
        msg = await first.receive(timeout=20)
        assert msg.type.name == "BINARY"  # the first session goes on
        await first.close()

    run_server(models, scenario)


def test_a_client_that_vanishes_mid_recording_keeps_its_recording(models, tmp_path):
    from sgim_nodes.animate.render import video_frame_count

    async def scenario(client, server):
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "settings": {"size": 64}}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        await ws.send_str(json.dumps({"type": "record", "on": True}))
        audio, _ = click_track(2.0, RATE)
        for chunk in np.array_split(audio, 20):
            await ws.send_bytes(audio_message(chunk))
        await asyncio.sleep(1.0)
        ws._response.connection.transport.abort()  # gone: no close frame, no goodbye
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not server.connections:
                break
        assert not server.connections
        files = list(tmp_path.glob("live_*.mp4"))
        assert len(files) == 1 and not list(tmp_path.glob("*.part"))
        frames, _, audio_seconds = video_frame_count(files[0])
        assert frames > 0 and abs(audio_seconds - frames / 15) < 0.03
        assert (await good_session(client, 1.0))[0]

    run_server(models, scenario, out_dir=tmp_path)


def test_a_client_that_never_reads_frames_is_ended(models):
    async def scenario(client, server):
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "settings": {"size": 64}}))
        audio, _ = click_track(8.0, RATE)
        for chunk in np.array_split(audio, 80):  # audio keeps coming, no frame is ever acknowledged
            await ws.send_bytes(audio_message(chunk))
            await asyncio.sleep(0.03)
            if not server.connections:
                break
        for _ in range(60):
            if not server.connections:
                break
            await asyncio.sleep(0.1)
        assert not server.connections
        texts, frames = await messages_until_end(ws, ack=False)
        assert frames <= 4  # never more than max_in_flight frames went out unacknowledged
        assert any("stopped reading" in t.get("message", "") for t in texts), texts
        assert (await good_session(client, 1.0))[0]

    run_server(models, scenario, stall_seconds=1.0)


def test_token_and_origin_are_checked(models):
    async def scenario(client, server):
        assert (await client.get("/")).status == 403
        assert (await client.get("/info")).status == 403
        assert (await client.get("/static/live.js")).status == 200  # the page's code: nothing secret
        page = await client.get("/?token=s3cret")
        assert page.status == 200 and "Start" in await page.text()
        assert (await client.get("/static/live.js?token=s3cret")).status == 200
        assert (await client.get("/static/../session.py?token=s3cret")).status == 404
        assert (await client.get("/recordings/../../etc.mp4?token=s3cret")).status == 404
        from aiohttp import WSServerHandshakeError

        with pytest.raises(WSServerHandshakeError):
            await client.ws_connect("/ws")
        with pytest.raises(WSServerHandshakeError):
            await client.ws_connect("/ws?token=s3cret", headers={"Origin": "http://evil.example"})
        ws = await client.ws_connect("/ws?token=s3cret")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        await ws.close()

    run_server(models, scenario, token="s3cret")


def test_live_request_makes_a_token_for_other_hosts(tmp_path):
    from sgim_nodes.jobs.live import LiveRequest

    assert LiveRequest(generator=tmp_path / "g.pt").checked().token is None
    request = LiveRequest(generator=tmp_path / "g.pt", host="0.0.0.0").checked()
    assert request.token and len(request.token) >= 20
    with pytest.raises(ParameterError, match="^port:"):
        LiveRequest(generator=tmp_path / "g.pt", port=70000).checked()
    with pytest.raises(ParameterError, match="encoder/clip"):
        LiveRequest(generator=tmp_path / "g.pt", encoder=tmp_path / "e.pt").checked()
    both = dict(generator=tmp_path / "g.pt", encoder=tmp_path / "e.pt", clip=tmp_path / "c.pt")
    assert LiveRequest(**both).checked().meaning == "instant"  # the default with an encoder and CLIP
    assert LiveRequest(generator=tmp_path / "g.pt").checked().meaning == "none"
    with pytest.raises(ParameterError, match="meaning: expected one of instant, none"):
        LiveRequest(**both, meaning="clever").checked()


def test_live_command_serves_the_page_and_stops_on_ctrl_c(models_dir):
    import os
    import signal
    import subprocess
    import threading
    import time
    import urllib.request

    repo = Path(__file__).resolve().parents[1]
    cache = models_dir / "instant_cache_of_the_command"
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", SGIM_INSTANT_CACHE=str(cache))
    command = [sys.executable, "-m", "sgim_nodes", "live", "--port", "0", "--device", "cpu",
               "--generator", str(models_dir / "stylegan" / "tiny_rosinality.pt"),
               "--encoder", str(models_dir / "sgim_audio_encoders" / "tiny_encoder.safetensors"),
               "--clip", str(models_dir / "sgim_clip" / "tiny_clip.pt")]
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving on port "), (line, process.stderr.read() if process.poll() is not None else "")
        port = int(line.split()[-1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as page:
            assert b"<button id=\"start\">Start</button>" in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=20) as info:
            assert json.loads(info.read())["models"]["generator"] == "tiny_rosinality.pt"
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("meaning: instant edits on" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        reader.join(10)
        err = "".join(lines)
        assert process.returncode == 0, err
        assert f"live page: http://127.0.0.1:{port}/" in err
        # no cache yet: analysed in the background (the page served meanwhile), then on and cached
        assert "meaning: instant edits on" in err and "analysed 64/64 samples" in err, err
        assert len(list(cache.glob("tiny_rosinality.*.safetensors"))) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_live_command_names_the_flag(models_dir):
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "sgim_nodes", "live", "--port", "70000", "--reactive-only",
                             "--generator", str(models_dir / "stylegan" / "tiny_rosinality.pt")],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--port: expected a TCP port" in result.stderr, result.stderr
    result = subprocess.run([sys.executable, "-m", "sgim_nodes", "live", "--reactive-only", "--meaning", "instant",
                             "--generator", str(models_dir / "stylegan" / "tiny_rosinality.pt")],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--meaning: instant edits need the audio encoder and CLIP" in result.stderr, \
        result.stderr
    result = subprocess.run([sys.executable, "-m", "sgim_nodes", "live", "--generator", "no_such_generator.pt",
                             "--reactive-only"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--generator: file not found: no_such_generator.pt" in result.stderr


def test_stylegan3_camera_moves_with_the_sound_and_the_transform_is_reset(models_dir):
    from sgim_nodes.stylegan import load_generator

    names = [p.name for p in (models_dir / "stylegan").glob("tiny_sg3.*")]
    generator = load_generator(models_dir / "stylegan" / names[0])
    assert generator.family == "stylegan3"
    audio, _ = click_track(4.0, RATE)
    moving = LiveSession(generator, sample_rate=RATE, fps=10, settings=LiveSettings(size=64, reactivity=0.0,
                                                                                     rotation_degrees=30.0))
    still = LiveSession(generator, sample_rate=RATE, fps=10, settings=LiveSettings(size=64, reactivity=0.0,
                                                                                    rotation_degrees=0.0,
                                                                                    translation=0.0))
    moving.feed(audio)
    still.feed(audio)
    a, b = moving.render(35), still.render(35)  # same code (no reaction, no meaning): only the camera differs
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 1.0
    again = still.render(36)
    fresh = LiveSession(generator, sample_rate=RATE, fps=10, settings=LiveSettings(size=64, reactivity=0.0,
                                                                                    rotation_degrees=0.0,
                                                                                    translation=0.0))
    fresh.feed(audio)
    assert np.array_equal(fresh.render(36).image, again.image)  # the moving session left no transform behind


def test_a_slow_renderer_drops_frames_and_latency_stays_bounded(models):
    """Rendering at a third of the target rate: frames are dropped, the latency does not grow."""
    import time as _time

    from sgim_nodes.live.server import LiveModels

    class Slow(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.family, self.w_avg, self.z_dim = "stylegan2", inner.w_avg, inner.z_dim
            self.num_ws = inner.num_ws

        def mapping(self, *args, **kwargs):
            return self.inner.mapping(*args, **kwargs)

        def synthesis(self, ws, **kwargs):
            _time.sleep(0.2)
            return self.inner.synthesis(ws, **kwargs)

    slow = LiveModels(generator=Slow(models.generator), names={"generator": "slow"})

    async def scenario(client, server):
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "settings": {"size": 64}}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        received = []

        async def read():
            async for msg in ws:
                if msg.type.name == "BINARY":
                    n = struct.unpack("<I", msg.data[:4])[0]
                    header = json.loads(msg.data[4:4 + n])
                    received.append((1000 * (loop.time() - t0) - header["stamp"], header))
                    await ws.send_str(json.dumps({"type": "ack", "index": header["index"]}))
                elif json.loads(msg.data)["type"] == "end":
                    return

        reader = asyncio.ensure_future(read())
        audio, _ = click_track(6.0, RATE)
        for k, chunk in enumerate(np.array_split(audio, 150)):  # 40 ms messages in real time
            await ws.send_bytes(audio_message(chunk, 1000 * (loop.time() - t0)))
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.04 - loop.time()))
        await ws.send_str(json.dumps({"type": "stop"}))
        await asyncio.wait_for(reader, 30)
        latencies = [lat for lat, _ in received]
        early, late = np.median(latencies[: len(latencies) // 3]), np.median(latencies[-len(latencies) // 3:])
        print(f"slow renderer: latency early {early:.0f} ms, late {late:.0f} ms, dropped {received[-1][1]['dropped']}")
        assert received[-1][1]["dropped"] > 20  # about two in three frames dropped
        assert late < 600 and late < early + 150, (early, late)  # bounded: about one render (200 ms) and a message

    run_server(slow, scenario)


def test_the_page_can_pick_models_from_a_source(models):
    class Source:
        def __init__(self):
            self.asked = []

        def choices(self):
            return {"generator": ["a.pkl", "b.pkl"]}

        def load(self, selection):
            self.asked.append(selection)
            if selection.get("generator") not in ("a.pkl", "b.pkl"):
                raise ParameterError(f"generator: no such file {selection.get('generator')!r}", parameter="generator")
            return models

    source = Source()

    async def scenario(client, server):
        info = await (await client.get("/info")).json()
        assert info["choices"] == {"generator": ["a.pkl", "b.pkl"]}
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "models": {"generator": "b.pkl"}}))
        assert (await ws.receive_json(timeout=20))["type"] == "ready"
        await ws.close()
        assert await gone(server)
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "models": {"generator": "../x"}}))
        texts, _ = await messages_until_end(ws)
        assert any("no such file" in t.get("message", "") for t in texts)

    run_server(source, scenario)
    assert source.asked[0] == {"generator": "b.pkl"}


# meaning through instant edits ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def directions(models):
    from sgim_nodes.instant import AnalysisSettings, analyze_styles

    return analyze_styles(models.generator, models.clip, AnalysisSettings(samples=8, std_samples=256))


def instant_analysis(models, directions):
    from sgim_nodes.live.meaning import InstantAnalysis

    analysis = InstantAnalysis(models.generator, models.clip, directions=directions).start()
    assert analysis.wait(60) and analysis.status() == "instant"
    return analysis


def last_code(live: LiveSession, audio: np.ndarray, chunks: int = 23) -> torch.Tensor:
    for chunk in np.array_split(audio, chunks):
        live.feed(chunk)
    code, stats = live.code(live.newest_frame)
    return code, stats


def window_ending_at(live: LiveSession, audio: np.ndarray, seconds: float) -> np.ndarray:
    end = int(round(seconds * RATE))
    window = np.zeros(live.ring.size, np.float32)
    piece = audio[max(0, end - live.ring.size):end]
    window[live.ring.size - piece.size:] = piece
    return window


def test_instant_meaning_is_the_instant_edit_scaled_by_alpha(models, directions):
    """Updates at 2 s and 4 s of stream, applied 0.5 s later, blended over 0.5 s: at 5.4 s the code is
    exactly instant's edit of the source toward the 4 s window's sound, at strength alpha."""
    from sgim_nodes.audio import embed_audio
    from sgim_nodes.instant import instant_edit

    analysis = instant_analysis(models, directions)
    audio, _ = click_track(5.5, RATE)
    codes = {}
    for alpha in (0.0, 0.5, 1.0, 2.0):
        live = session(models, analysis.provider(), settings=LiveSettings(size=64, reactivity=0.0, alpha=alpha,
                                                                           beta=0.05),
                       embed_every=2.0, blend_seconds=0.5, update_delay=0.5)
        code, stats = last_code(live, audio)
        assert stats["t"] >= 5.0 and live.meaning_status == "instant"
        codes[alpha] = code
        source = live.source
        live.close()
    shift = {a: float((c - source).norm()) for a, c in codes.items()}
    assert shift[0.0] == 0.0 and shift[0.5] > 0.5  # alpha 0: the source itself; else it moves
    for alpha in (0.5, 2.0):  # along one direction, in proportion to alpha
        assert torch.allclose(codes[alpha] - source, alpha * (codes[1.0] - source), atol=1e-5)
    target = embed_audio(models.encoder, torch.from_numpy(window_ending_at(live, audio, 4.0))[None], RATE,
                         pool="first").float()
    edit = instant_edit(models.generator, models.clip, directions, target, source, alpha=1.0, beta=0.05)
    assert float((edit.ws - codes[1.0]).abs().max()) < 1e-4
    print(f"instant meaning: W+ shift {shift}")


def test_another_sound_moves_elsewhere_and_beta_selects_channels(models, directions):
    analysis = instant_analysis(models, directions)
    clicks, _ = click_track(3.0, RATE)
    rng = np.random.default_rng(3)
    hiss = (0.3 * rng.standard_normal(clicks.size)).astype(np.float32)
    offsets = {}
    for name, audio, beta in (("clicks", clicks, 0.0), ("hiss", hiss, 0.0), ("clicks_selective", clicks, 0.3)):
        live = session(models, analysis.provider(), settings=LiveSettings(size=64, reactivity=0.0, beta=beta),
                       embed_every=1.0, blend_seconds=0.2, update_delay=0.3)
        code, _ = last_code(live, audio)
        offsets[name] = (code - live.source)[0]
        live.close()
    cos = torch.nn.functional.cosine_similarity(offsets["clicks"].flatten(), offsets["hiss"].flatten(), dim=0)
    assert float(cos) < 0.99 and float(offsets["hiss"].norm()) > 0.5  # another sound: another direction
    # a higher beta keeps fewer style channels: the direction changes (its length is alpha's, the same)
    assert not torch.allclose(offsets["clicks"], offsets["clicks_selective"], atol=1e-4)
    assert abs(float(offsets["clicks"].norm()) - float(offsets["clicks_selective"].norm())) < 1e-3


def test_instant_meaning_is_deterministic_and_names_the_nearest_prompts(models, directions):
    analysis = instant_analysis(models, directions)
    audio, _ = click_track(4.0, RATE)
    one = session(models, analysis.provider())
    every = {}
    for chunk in np.array_split(audio, 53):
        one.feed(chunk)
        while one.last_rendered < one.newest_frame:
            frame = one.render(one.last_rendered + 1)
            every[frame.index] = (frame.image, frame.stats)
    two = session(models, analysis.provider())
    some = {}
    for chunk in np.array_split(audio, 13):
        two.feed(chunk)
        frame = two.render_latest()
        if frame is not None:
            some[frame.index] = frame.image
    assert len(some) >= 8 and two.dropped > 0
    for index, image in some.items():
        assert np.array_equal(image, every[index][0]), index
    last = every[max(every)][1]
    assert last["meaning"] == "instant" and last["offset"] > 0.1  # the meaning is in and moves the code
    reactive = session(models)  # the readout is the same with or without the meaning
    reactive.feed(audio)
    reactive.render_latest()
    assert len(last["nearest"]) == 5 and last["nearest"] == [[n, round(s, 4)] for n, s in reactive.nearest]
    for live in (one, two, reactive):
        live.close()


def test_meaning_switches_on_once_the_analysis_is_done(models, directions):
    from sgim_nodes.live.meaning import InstantAnalysis

    analysis = InstantAnalysis(models.generator, models.clip, directions=directions)  # not started: "analysing"
    live = session(models, analysis.provider(), settings=LiveSettings(size=64, reactivity=0.0), embed_every=0.5,
                   update_delay=0.25, blend_seconds=0.25)
    audio, _ = click_track(4.0, RATE)
    code, stats = last_code(live, audio[: 2 * RATE])
    assert float((code - live.source).abs().max()) == 0.0 and stats["offset"] == 0.0
    assert live.meaning_status.startswith("instant (preparing") and live.nearest  # reactive, prompts named
    analysis.start().wait(60)
    code, stats = last_code(live, audio[2 * RATE:])
    assert live.meaning_status == "instant" and stats["offset"] > 0.1
    live.close()


def test_analysis_is_cached_and_read_back(models, tmp_path):
    from sgim_nodes.instant import AnalysisSettings
    from sgim_nodes.live.meaning import InstantAnalysis

    cache = tmp_path / "live_analysis.safetensors"
    lines = []
    settings = AnalysisSettings(samples=4, std_samples=64)
    first = InstantAnalysis(models.generator, models.clip, cache=cache, settings=settings, log=lines.append).start()
    assert first.wait(120) and first.hit is False and cache.is_file()
    assert any("analysed 4/4 samples" in line for line in lines)
    second = InstantAnalysis(models.generator, models.clip, cache=cache, settings=settings).start()
    assert second.wait(60) and second.hit is True
    assert torch.equal(first.editor().unit, second.editor().unit)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(cache.read_bytes()[:200])
    third = InstantAnalysis(models.generator, models.clip, cache=damaged, settings=settings).start()
    assert not third.wait(60) and "damaged.safetensors" in third.status()  # named; sessions go on reactive


class SlowMeaning(LinearMeaning):
    """A meaning whose update takes 0.3 s of wall time (a slow encoder or a large analysis)."""

    def direction(self, target, source, settings=None):
        time.sleep(0.3)
        return super().direction(target, source, settings)


def real_time_session(models, meaning, seconds: float, **kwargs) -> LiveSession:
    """Feeds 40 ms messages in real time and renders the newest frame after each, as the server does."""
    audio, _ = click_track(seconds, RATE)
    live = session(models, meaning, fps=15, embed_every=0.5, **kwargs)
    start = time.perf_counter()
    for k, first in enumerate(range(0, audio.size, 1920)):
        live.feed(audio[first:first + 1920])
        live.render_latest()
        time.sleep(max(0.0, start + (k + 1) * 0.04 - time.perf_counter()))
    live.close()
    return live


def test_updates_run_off_the_frame_thread_and_frames_do_not_wait(models):
    import threading

    meaning = SlowMeaning(models.encoder.embed_dim, *linear_meaning(models).shape)
    live = real_time_session(models, meaning, 4.0, update_delay=0.5)
    assert len(live.update_seconds) >= 6 and min(live.update_seconds) >= 0.3
    assert live.update_threads == {"sgim-live-update_0"} != {threading.current_thread().name}
    # the update worked out meanwhile: no frame waited for it, no frame took the update's 0.3 s
    assert max(live.update_waits) < 0.1 and max(live.render_seconds) < 0.2, (max(live.update_waits),
                                                                              max(live.render_seconds))
    # the same with no delay: the frame due at each update waits for it (what the delay avoids)
    eager = real_time_session(models, meaning, 2.5, update_delay=0.0)
    assert max(eager.update_waits) > 0.2


def test_the_server_runs_the_instant_meaning_and_alpha_moves_it(models, directions):
    from dataclasses import replace

    analysis = instant_analysis(models, directions)
    with_meaning = replace(models, meaning=analysis.provider)

    async def scenario(client, server):
        out = {}
        for alpha in (0.0, 1.5):
            headers, _ = await good_session(client, 3.0, {"size": 64, "alpha": alpha})
            out[alpha] = [h for h, _ in headers]
            assert await gone(server)
        return out

    out = run_server(with_meaning, scenario)
    for alpha, headers in out.items():
        assert all(h["meaning"] == "instant" for h in headers)
        late = [h["offset"] for h in headers if h["t"] >= 2.0]  # first update at 0.75 s, applied at 1.25 s
        assert late and (max(late) == 0.0 if alpha == 0.0 else min(late) > 0.2), (alpha, late)


def test_folder_models_share_one_analysis_per_generator_and_clip(models, models_dir, tmp_path, monkeypatch):
    from sgim_nodes.live.models import ROLES, FolderModels

    monkeypatch.setenv("SGIM_INSTANT_CACHE", str(tmp_path / "cache"))
    files = {"generator": models_dir / "stylegan" / "tiny_rosinality.pt",
             "encoder": models_dir / "sgim_audio_encoders" / "tiny_encoder.safetensors",
             "clip": models_dir / "sgim_clip" / "tiny_clip.pt"}
    loads, moves, stamp = [], [], {"n": 0}
    source = FolderModels(choices=lambda: {role: [files[role].name] if role in files else [] for role in ROLES},
                          path_of=lambda role, name: str(files[role]),
                          load=lambda role, path: loads.append(role) or getattr(models, role),
                          signature=lambda path: (stamp["n"], 1), on_device=moves.append, device=lambda: "cpu")
    first, second = source.load({}), source.load({"generator": "tiny_rosinality.pt"})
    assert loads == ["generator", "encoder", "clip"]  # loaded once, kept while the files are unchanged
    one, two = first.meaning(), second.meaning()
    assert one.analysis is two.analysis and one.analysis.wait(120) and one.analysis.hit is False
    assert list((tmp_path / "cache").glob("tiny_rosinality.*.safetensors"))
    with first.device_scope():
        pass
    assert moves and all(len(m) == 3 for m in moves)  # the models went to the device (the analysis did too)
    stamp["n"] = 1  # the files changed: loaded again, a new analysis (which finds the same file's cache)
    third = source.load({})
    assert third.meaning().analysis is not one.analysis and third.meaning().analysis.wait(60)
    assert third.meaning().analysis.hit is True
    files.pop("encoder")  # no encoder in the folder: reactivity only, no analysis
    reactive = source.load({})
    assert reactive.meaning is None and reactive.encoder is None and reactive.names["encoder"] is None
