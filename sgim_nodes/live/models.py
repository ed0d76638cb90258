"""Models the page picks from a host's model folders (ComfyUI's), for :func:`sgim_nodes.live.server.add_live_routes`.

Each role's file is loaded once and kept while the file is unchanged (as the loader nodes do); each
generator + CLIP pair gets one :class:`~sgim_nodes.live.meaning.InstantAnalysis` (cache read, or the
analysis run in the background once), shared by the sessions that choose that pair.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

from ..errors import ModelFileError

ROLES = ("generator", "encoder", "clip")


class FolderModels:
    """``choices()`` role -> file names; ``path_of(role, name)`` the file (refusing names outside the folder);
    ``load(role, path)`` the model (on the CPU); ``signature(path)`` what tells a changed file (mtime, size);
    ``on_device(models)`` puts the models on the host's device (entered around every render and update);
    ``device()`` its name."""

    def __init__(self, *, choices: Callable[[], dict], path_of: Callable[[str, str], str],
                 load: Callable[[str, str], object], signature: Callable[[str], tuple],
                 on_device: Callable[[list], None], device: Callable[[], str], log: Callable[[str], None] | None = None):
        self.choices, self.path_of, self._load, self.signature = choices, path_of, load, signature
        self.on_device, self.device, self.log = on_device, device, log or (lambda message: None)
        self.lock = threading.Lock()
        self.device_lock = threading.Lock()
        self.loaded: dict[str, tuple[str, tuple, object]] = {}  # role -> (path, file signature, model)
        self.analyses: dict[tuple, object] = {}  # (generator file, signature, clip file, signature) -> analysis

    def _model(self, role: str, name: str):
        path = self.path_of(role, name)
        signature = self.signature(path)
        with self.lock:
            hit = self.loaded.get(role)
            if hit is not None and hit[0] == path and hit[1] == signature:
                return hit[2], (path, signature)
        model = self._load(role, path)
        with self.lock:
            self.loaded[role] = (path, signature, model)
        return model, (path, signature)

    def load(self, selection: dict):
        from ..audio import check_compatible
        from .meaning import InstantAnalysis
        from .server import LiveModels

        unknown = sorted(set(selection) - set(ROLES))
        if unknown:
            raise ModelFileError(f"SGIM Live: unknown model role {unknown[0]!r} (expected {', '.join(ROLES)})")
        choices = self.choices()
        chosen = {role: selection.get(role) or (choices.get(role) or [None])[0] for role in ROLES}
        if chosen["generator"] is None:
            raise ModelFileError("SGIM Live: no generator in models/stylegan (see docs/nodes.md for where to get one)")
        generator, generator_key = self._model("generator", chosen["generator"])
        encoder = clip = analysis = None
        if chosen["encoder"] and chosen["clip"]:  # without either: the picture follows loudness and bands only
            encoder, _ = self._model("encoder", chosen["encoder"])
            clip, clip_key = self._model("clip", chosen["clip"])
            check_compatible(encoder, clip)
        models = [m for m in (generator, encoder, clip) if m is not None]

        @contextlib.contextmanager
        def device_scope():
            with self.device_lock:  # frames and meaning updates run on two threads: one move at a time
                self.on_device(models)
            yield

        if clip is not None:
            key = (*generator_key, *clip_key)
            with self.lock:
                analysis = self.analyses.get(key)
                if analysis is None:
                    analysis = self.analyses[key] = InstantAnalysis(
                        generator, clip, generator_file=generator_key[0], scope=device_scope, log=self.log).start()
        names = {role: chosen[role] if (role == "generator" or encoder is not None) else None for role in ROLES}
        names["device"] = self.device()
        return LiveModels(generator=generator, encoder=encoder, clip=clip, names=names, device_scope=device_scope,
                          meaning=analysis.provider if analysis is not None else None)
