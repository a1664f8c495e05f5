"""Memory the worker reuses: shared-memory batch buffers handed to the main process
(:class:`BatchBufferPool`) and the slab of fixed-size slots for held samples
(:class:`SampleArena`)."""

from __future__ import annotations

import mmap

import numpy as np
import torch

BUFFERS_PER_WORKER = 8


def _new_shared(numel: int, dtype: torch.dtype) -> torch.Tensor:
    # Allocated in shared memory directly: the DataLoader then sends a handle instead of
    # copying the batch into shared memory (the trick torch's default_collate uses).
    elem = torch.empty(0, dtype=dtype)
    return elem.new(elem._typed_storage()._new_shared(numel, device="cpu"))


class BatchBufferPool:
    """Recycled shared-memory batch buffers of one DataLoader worker.

    Sending each batch through a fresh shared-memory segment (torch's default) costs a
    segment, a mapping and a page fault per 4 KB on both sides: on 2 cores that capped
    a zero-work pipeline at ~16k clips/s of 3 s; recycled buffers move 60k+. A buffer is
    reused only once the main process has seen that no tensor references it any more
    (``flags[slot]`` back to 0, set by ``StreamingLoader`` from a storage weak reference),
    so a batch the training loop keeps is never overwritten. When every buffer is still
    in use the worker allocates a fresh one, as torch would: it never waits.
    """

    def __init__(self, flags: torch.Tensor, worker_id: int):
        self.flags = flags.numpy()
        self.base = worker_id * BUFFERS_PER_WORKER
        self.buffers: list[torch.Tensor | None] = [None] * BUFFERS_PER_WORKER

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        numel = 1
        for d in shape:
            numel *= d
        for k in range(BUFFERS_PER_WORKER):
            slot = self.base + k
            if self.flags[slot] != 0:
                continue
            buf = self.buffers[k]
            if buf is None or buf.dtype != dtype or buf.numel() < numel:
                buf = self.buffers[k] = _new_shared(numel + numel // 4, dtype)  # headroom for bucketing
            self.flags[slot] = 1
            return buf[:numel].view(shape), slot
        return _new_shared(numel, dtype).view(shape), -1


class SampleArena:
    """Fixed-size int16 slots for held samples; a free list instead of malloc per sample.

    Backed by an anonymous mapping with huge pages disabled: with transparent huge pages
    set to "always", first-touch faults of a few hundred MB in 2 MB pages (compaction,
    zeroing) cost over a second per epoch on the benchmark VM; 4 KB pages cost ~50 ms.
    """

    def __init__(self, slots: int, width: int):
        self.width = width
        self.slots = slots
        self._map = mmap.mmap(-1, max(1, slots * width * 2))
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            self._map.madvise(mmap.MADV_NOHUGEPAGE)
        self.data = np.frombuffer(self._map, dtype=np.int16, count=slots * width).reshape(slots, width)
        self.free = list(range(slots - 1, -1, -1))
        self.in_use = False  # an iteration holds samples in it (two live passes must not share it)

    def reset(self) -> None:
        self.free = list(range(self.slots - 1, -1, -1))

    def put(self, wave: np.ndarray) -> int:
        slot = self.free.pop()
        self.data[slot, : len(wave)] = wave
        return slot
