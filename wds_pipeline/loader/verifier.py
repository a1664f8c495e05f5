"""Checks of mapped samples before they are gathered: the file still holds their bytes, and
those bytes match the index's crc32s.

A local shard is read through a memory map (``mapped.py``), never through a stream that
checks what it reads, so a shard overwritten in place or replaced by another file would
otherwise reach the model unnoticed, and a file truncated under the mapping would kill
the process with SIGBUS at the first page past its new end. Each sample is checked the
first time a process gathers it (``SampleTable.verified``; a rewritten file has a new stamp,
hence a new table and new checks), against the file's size taken once per batch.

The crc32s are read by a daemon thread (:class:`RangeChecks`), queued as a shard's run is
mapped, before its headers are parsed (the spans come from the index's offsets; only the
shard's last sample waits for the locate, which gives its end): one crc32 over the bytes of
up to ``CHUNK_BYTES`` of consecutive samples, compared with their per-sample crc32s combined (``crc32_combine``). ISA-L's crc32
drops the GIL for the whole chunk, so the thread needs the GIL ~100 times a fresh epoch of
3 s clips, not once per sample: checked one sample at a time, it waited out the GIL switch
interval after each while the loader's thread ran Python, and a fresh ``num_workers=0`` epoch
was 1.24x slower than checking inline. The gather waits for a chunk still queued (on the
benchmark VM the thread hashes a fresh mapping at ~10 GB/s, the float32 gather reads its
int16 at ~3.4); a chunk that does not match, or any error, leaves its samples unverified,
and the gather checks each of them itself and names the damage.

Measured against checking each sample as its batch is listed (split across the gather's
threads), fresh loaders interleaved in one process, 2 cores: epoch 1 of 4,000 3 s clips
without workers 0.87x (paired median of 20), int16 output 0.83x; 2,000 1-15 s utterances
1.01x (the gather keeps both cores busy there), int16 0.87x. Beside as many workers as
cores the thread only competes with them (utterances, 2 workers: 1.04x in one process,
0.885x the rate in ``peers.py --baseline``), so there the dataset leaves it off
(``ShardStreamDataset._range_checks``).

Queued before the locate rather than after it, the thread hashes (and faults in) a run's
pages on the other core while the loader's thread parses its headers, instead of beside the
gather's copies: fresh loaders interleaved on a 2-core AMD EPYC VM, paired medians, epoch 1
of the 3 s clips 0.830x (16 pairs, every pair faster), int16 output 0.906x; the 1-15 s
utterances 0.955x; epoch 2 (nothing left to check) 0.98-1.01x.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from ..format.checksum import crc32, crc32_combine
from .daemon import DaemonQueue
from .mapped import MappedShard, SampleTable
from .shards import ShardEntry

# Bytes of consecutive samples per crc32 call of the thread: ~0.3 ms of hashing, so a
# gather that waits for a chunk waits little, and few enough calls that the GIL hand-offs
# between them cost nothing measurable.
CHUNK_BYTES = 4 << 20

# One chunk: (shard, first sample, end sample, first byte, end byte, the samples' crc32s
# from the index, their byte lengths).
Job = tuple[MappedShard, int, int, int, int, list[int], list[int]]


def mapped_problem(m: MappedShard, entry: ShardEntry, idx: int, size: int) -> str | None:
    """Why sample ``idx`` of a mapped shard whose file is ``size`` bytes now must not be
    gathered (None: it may): its bytes are no longer all in the file (truncated since it
    was mapped), or, the first time this process gathers it, they do not match its crc32."""
    end = m.end(entry.offsets, idx)
    if end > size:
        return (
            f"{entry.url}: truncated while being read: {size} bytes on disk now, {m.size} "
            f"when it was opened, and sample {idx} needs bytes up to {end}; the shard was "
            "cut short or is being rewritten: restore it, or rebuild it and its index"
        )
    if m.table.verified[idx]:
        return None
    if len(entry.crc32) == 0:  # an index without per-sample crc32s: nothing to check against
        m.table.verified[idx] = 1
        return None
    return m.crc_problem(entry.offsets, entry.crc32, idx)


class RangeChecks:
    """Hands the crc32 checks of located runs of mapped samples to the process's verifier
    thread (``_JOBS``), a chunk of consecutive samples per call; :meth:`wait` until a
    sample's chunk is done."""

    def __init__(self, table: Sequence[ShardEntry]) -> None:
        self.table = table

    def submit(self, m: MappedShard, e: int, a: int, b: int) -> None:
        """Check samples [a, b) of shard-table entry ``e`` (mapped as ``m``) on the thread:
        those that no check has passed and none has been queued for. Their spans come from
        the index's offsets, so before the locate too, except the shard's last sample's:
        its end is its last member's, queued only once it is located. Nothing when the
        index has no crc32s or no ``crc32_combine`` is at hand (then each sample is checked
        as it is gathered)."""
        entry = self.table[e]
        if crc32_combine is None or len(entry.crc32) == 0:
            return
        t = _own_pending(m)
        if b == len(entry.offsets) and b > a and not t.located[b - 1]:
            b -= 1
        if b <= a:
            return
        todo = (np.frombuffer(t.verified, dtype=np.uint8)[a:b] == 0) & (np.frombuffer(t.pending, dtype=np.uint8)[a:b] == 0)
        if not todo.any():
            return
        offsets = np.asarray(entry.offsets[a : b + 1], dtype=np.int64)
        ends = offsets[1:] if b < len(entry.offsets) else np.append(offsets[1:], m.end(entry.offsets, b - 1))
        starts = offsets[: b - a]
        # Chunks: consecutive samples to check, cut where one is not to check or where the
        # bytes so far pass a multiple of CHUNK_BYTES.
        cum = np.cumsum(ends - starts)
        cut = np.flatnonzero((np.diff(todo.astype(np.int8)) != 0)
                             | (np.diff(cum // CHUNK_BYTES) != 0)) + 1
        bounds = np.concatenate(([0], cut, [b - a])).tolist()
        crcs = entry.crc32[a:b].tolist()
        lens = (ends - starts).tolist()
        pending = t.pending
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if not todo[lo]:
                continue
            pending[a + lo : a + hi] = b"\x01" * (hi - lo)
            _JOBS.put((m, a + lo, a + hi, int(starts[lo]), int(ends[hi - 1]), crcs[lo:hi], lens[lo:hi]))

    def wait(self, m: MappedShard, idx: int) -> None:
        """Until sample ``idx``'s chunk is checked (passed or not: see ``verified``)."""
        cond = _condition()
        t = _own_pending(m)
        with cond:
            while t.pending[idx]:
                cond.wait()


def _own_pending(m: MappedShard) -> SampleTable:
    """``m``'s table, its queued flags cleared when another process queued them (a table
    copied into a forked worker): no thread here would ever clear those."""
    t = m.table
    if t.pending_pid != os.getpid():
        t.pending[:] = bytes(t.n)
        t.pending_pid = os.getpid()
    return t


def _check_chunk(job: Job) -> None:
    m, j, k, start, end, crcs, lens = job
    ok = False
    try:
        # Never a page past the file's end (a SIGBUS): the gather names a truncation.
        if end <= m.file_size():
            with m.view[start:end] as chunk:
                got = crc32(chunk)
            want = crcs[0]
            combine = crc32_combine
            assert combine is not None  # only queued where it exists
            for c, n in zip(crcs[1:], lens[1:]):
                want = combine(want, c, n)
            ok = got == want
    except Exception:  # a shard unmapped meanwhile, a file gone: the gather checks these samples itself
        ok = False
    cond = _condition()
    with cond:
        t = m.table
        if ok:
            t.verified[j:k] = b"\x01" * (k - j)
        t.pending[j:k] = bytes(k - j)
        cond.notify_all()


# One verifier thread per process, shared by every loader in it (as mapped.UNMAPPER's thread):
# one per RangeChecks left a thread blocked for good behind every loader ever built.
_JOBS: DaemonQueue[Job] = DaemonQueue(_check_chunk, "wds-verify")
# Notified as chunks are done; this process's own (see _condition).
_COND = (threading.Condition(), os.getpid())


def _condition() -> threading.Condition:
    """The process's condition: a forked worker makes its own, never one held at the fork."""
    global _COND
    if _COND[1] != os.getpid():
        _COND = (threading.Condition(), os.getpid())
    return _COND[0]
