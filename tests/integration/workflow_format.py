"""ComfyUI workflow formats: building UI-format graphs and converting them to API-format prompts.

UI format (what the editor saves, ``example_workflows/*.json``): ``nodes`` with ``inputs`` (sockets,
each with a ``link`` id), ``outputs`` (with ``links``), ``widgets_values`` (widget values in the
order of the node's widget inputs; a widget with ``control_after_generate`` is followed by its
mode, e.g. "fixed"), and ``links`` rows ``[id, from_node, from_slot, to_node, to_slot, type]``.

API format (what ``POST /prompt`` takes): ``{node_id: {"class_type", "inputs": {name: value |
[from_node_id, from_slot]}}}``.

Both directions need the node definitions: ``/object_info`` of a server, or
:func:`definitions_from_classes` for V1 node classes (no server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# Nodes that live in the editor only (the frontend never sends them to the server).
FRONTEND_ONLY = {"Note", "MarkdownNote"}


def definitions_from_classes(classes: dict[str, type]) -> dict[str, dict]:
    """``/object_info``-shaped definitions of V1 node classes."""
    out = {}
    for node_id, cls in classes.items():
        spec = cls.INPUT_TYPES()
        out[node_id] = {
            "input": spec,
            "input_order": {section: list(spec.get(section, {})) for section in ("required", "optional")
                            if section in spec},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return out


def input_entries(definition: dict) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of required then optional inputs, in the server's order."""
    entries = []
    for section in ("required", "optional"):
        inputs = definition["input"].get(section, {})
        for name in definition.get("input_order", {}).get(section, list(inputs)):
            entry = inputs[name]
            entries.append((name, entry[0], entry[1] if len(entry) > 1 else {}))
    return entries


def is_widget(kind: Any, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_default(kind: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def build_ui_workflow(nodes: list[dict], links: list[tuple], definitions: dict[str, dict],
                      groups: list[dict] | None = None) -> dict:
    """A UI-format workflow.

    ``nodes``: dicts with ``id``, ``type``, ``pos`` [x, y], optional ``title``, ``size`` and
    ``widgets`` {input name: value} (others take their defaults). ``links``: tuples
    ``(from_id, output_name, to_id, input_name)``; a link into a widget input (e.g. an fps computed
    upstream) gives that widget a socket, as the editor does.
    """
    by_id = {n["id"]: n for n in nodes}
    linked_widgets = {(dst, in_name) for _, _, dst, in_name in links}
    ui_nodes = {}
    for order, node in enumerate(nodes):
        if node["type"] in FRONTEND_ONLY:  # a note: its text is its one widget value
            ui_nodes[node["id"]] = {"id": node["id"], "type": node["type"], "pos": list(node["pos"]),
                                    "size": list(node["size"]), "flags": {}, "order": order, "mode": 0,
                                    "inputs": [], "outputs": [], "properties": {}, "widgets_values": [node["text"]]}
            continue
        definition = definitions[node["type"]]
        sockets, values = [], []
        for name, kind, options in input_entries(definition):
            if is_widget(kind, options):
                values.append(node.get("widgets", {}).get(name, widget_default(kind, options)))
                if options.get("control_after_generate"):
                    values.append("fixed")
                if (node["id"], name) in linked_widgets:  # a widget fed by a link keeps its value too
                    sockets.append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
            else:
                sockets.append({"name": name, "type": kind, "link": None})
        outputs = [{"name": out_name, "type": out_type, "links": [], "slot_index": i}
                   for i, (out_type, out_name) in enumerate(zip(definition["output"], definition["output_name"]))]
        ui_nodes[node["id"]] = {
            "id": node["id"], "type": node["type"], "pos": list(node["pos"]),
            "size": list(node.get("size", [320, 60 + 26 * (len(sockets) + len(values))])),
            "flags": {}, "order": order, "mode": 0, "inputs": sockets, "outputs": outputs,
            "properties": {"Node name for S&R": node["type"]}, "widgets_values": values,
        }
        if "title" in node:
            ui_nodes[node["id"]]["title"] = node["title"]
    ui_links = []
    for link_id, (src, out_name, dst, in_name) in enumerate(links, start=1):
        source, target = ui_nodes[src], ui_nodes[dst]
        slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == out_name)
        in_slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == in_name)
        link_type = source["outputs"][slot]["type"]
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][in_slot]["link"] = link_id
        ui_links.append([link_id, src, slot, dst, in_slot, link_type])
    assert set(by_id) == set(ui_nodes)
    return {
        "last_node_id": max(ui_nodes), "last_link_id": len(ui_links),
        "nodes": list(ui_nodes.values()), "links": ui_links, "groups": groups or [],
        "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4,
    }


def ui_to_api(workflow: dict, definitions: dict[str, dict]) -> dict:
    """The API-format prompt of a UI-format workflow (what the frontend's graphToPrompt sends)."""
    links = {row[0]: row for row in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0 or node["type"] in FRONTEND_ONLY:  # muted / bypassed / a note
            continue
        definition = definitions[node["type"]]
        linked = {s["name"]: s["link"] for s in node.get("inputs", []) if s.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        position = 0
        for name, kind, options in input_entries(definition):
            if is_widget(kind, options):
                if position < len(values):
                    inputs[name] = values[position]
                position += 1 + (1 if options.get("control_after_generate") else 0)
            if name in linked:
                row = links[linked[name]]
                inputs[name] = [str(row[1]), row[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
