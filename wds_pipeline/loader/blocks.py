"""Block I/O: a span of whole samples read from a stream into one reused buffer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import format as fmt
from ..format.checksum import crc32
from .plan import WorkerPlan
from .stages import StageClock

READ_BLOCK = 8 << 20  # bytes per read call: large sequential reads for FUSE/GCS
# Bytes per read call from a shard still downloading: a block waits for all its bytes, so
# small blocks let the first samples go while the rest of the shard is on its way.
PARTIAL_READ_BLOCK = 1 << 20


class BlockReader:
    """Reads a span of whole samples from a stream (remote, FUSE, a shard still downloading)
    into one reused buffer, avoiding a fresh multi-megabyte allocation (and its page faults)
    per block. Whole files on this machine are mapped instead (see ``mapped.py``)."""

    def __init__(self, clock: StageClock | None = None) -> None:
        self._buf = bytearray()
        self.clock = clock  # the seconds blocked in reads go to its READ stage (one pair of clock reads per block)

    @contextlib.contextmanager
    def read(self, f: Any, start: int, want: int, source: str) -> Iterator[memoryview]:
        t0 = time.perf_counter()
        if want < 0:
            data = f.read()
            if self.clock is not None:
                self.clock.add_read(time.perf_counter() - t0)
            yield memoryview(data)
            return
        if len(self._buf) < want:
            self._buf = bytearray(want)
        view = memoryview(self._buf)[:want]
        got = 0
        while got < want:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        if self.clock is not None:
            self.clock.add_read(time.perf_counter() - t0)
        if got < want:
            raise fmt.ShardFormatError(
                f"{source}: truncated: expected {want} bytes at byte {start}, got {got}; "
                "the shard is incomplete or does not match its index"
            )
        try:
            yield view
        finally:
            view.release()


def sample_blocks(offsets: np.ndarray, ends: np.ndarray, a: int, b: int,
                  span: int) -> Iterator[tuple[int, int]]:
    """Samples [a, b) in blocks of whole samples, as a stream reads them: ``(j, k)`` per
    block, the samples starting at ``offsets[j]`` whose bytes (up to ``ends``) fit in
    ``span`` bytes, and at least one sample per block however large it is."""
    j = a
    while j < b:
        k = int(np.searchsorted(ends, offsets[j] + span, side="right"))
        k = min(max(k, j + 1), b)
        yield j, k
        j = k


def check_sample_crcs(buf: memoryview, start: int, offsets: np.ndarray,
                      crcs: np.ndarray, j: int, k: int, source: str) -> None:
    """Samples [j, k) of a shard, read into ``buf`` from byte ``start``, against their
    crc32s from the index; the first mismatch raises, naming the sample."""
    for idx in range(j, k):
        lo = offsets[idx] - start
        hi = offsets[idx + 1] - start if idx + 1 < len(offsets) else fmt.members_end(buf, lo, source)
        got = crc32(buf[lo:hi])
        if got != crcs[idx]:
            raise fmt.ShardFormatError(
                f"{source}: sample {idx} (bytes {offsets[idx]}-{start + hi}) has crc32 {got}, "
                f"the index says {crcs[idx]}: the shard's bytes differ from those indexed "
                "(damaged in transfer or on the storage, or changed since the build); delete "
                "its cached copy and read it again, or rebuild the shard and its index "
                "(wds-pipeline verify checks every shard)"
            )


def sequential_runs(wp: WorkerPlan, first: int, last: int) -> list[tuple[int, int, int, int]]:
    """Group read positions [first, last] into (slot, start, stop, first_pos) sequential runs."""
    slots, index = wp.read_slots[first : last + 1], wp.read_index[first : last + 1]
    # A run breaks where the slot changes or the next sample is not the following one.
    cut = np.flatnonzero((slots[1:] != slots[:-1]) | (index[1:] != index[:-1] + 1)) + 1
    lo = np.concatenate([[0], cut]).astype(np.int64)
    hi = np.concatenate([cut, [len(slots)]]).astype(np.int64)
    return [(s, a, a + n, first + p) for s, a, n, p in
            zip(slots[lo].tolist(), index[lo].tolist(), (hi - lo).tolist(), lo.tolist())]
