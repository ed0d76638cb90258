"""The meaning of live sessions: each update's CLIP-space target -> an instant-edit direction.

:class:`InstantAnalysis` holds one generator's instant-edit directions (:mod:`sgim_nodes.instant`) for
every session of a server. It reads the analysis cache on a thread of its own; when there is none
it analyses the generator there (on a copy of it: the analysis switches the generator's convolution
form, which must not happen under a render) and caches the result, so a server starts at once and
the page shows ``meaning: instant (analysing 12/64)`` until the directions are in. Sessions meanwhile
follow the sound's loudness and bands (and name the nearest prompts); their first update after the
analysis ends switches the meaning on. An interrupted analysis resumes from its partial cache next
time (the cache's own rule).

:class:`InstantMeaning` (one per session) turns a target ``t`` into the instant edit's W+ direction at
strength 1, ``dw = InstantEditor.wplus_delta(normalize(t - ref), 1, beta)``, with ``ref`` the source
picture's own CLIP embedding (instant's default reference). That delta is linear in the strength, so
the session's ``source + alpha * dw`` (the page's α, applied at every frame) is exactly the instant
edit of the source toward ``t`` at strength α, with beta (the page's β) applied at the next update.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Callable

import torch

from ..errors import Cancelled
from ..jobs.run import Run


class _AnalysisRun(Run):
    """Progress of a background analysis, for the page and the terminal; cancelled by ``stop``."""

    def __init__(self, owner: "InstantAnalysis", device):
        super().__init__(device)
        self.owner = owner

    def status(self, message: str) -> None:
        self.owner.log(f"meaning: {message}")

    def progress(self, done, total, preview=None, text=None, terms=None):
        if (done, total) != self.owner.progress:
            self.owner.progress = (done, total)
            if total:
                self.owner.log(f"meaning: analysed {done}/{total} samples")

    def cancel_requested(self) -> bool:
        return self.owner.stopping.is_set()


class InstantAnalysis:
    """A generator's instant-edit directions for live sessions, from the cache or analysed in the background.

    ``start()`` begins (returns at once); ``state`` is "waiting", "analysing", "ready" or "failed";
    ``editor()`` the prepared :class:`~sgim_nodes.instant.InstantEditor` once ready (else None);
    ``provider()`` a new :class:`InstantMeaning` for a session (``LiveModels.meaning``). ``scope``: entered
    around the torch work (a host's device scope); ``directions``: given ones (no cache, no analysis).
    """

    def __init__(self, generator, clip, *, generator_file=None, cache=None, settings=None, directions=None,
                 scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 log: Callable[[str], None] | None = None):
        self.generator, self.clip = generator, clip
        self.generator_file, self.cache, self.settings = generator_file, cache, settings
        self.scope = scope
        self.log = log or (lambda message: None)
        self.state = "waiting"
        self.error: str | None = None
        self.progress = (0, 0)
        self.hit: bool | None = None
        self.stopping = threading.Event()
        self.done = threading.Event()
        self._directions = directions
        self._editor = None
        self._thread: threading.Thread | None = None

    def start(self) -> "InstantAnalysis":
        if self._thread is None:
            self.state = "analysing"
            self._thread = threading.Thread(target=self._work, name="sgim-live-analysis", daemon=True)
            self._thread.start()
        return self

    def _work(self) -> None:
        from ..instant import InstantEditor, analysis_cost, cached_directions

        try:
            with self.scope():
                directions, self.hit = self._directions, True
                if directions is None:
                    # a copy: the analysis switches its generator's modulation form while sessions render
                    work = copy.deepcopy(self.generator)
                    directions, self.hit = cached_directions(work, self.clip, generator_file=self.generator_file,
                                                             cache=self.cache, settings=self.settings,
                                                             run=_AnalysisRun(self, work.device))
                    del work
                    if not self.hit:
                        self.log(f"meaning: analysed for instant edits, {analysis_cost(directions)} (cached)")
                with torch.inference_mode(False):
                    self._editor = InstantEditor(self.generator, directions)
            self._directions = directions
            self.state = "ready"
            self.log("meaning: instant edits on" + (" (analysis from the cache)" if self.hit else ""))
        except Cancelled:
            self.state, self.error = "failed", "stopped"
        except Exception as exc:  # noqa: BLE001  (sessions go on reactive-only and the page says why)
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log(f"meaning: the instant-edit analysis failed ({self.error}); sessions follow loudness and "
                     "bands only")
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the analysis is ready or failed; True when ready."""
        self.done.wait(timeout)
        return self.state == "ready"

    def stop(self) -> None:
        self.stopping.set()

    def editor(self):
        return self._editor if self.state == "ready" else None

    def status(self) -> str:
        if self.state == "ready":
            return "instant"
        if self.state == "failed":
            return f"none (instant analysis failed: {self.error})"
        done, total = self.progress
        return f"instant (analysing {done}/{total}, reactive until then)" if total else \
            "instant (preparing the analysis, reactive until then)"

    def provider(self) -> "InstantMeaning":
        return InstantMeaning(self)


class InstantMeaning:
    """One session's meaning provider (see the module docstring)."""

    name = "instant"

    def __init__(self, analysis: InstantAnalysis):
        self.analysis = analysis
        self.reference: torch.Tensor | None = None

    def prepare(self, generator, clip, source: torch.Tensor) -> None:
        """The source picture's own CLIP embedding: instant's "source" reference (one render, once)."""
        if clip is None:
            return
        with torch.no_grad():
            image = generator.synthesis(source.to(next(iter(generator.parameters())).device), noise_mode="const")
            self.reference = clip.image_features(image).float()[0].detach()

    def status(self) -> str:
        return self.analysis.status() if self.reference is not None else "none (no CLIP model)"

    def direction(self, target: torch.Tensor, source: torch.Tensor, settings) -> torch.Tensor | None:
        editor = self.analysis.editor()
        if editor is None or self.reference is None:
            return None  # not analysed yet: keep what there is (nothing), reactive only
        device = editor.unit.device
        delta = target.float().to(device) - self.reference.to(device)
        norm = float(delta.norm())
        if norm < 1e-6:  # the sound asks for the source itself: no direction
            return torch.zeros_like(source[0])
        beta = getattr(settings, "beta", None)
        from ..instant.edit import DEFAULT_BETA

        dw, _ = editor.wplus_delta((delta / norm)[None], 1.0, DEFAULT_BETA if beta is None else beta)
        return dw[0].to(source)
