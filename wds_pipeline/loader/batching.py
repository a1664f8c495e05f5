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

    The byte bound: when the buffer simulated with ``capacity`` would ever hold more than
    ``capacity_bytes`` (and more than one item), the simulation is rerun with a smaller
    sample capacity (scaled by the overshoot) until it does not.

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
    while True:
        order, at, held, count = _simulate(draws, drain, sizes, cap, min(start, cap))
        over = (held > capacity_bytes) & (count > 1)
        if cap == 1 or not over.any():
            return order, at
        cap = max(1, min(cap - 1, int(cap * capacity_bytes / float(held[over].max()))))


def _simulate(draws: np.ndarray, drain: np.ndarray, sizes: np.ndarray, cap: int,
              start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One run of the slot buffer: (order, emitted_at, bytes held and items held after
    each step)."""
    n = len(draws)
    t = np.arange(n, dtype=np.int64)
    caps = np.minimum(cap, start + np.maximum(0, t + 1 - start) // 2)
    held_n = np.minimum(t + 1, caps)  # items held after step t's release
    before = np.concatenate([[0], held_n[:-1]]) + 1  # held after step t's read
    release = before > caps  # at most one per step: caps grows by at most one a step
    # The slot each step writes its item to: a fresh one while the buffer grows, else the
    # chosen one; choice == before - 1 is the new item itself (it passes straight through).
    choice = np.where(release, (draws * before).astype(np.int64), before - 1)
    writes = ~release | (choice < before - 1)
    w_step, w_slot = t[writes], choice[writes]
    by_slot = np.argsort(w_slot, kind="stable")  # each slot's writes, in step order
    s_step, s_slot = w_step[by_slot], w_slot[by_slot]
    prev = np.full(len(s_step), -1, dtype=np.int64)  # item the write displaces
    same = s_slot[1:] == s_slot[:-1]
    prev[1:][same] = s_step[:-1][same]
    displaced = np.empty(n, dtype=np.int64)
    displaced[s_step] = prev
    out = np.where(writes, displaced, t)[release]  # released at each releasing step
    out_at = t[release]
    last = np.ones(len(s_step), dtype=bool)  # each slot's final occupant is left at the end
    last[:-1] = ~same
    left = s_step[last]
    left = left[np.argsort(drain[left], kind="stable")]
    order = np.concatenate([out, left])
    at = np.concatenate([out_at, np.full(len(left), n - 1, dtype=np.int64)])
    gone = np.zeros(n, dtype=np.float64)
    gone[out_at] = sizes[out]
    held = np.cumsum(sizes) - np.cumsum(gone)
    return order, at, held, held_n


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
