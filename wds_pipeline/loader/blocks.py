"""Block I/O: a span of whole samples read as one buffer (mmap for real files, one reused
buffer for streams)."""

from __future__ import annotations

import contextlib
import mmap
import os
import zlib
from collections.abc import Iterator
from typing import Any

from .. import format as fmt
from .plan import WorkerPlan

READ_BLOCK = 8 << 20  # bytes per read call: large sequential reads for FUSE/GCS
# Bytes per read call from a shard still downloading: a block waits for all its bytes, so
# small blocks let the first samples go while the rest of the shard is on its way.
PARTIAL_READ_BLOCK = 1 << 20


class BlockReader:
    """Reads a span of whole samples as one buffer, with as few copies as possible.

    Real files (local shards, cached shards) are memory-mapped for the span and
    unmapped afterwards: the sample bytes are copied once, out of the page cache,
    like the raw-tar ceiling does. Streams (remote, FUSE) are read into one reused
    buffer, avoiding a fresh multi-megabyte allocation (and its page faults) per block.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @contextlib.contextmanager
    def read(self, f: Any, start: int, want: int, source: str) -> Iterator[memoryview]:
        fd = _fileno(f)
        if fd is not None:
            size = os.fstat(fd).st_size
            end = size if want < 0 else start + want
            if end > size:
                raise fmt.ShardFormatError(
                    f"{source}: truncated: {size} bytes on disk, the index needs {end}; "
                    "the shard is incomplete or does not match its index"
                )
            aligned = start - start % mmap.ALLOCATIONGRANULARITY
            m = mmap.mmap(fd, end - aligned, offset=aligned, prot=mmap.PROT_READ,
                          flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
            view = memoryview(m)[start - aligned :]
            try:
                yield view
            finally:
                view.release()
                try:
                    m.close()
                except BufferError:
                    pass  # a view escaped; the mapping is freed when it is collected
            return
        if want < 0:
            data = f.read()
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
        if got < want:
            raise fmt.ShardFormatError(
                f"{source}: truncated: expected {want} bytes at byte {start}, got {got}; "
                "the shard is incomplete or does not match its index"
            )
        try:
            yield view
        finally:
            view.release()


def check_sample_crcs(buf: memoryview, start: int, offsets: tuple[int, ...],
                      crcs: tuple[int, ...], j: int, k: int, source: str) -> None:
    """Samples [j, k) of a shard, read into ``buf`` from byte ``start``, against their
    crc32s from the index; the first mismatch raises, naming the sample."""
    for idx in range(j, k):
        lo = offsets[idx] - start
        hi = offsets[idx + 1] - start if idx + 1 < len(offsets) else fmt.members_end(buf, lo, source)
        got = zlib.crc32(buf[lo:hi])
        if got != crcs[idx]:
            raise fmt.ShardFormatError(
                f"{source}: sample {idx} (bytes {offsets[idx]}-{start + hi}) has crc32 {got}, "
                f"the index says {crcs[idx]}: the shard's bytes differ from those indexed "
                "(damaged in transfer or on the storage, or changed since the build); delete "
                "its cached copy and read it again, or rebuild the shard and its index "
                "(wds-pipeline verify checks every shard)"
            )


def _fileno(f) -> int | None:
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def sequential_runs(wp: WorkerPlan, first: int, last: int) -> list[tuple[int, int, int, int]]:
    """Group read positions [first, last] into (slot, start, stop, first_pos) sequential runs."""
    runs: list[tuple[int, int, int, int]] = []
    slots, index = wp.read_slots, wp.read_index
    pos = first
    while pos <= last:
        slot = int(slots[pos])
        a = int(index[pos])
        end = pos + 1
        while end <= last and slots[end] == slot and index[end] == index[end - 1] + 1:
            end += 1
        runs.append((slot, a, a + (end - pos), pos))
        pos = end
    return runs
