"""Several processes on one music video (``torchrun``): who does which part, and the few messages they swap.

Started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ... in the
environment), the process group is the training code's (:func:`sgim_nodes.train.loop.init_distributed`):
NCCL on CUDA devices, gloo on the CPU. Without torchrun, :class:`Ranks` is one process and every
collective is a no-op, so the same code path renders in one process or many.

Only small things travel between processes: keyframe codes (``all_gather_object``) and, when the
ranks do not share a file system (several nodes), the encoded segments rank 0 cannot see, as byte
tensors (:meth:`Ranks.send_file` / :meth:`Ranks.receive_file`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch

# Keyframe chains run for minutes while other ranks wait at a collective: far longer than gloo's
# and NCCL's default 30-minute timeout allows for long tracks.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> list[int]:
        """This rank's items of ``count`` (contiguous blocks, the first ranks take one more)."""
        base, extra = divmod(count, self.world_size)
        first = self.rank * base + min(self.rank, extra)
        return list(range(first, first + base + (1 if self.rank < extra else 0)))

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj, src: int = 0):
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def _tensor_device(self) -> torch.device:
        import torch.distributed as dist

        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def send_file(self, path: Path, dst: int = 0) -> None:
        import torch.distributed as dist

        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        device = self._tensor_device()
        dist.send(torch.tensor([data.numel()], dtype=torch.int64, device=device), dst=dst)
        dist.send(data.to(device), dst=dst)

    def receive_file(self, path: Path, src: int) -> None:
        import torch.distributed as dist

        from ..fileio import atomic_path

        device = self._tensor_device()
        size = torch.zeros(1, dtype=torch.int64, device=device)
        dist.recv(size, src=src)
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        dist.recv(data, src=src)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data.cpu().numpy().tobytes())

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def ranks_from_environment(device: str | torch.device | None = "auto") -> Ranks:
    """The process group torchrun describes (one process without it); CUDA ranks get their local GPU."""
    from ..device import resolve_device

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks(device=resolve_device(device))
    import torch.distributed as dist

    if not dist.is_initialized():  # the training code's setup, with a timeout fit for long keyframe chains
        backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    from ..train.loop import init_distributed

    info, resolved = init_distributed(str(device))
    return Ranks(rank=info.rank, world_size=info.world_size, device=resolved)
