"""Multi-process training under torchrun: process group set-up from the environment,
per-rank RNG gathering for checkpoints, and a check that every rank ends with the same
weights."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``): NCCL on CUDA, gloo on the CPU. A single process (no
    ``WORLD_SIZE`` or 1) runs without a process group."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, initialized_here=True)


def gather(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a collective: all ranks call it at the same point)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model: nn.Module) -> str:
    """sha256 over the parameters (buffers such as BatchNorm statistics are per rank under
    DDP between broadcasts; :func:`sync_buffers` makes them rank 0's)."""
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same_weights(info: DistInfo, model: nn.Module) -> str:
    """The weights' sha256, after checking every rank holds the same; raises if not.
    Single process: nothing to compare, returns ""."""
    if not info.enabled:
        return ""
    digests = gather(info, weights_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}; gradients were not "
                           "synchronised (is every rank running the same number of steps?)")
    return digests[0]


def sync_buffers(info: DistInfo, model: nn.Module) -> None:
    """Give every rank rank 0's buffers. DDP broadcasts them before each forward, and the
    forward then updates each rank's copy from its own batch, so after the last step
    BatchNorm statistics differ by rank; rank 0's are the ones its checkpoints hold."""
    if info.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)
