"""The live page inside ComfyUI: ``/sgim/live/`` on ComfyUI's own server, with its model folders and device.

The page offers the files of models/stylegan, models/sgim_audio_encoders and models/sgim_clip; a
session loads its choice once (kept while the files are unchanged, as the loader nodes do) and
runs every frame with the models on ComfyUI's torch device through its model management, as the
nodes do. Recordings go to ComfyUI's output folder, ``sgim_live/``. Registered by
:func:`comfy_nodes.host.register_routes`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from ..sgim_nodes.errors import ModelFileError
from . import host

ROUTE = "/sgim/live"
ROLES = {"generator": "stylegan", "encoder": "sgim_audio_encoders", "clip": "sgim_clip"}


class ComfyModelSource:
    """Model files from ComfyUI's folders, loaded on the CPU, moved to ComfyUI's device for each frame."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loaded: dict[str, tuple[str, tuple, object]] = {}  # role -> (path, file signature, model)

    def choices(self) -> dict[str, list[str]]:
        return {role: host.model_file_list(folder) for role, folder in ROLES.items()}

    def _model(self, role: str, name: str):
        from ..sgim_nodes.audio import load_audio_encoder
        from ..sgim_nodes.clip import load_clip

        path = host.model_file_path(ROLES[role], name, "SGIM Live", role)  # only names inside the folders
        signature = host.file_signature(path)
        with self.lock:
            hit = self.loaded.get(role)
            if hit is not None and hit[0] == path and hit[1] == signature:
                return hit[2]
        load = {"generator": host.load_generator_file,
                "encoder": lambda p: load_audio_encoder(p, device="cpu").eval().requires_grad_(False),
                "clip": lambda p: load_clip(p, device="cpu")}[role]
        model = host.load_model(load, path)
        with self.lock:
            self.loaded[role] = (path, signature, model)
        return model

    def load(self, selection: dict):
        from ..sgim_nodes.audio import check_compatible
        from ..sgim_nodes.live.server import LiveModels

        unknown = sorted(set(selection) - set(ROLES))
        if unknown:
            raise ModelFileError(f"SGIM Live: unknown model role {unknown[0]!r} (expected {', '.join(ROLES)})")
        choices = self.choices()
        chosen = {role: selection.get(role) or (choices[role][0] if choices[role] else None) for role in ROLES}
        if chosen["generator"] is None:
            raise ModelFileError("SGIM Live: no generator in models/stylegan (see docs/nodes.md for where to get one)")
        generator = self._model("generator", chosen["generator"])
        encoder = clip = None
        if chosen["encoder"] and chosen["clip"]:  # without either: the picture follows loudness and bands only
            encoder, clip = self._model("encoder", chosen["encoder"]), self._model("clip", chosen["clip"])
            check_compatible(encoder, clip)
        models = [m for m in (generator, encoder, clip) if m is not None]

        @contextlib.contextmanager
        def on_comfy_device():
            host.models_on_device(models, host.torch_device())
            yield

        names = {role: chosen[role] if (role == "generator" or encoder is not None) else None for role in ROLES}
        names["device"] = str(host.torch_device())
        return LiveModels(generator=generator, encoder=encoder, clip=clip, names=names, device_scope=on_comfy_device)


def register_live_routes(routes) -> None:
    """The live page's routes on ComfyUI's route table (``PromptServer.instance.routes``)."""
    from ..sgim_nodes.live.server import ServerConfig, add_live_routes

    out_dir = Path(host.output_directory()) / "sgim_live"
    add_live_routes(routes, ComfyModelSource(), ServerConfig(out_dir=out_dir), prefix=ROUTE,
                    log=lambda message: print(f"[sgim live] {message}", flush=True))


