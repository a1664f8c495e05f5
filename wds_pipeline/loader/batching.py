"""Stage 3 of the epoch plan (see ``plan.py``): one worker stream's order through its shuffle
buffer, and its batches, of a fixed size or bucketed by duration (with the bucket boundaries
the loader derives from the index)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..index import DatasetIndex


@dataclass
class PlannedBatch:
    items: np.ndarray  # int64 positions into the worker's read list
    padding: np.ndarray  # bool per item: True for repeated filler samples
    ready_at: int  # read-list position after which every item has been read


def warmup_size(capacity: int, batch_size: int | None) -> int:
    """Samples a worker reads before its buffer first releases one: one batch (1/16 of the
    buffer without fixed batches). Waiting for a full buffer would hold the first batch of
    every epoch until e.g. 2,500 samples per worker were read, idling the GPU; on a cold
    remote epoch every sample read before the first batch is a download the first step
    waits for. The buffer then grows to its capacity (see :func:`shuffle_order`)."""
    return max(1, min(capacity, batch_size or capacity // 16))


def shuffle_order(
    item_bytes: np.ndarray, capacity: int, capacity_bytes: float, rng: random.Random,
    *, initial: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a bounded shuffle buffer over a stream; returns (order, emitted_at).

    Each arriving item enters the buffer; while the buffer is over its sample or
    byte capacity a uniformly chosen item leaves. The sample capacity ramps up: it
    starts at ``initial`` (default: ``capacity``) and grows by one for every two
    items read until it reaches ``capacity``, so output starts early and the buffer
    still fills. ``emitted_at[j]`` is the stream position that had been read when
    ``order[j]`` left, which is all a worker needs to replay the same order on real data.
    """
    n = len(item_bytes)
    order = np.empty(n, dtype=np.int64)
    at = np.empty(n, dtype=np.int64)
    buf: list[int] = []
    held = 0.0
    k = 0
    randrange = rng.randrange
    start = capacity if initial is None else max(1, min(initial, capacity))
    for pos in range(n):
        buf.append(pos)
        held += item_bytes[pos]
        cap = min(capacity, start + max(0, pos + 1 - start) // 2)
        while len(buf) > cap or (held > capacity_bytes and len(buf) > 1):
            j = randrange(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            out = buf.pop()
            held -= item_bytes[out]
            order[k] = out
            at[k] = pos
            k += 1
    last = n - 1
    while buf:
        j = randrange(len(buf))
        buf[j], buf[-1] = buf[-1], buf[j]
        order[k] = buf.pop()
        at[k] = last
        k += 1
    return order, at


def fixed_batches(order: np.ndarray, at: np.ndarray, batch_size: int,
                  last_batch: str) -> list[PlannedBatch]:
    bs = batch_size
    out = []
    for lo in range(0, len(order), bs):
        items = order[lo : lo + bs]
        pad = np.zeros(len(items), dtype=bool)
        if len(items) < bs:
            if last_batch == "drop":
                break
            # Complete the last batch with repeats of its own samples, marked as padding.
            fill = np.resize(items, bs - len(items))
            items = np.concatenate([items, fill])
            pad = np.concatenate([pad, np.ones(len(fill), dtype=bool)])
        out.append(PlannedBatch(items=items, padding=pad, ready_at=int(at[min(lo + bs, len(at)) - 1])))
    return out


def bucket_batches(
    order: np.ndarray, at: np.ndarray, frames: np.ndarray, *, max_batch_frames: int,
    boundaries: Sequence[int], max_batch_size: int | None,
) -> list[PlannedBatch]:
    """Duration bucketing: fill per-bucket batches up to ``max_batch_frames`` padded frames."""
    limit = max_batch_frames
    bounds = np.asarray(boundaries, dtype=np.int64)
    buckets: dict[int, list[int]] = {}
    longest: dict[int, int] = {}
    out: list[PlannedBatch] = []

    def emit(b: int, ready: int) -> None:
        items = np.asarray(buckets.pop(b), dtype=np.int64)
        longest.pop(b)
        out.append(PlannedBatch(items=items, padding=np.zeros(len(items), dtype=bool), ready_at=ready))

    for j in range(len(order)):
        item = int(order[j])
        n = int(frames[item])
        b = int(np.searchsorted(bounds, n, side="right"))
        if b in buckets:
            new_longest = max(longest[b], n)
            full = new_longest * (len(buckets[b]) + 1) > limit or (
                max_batch_size is not None and len(buckets[b]) >= max_batch_size
            )
            if full:
                emit(b, int(at[j - 1]) if j else 0)
        buckets.setdefault(b, []).append(item)
        longest[b] = max(longest.get(b, 0), n)
    end = int(at[-1]) if len(at) else 0
    for b in sorted(buckets):
        emit(b, end)  # leftovers are real data: emitted as smaller batches, never dropped
    return out


def bucket_boundaries(
    indexes: Sequence[DatasetIndex], num_buckets: int, crop_seconds: float | None, sr: int
) -> list[int]:
    """Frame-count boundaries at duration quantiles, so buckets are equally populated."""
    frames = np.concatenate(
        [np.asarray(s.sample_frames, dtype=np.int64) for i in indexes for s in i.shards] or [np.zeros(0, dtype=np.int64)]
    )
    if crop_seconds:
        frames = np.minimum(frames, int(crop_seconds * sr))
    if len(frames) == 0 or num_buckets <= 1:
        return []
    qs = np.quantile(frames, np.linspace(0, 1, num_buckets + 1)[1:-1])
    return sorted({int(q) for q in qs})
