"""Static checks of example_workflows/*.json that need no node definitions: thumbnails, layout, links.

Whether every node and widget value fits what ComfyUI declares is checked against a real server's
``/object_info`` (tests/integration/test_comfyui_server.py), not against definitions derived from the
same code that wrote the examples.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from build_example_workflows import EXAMPLE_FILES, example_path  # noqa: E402

EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its pos


def registered_node_ids() -> dict[str, bool]:
    """{node id: deprecated} of nodes.py (the classes in comfy_nodes/), read statically (no import)."""
    tree = ast.parse((REPO / "nodes.py").read_text())
    classes = {n.name: n for path in sorted((REPO / "comfy_nodes").glob("*.py"))
               for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_CLASS_MAPPINGS":
            mapping = {key.value: value.id for key, value in zip(node.value.keys, node.value.values)}
            break
    else:
        raise AssertionError("NODE_CLASS_MAPPINGS not found")

    def deprecated(name):
        return any(isinstance(s, ast.Assign) and getattr(s.targets[0], "id", "") == "DEPRECATED"
                   for s in classes[name].body)

    return {node_id: deprecated(cls) for node_id, cls in mapping.items()}


def test_every_example_exists_with_a_thumbnail():
    from PIL import Image

    names = {p.stem for p in EXAMPLES}
    assert names == set(EXAMPLE_FILES.values())  # the template browser shows the file name as the title
    assert all(name.startswith("SGIM - ") and "_" not in name and ":" not in name for name in names)
    for path in EXAMPLES:
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file() and thumbnail.read_bytes()[:2] == b"\xff\xd8", thumbnail
        with Image.open(thumbnail) as image:
            assert image.width >= 600 and image.height >= 250, (thumbnail.name, image.size)  # readable graph
            colours = image.convert("RGB").resize((64, 32)).getcolors(4096) or []
            assert len(colours) > 40, thumbnail.name  # a picture of nodes, not an empty canvas


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_no_node_overlaps_another_nodes_title_bar(path):
    nodes = json.loads(path.read_text())["nodes"]
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes}
    for a, (ax0, ay0, ax1, ay1) in boxes.items():
        for b, (bx0, by0, bx1, by1) in boxes.items():
            if a < b:
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{path.name}: nodes {a} and {b} overlap"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_use_current_node_ids_and_consistent_links(path):
    workflow = json.loads(path.read_text())
    ours = registered_node_ids()
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in nodes.values():
        if node["type"].startswith("SGIM"):
            assert node["type"] in ours and not ours[node["type"]], f"{path.name}: {node['type']} (old or unknown id)"
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        source, target = nodes[src], nodes[dst]
        assert link_id in source["outputs"][src_slot]["links"] and source["outputs"][src_slot]["type"] == link_type
        assert target["inputs"][dst_slot]["link"] == link_id and target["inputs"][dst_slot]["type"] == link_type
    music = example_path("music_to_painting")
    loader = next(n for n in json.loads(music.read_text())["nodes"] if n["type"] == "SGIMLoadStyleGAN")
    assert loader["widgets_values"][0] == "wikiart-1024-stylegan3-t-17.2Mimg.pkl"  # the generator one can get


LOADER_FOLDERS = {"SGIMLoadStyleGAN": "stylegan", "SGIMLoadCLIP": "sgim_clip", "SGIMLoadAudioEncoder": "sgim_audio_encoders",
                  "SGIMLoadIdentityModel": "sgim_identity", "SGIMLoadVGG": "sgim_vgg"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_loader_declares_its_model_for_the_frontend(path):
    """properties.models = [{name, url, directory}] (what newer frontends read to list missing models):
    name = the widget's file, directory = our folder key, url = the publisher's address from the
    download index (IR-SE50 has no direct address: its distributors' page)."""
    from sgim_nodes.models import KNOWN_MODELS

    index = {(m.folder, m.filename): m for m in KNOWN_MODELS.values()}
    loaders = [n for n in json.loads(path.read_text())["nodes"] if n["type"] in LOADER_FOLDERS]
    assert loaders
    for node in loaders:
        folder, name = LOADER_FOLDERS[node["type"]], node["widgets_values"][0]
        declared = node["properties"].get("models")
        assert declared and len(declared) == 1, f"{path.name}: {node['type']} declares no model"
        entry = declared[0]
        assert entry["name"] == name and entry["directory"] == folder, (path.name, entry)
        known = index[(folder, name)]
        if known.url:
            assert entry["url"] == known.url, (path.name, entry)
        else:
            assert entry["url"].startswith("https://") and known.manual, (path.name, entry)


PREVIEW_NODES = {"SGIMOptimizeLatent", "SGIMProjectImage", "SGIMMusicKeyframes"}  # show a preview while they run


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_nodes_below_a_preview_leave_room_for_it(path):
    """After a run a node with a preview grows by about a square as wide as itself (1.58.1 draws it
    below the widgets): the next node of its column starts below that, title bar included."""
    nodes = json.loads(path.read_text())["nodes"]
    for node in (n for n in nodes if n["type"] in PREVIEW_NODES):
        x, y = node["pos"]
        width, height = node["size"]
        for other in nodes:
            ox, oy = other["pos"]
            if other is node or oy <= y or ox >= x + width or ox + other["size"][0] <= x:
                continue
            assert oy - TITLE_HEIGHT >= y + height + width, (
                f"{path.name}: node {other['id']} ({other['type']}) starts at y={oy}, inside the room of node "
                f"{node['id']}'s preview (up to y={y + height + width + TITLE_HEIGHT})")


def test_the_long_example_says_what_to_lower_for_a_first_try():
    nodes = json.loads(example_path("edit_my_painting").read_text())["nodes"]
    notes = [n["widgets_values"][0] for n in nodes if n["type"] == "Note"]
    project = next(n for n in nodes if n["type"] == "SGIMProjectImage")
    assert len(notes) == 1 and "1000 projection + 350 tuning + 200 edit steps" in notes[0]
    assert "steps to 200" in notes[0] and "tune_steps to 100" in notes[0] and "steps to 60" in notes[0]
    assert 1000 in project["widgets_values"] and 350 in project["widgets_values"]  # the numbers the note names
