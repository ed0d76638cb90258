"""Device and autocast options shared by the benchmarks (``--device cpu|cuda``, ``--autocast none|bf16|fp16``).

The drivers pass them to their worker subprocesses through the environment (``SGIM_BENCH_DEVICE``,
``SGIM_BENCH_AUTOCAST``), so every worker's own command line stays as it was. Timings on CUDA
synchronise first (kernels run asynchronously); peak memory there is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import os

DEVICE_ENV, AUTOCAST_ENV = "SGIM_BENCH_DEVICE", "SGIM_BENCH_AUTOCAST"
AUTOCAST_CHOICES = ("none", "bf16", "fp16")


def add_device_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (sgim_nodes.device.resolve_device)")
    parser.add_argument("--autocast", default="none", choices=AUTOCAST_CHOICES,
                        help="mixed precision of the timed passes (CUDA only; none = float32)")


def export(args) -> None:
    """Hand the driver's --device / --autocast on to the worker subprocesses it spawns."""
    if args.autocast != "none" and not str(args.device).startswith(("cuda", "auto")):
        raise SystemExit(f"--autocast {args.autocast} is offered on CUDA only (--device {args.device})")
    os.environ[DEVICE_ENV] = str(args.device)
    os.environ[AUTOCAST_ENV] = args.autocast


def worker_device():
    from sgim_nodes.device import resolve_device

    return resolve_device(os.environ.get(DEVICE_ENV, "cpu"))


def worker_autocast() -> str | None:
    value = os.environ.get(AUTOCAST_ENV, "none")
    return None if value == "none" else value


def autocast_context(device, autocast: str | None):
    """torch.autocast for code paths without an autocast option of their own (a no-op for None)."""
    import torch

    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[autocast])


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_gb(device) -> float | None:
    """Peak CUDA memory allocated since the last reset_peak, in GB (None on other devices)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 1024 ** 3 if device.type == "cuda" else None


def describe(device, autocast: str | None) -> str:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"{device} ({name}), {'float32' if autocast is None else autocast + ' autocast'}"
