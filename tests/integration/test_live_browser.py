"""The live page in a real headless Chromium: microphone (a fake device playing a click track), file
playback, knobs, recording, reconnecting. No ComfyUI needed: the standalone live server on tiny models.

Needs the Python ``playwright`` package and a Chromium binary (``/usr/bin/chromium`` or ``$CHROMIUM``;
never ``playwright install``); skipped with the reason otherwise. The page's screenshot goes to
``$SGIM_SCREENSHOT_DIR`` (default: the pytest temporary directory) as ``live_page.png``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from browser import CHROMIUM_ARGS, chromium_path
from live_support import ThreadServer, click_times_in, click_track, load_live_models, write_wav

FPS = 15.0
PERIOD = 0.5


@pytest.fixture(scope="module")
def sync_api():
    module = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    if chromium_path() is None:
        pytest.skip("the browser test needs Chromium (/usr/bin/chromium or $CHROMIUM)")
    return module


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    audio, _ = click_track(30.0, 48000, period=PERIOD, first=0.25)
    return write_wav(tmp_path_factory.mktemp("clicks") / "CLICKS.wav", audio, 48000)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    from tiny_models import write_tiny_models

    from sgim_nodes.instant import AnalysisSettings
    from sgim_nodes.live.meaning import InstantAnalysis
    from sgim_nodes.live.server import ServerConfig

    root = tmp_path_factory.mktemp("live_browser")
    write_tiny_models(root / "models")
    models = load_live_models(root / "models")
    # the meaning: instant edits over a small analysis of the tiny generator (a second), made before the page opens
    analysis = InstantAnalysis(models.generator, models.clip, cache=root / "analysis.safetensors",
                               settings=AnalysisSettings(samples=8, std_samples=256)).start()
    assert analysis.wait(120), analysis.status()
    models.meaning = analysis.provider
    config = ServerConfig(fps=FPS, out_dir=root / "recordings")
    with ThreadServer(models, config) as server:
        yield server


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SGIM_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(sync_api, live_server, clicks):
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={clicks}", "--autoplay-policy=no-user-gesture-required"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live_server.url)
        page.wait_for_function("() => document.querySelector('#size option')", timeout=30_000)
        page.errors = errors
        yield page
        browser.close()


def live(page, expression: str):
    return page.evaluate(f"() => window.sgimLive.{expression}")


def wait_frames(page, count: int, timeout: float = 60.0) -> None:
    page.wait_for_function(f"() => window.sgimLive.frames >= {count}", timeout=timeout * 1000)


def test_microphone_frames_follow_the_clicks_and_the_recording_matches(page, live_server, shots):
    from sgim_nodes.animate.render import video_frame_count

    assert page.locator("#start").inner_text() == "Start"
    page.click("#start")
    wait_frames(page, 20)
    first = page.locator("#frame").screenshot()
    page.wait_for_timeout(600)
    assert page.locator("#frame").screenshot() != first  # frames arrive and change
    page.click("#record")
    page.wait_for_function("() => window.sgimLive.messages.some(m => m.type === 'recording')", timeout=60_000)
    page.wait_for_timeout(6000)
    page.click("#record")
    page.wait_for_function("() => window.sgimLive.recordings.length === 1", timeout=30_000)
    page.screenshot(path=str(shots / "live_page.png"))
    recorded = live(page, "recordings[0]")
    log = live(page, "log")

    # the recording: one video frame per frame slot, the audio exactly as long
    path = live_server.config.out_dir / recorded["url"].split("/")[-1]
    frames, _, audio_seconds = video_frame_count(path)
    assert frames == recorded["frames"] and frames >= 5.5 * FPS
    assert abs(audio_seconds - frames / FPS) < 0.03

    # the clicks, found in the audio the server received (the recording), in stream time
    import av

    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    clicks = [recorded["start_seconds"] + t for t in click_times_in(audio, rate)]
    assert len(clicks) >= 10
    assert all(abs((b - a) - PERIOD) < 0.02 for a, b in zip(clicks, clicks[1:]))
    times = np.array([entry["t"] for entry in log])
    displacement = np.array([entry["displacement"] for entry in log])
    lags = []
    for c in clicks:
        near = (times >= c - 0.2) & (times <= c + 0.4)
        if near.sum() < 2:
            continue  # the page got no frame around this click (a slow moment): nothing to measure
        peak = times[near][np.argmax(displacement[near])]
        lags.append(peak - c)
    assert len(lags) >= 0.7 * len(clicks), (len(lags), len(clicks))
    # the reactive peak is never before its click, and lands within a frame or two after it (plus dropped frames)
    assert min(lags) >= -1e-6, lags
    assert statistics.median(lags) <= 2.5 / FPS, lags
    latencies = [entry["latency"] for entry in log if entry["latency"] is not None]
    assert statistics.median(latencies) < 1500, statistics.median(latencies)  # audio sent -> frame shown, ms
    print(f"click -> peak lag (stream): median {1000 * statistics.median(lags):.0f} ms, max {1000 * max(lags):.0f} ms;"
          f" end-to-end latency median {statistics.median(latencies):.0f} ms, "
          f"p90 {np.percentile(latencies, 90):.0f} ms; frames shown {len(log)}")
    assert not page.errors, page.errors


def test_meaning_is_on_and_alpha_moves_the_picture(page):
    assert live(page, "running")
    assert page.locator("#meaning").inner_text().startswith("instant")
    offsets = {}
    for alpha in (0, 2, 1):
        page.fill("#alpha", str(alpha))
        page.dispatch_event("#alpha", "input")
        page.wait_for_function(f"() => window.sgimLive.messages.some(m => m.type === 'settings' && "
                               f"m.settings.alpha === {alpha})", timeout=60_000)
        count = live(page, "frames")
        wait_frames(page, count + 10)
        offsets[alpha] = [entry["offset"] for entry in live(page, "log.slice(-5)")]
        assert all(entry["meaning"] == "instant" for entry in live(page, "log.slice(-5)"))
    # the meaning's W+ shift: none at alpha 0, and twice alpha 1's at alpha 2 (within the blend's drift)
    assert all(o == 0 for o in offsets[0]) and min(offsets[1]) > 0.1, offsets
    assert 1.5 < np.median(offsets[2]) / np.median(offsets[1]) < 2.6, offsets
    assert page.locator("#meaning").inner_text() == "instant · α 1.00"


def test_knobs_change_live(page):
    assert live(page, "running")
    page.fill("#reactivity", "0")
    page.dispatch_event("#reactivity", "input")
    page.wait_for_function("() => window.sgimLive.messages.some(m => m.type === 'settings' && m.settings.reactivity === 0)",
                           timeout=60_000)
    count = live(page, "frames")
    wait_frames(page, count + 10)
    recent = live(page, "log.slice(-5)")
    assert all(entry["displacement"] == 0 for entry in recent)
    page.select_option("#size", "128")
    page.wait_for_function("() => window.sgimLive.messages.some(m => m.type === 'settings' && m.settings.size === 128)",
                           timeout=60_000)
    page.wait_for_function("() => document.getElementById('frame').naturalWidth === 128", timeout=60_000)


def test_stop_and_reconnect(page):
    page.click("#start")  # Stop
    page.wait_for_function("() => window.sgimLive.ended === 'stopped' && !window.sgimLive.running", timeout=60_000)
    count = live(page, "frames")
    page.click("#start")
    page.wait_for_function("() => window.sgimLive.ready !== null", timeout=60_000)
    wait_frames(page, count + 20)
    assert live(page, "sessions") == 2
    page.click("#start")
    page.wait_for_function("() => !window.sgimLive.running", timeout=60_000)


def test_file_playback_mode(page, clicks):
    page.fill("#reactivity", "1")  # the knobs stay as the last test left them: react again
    page.select_option("#source", "file")
    page.set_input_files("#file", str(clicks))
    count = live(page, "frames")
    page.click("#start")
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=60_000)
    wait_frames(page, count + 20)
    log = live(page, "log")[-20:]
    assert len({entry["displacement"] for entry in log}) > 5  # the file's clicks move the picture
    assert max(entry["onset"] for entry in log) > 0.8
    page.click("#start")
    page.wait_for_function("() => !window.sgimLive.running", timeout=60_000)
    assert not page.errors, page.errors
