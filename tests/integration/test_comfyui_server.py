"""The pack inside a real ComfyUI server (CPU, 127.0.0.1): registration, a full example graph with
progress over the websocket, cancellation, and clear errors for bad graphs.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy-venv/bin/python \\
        python -m pytest tests/integration/test_comfyui_server.py -q
"""

from __future__ import annotations

import ast
import time
import uuid

import pytest

from comfy_client import REPO, WebSocket, get_json, post_json
from workflow_format import load, ui_to_api

EXAMPLES = REPO / "example_workflows"


def pack_node_ids() -> list[str]:
    """Node ids declared in nodes.py's NODE_CLASS_MAPPINGS (read statically: no import needed)."""
    tree = ast.parse((REPO / "nodes.py").read_text())
    ids = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_CLASS_MAPPINGS":
            ids = [key.value for key in node.value.keys]
        elif (ids is not None and isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and ast.unparse(node.value.func) == "NODE_CLASS_MAPPINGS.update"):  # a section adding its nodes
            ids += [key.value for key in node.value.args[0].keys]
    if ids is None:
        raise AssertionError("NODE_CLASS_MAPPINGS not found")
    return ids


def tiny_prompt(server, example: str, steps: int, seed: int, preview_every: int = 2) -> dict:
    """An example workflow as an API prompt, pointed at the tiny models and a short run."""
    prompt = ui_to_api(load(EXAMPLES / f"{example}.json"), get_json(f"{server.url}/object_info"))
    names = server.names
    replacements = {
        "SGIMLoadStyleGAN": {"generator_name": names["generator"]},
        "SGIMLoadCLIP": {"clip_name": names["clip"], "model_name": ""},
        "SGIMLoadAudioEncoder": {"encoder_name": names["encoder"]},
        "SGIMLoadIdentityModel": {"identity_name": names["identity"]},
        "SGIMLoadVGG": {"vgg_name": names["vgg"]},
        "SGIMProjectImage": {"steps": steps, "seed": seed, "preview_every": preview_every, "tune_steps": steps},
        "SGIMOptimizeLatent": {"steps": steps, "seed": seed, "preview_every": preview_every},
        "SGIMSourceLatent": {"seed": seed},
    }
    for node in prompt.values():
        node["inputs"].update(replacements.get(node["class_type"], {}))
        if node["class_type"] == "SGIMLayerMask":
            node["inputs"]["preset"] = "all"
    return prompt


def queue(server, prompt: dict, client_id: str) -> tuple[int, dict]:
    return post_json(f"{server.url}/prompt", {"prompt": prompt, "client_id": client_id})


