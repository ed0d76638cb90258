"""Static checks of example_workflows/*.json against the node classes (no ComfyUI needed).

Every node must be one of ours or a core node listed below (with its inputs as ComfyUI 0.3.64
declares them), every link must join an existing output to an existing input of the same type,
widget values must fit their widgets, and the API prompt derived from each workflow must give
every required input.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from workflow_format import definitions_from_classes, input_entries, is_widget, ui_to_api  # noqa: E402

EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))

# Core nodes the examples use, as /object_info of ComfyUI 0.3.64 describes them.
CORE_NODES = {
    "LoadAudio": {"input": {"required": {"audio": [[], {"audio_upload": True}]}},
                  "input_order": {"required": ["audio"]}, "output": ["AUDIO"], "output_name": ["AUDIO"]},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": []},
    "LoadImage": {"input": {"required": {"image": [[], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE", {}]}}, "input_order": {"required": ["images"]},
                     "output": [], "output_name": []},
    "ImageScaleBy": {"input": {"required": {
        "image": ["IMAGE", {}],
        "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
        "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]}},
        "input_order": {"required": ["image", "upscale_method", "scale_by"]}, "output": ["IMAGE"], "output_name": ["IMAGE"]},
}
# Widgets the frontend itself adds to core nodes (the audio player of LoadAudio).
FRONTEND_WIDGETS = {"LoadAudio": {"audioUI", "upload"}, "LoadImage": {"upload"}}
FILE_COMBOS = {"generator_name", "clip_name", "encoder_name", "identity_name", "latent_file", "audio", "vgg_name",
               "image"}


@pytest.fixture(scope="module")
def definitions():
    spec = importlib.util.spec_from_file_location("sgim_pack_static_check", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        ours = definitions_from_classes(module.NODE_CLASS_MAPPINGS)
    finally:
        for name in [n for n in sys.modules if n.startswith(spec.name)]:
            sys.modules.pop(name)
    return {**CORE_NODES, **ours}


def test_the_examples_exist_with_thumbnails():
    names = {p.stem for p in EXAMPLES}
    assert names == {"landscape_sound_edit", "face_edit_with_identity", "music_to_painting",
                     "sound_and_text_style_mix", "chain_upscale_and_save", "edit_my_painting"}
    for path in EXAMPLES:
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file() and thumbnail.read_bytes()[:2] == b"\xff\xd8", thumbnail


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_references_only_existing_nodes_and_inputs(path, definitions):
    workflow = json.loads(path.read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert any(n["type"].startswith("SGIM") for n in nodes.values())
    for node in nodes.values():
        assert node["type"] in definitions, f"{path.name}: unknown node type {node['type']}"
        definition = definitions[node["type"]]
        entries = input_entries(definition)
        names = {name for name, _, _ in entries} | FRONTEND_WIDGETS.get(node["type"], set())
        for socket in node.get("inputs", []):
            assert socket["name"] in names, f"{path.name}: {node['type']} has no input {socket['name']}"
        widgets = [(name, kind, opts) for name, kind, opts in entries if is_widget(kind, opts)]
        values = list(node.get("widgets_values") or [])
        position = 0
        for name, kind, opts in widgets:
            assert position < len(values), f"{path.name}: {node['type']} lacks a value for {name}"
            value = values[position]
            if isinstance(kind, list) and name not in FILE_COMBOS:
                assert value in kind, f"{path.name}: {node['type']}.{name} = {value!r} not in {kind}"
            if kind in ("INT", "FLOAT"):
                assert opts["min"] <= value <= opts["max"], f"{path.name}: {node['type']}.{name} = {value}"
            if kind == "STRING":
                assert isinstance(value, str)
            position += 1
            if opts.get("control_after_generate"):
                assert values[position] in ("fixed", "increment", "decrement", "randomize")
                position += 1
        outputs = node.get("outputs", [])
        assert [o["type"] for o in outputs] == definition["output"], f"{path.name}: {node['type']} outputs"

    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        source, target = nodes[src], nodes[dst]
        out_type = definitions[source["type"]]["output"][src_slot]
        socket = target["inputs"][dst_slot]
        in_type = dict((n, k) for n, k, _ in input_entries(definitions[target["type"]]))[socket["name"]]
        assert out_type == link_type == in_type, f"{path.name}: link {link_id} {out_type} -> {socket['name']} {in_type}"
        assert socket["link"] == link_id and link_id in source["outputs"][src_slot]["links"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_converts_to_a_complete_api_prompt(path, definitions):
    prompt = ui_to_api(json.loads(path.read_text()), definitions)
    for node_id, node in prompt.items():
        required = definitions[node["class_type"]]["input"].get("required", {})
        missing = [name for name in required if name not in node["inputs"]]
        assert not missing, f"{path.name}: node {node_id} ({node['class_type']}) misses {missing}"
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                assert value[0] in prompt, f"{path.name}: node {node_id} links to missing node {value[0]}"
    outputs = [n for n in prompt.values() if n["class_type"] in ("SaveImage", "PreviewImage", "SGIMSaveLatent")]
    assert outputs, f"{path.name}: no output node, ComfyUI would refuse the prompt"
