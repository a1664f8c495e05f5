"""Where a loader worker's time goes, per batch: the input-pipeline doctor's worker half
(``train/doctor.py`` reads it).

Each worker process keeps one :class:`StageClock`; the dataset adds to it around work it
does anyway (a block read, a shard open, a batch's gathering and collating: per block or per
batch, never per sample on the default path) and hands the amounts since the previous batch
to that batch as ``Batch.stage_seconds``, a plain tuple of floats (it pickles inline with the
batch; no tensor, no shared memory).
"""

from __future__ import annotations

import time
from typing import Any

# The fields of Batch.stage_seconds, in order. Seconds: ``read`` blocked on storage (shard
# opens, block reads: the link, a FUSE mount, a download the read waits for), ``decode``
# the rest of making samples (parsing, decoding, the crop, sample transforms, mapped
# pages), ``transform`` of which the sample transforms, ``collate`` building the batch.
# Counts: ``link_bytes`` read from remote/FUSE storage (downloads included), ``cached_opens``
# shard opens served by the local cache, ``link_opens`` opens read from the link.
STAGE_FIELDS = ("read", "decode", "transform", "collate", "link_bytes", "cached_opens", "link_opens")
READ, DECODE, TRANSFORM, COLLATE, LINK_BYTES, CACHED_OPENS, LINK_OPENS = range(len(STAGE_FIELDS))


class StageClock:
    """Seconds and counts of one worker process since the last batch it handed out."""

    def __init__(self) -> None:
        self.totals = [0.0] * len(STAGE_FIELDS)
        self.resumed = time.perf_counter()  # when the worker's generator last got control back
        self._read_since = 0.0  # of the time since, blocked on storage
        self._reader: tuple[int, int, int] = (0, 0, 0)

    def add(self, stage: int, seconds: float) -> None:
        self.totals[stage] += seconds

    def add_read(self, seconds: float) -> None:
        """Seconds blocked on storage (a shard open, a block read)."""
        self.totals[READ] += seconds
        self._read_since += seconds

    def resume(self) -> None:
        """The batch was handed out; time counts again from now (the time in between was
        the DataLoader's, or in-process the training step's)."""
        self.resumed = time.perf_counter()
        self._read_since = 0.0

    def gathered(self) -> float:
        """At a batch's gathering: the time since :meth:`resume` not blocked on storage
        (streamed samples' parsing and decoding) goes to DECODE; returns now."""
        now = time.perf_counter()
        self.totals[DECODE] += now - self.resumed - self._read_since
        self._read_since = 0.0
        self.resumed = now
        return now

    def reader_stats(self, stats: Any) -> None:
        """Add the shard reader's counters (a ``ReaderStats``) since the last call."""
        now = (stats.bytes_fetched, stats.cached_opens, stats.partial_opens + stats.streamed_opens)
        last = self._reader
        self._reader = now
        self.totals[LINK_BYTES] += now[0] - last[0]
        self.totals[CACHED_OPENS] += now[1] - last[1]
        self.totals[LINK_OPENS] += now[2] - last[2]

    def take(self) -> tuple[float, ...]:
        """The amounts since the last ``take``, then zero."""
        out = tuple(self.totals)
        self.totals = [0.0] * len(STAGE_FIELDS)
        return out
