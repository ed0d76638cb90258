"""The pack's frontend in the frontend ComfyUI ships, driven by headless Chromium.

Needs what the server tests need, plus the Python ``playwright`` package and a Chromium binary
(``/usr/bin/chromium`` or ``$CHROMIUM``; never ``playwright install``). Screenshots go to
``$SGIM_SCREENSHOT_DIR`` (default: the pytest temporary directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from browser import APP, FrontendPage, chromium_path
from comfy_client import REPO

EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))


@pytest.fixture(scope="session")
def sync_api():
    """Checked before the server starts, so a missing browser skips without starting ComfyUI."""
    module = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    if chromium_path() is None:
        pytest.skip("the browser test needs Chromium (/usr/bin/chromium or $CHROMIUM)")
    return module


@pytest.fixture(scope="module")
def frontend(sync_api, server):
    with sync_api.sync_playwright() as playwright:
        page = FrontendPage(playwright, server.url)
        yield page
        page.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SGIM_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def find_node(frontend, node_type: str) -> int:
    return frontend.page.evaluate(
        f"(t) => {APP}.graph.nodes.find(n => n.type === t)?.id ?? null", node_type)


def set_widget(frontend, node_id: int, name: str, value) -> None:
    frontend.page.evaluate(
        f"([id, name, value]) => {{ const w = {APP}.graph.getNodeById(id).widgets.find(w => w.name === name);"
        f" w.value = value; w.callback?.(value); {APP}.graph.setDirtyCanvas(true, true); }}", [node_id, name, value])


def test_extension_loads_and_every_example_opens(frontend, shots):
    assert "sgim.nodes" in frontend.extension_names()
    for path in EXAMPLES:
        workflow = json.loads(path.read_text())
        frontend.open_workflow(workflow)
        count = frontend.page.evaluate(f"() => {APP}.graph.nodes.length")
        assert count == len(workflow["nodes"]), path.name
        prompt = frontend.api_prompt()  # the frontend's own conversion accepts the graph
        assert {n["class_type"] for n in prompt.values()} == {n["type"] for n in workflow["nodes"]}
        frontend.page.screenshot(path=str(shots / f"{path.stem}.png"))
    assert not frontend.our_problems(), frontend.our_problems()
    assert not frontend.other_errors(), frontend.other_errors()  # only the frontend's known start-up noise


def test_layer_mask_editor_renders_and_edits_weights(frontend, server, shots):
    frontend.open_workflow(json.loads((REPO / "example_workflows" / "landscape_sound_edit.json").read_text()))
    loader = find_node(frontend, "SGIMLoadStyleGAN")
    mask = find_node(frontend, "SGIMLayerMask")
    set_widget(frontend, loader, "generator_name", server.names["generator"])
    frontend.page.wait_for_function(
        f"(id) => {APP}.graph.getNodeById(id).sgimLayerEditor?.info?.num_ws === 8", arg=mask, timeout=20_000)
    hidden = frontend.page.evaluate(
        f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'weights').hidden", mask)
    assert hidden is True
    editor = f"{APP}.graph.getNodeById({mask}).sgimLayerEditor"
    frontend.page.wait_for_timeout(500)
    box = frontend.page.evaluate(f"() => {{ const r = {editor}.canvas.getBoundingClientRect();"
                                 " return {x: r.x, y: r.y, width: r.width, height: r.height}; }")
    assert box["width"] > 100 and box["height"] > 60
    # coloured bars are drawn (coarse blue / middle green) for the 8 layers
    coloured = frontend.page.evaluate(
        f"() => {{ const c = {editor}.canvas; const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4)"
        " { if (d[i + 2] > 200 && d[i] < 120) n++; } return n; }")
    assert coloured > 200
    # click the first bar a quarter of the way down: weight 0.75 -> stored JSON, preset 'custom'
    plot = box["height"] - 16
    frontend.page.mouse.click(box["x"] + box["width"] / 16, box["y"] + plot * 0.25)
    frontend.page.wait_for_timeout(300)
    values = frontend.page.evaluate(
        f"(id) => {APP}.graph.getNodeById(id).widgets.filter(w => ['preset', 'weights'].includes(w.name))"
        ".map(w => w.value)", mask)
    assert values[0] == "custom"
    weights = json.loads(values[1])
    assert len(weights) == 8 and weights[0] == pytest.approx(0.75, abs=0.06) and weights[1:] == [1] * 7
    saved = frontend.serialized_workflow()
    assert any(n["type"] == "SGIMLayerMask" and n["widgets_values"][1] == values[1] for n in saved["nodes"])
    frontend.page.screenshot(path=str(shots / "layer_mask_editor.png"))
    assert not frontend.our_problems(), frontend.our_problems()


def test_loss_readout_follows_a_run(frontend, server, shots):
    frontend.open_workflow(json.loads((REPO / "example_workflows" / "landscape_sound_edit.json").read_text()))
    names = server.names
    for node_type, widget, value in (("SGIMLoadStyleGAN", "generator_name", names["generator"]),
                                     ("SGIMLoadCLIP", "clip_name", names["clip"]),
                                     ("SGIMLoadAudioEncoder", "encoder_name", names["encoder"]),
                                     ("SGIMOptimizeLatent", "steps", 4),
                                     ("SGIMOptimizeLatent", "lr", 0.0987),  # a value no other test queues: forces a run
                                     ("SGIMOptimizeLatent", "preview_every", 2)):
        set_widget(frontend, find_node(frontend, node_type), widget, value)
    optimize = find_node(frontend, "SGIMOptimizeLatent")
    frontend.page.evaluate(f"async () => {{ await {APP}.queuePrompt(0, 1); }}")
    frontend.page.wait_for_function(
        f"(id) => ({APP}.graph.getNodeById(id).sgimLossReadout?.textContent || '').startsWith('step 4/4')",
        arg=optimize, timeout=120_000)
    text = frontend.page.evaluate(f"(id) => {APP}.graph.getNodeById(id).sgimLossReadout.textContent", optimize)
    assert "clip" in text and "similarity" in text
    frontend.page.wait_for_timeout(1500)  # let the final image arrive
    frontend.page.screenshot(path=str(shots / "loss_readout_after_run.png"))
    assert not frontend.our_problems(), frontend.our_problems()
