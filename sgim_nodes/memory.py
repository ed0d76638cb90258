"""Keep freed CPU memory for reuse while a loop allocates the same large tensors every step.

Why: glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and returns them with ``munmap`` when freed. A 1024 px StyleGAN layer output is 134 MB, so every
optimisation step asks the kernel for new zeroed pages for each of them: one page fault per 4 KB.
Measured on the 2-core CPU of ``benchmarks/bench_optimize.py`` this page-faulting was about half the
time of a generator forward+backward at 1024 px, and the reason a batch of 4 ran slower per edit
than a batch of 1 (its activations are all above the threshold).

:func:`reuse_freed_memory` tells glibc, for the duration of the block, to serve large blocks from its
heap and to keep freed memory there (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = -1``). The second
step then finds the first step's pages already mapped. On exit it sets the thresholds a long-running
PyTorch process converges to anyway (glibc raises its mmap threshold to 32 MB after the first large
free) and calls ``malloc_trim(0)`` so the memory goes back to the system. Elsewhere than glibc
(macOS, Windows, musl) it does nothing. CUDA memory has its own caching allocator and is not affected.

Where it is used: the command line (the process is ours), through its run
(``sgim_nodes.jobs.run.TqdmRun.cpu_memory``): jobs ask their run, nothing else decides. Not inside
ComfyUI: the settings are process-wide, glibc has no getter to read them back, and any mallopt of a
threshold switches glibc's dynamic threshold off for good, so the previous state cannot be restored
exactly. ComfyUI's run therefore never asks (tests/test_memory.py checks with glibc's own behaviour
that a run leaves the settings as they were, and that this hint does not; tests/test_front_ends.py
that no node calls it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

_NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"
_AFTER_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_AFTER_TRIM_THRESHOLD = 2 * _AFTER_MMAP_THRESHOLD  # glibc keeps trim = 2 x mmap threshold
_DEFAULT_MMAP_MAX = 65536

_lock = threading.Lock()
_depth = 0


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):  # not glibc (musl has no gnu_get_libc_version)
        return None


_LIBC = _glibc()


def available() -> bool:
    """True where the hint has an effect (Linux with glibc)."""
    return _LIBC is not None


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True):
    """Within the block, freed large CPU blocks stay mapped for the next allocation (see module doc).

    Re-entrant and thread-safe: nested or concurrent blocks share one setting, restored when the last
    one exits.
    """
    global _depth
    if not enabled or _LIBC is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
