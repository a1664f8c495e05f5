"""Streamed reads: the samples of one shard run read sequentially from an open stream (a
remote shard, one the cache is still downloading, anything not mapped), in blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from .. import format as fmt
from ..readpath import PartialShard
from .blocks import PARTIAL_READ_BLOCK, READ_BLOCK, BlockReader, check_sample_crcs, sample_blocks
from .buffers import SampleArena
from .decode import Failed, Sample, SampleDecoder
from .shards import ShardEntry

Opened = BinaryIO | OSError  # a shard opened for streaming, or why it did not open


def read_run(
    opened: Opened,
    entry: ShardEntry,
    a: int,
    b: int,
    pos0: int,
    refs: np.ndarray,
    epoch: int,
    *,
    block: BlockReader,
    decode: SampleDecoder,
    arena: SampleArena | None,
    corrupt: Callable[[ShardEntry, Exception], None],
) -> Iterator[tuple[int, Sample | Failed]]:
    """Read samples [a, b) of one shard sequentially; decode only those still needed.

    Whole samples are read in blocks of up to READ_BLOCK bytes (the index gives
    every sample's byte offset), then parsed in memory: one read call per block
    instead of two per tar member.

    A shard the cache is still downloading (a :class:`PartialShard`, only when the
    index has per-sample crc32s) is read in smaller blocks as its bytes arrive; each
    block's samples are checked against their crc32s before anything in it is parsed,
    and once the run is read the download's whole-shard digest verdict is awaited (a
    mismatch then, with every sample's crc right, means damage outside the sample
    bytes; it raises like any corrupt shard).
    """
    pos = pos0
    ends = np.append(entry.offsets[1:], entry.size if entry.size else -1)
    try:
        if isinstance(opened, OSError):
            raise opened
        with opened as f:
            partial = isinstance(f, PartialShard)
            span = PARTIAL_READ_BLOCK if partial else READ_BLOCK
            for j, k in sample_blocks(entry.offsets, ends, a, b, span):
                start = entry.offsets[j]
                want = int(ends[k - 1]) - start if ends[k - 1] >= 0 else -1
                with block.read(f, start, want, entry.url) as buf:
                    if partial:
                        check_sample_crcs(buf, start, entry.offsets, entry.crc32, j, k, entry.url)
                    samples = fmt.group_samples(fmt.iter_buffer_members(buf, base=start, source=entry.url))
                    got = 0
                    fields = None  # a block of zeros yields no sample at all
                    for idx, (key, fields) in enumerate(samples, start=j):
                        if idx >= k:
                            break
                        # Decoding copies what it keeps: the block is reused/unmapped next.
                        if refs[pos] > 0:
                            yield pos, decode(key, fields, entry, idx, epoch, arena)
                        pos += 1
                        got += 1
                    del samples, fields
                if got != k - j:
                    raise fmt.ShardFormatError(
                        f"{entry.url}: found {got} samples at byte {start} where the "
                        f"index lists {k - j}; the shard does not match its index"
                    )
            if isinstance(f, PartialShard):
                f.wait_verified()
    except (fmt.ShardFormatError, OSError) as e:
        corrupt(entry, e)
        while pos < pos0 + (b - a):
            if refs[pos] > 0:
                yield pos, Failed(f"{entry.url}#{a + pos - pos0}", str(e))
            pos += 1

