"""Multi-process training under torchrun: process group set-up from the environment,
per-rank RNG gathering for checkpoints, and a check that every rank ends with the same
weights."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
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


def _tensor_digests(model: nn.Module) -> dict[str, str]:
    """sha256 of each parameter and buffer, by its state-dict name: buffers (BatchNorm
    statistics, counters) are saved and resumed with the weights, so they count too."""
    out = {}
    named = [*model.named_parameters(), *model.named_buffers()]
    for name, t in sorted(named, key=lambda kv: kv[0]):
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out[name] = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + raw).hexdigest()
    return out


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes and bytes). Under DDP
    buffers differ by rank after the last forward until :func:`sync_buffers`."""
    h = hashlib.sha256()
    for name, d in _tensor_digests(model).items():
        h.update(f"{name}\0{d}\0".encode())
    return h.hexdigest()


def check_same_weights(info: DistInfo, model: nn.Module) -> str:
    """The sha256 of the weights and buffers, after checking every rank holds the same;
    raises naming the tensors that differ if not. Single process: returns ""."""
    if not info.enabled:
        return ""
    mine = _tensor_digests(model)
    everyone = gather(info, mine)
    differ = sorted(n for n in set().union(*everyone) if len({d.get(n) for d in everyone}) > 1)
    if differ:
        buffers = {n for n, _ in model.named_buffers()}
        names = ", ".join(f"{n} ({'buffer' if n in buffers else 'parameter'})" for n in differ[:8])
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise RuntimeError(f"ranks ended with different weights: {names}{more} differ between "
                           f"the {info.world_size} ranks; gradients or buffers were not "
                           "synchronised (is every rank running the same number of steps?)")
    return weights_digest(model)


def run_on_main(info: DistInfo, fn: Callable[[], object]) -> None:
    """Run ``fn`` on rank 0 only; when it raises, every rank raises that error (a
    collective: all ranks call it at the same point), so that no rank waits in a later
    collective for a rank 0 that gave up."""
    err: BaseException | None = None
    if info.is_main:
        try:
            fn()
        except Exception as e:
            err = e
    err = broadcast(info, err)
    if err is not None:
        raise err


def sync_buffers(info: DistInfo, model: nn.Module) -> None:
    """Give every rank rank 0's buffers. DDP broadcasts them before each forward, and the
    forward then updates each rank's copy from its own batch, so after the last step
    BatchNorm statistics differ by rank; rank 0's are the ones its checkpoints hold."""
    if info.enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)