def run_prompt(server, prompt: dict, on_message=None, timeout: float = 180.0) -> dict:
    """Queue ``prompt`` and collect its websocket messages until it finishes (or fails)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", server.port, f"/ws?clientId={client_id}", timeout=timeout)
    ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": False}})
    try:
        status, body = queue(server, prompt, client_id)
        assert status == 200, body
        prompt_id = body["prompt_id"]
        seen = {"json": [], "binary": [], "prompt_id": prompt_id}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kind, message = ws.recv()
            seen[kind].append(message)
            if on_message is not None:
                on_message(kind, message, prompt_id)
            if kind != "json":
                continue
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] in ("execution_error", "execution_interrupted"):
                return seen
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return seen
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")
    finally:
        ws.close()


def wait_for_history(server, prompt_id: str, timeout: float = 20.0) -> dict:
    """The history entry (written just after the last websocket message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = get_json(f"{server.url}/history/{prompt_id}").get(prompt_id)
        if entry is not None:
            return entry
        time.sleep(0.2)
    raise AssertionError(f"no history for prompt {prompt_id}")


def of_type(seen: dict, kind: str) -> list[dict]:
    return [m["data"] for m in seen["json"] if m["type"] == kind]


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


# ------------------------------------------------------------------------------ tests

def test_object_info_lists_every_node_without_import_errors(server):
    info = get_json(f"{server.url}/object_info")
    expected = pack_node_ids()
    assert len(expected) == 17
    missing = [n for n in expected if n not in info]
    assert not missing, f"not registered: {missing}\n{server.log()[-3000:]}"
    log = server.log()
    assert "IMPORT FAILED" not in log, log[-3000:]
    assert "comfyui-sgim" in log.split("Import times for custom nodes:")[1].split("\n\n")[0]
    assert info["SGIMOptimizeLatent"]["category"] == "SGIM"
    assert info["SGIMLoadStyleGAN"]["input"]["required"]["generator_name"][0] == [
        "not_a_model.pt", "nvlabs_tiny.pkl", "tiny16.safetensors", "tiny_rosinality.pt"]  # models/stylegan
    assert "/extensions/comfyui-sgim/sgim.js" in get_json(f"{server.url}/extensions")
    assert get_json(f"{server.url}/sgim/generator_info?name=tiny_rosinality.pt")["num_ws"] == 8
    assert "comfyui-sgim" in get_json(f"{server.url}/workflow_templates")


def test_example_workflow_runs_with_progress_previews_and_saved_image(server):
    from PIL import Image

    prompt = tiny_prompt(server, "chain_upscale_and_save", steps=8, seed=101, preview_every=2)
    optimize_id = node_of(prompt, "SGIMOptimizeLatent")
    started = time.monotonic()
    seen = run_prompt(server, prompt)
    elapsed = time.monotonic() - started
    errors = of_type(seen, "execution_error")
    assert not errors, errors[0]["exception_message"] if errors else ""
    progress = [d for d in of_type(seen, "progress") if d["node"] == optimize_id]
    assert [p["value"] for p in progress] == list(range(1, 9)) and progress[-1]["max"] == 8
    losses = of_type(seen, "sgim.loss")
    assert [d["step"] for d in losses] == list(range(1, 9)) and losses[0]["node"] == optimize_id
    assert {"total", "clip", "similarity"} <= set(losses[-1]["terms"])
    previews = [payload for event, payload in seen["binary"] if event == 1]  # PREVIEW_IMAGE
    assert len(previews) == 4  # steps 2, 4, 6, 8
    assert previews[0][:4] == b"\x00\x00\x00\x01" and previews[0][4:6] == b"\xff\xd8"  # JPEG
    texts = [payload for event, payload in seen["binary"] if event == 3]  # progress text on the node
    assert any(b"step 8/8" in t for t in texts)

    history = wait_for_history(server, seen["prompt_id"])
    assert history["status"]["status_str"] == "success"
    save_id = node_of(prompt, "SaveImage")
    image_info = history["outputs"][save_id]["images"][0]
    path = server.base / "output" / image_info["subfolder"] / image_info["filename"]
    with Image.open(path) as image:
        assert image.size == (64, 64)  # 32 px generator, ImageScaleBy x2
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # a real picture, not a flat colour
    latent_text = history["outputs"][node_of(prompt, "SGIMSaveLatent")]["text"][0]
    assert latent_text.startswith("saved sgim/upscaled_")
    print(f"tiny 8-step example graph: {elapsed:.1f} s end to end")

    # queued again unchanged: nothing re-runs (ComfyUI's cache; the optimiser is skipped)
    again = run_prompt(server, prompt)
    cached = [n for d in of_type(again, "execution_cached") for n in d["nodes"]]
    assert optimize_id in cached and not of_type(again, "progress")
    # only the optimiser's seed changed: the loaders and the source stay cached, the optimiser re-runs
    prompt[optimize_id]["inputs"]["seed"] = 102
    changed = run_prompt(server, prompt)
    cached = [n for d in of_type(changed, "execution_cached") for n in d["nodes"]]
    assert node_of(prompt, "SGIMLoadStyleGAN") in cached and node_of(prompt, "SGIMSourceLatent") in cached
    assert [d["value"] for d in of_type(changed, "progress") if d["node"] == optimize_id] == list(range(1, 9))


def test_interrupt_stops_the_optimiser_within_a_step(server):
    prompt = tiny_prompt(server, "landscape_sound_edit", steps=5000, seed=202, preview_every=0)
    optimize_id = node_of(prompt, "SGIMOptimizeLatent")
    state = {"sent": None}

    def interrupt_after_first_steps(kind, message, prompt_id):
        if kind == "json" and message["type"] == "progress" and message["data"]["node"] == optimize_id:
            if state["sent"] is None and message["data"]["value"] >= 3:
                state["sent"] = (message["data"]["value"], time.monotonic())
                post_json(f"{server.url}/interrupt", {})

    seen = run_prompt(server, prompt, on_message=interrupt_after_first_steps)
    assert state["sent"] is not None
    interrupted = of_type(seen, "execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == optimize_id
    steps = [d["value"] for d in of_type(seen, "progress") if d["node"] == optimize_id]
    assert max(steps) <= state["sent"][0] + 2, steps  # stopped within a step of the request (+ one in flight)
    history = wait_for_history(server, seen["prompt_id"])
    assert history["status"]["status_str"] == "error"
    assert not of_type(seen, "execution_error")  # an interruption, not a crash
    print(f"interrupt requested after step {state['sent'][0]}, last step reported {max(steps)}")


@pytest.mark.parametrize("case, expected", [
    ("wrong_generator_file", "Load StyleGAN, input 'generator_name'"),
    ("clip_does_not_match_encoder", "Optimize Latent, input 'clip'"),
    ("mask_for_another_generator", "Optimize Latent, input 'layer_mask'"),
])
def test_bad_graphs_fail_with_a_message_naming_the_input(server, case, expected):
    prompt = tiny_prompt(server, "landscape_sound_edit", steps=2, seed=300 + len(case), preview_every=0)
    names = server.names
    if case == "wrong_generator_file":
        prompt[node_of(prompt, "SGIMLoadStyleGAN")]["inputs"]["generator_name"] = names["bad_generator"]
    elif case == "clip_does_not_match_encoder":
        prompt[node_of(prompt, "SGIMLoadAudioEncoder")]["inputs"]["encoder_name"] = names["wide_encoder"]
    else:  # the Layer Mask is wired to a second, 16 px generator
        prompt["900"] = {"class_type": "SGIMLoadStyleGAN", "inputs": {"generator_name": names["generator16"]}}
        prompt[node_of(prompt, "SGIMLayerMask")]["inputs"]["generator"] = ["900", 0]
    seen = run_prompt(server, prompt)
    errors = of_type(seen, "execution_error")
    assert errors, f"{case}: no execution_error"
    assert expected in errors[0]["exception_message"], errors[0]["exception_message"]
    assert "Traceback" not in errors[0]["exception_message"]
    assert server.alive()
    assert get_json(f"{server.url}/object_info/SGIMDecode")["SGIMDecode"]["name"] == "SGIMDecode"


def test_invalid_widget_value_is_rejected_before_running(server):
    prompt = tiny_prompt(server, "landscape_sound_edit", steps=0, seed=400, preview_every=0)
    for node in [k for k, v in prompt.items() if v["class_type"] in ("PreviewImage", "SGIMDecode")]:
        if prompt[node]["class_type"] == "PreviewImage" or prompt[node]["inputs"]["wplus"][0] != node_of(
                prompt, "SGIMOptimizeLatent"):
            del prompt[node]  # keep only the branch through Optimize Latent: the whole prompt is refused
    status, body = post_json(f"{server.url}/prompt", {"prompt": prompt, "client_id": "x"})
    assert status == 400, body
    errors = body["node_errors"][node_of(prompt, "SGIMOptimizeLatent")]["errors"]
    assert errors[0]["type"] == "value_smaller_than_min" and errors[0]["extra_info"]["input_name"] == "steps"
    assert server.alive()


def test_edit_my_painting_example_projects_tunes_and_edits_a_picture(server):
    """The bring-your-own-picture graph: Load Image (a 140 x 90 RGBA picture, written by conftest) ->
    Project Image (LPIPS, tuning) -> sound edit -> Save."""
    from PIL import Image

    prompt = tiny_prompt(server, "edit_my_painting", steps=4, seed=505, preview_every=2)
    project_id, optimize_id = node_of(prompt, "SGIMProjectImage"), node_of(prompt, "SGIMOptimizeLatent")
    seen = run_prompt(server, prompt)
    errors = of_type(seen, "execution_error")
    assert not errors, errors[0]["exception_message"] if errors else ""
    progress = [d["value"] for d in of_type(seen, "progress") if d["node"] == project_id]
    assert progress == list(range(1, 9))  # 4 projection steps, then 4 tuning steps
    assert [d["value"] for d in of_type(seen, "progress") if d["node"] == optimize_id] == [1, 2, 3, 4]
    assert any(d["node"] == project_id and "tune loss" in d["terms"] for d in of_type(seen, "sgim.loss"))
    history = wait_for_history(server, seen["prompt_id"])
    assert history["status"]["status_str"] == "success"
    saved = history["outputs"][node_of(prompt, "SaveImage")]["images"][0]
    with Image.open(server.base / "output" / saved["subfolder"] / saved["filename"]) as image:
        assert image.size == (32, 32)  # the tiny generator's resolution
    assert history["outputs"][node_of(prompt, "PreviewImage")]["images"]  # the projection is shown
