"""Choosing a torch device: one place, so that no module hard-codes ``.cuda()``."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` picks CUDA, then Apple MPS, then CPU; anything else goes to torch."""
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    from .errors import ParameterError

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParameterError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}",
                             parameter="device") from exc
    # Checked here, in one line, rather than as a driver error deep inside the first tensor move.
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ParameterError(f"device: {device!r} asks for CUDA, but no CUDA GPU is available here "
                                 "(use 'cpu' or 'auto')", parameter="device")
        if resolved.index is not None and resolved.index >= count:
            raise ParameterError(f"device: {device!r} does not exist; this machine has {count} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{count - 1}", parameter="device")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ParameterError(f"device: {device!r} asks for Apple MPS, which is not available here "
                                 "(use 'cpu' or 'auto')", parameter="device")
    return resolved
