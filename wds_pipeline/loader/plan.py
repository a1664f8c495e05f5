"""Epoch planning: a pure function from (index metadata, seed, epoch, ranks, workers) to batches.

Why plan at all: the index knows every sample's length and byte offset, so the whole
epoch -- which samples each rank and worker reads, the order the shuffle buffer emits
them in, how they are batched or bucketed, and how many batches each rank yields --
can be computed before a byte is read. That makes the hard properties cheap:

* exactly-once coverage: samples are split into contiguous ranges of the shuffled
  shard sequence, so every sample lands in exactly one (rank, worker) stream, and a
  worker reads its stream sequentially (large sequential reads, few shard opens);
* equal batches per rank: batch counts are known up front, so ranks are trimmed
  (``drop``) or topped up with marked padding batches (``pad``) to the same count, and
  ``len(loader)`` is exact;
* exact mid-epoch resume: the state is (epoch, batches yielded); a restarted worker
  recomputes the plan and resumes at its next batch, re-reading only what was still
  in its shuffle buffer.

Workers execute the plan (see ``dataset.py``): they read their stream in order, hold
samples until the batch that needs them is due, and emit batches in plan order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import numpy as np

from ..sizes import parse_size
from ..typedconfig import FromText, at_least, check_options
from .batching import PlannedBatch, bucket_batches, fixed_batches, shuffle_order, warmup_size

LastBatch = Literal["drop", "pad"]
# A byte count; in YAML and StreamingLoader's keywords also text such as "20GB".
ByteSize = Annotated[int, FromText(parse_size, "a size such as 60GB")]


# Bumped whenever the same inputs would plan a different order, so that a saved loader
# state is never replayed against another order (version 2: the shuffle buffer warm-up;
# version 3: worker shares aligned to the batch size; version 4: a warm-up of one batch;
# version 5: the buffer simulated in numpy, its random choices drawn in one call).
PLANNER_VERSION = 5


@dataclass(frozen=True)
class ShardMeta:
    """What planning needs to know about one shard (from the index)."""

    dataset: int
    shard: int
    nsamples: int
    # Audio frames per sample: an int64 array (the loader's shard table), or any sequence.
    frames: np.ndarray | Sequence[int]


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """The loader options that shape an epoch's plan (a part of :class:`LoaderConfig`, where
    they are documented for users; each is declared here only)."""

    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = at_least(1, 5000)  # samples held for shuffling, total over a rank's workers
    shuffle_buffer_bytes: ByteSize = at_least(1, 1 << 30)  # decoded bytes held, total over a rank's workers
    batch_size: int | None = at_least(1, 32)  # None: duration bucketing (max_batch_seconds)
    max_batch_size: int | None = at_least(1, None)  # cap on samples in a bucketed batch
    last_batch: LastBatch = "drop"
    weights: tuple[float, ...] = ()  # per-dataset sampling rate per epoch (1.0 = every sample once)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True, kw_only=True)
class PlanConfig(PlanOptions):
    """The plan's settings: the :class:`PlanOptions`, and what they come to for the datasets
    at hand (``LoaderConfig.plan_config`` derives these from the index)."""

    bytes_per_frame: float = 2.0  # decoded bytes per audio frame (int16 waveform [+ features])
    max_batch_frames: int | None = None  # duration bucketing: padded frames per batch
    bucket_boundaries: tuple[int, ...] = ()  # frame-count boundaries between buckets
    crop_frames: int | None = None  # random crops of this length (speaker tasks)

    def __post_init__(self) -> None:
        check_options(self)
        if (self.batch_size is None) == (self.max_batch_frames is None):
            raise ValueError("set exactly one of batch_size or max_batch_seconds")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class WorkerPlan:
    """One (rank, worker) stream: what to read, in order, and the batches to emit."""

    read_slots: np.ndarray  # int64: slot in the epoch's shard sequence, per read position
    read_index: np.ndarray  # int64: sample index within that shard, per read position
    batches: list[PlannedBatch] = field(default_factory=list)
    real_reads: int = 0  # read positions [0, real_reads) are the worker's own samples


@dataclass
class RankPlan:
    workers: list[WorkerPlan]
    order: list[int]  # logical worker of each of the rank's batches, in DataLoader order
    dropped: int = 0  # samples of this rank's share not yielded (drop policy)

    @property
    def num_batches(self) -> int:
        return len(self.order)


@dataclass
class EpochPlan:
    slots: list[int]  # epoch's shard sequence: index into the global shard table, with repeats
    ranks: list[RankPlan]

    @property
    def num_batches(self) -> int:
        return self.ranks[0].num_batches if self.ranks else 0


# ---------------------------------------------------------------------------
# Deterministic randomness


def _rng(*parts: int) -> random.Random:
    # A fresh, well-separated stream per (seed, epoch, purpose, ...): stable across
    # Python versions because it goes through sha256, not hash().
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


_MASK = (1 << 64) - 1


def crop_start(seed: int, epoch: int, gid: int, span: int) -> int:
    """Seeded crop offset in [0, span] for sample ``gid``: independent of read order."""
    if span <= 0:
        return 0
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + gid * 0x94D049BB133111EB) & _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x % (span + 1)


# ---------------------------------------------------------------------------
# Stage 1: the epoch's shard sequence


def epoch_slots(shards: Sequence[ShardMeta], cfg: PlanConfig, epoch: int) -> list[int]:
    """Shard sequence for one epoch: weights applied per dataset, then shuffled."""
    by_dataset: dict[int, list[int]] = {}
    for i, s in enumerate(shards):
        if s.nsamples > 0:
            by_dataset.setdefault(s.dataset, []).append(i)
    slots: list[int] = []
    for d, members in sorted(by_dataset.items()):
        w = cfg.weights[d] if d < len(cfg.weights) else 1.0
        if w < 0:
            raise ValueError(f"dataset weight must be >= 0, got {w}")
        whole = int(w)
        slots.extend(members * whole)
        extra = round((w - whole) * len(members))
        if extra:
            # Fractional weights subsample whole shards (keeps reads sequential); a
            # different subset every epoch.
            slots.extend(sorted(_rng(cfg.seed, epoch, 1, d).sample(members, extra)))
    if cfg.shuffle:
        _rng(cfg.seed, epoch, 0).shuffle(slots)
    return slots


# ---------------------------------------------------------------------------
# Stage 2: split the sample sequence into rank x worker streams


def partition(counts: Sequence[int], parts: int) -> list[list[tuple[int, int, int]]]:
    """Split the concatenation of ``counts`` into ``parts`` contiguous near-equal pieces.

    Returns per part a list of (slot, start, stop) sample ranges. Splitting inside a
    shard is what keeps every worker busy when there are fewer shards than workers.
    """
    return partition_segments([(i, 0, int(c)) for i, c in enumerate(counts)], parts)


def layout_bounds(total: int, world_size: int, num_workers: int, align: int = 1) -> list[int]:
    """Stream positions where each rank x worker part starts (plus ``total``).

    Ranks get equal shares (within one sample). Inside a rank, every worker's share but the
    last is a multiple of ``align`` (the batch size), so only one worker per rank ends on a
    partial batch: the number of batches a rank yields then depends on the data, the batch
    size and the world size, never on the number of workers.
    """
    bounds = []
    for r in range(world_size):
        lo, hi = total * r // world_size, total * (r + 1) // world_size
        for w in range(num_workers):
            cut = (hi - lo) * w // num_workers
            bounds.append(lo + (cut // align) * align if align > 1 else lo + cut)
    bounds.append(total)
    return bounds


def partition_segments(
    segments: Sequence[tuple[int, int, int]], parts: int, *, bounds: Sequence[int] | None = None
) -> list[list[tuple[int, int, int]]]:
    """Like :func:`partition`, over (slot, start, stop) segments (several per slot allowed).
    ``bounds`` (``parts + 1`` stream positions) overrides the equal split."""
    lengths = [b - a for _, a, b in segments]
    total = int(sum(lengths))
    if bounds is None:
        bounds = [total * p // parts for p in range(parts + 1)]
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for p in range(parts):
        lo, hi = bounds[p], bounds[p + 1]
        if lo == hi:
            continue
        seg = int(np.searchsorted(starts, lo, side="right") - 1)
        while seg < len(segments) and starts[seg] < hi:
            slot, a0, _ = segments[seg]
            a = max(lo, int(starts[seg])) - int(starts[seg])
            b = min(hi, int(starts[seg + 1])) - int(starts[seg])
            if b > a:
                out[p].append((slot, a0 + a, a0 + b))
            seg += 1
    return out


def remaining_segments(counts: Sequence[int], exclude: np.ndarray) -> list[tuple[int, int, int]]:
    """(slot, start, stop) runs of the epoch's samples not in ``exclude`` (a bool per
    sample of the epoch's sequence, slot after slot: see :func:`consumed_samples`)."""
    n = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n)])
    keep = ~np.asarray(exclude, dtype=bool)
    slot_of = np.repeat(np.arange(len(n), dtype=np.int64), n)
    # A run of kept samples starts where the previous one is gone or in another slot, and
    # ends where the next one is gone or in another slot.
    opens = np.zeros(len(keep), dtype=bool)
    opens[starts[:-1][n > 0]] = True
    closes = np.zeros(len(keep), dtype=bool)
    closes[starts[1:][n > 0] - 1] = True
    before = np.concatenate([[False], keep[:-1]])
    after = np.concatenate([keep[1:], [False]])
    lo = np.flatnonzero(keep & (~before | opens))
    hi = np.flatnonzero(keep & (~after | closes))
    return [(int(slot_of[a]), int(a - starts[slot_of[a]]), int(b + 1 - starts[slot_of[a]]))
            for a, b in zip(lo, hi)]


