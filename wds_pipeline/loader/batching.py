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

    Each arriving item enters the buffer; while the buffer is over its sample capacity a
    uniformly chosen item leaves (the new one included). The capacity ramps up: it starts
    at ``initial`` (default: ``capacity``) and grows by one for every two items read until
    it reaches ``capacity``, so output starts early and the buffer still fills. At the end
    the items left leave in a uniformly random order. ``emitted_at[j]`` is the stream
    position that had been read when ``order[j]`` left, which is all a worker needs to
    replay the same order on real data.

    The byte bound: when ``capacity`` items could hold more than ``capacity_bytes``, the
    sample capacity is lowered to what the mean item size fits, and while the simulated
    buffer ever holds more bytes than that (and more than one item), lowered again by the
    overshoot and the simulation rerun: the buffer then holds a fixed number of items
    that never exceed the byte bound, where the earlier item-by-item buffer let its item
    count float under it.

    Vectorised (one numpy pass per try, no per-item Python): the buffer is ``capacity``
    slots; at a step that releases an item one choice among the slots and the new item is
    drawn (all drawn in one call), the chosen slot's occupant leaves and the new item takes
    its place. Who occupies a slot is then the item of the slot's previous write, found
    with one stable sort by slot (see :func:`_simulate`).
    """
    n = len(item_bytes)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    gen = np.random.default_rng(rng.getrandbits(128))
    draws = gen.random(n)  # the choice at each step that releases an item
    drain = gen.random(n)  # sort keys of the items left at the end: a uniform order
    sizes = np.asarray(item_bytes, dtype=np.float64)
    start = capacity if initial is None else max(1, min(initial, capacity))
    cap = capacity
    if cap * float(sizes.max()) > capacity_bytes:  # it may bind: start from the mean's fit
        cap = max(1, min(cap, int(capacity_bytes / max(float(sizes.mean()), 1e-9))))
    while True:
        order, at, released = _simulate(draws, drain, cap, min(start, cap))
        if cap == 1 or cap * float(sizes.max()) <= capacity_bytes:
            break  # the byte bound cannot bind
        steps = at[: len(released)]
        gone = np.zeros(n, dtype=np.float64)
        gone[steps] = sizes[released]
        held = np.cumsum(sizes) - np.cumsum(gone)  # bytes held after each step's release
        count = np.ones(n, dtype=np.int64)
        count[steps] -= 1
        over = (held > capacity_bytes) & (np.cumsum(count) > 1)  # one item alone may exceed it
        if not over.any():
            break
        cap = max(1, min(cap - 1, int(0.99 * cap * capacity_bytes / float(held[over].max()))))
    return order.astype(np.int64), at.astype(np.int64)


def _simulate(draws: np.ndarray, drain: np.ndarray, cap: int,
              start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run of the slot buffer: (order, emitted_at, the items released while reading)."""
    n = len(draws)
    idx = np.int32 if n < 2**31 - 1 else np.int64
    t = np.arange(n, dtype=idx)
    caps = np.minimum(cap, start + np.maximum(0, t + 1 - start) // 2).astype(idx)
    before = np.empty(n, dtype=idx)
    before[0], before[1:] = 1, np.minimum(t[1:], caps[:-1]) + 1  # held after step t's read
    release = before > caps  # at most one per step: caps grows by at most one a step
    # The slot each step writes its item to: a fresh one while the buffer grows, else the
    # chosen one; choice == before - 1 is the new item itself (it passes straight through).
    choice = before - 1
    choice[release] = (draws[release] * before[release]).astype(idx)
    writes = ~release | (choice < before - 1)
    w_step, w_slot = t[writes], choice[writes]
    key = w_slot.astype(np.int16) if cap <= 2**15 else w_slot  # int16: numpy's radix sort
    by_slot = np.argsort(key, kind="stable")  # each slot's writes, in step order
    s_step, s_slot = w_step[by_slot], w_slot[by_slot]
    same = s_slot[1:] == s_slot[:-1]
    displaced = np.empty(n, dtype=idx)  # the item each write displaces
    displaced[s_step[1:][same]] = s_step[:-1][same]
    out = np.where(writes, displaced, t)[release]  # released at each releasing step
    last = np.ones(len(s_step), dtype=bool)  # each slot's final occupant is left at the end
    last[:-1] = ~same
    left = s_step[last]
    left = left[np.argsort(drain[left], kind="stable")]
    order = np.concatenate([out, left])
    at = np.concatenate([t[release], np.full(len(left), n - 1, dtype=idx)])
    return order, at, out


def fixed_batches(order: np.ndarray, at: np.ndarray, batch_size: int,
                  last_batch: str) -> list[PlannedBatch]:
    bs = batch_size
    full = len(order) // bs
    # Whole batches: rows of one reshaped array and one shared (read-only) padding mask,
    # so a 1.1 M-sample epoch costs one small object per batch and no per-sample work.
    no_pad = np.zeros(bs, dtype=bool)
    no_pad.flags.writeable = False
    rows = order[: full * bs].reshape(full, bs)
    ready = at[bs - 1 : full * bs : bs].tolist()
    out = [PlannedBatch(items=rows[k], padding=no_pad, ready_at=ready[k]) for k in range(full)]
    if full * bs < len(order) and last_batch != "drop":
        # Complete the last batch with repeats of its own samples, marked as padding.
        items = order[full * bs :]
        fill = np.resize(items, bs - len(items))
        pad = np.concatenate([np.zeros(len(items), dtype=bool), np.ones(len(fill), dtype=bool)])
        out.append(PlannedBatch(items=np.concatenate([items, fill]), padding=pad, ready_at=int(at[-1])))
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
