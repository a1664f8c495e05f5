"""Checks of mapped samples before they are gathered: the file still holds their bytes, and
those bytes match the index's crc32s.

A local shard is read through a memory map (``mapped.py``), never through a stream that
checks what it reads, so a shard overwritten in place or replaced by another file would
otherwise reach the model unnoticed, and a file truncated under the mapping would kill
the process with SIGBUS at the first page past its new end. Each sample is checked the
first time a process gathers it (``SampleTable.verified``; a rewritten file has a new stamp,
hence a new table and new checks), against the file's size taken once per batch.

A crc32 costs about 10 us per 3 s clip, a fifth of a fresh ``num_workers=0`` epoch when the
gather pays it inline. ISA-L's crc32 releases the GIL, so where a core is spare a thread
checks the next batches' samples while this one is gathered (:class:`AheadChecks`). That
thread only ever marks a sample good; a mismatch, a file shorter than the sample, any error
is left for the gather, which checks the sample itself and names the damage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..format.checksum import crc32
from .daemon import DaemonQueue
from .mapped import MappedShard
from .shards import ShardEntry

# Samples of one shard to check: (shard, sample indexes, their first bytes, their end
# bytes, their crc32s from the index).
Job = tuple[MappedShard, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


class AheadChecks:
    """Hands the crc32 checks of samples about to be gathered to a daemon thread
    (:class:`~wds_pipeline.loader.daemon.DaemonQueue`: one per process)."""

    def __init__(self, table: Sequence[ShardEntry]) -> None:
        self.table = table
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._jobs: DaemonQueue[list[Job]] = DaemonQueue(_check_jobs, "wds-verify")

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["table"])  # type: ignore[misc]

    def ahead(self, mapped: dict[int, MappedShard], entries: np.ndarray, index: np.ndarray) -> None:
        """Check samples ``index`` of shard-table ``entries`` on the thread: those of shards
        mapped and located now that no check has passed yet (the others are checked when
        gathered)."""
        jobs: list[Job] = []
        for e in np.unique(entries).tolist():
            m = mapped.get(e)
            entry = self.table[e]
            if m is None or len(entry.crc32) == 0:
                continue
            t = m.table
            sel = index[entries == e]
            sel = sel[t.located[sel] & (np.frombuffer(t.verified, dtype=np.uint8)[sel] == 0)]
            if not len(sel):
                continue
            starts, nexts, crcs = self._crc_arrays(e)
            ends = nexts[sel]
            ends[ends < 0] = m.end(entry.offsets, entry.meta.nsamples - 1)  # the last sample
            jobs.append((m, sel, starts[sel], ends, crcs[sel]))
        if jobs:
            self._jobs.put(jobs)

    def _crc_arrays(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shard ``e``'s sample offsets, next offsets (-1 after the last) and crc32s."""
        arrays = self._arrays.get(e)
        if arrays is None:
            entry = self.table[e]
            starts = np.asarray(entry.offsets, dtype=np.int64)
            nexts = np.append(starts[1:], -1)
            arrays = self._arrays[e] = (starts, nexts, np.asarray(entry.crc32, dtype=np.int64))
        return arrays


def _check_jobs(todo: list[Job]) -> None:
    for job in todo:
        _check_job(*job)


def _check_job(m: MappedShard, index: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               crcs: np.ndarray) -> None:
    verified, view = m.table.verified, m.view
    for i, start, end, want in zip(index.tolist(), starts.tolist(), ends.tolist(), crcs.tolist()):
        if verified[i]:
            continue
        try:
            # Never a page past the file's end (a SIGBUS): the gather names a truncation.
            if end <= m.file_size() and crc32(view[start:end]) == want:
                verified[i] = 1
        except Exception:  # the gather checks this sample itself, and names the damage
            continue