# Stage 3 (one worker stream's shuffle order and batches) is in batching.py.


def read_frames(shards: Sequence[ShardMeta], slots: Sequence[int], read_slots: np.ndarray,
                read_index: np.ndarray) -> np.ndarray:
    """Frames of each read position (slot, index): one numpy gather per run of one slot."""
    cut = np.flatnonzero(read_slots[1:] != read_slots[:-1]) + 1
    lo, hi = np.concatenate([[0], cut]).tolist(), np.concatenate([cut, [len(read_slots)]]).tolist()
    parts = [np.asarray(shards[slots[int(read_slots[a])]].frames, dtype=np.int64)[read_index[a:b]]
             for a, b in zip(lo, hi)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------
# Stage 4: whole-epoch plan with equal batch counts per rank


def round_robin(counts: Sequence[int]) -> list[int]:
    """The order in which a DataLoader yields batches from workers with these counts.

    torch's DataLoader asks workers in a fixed cycle and skips a worker once it is
    exhausted, so the output is a round robin over workers that still have batches.
    """
    n = np.asarray(counts, dtype=np.int64)
    worker = np.repeat(np.arange(len(n)), n)
    cycle = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)  # the batch's round
    return worker[np.lexsort((worker, cycle))].tolist()


def plan_epoch(
    shards: Sequence[ShardMeta],
    cfg: PlanConfig,
    *,
    epoch: int,
    world_size: int,
    num_workers: int,
    exclude: np.ndarray | None = None,
) -> EpochPlan:
    """Plan every rank's batches for one epoch. Pure: same inputs, same plan.

    ``exclude`` marks the samples already consumed earlier in this epoch under another
    layout (elastic resume; see :func:`consumed_samples`): the plan covers only the rest.
    """
    if world_size < 1 or num_workers < 1:
        raise ValueError("world_size and num_workers must be >= 1")
    slots = epoch_slots(shards, cfg, epoch)
    counts = [shards[s].nsamples for s in slots]
    segments = (remaining_segments(counts, exclude) if exclude is not None and exclude.any()
                else [(i, 0, int(c)) for i, c in enumerate(counts)])
    total = sum(b - a for _, a, b in segments)
    bounds = layout_bounds(total, world_size, num_workers, align=cfg.batch_size or 1)
    parts = partition_segments(segments, world_size * num_workers, bounds=bounds)
    frames_of = [np.asarray(shards[s].frames, dtype=np.int64) for s in slots]  # no copy: int64
    per_worker_cap = max(1, -(-cfg.shuffle_buffer // num_workers))
    per_worker_bytes = cfg.shuffle_buffer_bytes / num_workers

    ranks: list[RankPlan] = []
    for r in range(world_size):
        workers = []
        for w in range(num_workers):
            ranges = parts[r * num_workers + w]
            read_slots = np.concatenate(
                [np.full(b - a, s, dtype=np.int64) for s, a, b in ranges] or [np.zeros(0, np.int64)]
            )
            read_index = np.concatenate(
                [np.arange(a, b, dtype=np.int64) for _, a, b in ranges] or [np.zeros(0, np.int64)]
            )
            frames = np.concatenate([frames_of[s][a:b] for s, a, b in ranges] or [np.zeros(0, np.int64)])
            eff = np.minimum(frames, cfg.crop_frames) if cfg.crop_frames else frames
            if cfg.shuffle:
                order, at = shuffle_order(
                    eff * cfg.bytes_per_frame,
                    per_worker_cap,
                    per_worker_bytes,
                    _rng(cfg.seed, epoch, 2, r, w),
                    initial=warmup_size(per_worker_cap, cfg.batch_size),
                )
            else:
                order = np.arange(len(frames), dtype=np.int64)
                at = order.copy()
            if cfg.batch_size is not None:
                batches = fixed_batches(order, at, cfg.batch_size, cfg.last_batch)
            else:
                batches = bucket_batches(order, at, eff, max_batch_frames=int(cfg.max_batch_frames or 0),
                                         boundaries=cfg.bucket_boundaries, max_batch_size=cfg.max_batch_size)
            workers.append(
                WorkerPlan(read_slots, read_index, batches, real_reads=len(read_slots))
            )
        ranks.append(RankPlan(workers=workers, order=[]))

    totals = [sum(len(w.batches) for w in rp.workers) for rp in ranks]
    target = min(totals) if cfg.last_batch == "drop" else max(totals)
    for rp in ranks:
        _equalise(rp, target, cfg, parts, num_workers)
    return EpochPlan(slots=slots, ranks=ranks)


def _equalise(
    rp: RankPlan,
    target: int,
    cfg: PlanConfig,
    parts: list[list[tuple[int, int, int]]],
    num_workers: int,
) -> None:
    counts = [len(w.batches) for w in rp.workers]
    total = sum(counts)
    if total > target:
        # Trim the batches the DataLoader would yield last; their samples are dropped
        # for this epoch (a different set every epoch, since the order is reshuffled).
        keep = [0] * num_workers
        for w in round_robin(counts)[:target]:
            keep[w] += 1
        for w, wp in enumerate(rp.workers):
            del wp.batches[keep[w] :]
    elif total < target:
        _add_padding_batches(rp, target - total, cfg, parts, num_workers)
    # Samples of this rank's share never placed in a batch (partial batches under drop).
    placed = sum(len(m) - int(np.count_nonzero(m)) for m in
                 (np.concatenate([b.padding for b in wp.batches]) for wp in rp.workers if wp.batches))
    own = sum(wp.real_reads for wp in rp.workers)
    rp.dropped = own - placed
    rp.order = round_robin([len(w.batches) for w in rp.workers])


def _add_padding_batches(
    rp: RankPlan,
    missing: int,
    cfg: PlanConfig,
    parts: list[list[tuple[int, int, int]]],
    num_workers: int,
) -> None:
    """Top a rank up with batches that repeat real samples, every item marked padding."""
    donors = [w for w in rp.workers if w.batches]
    for _ in range(missing):
        # Give the filler to the worker with the fewest batches: spreads the work.
        target = min(range(num_workers), key=lambda w: (len(rp.workers[w].batches), w))
        wp = rp.workers[target]
        if wp.batches:
            src = wp.batches[-1]
            items = src.items.copy()
            ready = src.ready_at
        elif donors:
            # Borrow the shape of another worker's batch but read from this worker's
            # own list: append the donor's samples as extra (filler-only) reads.
            src = donors[0].batches[0]
            items = _append_reads(wp, donors[0], src.items)
            ready = len(wp.read_slots) - 1
        else:
            # This rank has no data at all (fewer samples than ranks x batch): fill
            # from the start of the epoch's first non-empty stream.
            first = next((p for p in parts if p), None)
            if first is None:
                return  # empty dataset: every rank has zero batches anyway
            slot, a, b = first[0]
            n = min(b - a, cfg.batch_size or (b - a))
            src_slots = np.full(n, slot, dtype=np.int64)
            src_index = np.arange(a, a + n, dtype=np.int64)
            base = len(wp.read_slots)
            wp.read_slots = np.concatenate([wp.read_slots, src_slots])
            wp.read_index = np.concatenate([wp.read_index, src_index])
            items = np.arange(base, base + n, dtype=np.int64)
            if cfg.batch_size:
                items = np.resize(items, cfg.batch_size)
            ready = len(wp.read_slots) - 1
            donors = [wp]
        wp.batches.append(
            PlannedBatch(items=items, padding=np.ones(len(items), dtype=bool), ready_at=ready)
        )


def _append_reads(wp: WorkerPlan, donor: WorkerPlan, items: np.ndarray) -> np.ndarray:
    base = len(wp.read_slots)
    wp.read_slots = np.concatenate([wp.read_slots, donor.read_slots[items]])
    wp.read_index = np.concatenate([wp.read_index, donor.read_index[items]])
    return np.arange(base, base + len(items), dtype=np.int64)


# ---------------------------------------------------------------------------
# Resume


def resume_point(order: Sequence[int], num_workers: int, consumed: int) -> tuple[list[int], int]:
    """After ``consumed`` batches: batches done per logical worker, and the next worker.

    The next worker is where a fresh DataLoader iterator (which always starts its
    cycle at physical worker 0) must begin: physical worker i plays logical worker
    ``(next + i) % num_workers``, which preserves the cyclic order.
    """
    done = [0] * num_workers
    for w in order[:consumed]:
        done[w] += 1
    nxt = order[consumed] if consumed < len(order) else 0
    return done, nxt


def consumed_samples(plan: EpochPlan, shards: Sequence[ShardMeta], batches: int) -> np.ndarray:
    """A bool per sample of the epoch's sequence (slot after slot, each slot's samples in
    order): True for every real sample in the first ``batches`` batches of every rank."""
    counts = np.asarray([shards[s].nsamples for s in plan.slots], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.zeros(int(starts[-1]), dtype=bool)
    for rp in plan.ranks:
        done, _ = resume_point(rp.order, len(rp.workers), batches)
        for wp, n in zip(rp.workers, done):
            if n:
                items = np.concatenate([b.items[~b.padding] for b in wp.batches[:n]])
                out[starts[wp.read_slots[items]] + wp.read_index[items]] = True
    return out


def plan_epoch_after(
    shards: Sequence[ShardMeta],
    cfg: PlanConfig,
    *,
    epoch: int,
    world_size: int,
    num_workers: int,
    stages: Sequence[tuple[int, int, int]] = (),
) -> EpochPlan:
    """Plan the rest of an epoch that was partly consumed under other layouts.

    ``stages`` lists (world_size, num_workers, batches consumed) in the order they ran
    within this epoch. Replaying each stage's plan gives exactly which samples were
    consumed; the new plan covers the others once (elastic resume).
    """
    exclude: np.ndarray | None = None
    for ws, nw, k in stages:
        stage = plan_epoch(shards, cfg, epoch=epoch, world_size=ws, num_workers=nw, exclude=exclude)
        done = consumed_samples(stage, shards, k)
        exclude = done if exclude is None else exclude | done
    return plan_epoch(shards, cfg, epoch=epoch, world_size=world_size, num_workers=num_workers, exclude=exclude)
