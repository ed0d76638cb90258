"""The host's policies for a job, decided in one place: progress and previews, cancel, allocator, device.

Every long-running job takes one ``Run``. Library code never prints progress, polls a host for
cancellation or touches glibc's allocator settings by itself; it asks its run:

    run.status("loading generator.pkl")        a line before slow work
    run.progress(done, total, preview=images, terms={"clip": 0.3}, text="keyframe 2/5")
                                                after each unit of work (preview: [B, 3, H, W] in [-1, 1]
                                                or None; terms: loss terms to show; text: a short line)
    run.check_cancel()                          raises Cancelled when the host asked to stop
    with run.cpu_memory():                      the allocator policy around a loop (see sgim_nodes.memory)

The command line uses :class:`TqdmRun` (its process is ours, so it keeps freed memory mapped between
steps: faster). Inside ComfyUI, ``comfy_nodes.host.ComfyRun`` never changes the process-wide
allocator, reports to ComfyUI's progress bar with previews, and polls ComfyUI's interrupt flag.
Tests use :class:`QuietRun`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable

import torch

from ..device import resolve_device
from ..errors import Cancelled


class Run:
    """Base run: silent, never cancelled, leaves the allocator alone. Subclasses override the hooks."""

    #: keep freed CPU memory mapped during loops (glibc mallopt). Only a process we own may do this.
    reuse_cpu_memory: bool = False

    def __init__(self, device: str | torch.device | None = "auto"):
        self.device = resolve_device(device)

    # hooks -------------------------------------------------------------------------------------
    def status(self, message: str) -> None:
        """One line said before slow work (loading, analysing); silent by default."""

    def progress(self, done: int, total: int, preview: torch.Tensor | None = None, text: str | None = None,
                 terms: dict[str, float] | None = None) -> None:
        """``done`` of ``total`` units finished; ``preview`` images in [-1, 1] when the job has some,
        ``terms`` the loss terms of an optimiser step, ``text`` what the work is at (e.g. "keyframe 2/5")."""

    def cancel_requested(self) -> bool:
        """True when the host asked the job to stop."""
        return False

    # policy helpers, not meant to be overridden --------------------------------------------------
    def check_cancel(self) -> None:
        if self.cancel_requested():
            raise Cancelled("cancelled")

    def cpu_memory(self):
        """The allocator policy around a loop that allocates the same large tensors every step."""
        if not self.reuse_cpu_memory:
            return contextlib.nullcontext()
        from ..memory import reuse_freed_memory

        return reuse_freed_memory(self.device.type == "cpu")

    def wants_previews(self) -> bool:
        """Whether rendering previews is worth it (a host that shows none says False)."""
        return False


class QuietRun(Run):
    """For tests and library use: silent; optionally cancelled after ``cancel_after`` progress calls."""

    def __init__(self, device: str | torch.device | None = "cpu", cancel_after: int | None = None,
                 on_progress: Callable[[int, int], None] | None = None):
        super().__init__(device)
        self.cancel_after = cancel_after
        self.on_progress = on_progress
        self.calls = 0

    def progress(self, done, total, preview=None, text=None, terms=None):
        self.calls += 1
        if self.on_progress is not None:
            self.on_progress(done, total)

    def cancel_requested(self) -> bool:
        return self.cancel_after is not None and self.calls >= self.cancel_after


class TqdmRun(Run):
    """The command line: status lines and a tqdm bar on stderr, Ctrl+C cancels, freed memory kept mapped."""

    reuse_cpu_memory = True

    def __init__(self, device: str | torch.device | None = "auto", *, lean_memory: bool = False,
                 show_progress: bool = True, unit: str = "step"):
        super().__init__(device)
        self.reuse_cpu_memory = not lean_memory
        self.show_progress = show_progress
        self.unit = unit
        self._bar = None

    def status(self, message: str) -> None:
        print(f"[sgim] {message}", file=sys.stderr, flush=True)

    def progress(self, done, total, preview=None, text=None, terms=None):
        if not self.show_progress:
            return
        if self._bar is None or self._bar.total != total:
            self.close()
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self._bar.n = done
        if text:
            self._bar.set_description_str(text, refresh=False)
        if terms:
            self._bar.set_postfix_str(", ".join(f"{k}={v:.4f}" for k, v in terms.items() if k != "total"),
                                      refresh=False)
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
