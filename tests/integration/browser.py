"""Headless Chromium on the ComfyUI frontend (Python playwright, the system's chromium binary).

Console messages are recorded and split into the pack's own problems (anything mentioning
sgim, coming from our extension file or hitting our routes) and the frontend's own noise.
Also usable as a tool that re-saves the example workflows exactly as the editor serialises
them and renders their ``.jpg`` thumbnails:

    python tests/integration/browser.py canonicalize http://127.0.0.1:PORT example_workflows/
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP = "(window.comfyAPI?.app?.app ?? window.app)"  # the ComfyApp, in old and new frontends

# Errors the frontends log on a fresh --base-directory with or without this pack: missing optional
# user files and a settings-migration TypeError inside 1.27.10's own bundle, and more below.
FRONTEND_NOISE = ("/user.css", "/api/userdata", "Failed to load resource", "reading 'id'",
                  # newer frontends (1.58) against this server: its jobs API does not exist yet, and they
                  # try to reach the internet (nothing can be reached from the test machine)
                  "Jobs API", "Failed to fetch jobs", "/api/jobs", "/api/global_subgraphs", "ERR_NAME_NOT_RESOLVED",
                  "net::ERR_",
                  # properties.models names the files' publishers: the missing-models dialog asks them for the size
                  "Error fetching file size")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def skip_first_run_dialog(url: str) -> None:
    """A fresh user directory makes the frontend open its template browser over the canvas."""
    import urllib.request

    request = urllib.request.Request(f"{url}/api/settings/Comfy.TutorialCompleted", data=b"true", method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


class FrontendPage:
    def __init__(self, playwright, url: str, viewport=(1600, 1000)):
        self.browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.console: list[dict] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda e: self.console.append(
            {"kind": "pageerror", "text": str(e), "where": e.stack or ""}))
        self.page.on("response", lambda r: r.status >= 400 and self.console.append(
            {"kind": "http", "text": f"HTTP {r.status}", "where": r.url}))
        skip_first_run_dialog(url)
        self.page.goto(url)
        self.page.wait_for_function(f"() => {APP}?.graph && {APP}.extensionManager", timeout=90_000)
        self.page.wait_for_timeout(1500)

    def _on_console(self, message) -> None:
        if message.type in ("error", "warning"):
            location = message.location or {}
            self.console.append({"kind": message.type, "text": message.text, "where": location.get("url", "")})

    def our_problems(self) -> list[dict]:
        """Console errors/warnings and failed requests that concern the pack."""
        def ours(entry):
            blob = f"{entry['text']} {entry['where']}".lower()
            # newer frontends ask the Comfy registry about every node shown (no network here): not the pack's
            return "sgim" in blob and not entry["where"].startswith("https://api.comfy.org/")
        return [e for e in self.console if ours(e)]

    def other_errors(self) -> list[dict]:
        return [e for e in self.console if e not in self.our_problems() and e["kind"] != "warning"
                and not any(noise in f"{e['text']} {e['where']}" for noise in FRONTEND_NOISE)]

    def extension_names(self) -> list[str]:
        return self.page.evaluate(f"() => ({APP}.extensions || []).map(e => e.name)")

    def open_workflow(self, workflow: dict) -> None:
        self.page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", workflow)
        self.page.wait_for_timeout(1200)

    def serialized_workflow(self) -> dict:
        """What the editor writes when saving (JSON.stringify drops undefined fields)."""
        return json.loads(self.page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())"))

    def api_prompt(self) -> dict:
        return self.page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")

    def graph_bounds(self, margin: int = 0) -> dict:
        """Screen rectangle around every node (title bars included), for thumbnails."""
        return self.page.evaluate(
            f"""(margin) => {{
                const app = {APP}; const ds = app.canvas.ds; const rect = app.canvas.canvas.getBoundingClientRect();
                let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
                for (const n of app.graph.nodes) {{
                    const [x, y] = n.pos, [w, h] = n.size, title = 30;
                    x0 = Math.min(x0, x); y0 = Math.min(y0, y - title); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
                }}
                const sx = (v) => rect.left + (v + ds.offset[0]) * ds.scale, sy = (v) => rect.top + (v + ds.offset[1]) * ds.scale;
                const left = Math.max(rect.left, sx(x0) - margin), top = Math.max(rect.top, sy(y0) - margin);
                return {{x: left, y: top, width: Math.min(rect.right, sx(x1) + margin) - left,
                         height: Math.min(rect.bottom, sy(y1) + margin) - top}};
            }}""", margin)

    def close(self) -> None:
        self.browser.close()


LAYOUT_WITHOUT_OVERLAPS = f"""(gap) => {{
    // Nodes of a column (same x) are stacked in their order, each title bar below the node above it,
    // with the sizes the frontend really gives them (widgets, DOM editors).
    const app = {APP}; const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    for (const node of app.graph.nodes) {{
        const min = node.computeSize?.() ?? node.size;
        node.setSize([Math.max(node.size[0], min[0]), Math.max(node.size[1], min[1])]);
    }}
    const columns = new Map();
    for (const node of app.graph.nodes) {{
        const x = Math.round(node.pos[0]);
        if (!columns.has(x)) columns.set(x, []);
        columns.get(x).push(node);
    }}
    for (const nodes of columns.values()) {{
        nodes.sort((a, b) => a.pos[1] - b.pos[1]);
        let bottom = -Infinity;
        for (const node of nodes) {{
            node.pos[1] = Math.max(node.pos[1], bottom + title + gap);
            bottom = node.pos[1] + node.size[1];
        }}
    }}
    app.canvas.setDirty(true, true);
}}"""


def fit_view(page, margins=(70, 70, 24, 24)) -> None:
    """Zoom (at most 1:1) and pan so that the whole graph, title bars included, sits in the part of the
    canvas no toolbar covers (``margins``: top, left, right, bottom in screen pixels)."""
    page.page.evaluate(f"""([top, left, right, bottom]) => {{
        const app = {APP}; const rect = app.canvas.canvas.getBoundingClientRect();
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of app.graph.nodes) {{
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }}
        const scale = Math.min((rect.width - left - right) / (x1 - x0), (rect.height - top - bottom) / (y1 - y0), 1);
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [left / scale - x0, top / scale - y0];
        app.canvas.setDirty(true, true);
    }}""", list(margins))


def focus_square(page, node_type: str, side: int) -> dict:
    """Zoom and pan so that every node from the left edge up to the first ``node_type`` node (loaders,
    sound, mask bars, optimiser: the heart of an example) fills a ``side`` px square, and return that
    square: template cards are square, and a whole wide graph would be a thin unreadable strip in one."""
    return page.page.evaluate(f"""([type, side]) => {{
        const app = {APP}; const rect = app.canvas.canvas.getBoundingClientRect();
        const focus = app.graph.nodes.find(n => n.type === type) ?? app.graph.nodes[0];
        const right = focus.pos[0] + focus.size[0];
        const shown = app.graph.nodes.filter(n => n.pos[0] <= right);
        const x0 = Math.min(...shown.map(n => n.pos[0])) - 20, x1 = right + 20;
        const y0 = Math.min(...shown.map(n => n.pos[1] - 30)) - 20;
        const y1 = Math.max(...shown.map(n => n.pos[1] + n.size[1])) + 20;
        const scale = Math.min(1, side / Math.max(x1 - x0, y1 - y0));
        const left = rect.left + 70, top = rect.top + 70;  // clear of the side bar and the top menu
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [(left - rect.left + (side - (x1 - x0) * scale) / 2) / scale - x0,
                                (top - rect.top + (side - (y1 - y0) * scale) / 2) / scale - y0];
        app.canvas.setDirty(true, true);
        app.canvas.draw(true, true);
        return {{x: left, y: top, width: side, height: side}};
    }}""", [node_type, side])


def hide_overlays(url: str) -> None:
    """The minimap would cover part of the graph in screenshots, and the missing-models dialog (the test
    server has tiny models under other names than the examples declare) the whole canvas; the test of
    that dialog turns it on for itself."""
    import urllib.request

    for key in ("Comfy.Minimap.Visible", "Comfy.Workflow.ShowMissingModelsWarning"):
        request = urllib.request.Request(f"{url}/api/settings/{key}", data=b"false", method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()


def canonicalize(url: str, folder: Path) -> None:
    """Re-save every example workflow through the editor, laid out without overlapping title bars, and
    write a .jpg thumbnail of it (the template browser shows it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        hide_overlays(url)
        page = FrontendPage(playwright, url, viewport=(2100, 1200))
        for path in sorted(folder.glob("*.json")):
            page.open_workflow(json.loads(path.read_text()))
            page.page.wait_for_timeout(800)  # the Layer Mask editors read their generators
            page.page.evaluate(LAYOUT_WITHOUT_OVERLAPS, 24)
            fit_view(page)
            page.page.wait_for_timeout(800)
            saved = page.serialized_workflow()
            saved.pop("id", None)  # a random id per editor session
            path.write_text(json.dumps(saved, indent=2) + "\n")
            page.page.screenshot(path=str(path.with_suffix(".jpg")), type="jpeg", quality=80,
                                 clip=focus_square(page, "SGIMOptimizeLatent", side=1000))
            print(f"canonicalised {path.name}")
        problems = page.our_problems()
        page.close()
    if problems:
        raise SystemExit(f"console problems from the pack: {problems}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "canonicalize":
        raise SystemExit(__doc__)
    canonicalize(sys.argv[2], Path(sys.argv[3]))
