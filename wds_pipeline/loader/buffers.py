"""Memory the loader reuses: shared-memory batch buffers handed to the main process
(:class:`BatchBufferPool`), the slab of fixed-size slots for held samples
(:class:`SampleArena`)."""

from __future__ import annotations

import mmap
import sys
from typing import ClassVar

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


def small_page_array(count: int, dtype: type[np.generic]) -> np.ndarray:
    """A zeroed array on 4 KB pages: an anonymous mapping with transparent huge pages off
    (see SampleArena for why). The array keeps its mapping alive."""
    m = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(m, dtype=dtype, count=count)


class SampleArena:
    """Fixed-size int16 slots for held samples; a free list instead of malloc per sample.

    Backed by an anonymous mapping with huge pages disabled: with transparent huge pages
    set to "always", first-touch faults of a few hundred MB in 2 MB pages (compaction,
    zeroing) cost over a second per epoch on the benchmark VM; 4 KB pages cost ~50 ms.
    """

    def __init__(self, slots: int, width: int):
        self.width = width
        self.slots = slots
        self.data = small_page_array(slots * width, np.int16).reshape(slots, width)
        self.free = list(range(slots - 1, -1, -1))
        self.in_use = False  # an iteration holds samples in it (two live passes must not share it)

    def reset(self) -> None:
        self.free = list(range(self.slots - 1, -1, -1))

    def put(self, wave: np.ndarray) -> int:
        slot = self.free.pop()
        self.data[slot, : len(wave)] = wave
        return slot


class RecycledArrays:
    """Batch buffers of one dtype in this process, reused once nothing references them.

    Fresh memory per batch would cost a page fault per 4 KB of every batch, as in
    :class:`BatchBufferPool` (on the benchmark VM, 40-130 ms per 60 MB). Each buffer is a
    numpy array lent to torch with ``torch.from_numpy``: torch keeps one reference to the
    array for as long as any tensor or view of that storage lives, so an array that only
    the shelf references is free to reuse (a batch, or a row of it, that the caller keeps
    is never overwritten).

    The shelf is per process and dtype, shared by every loader in it: a loader built
    again (a new epoch's loader, a validation loader) reuses pages already touched instead
    of faulting in fresh ones; the reference count keeps loaders from sharing a live buffer.
    """

    SIZE = 6  # buffers kept per dtype; when all are in use a batch gets fresh memory
    # Bytes kept per dtype: a process that once read padded 15 s utterances (76 MB float32
    # buffers) would otherwise keep 6 of them resident for good. At least two buffers are
    # kept (the batch the loop holds and the next one), whatever their size.
    MAX_BYTES = 256 << 20
    _shelves: ClassVar[dict[np.dtype, list[np.ndarray]]] = {}

    def __init__(self, dtype: type[np.generic]) -> None:
        self.dtype = dtype
        self.arrays = self._shelves.setdefault(np.dtype(dtype), [])

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        numel = 1
        for d in shape:
            numel *= d
        arrays = self.arrays
        # Two references: the shelf's and getrefcount's argument.
        free = [i for i in range(len(arrays)) if sys.getrefcount(arrays[i]) == 2]
        fits = [i for i in free if arrays[i].size >= numel]
        if fits:
            arr = arrays[min(fits, key=lambda i: arrays[i].size)]
        else:
            arr = small_page_array(numel + numel // 4, self.dtype)  # headroom for varying widths
            if free:
                arrays[free[0]] = arr  # replaces a free buffer that is too small
            elif len(arrays) < self.SIZE:
                arrays.append(arr)
        if len(arrays) > 2:
            self._trim(keep=arr)
        return torch.from_numpy(arr[:numel]).view(shape)

    def _trim(self, keep: np.ndarray) -> None:
        """Drop free buffers (smallest first) while the shelf holds more than MAX_BYTES in
        over two buffers; ``keep`` (just taken) stays. A buffer in use is never dropped."""
        arrays = self.arrays
        while len(arrays) > 2 and sum(a.nbytes for a in arrays) > self.MAX_BYTES:
            free = [i for i in range(len(arrays))
                    if arrays[i] is not keep and sys.getrefcount(arrays[i]) == 2]
            if not free:
                return
            del arrays[min(free, key=lambda i: arrays[i].nbytes)]
