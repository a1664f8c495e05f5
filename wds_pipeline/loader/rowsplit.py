"""A batch's rows written by several threads at once, in a process with no DataLoader
workers (``num_workers=0``), where the batch is built on the training loop's own time.

There the float32 gather (the int16 -> float32 cast, the scale and the zero padding of every
row) is most of a fresh epoch's time, and nothing overlaps it: a float32 batch is twice
int16's bytes. numpy releases the GIL in those copies, so the rows split between the calling
thread and helper threads run on the process's other cores. Inside DataLoader workers (one
intra-op thread each, set by torch) everything stays on the one thread: workers are already
one per core.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch.utils.data import get_worker_info

# Below this many bytes of output per thread a hand-off (~20-50 us) costs more than it saves.
MIN_BYTES_PER_THREAD = 1 << 20


def usable_cores() -> int:
    """CPU cores this process may run on (all of them where affinity is unknown, macOS)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class RowSplitter:
    """``run(fill, rows, row_bytes)``: ``fill(lo, hi)`` over ``[0, rows)``, in contiguous
    parts on up to ``torch.get_num_threads()`` threads (the caller's included; one part per
    ``MIN_BYTES_PER_THREAD`` at most). The parts write disjoint rows, so the result is the
    same bytes in any order. One per process (``SPLITTER``), so loaders built again reuse its
    threads; a forked copy starts its own on first use (the pid check)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pid = -1

    def threads(self, rows: int, row_bytes: int) -> int:
        """Threads for ``rows`` rows of ``row_bytes`` each: 1 in a DataLoader worker, else
        at most torch's intra-op thread count (the user's ``torch.set_num_threads``) and
        the cores this process may run on."""
        if get_worker_info() is not None:
            return 1
        return max(1, min(torch.get_num_threads(), usable_cores(), rows, rows * row_bytes // MIN_BYTES_PER_THREAD))

    def helpers(self) -> int:
        """Helper threads a large batch gets in this process (see :meth:`threads`)."""
        return self.threads(1 << 16, MIN_BYTES_PER_THREAD) - 1

    def run(self, fill: Callable[[int, int], None], rows: int, row_bytes: int) -> None:
        parts = self.threads(rows, row_bytes)
        if parts == 1:
            fill(0, rows)
            return
        bounds = [rows * k // parts for k in range(parts + 1)]
        pool = self._executor(parts - 1)
        # The caller writes the first part; the helpers the others, at the same time.
        futures: list[Future[None]] = [pool.submit(fill, bounds[k], bounds[k + 1]) for k in range(1, parts)]
        try:
            fill(bounds[0], bounds[1])
        finally:
            for f in futures:
                f.result()  # waits for every part (and raises a helper's error here)

    def _executor(self, helpers: int) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None or self._pid != os.getpid() or pool._max_workers < helpers:  # noqa: SLF001
            if pool is not None and self._pid == os.getpid():
                pool.shutdown(wait=False)
            # Idle helpers block on the pool's queue: no CPU between batches.
            pool = self._pool = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="wds-rows")
            self._pid = os.getpid()
        return pool


SPLITTER = RowSplitter()
