"""The live page inside ComfyUI: ``/sgim/live/`` on ComfyUI's own server, with its model folders and device.

The page offers the files of models/stylegan, models/sgim_audio_encoders and models/sgim_clip; a
session loads its choice once (kept while the files are unchanged, as the loader nodes do) and
runs every frame and meaning update with the models on ComfyUI's torch device through its model
management, as the nodes do; the instant-edit analysis of a generator + CLIP pair is read from
models/sgim_instant or made once in the background (:mod:`sgim_nodes.live.models`). Recordings go to
ComfyUI's output folder, ``sgim_live/``. Registered by :func:`comfy_nodes.host.register_routes`.
"""

from __future__ import annotations

from pathlib import Path

from . import host

ROUTE = "/sgim/live"
FOLDERS = {"generator": "stylegan", "encoder": "sgim_audio_encoders", "clip": "sgim_clip"}


def _load(role: str, path: str):
    from ..sgim_nodes.audio import load_audio_encoder
    from ..sgim_nodes.clip import load_clip

    load = {"generator": host.load_generator_file,
            "encoder": lambda p: load_audio_encoder(p, device="cpu").eval().requires_grad_(False),
            "clip": lambda p: load_clip(p, device="cpu")}[role]
    return host.load_model(load, path)


def model_source(log=None):
    """The page's model choice over ComfyUI's folders, device and model management."""
    from ..sgim_nodes.live.models import FolderModels

    return FolderModels(
        choices=lambda: {role: host.model_file_list(folder) for role, folder in FOLDERS.items()},
        path_of=lambda role, name: host.model_file_path(FOLDERS[role], name, "SGIM Live", role),  # inside the folders
        load=_load, signature=host.file_signature,
        on_device=lambda models: host.models_on_device(models, host.torch_device()),
        device=lambda: str(host.torch_device()), log=log)


def register_live_routes(routes) -> None:
    """The live page's routes on ComfyUI's route table (``PromptServer.instance.routes``)."""
    from ..sgim_nodes.live.server import ServerConfig, add_live_routes

    def log(message):
        print(f"[sgim live] {message}", flush=True)

    out_dir = Path(host.output_directory()) / "sgim_live"
    add_live_routes(routes, model_source(log), ServerConfig(out_dir=out_dir), prefix=ROUTE, log=log)
