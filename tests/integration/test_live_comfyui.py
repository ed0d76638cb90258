"""The live page inside a real ComfyUI: the pack's route serves it and a session runs on the server's
models (its model folders, its model management), recording into its output folder."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.request

import numpy as np

from live_support import click_track


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read(), response.geturl()


def test_route_serves_the_page_and_its_files(server):
    status, body, final = get(f"{server.url}/sgim/live")
    assert status == 200 and final.endswith("/sgim/live/") and b'<button id="start">Start</button>' in body
    for name in ("live.js", "worklet.js", "live.css"):
        assert get(f"{server.url}/sgim/live/static/{name}")[0] == 200
    info = json.loads(get(f"{server.url}/sgim/live/info")[1])
    assert server.names["generator"] in info["choices"]["generator"]
    assert server.names["encoder"] in info["choices"]["encoder"]
    assert server.names["clip"] in info["choices"]["clip"]


def test_a_session_runs_on_the_servers_models_and_records(server):
    from aiohttp import ClientSession

    names = server.names
    log_start = len(server.log())

    async def session():
        async with ClientSession() as http:
            ws = await http.ws_connect(f"{server.url}/sgim/live/ws")
            await ws.send_str(json.dumps({"type": "start", "sample_rate": 48000, "settings": {"size": 64},
                                          "models": {"generator": names["generator"], "encoder": names["encoder"],
                                                     "clip": names["clip"]}}))
            ready = await ws.receive_json(timeout=120)
            assert ready["type"] == "ready", ready
            await ws.send_str(json.dumps({"type": "record", "on": True}))
            headers, texts = [], []

            async def read():
                async for msg in ws:
                    if msg.type.name == "BINARY":
                        n = struct.unpack("<I", msg.data[:4])[0]
                        headers.append(json.loads(msg.data[4:4 + n]))
                        await ws.send_str(json.dumps({"type": "ack", "index": headers[-1]["index"]}))
                    else:
                        texts.append(json.loads(msg.data))
                        if texts[-1]["type"] == "end":
                            return

            reader = asyncio.ensure_future(read())
            audio, _ = click_track(3.0, 48000)
            for chunk in np.array_split(audio, 60):
                await ws.send_bytes(struct.pack("<d", 0.0) + chunk.astype("<f4").tobytes())
                await asyncio.sleep(0.03)
            await asyncio.sleep(1.5)
            await ws.send_str(json.dumps({"type": "record", "on": False}))
            await asyncio.sleep(1.0)
            await ws.send_str(json.dumps({"type": "stop"}))
            await asyncio.wait_for(reader, 60)
            return ready, headers, texts

    ready, headers, texts = asyncio.run(session())
    assert ready["models"]["generator"] == names["generator"] and ready["models"]["device"] == "cpu"
    assert len(headers) >= 10 and any(h["nearest"] for h in headers)
    recorded = [t for t in texts if t["type"] == "recorded"]
    assert len(recorded) == 1 and recorded[0]["frames"] > 0, texts
    name = recorded[0]["url"].split("/")[-1]
    assert (server.base / "output" / "sgim_live" / name).is_file()
    status, body, _ = get(f"{server.url}/sgim/live/recordings/{name}")
    assert status == 200 and body[4:8] == b"ftyp"
    assert "Requested to load ManagedModel" in server.log()[log_start:]  # ComfyUI's model management moved them
    # the meaning: instant edits, the pair's analysis made once in the background (tiny models: seconds)
    assert ready["meaning"].startswith("instant") and all(h["meaning"].startswith("instant") for h in headers)
    deadline = time.monotonic() + 90
    while "[sgim live] meaning: instant edits on" not in server.log()[log_start:] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "[sgim live] meaning: instant edits on" in server.log()[log_start:], server.log()[log_start:][-3000:]
