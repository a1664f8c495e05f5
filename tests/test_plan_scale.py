"""The planner at VoxCeleb2 scale (issue 21): the numpy shuffle buffer equals the documented
algorithm run item by item, a 1.1 M-sample epoch covers every sample exactly once, elastic
resume replays consistently, the index's per-sample lists load as arrays, and a state from
the previous planner is refused. Pure and fast: no timings here (benchmarks/scale.py)."""

import json
import random
import re

import numpy as np
import pytest
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.errors import ResumeMismatch
from wds_pipeline.index import IndexFormatError, load_index
from wds_pipeline.loader.plan import (
    PLANNER_VERSION,
    PlanConfig,
    ShardMeta,
    consumed_samples,
    plan_epoch,
    plan_epoch_after,
    remaining_segments,
    shuffle_order,
)


def reference_buffer(n, capacity, rng, initial=None):
    """The documented buffer, one item at a time, with the draws shuffle_order makes: each
    arriving item enters; while the buffer is over its (ramping) capacity, the occupant of
    a uniformly chosen slot leaves and the new item takes the slot (or, choosing the new
    item itself, it passes through); at the end the rest leave in a uniform order."""
    gen = np.random.default_rng(rng.getrandbits(128))
    draws, drain = gen.random(n), gen.random(n)
    start = capacity if initial is None else max(1, min(initial, capacity))
    slots, order, at = [], [], []
    for pos in range(n):
        cap = min(capacity, start + max(0, pos + 1 - start) // 2)
        if len(slots) + 1 <= cap:
            slots.append(pos)
            continue
        choice = int(draws[pos] * (len(slots) + 1))
        if choice == len(slots):
            order.append(pos)
        else:
            order.append(slots[choice])
            slots[choice] = pos
        at.append(pos)
    left = sorted(slots, key=lambda i: drain[i])
    return np.array(order + left), np.array(at + [n - 1] * len(left))


@pytest.mark.parametrize("n,capacity,initial", [(1, 1, None), (2, 1, None), (50, 7, None), (300, 40, 5),
                                                 (1000, 200, 25), (257, 300, 32), (999, 64, 64)])
def test_numpy_buffer_equals_the_item_by_item_algorithm(n, capacity, initial):
    for seed in range(3):
        got = shuffle_order(np.ones(n), capacity, 1e18, random.Random(seed), initial=initial)
        want = reference_buffer(n, capacity, random.Random(seed), initial)
        assert got[0].tolist() == want[0].tolist()
        assert got[1].tolist() == want[1].tolist()


def test_byte_bound_is_kept_by_a_smaller_sample_capacity():
    sizes = np.random.default_rng(0).integers(1, 1000, 5000).astype(float)
    sizes[1234] = 4000  # one long clip
    order, at = shuffle_order(sizes, 500, 20000.0, random.Random(1), initial=32)
    assert sorted(order.tolist()) == list(range(5000))
    gone = np.zeros(5000)
    np.add.at(gone, at, sizes[order])
    held = np.cumsum(sizes) - np.cumsum(gone)  # after each step's releases
    assert held[:-1].max() <= 20000.0
    # Unbounded bytes: the full sample capacity, which this byte budget could not hold.
    order2, at2 = shuffle_order(sizes, 500, 1e18, random.Random(1), initial=32)
    np.add.at(gone2 := np.zeros(5000), at2, sizes[order2])
    assert (np.cumsum(sizes) - np.cumsum(gone2)).max() > 20000.0


def scale_metas(shards=1092, per_shard=1000):
    rng = np.random.default_rng(0)
    return [ShardMeta(dataset=0, shard=s, nsamples=per_shard,
                      frames=rng.integers(16000, 20 * 16000, per_shard)) for s in range(shards)]


def flat_positions(plan, metas, rank):
    """Epoch-sequence position of every real item rank ``rank`` yields."""
    starts = np.concatenate([[0], np.cumsum([metas[s].nsamples for s in plan.slots])])
    out = []
    for wp in plan.ranks[rank].workers:
        if wp.batches:
            items = np.concatenate([b.items[~b.padding] for b in wp.batches])
            out.append(starts[wp.read_slots[items]] + wp.read_index[items])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def test_a_voxceleb2_sized_epoch_covers_every_sample_exactly_once():
    metas = scale_metas()
    cfg = PlanConfig(batch_size=64, last_batch="pad", shuffle_buffer=5000, seed=7)
    plan = plan_epoch(metas, cfg, epoch=3, world_size=2, num_workers=2)
    seen = np.concatenate([flat_positions(plan, metas, r) for r in range(2)])
    assert len(seen) == 1_092_000
    assert np.array_equal(np.bincount(seen, minlength=1_092_000), np.ones(1_092_000, dtype=np.int64))
    assert plan.ranks[0].num_batches == plan.ranks[1].num_batches == -(-546_000 // 64)
    # The stream each worker reads is its own contiguous part, in order: few runs.
    for rp in plan.ranks:
        for wp in rp.workers:
            breaks = np.count_nonzero(np.diff(wp.read_slots[: wp.real_reads]))
            assert breaks <= 300


def reference_remaining(counts, exclude):
    """The set-based remaining_segments of planner version 4, for comparison."""
    segments = []
    for slot, n in enumerate(counts):
        start = None
        for i in range(n + 1):
            gone = i == n or (slot, i) in exclude
            if gone and start is not None:
                segments.append((slot, start, i))
                start = None
            elif not gone and start is None:
                start = i
    return segments


def test_remaining_segments_equal_the_set_based_reference():
    rng = np.random.default_rng(3)
    counts = [5, 0, 7, 1, 0, 9, 3]
    for _ in range(50):
        mask = rng.random(sum(counts)) < rng.random()
        starts = np.concatenate([[0], np.cumsum(counts)])
        exclude = {(s, i) for s, n in enumerate(counts) for i in range(n) if mask[starts[s] + i]}
        assert remaining_segments(counts, mask) == reference_remaining(counts, exclude)


def test_elastic_resume_replay_covers_the_rest_once_at_scale():
    metas = scale_metas(shards=300)
    cfg = PlanConfig(batch_size=32, last_batch="drop", shuffle_buffer=2000, seed=1)
    first = plan_epoch(metas, cfg, epoch=0, world_size=2, num_workers=3)
    done = consumed_samples(first, metas, 1000)  # 1,000 batches per rank under 2 x 3
    assert done.sum() == 2 * 1000 * 32
    rest = plan_epoch_after(metas, cfg, epoch=0, world_size=3, num_workers=2, stages=[(2, 3, 1000)])
    assert rest.slots == first.slots
    later = np.concatenate([flat_positions(rest, metas, r) for r in range(3)])
    assert not done[later].any(), "nothing consumed before the resize is read again"
    assert len(np.unique(later)) == len(later)
    dropped = sum(rp.dropped for rp in rest.ranks)
    assert len(later) + dropped == 300_000 - done.sum()
    # The replay is the plan a rank makes after restarting, every time.
    again = plan_epoch_after(metas, cfg, epoch=0, world_size=3, num_workers=2, stages=[(2, 3, 1000)])
    assert np.array_equal(flat_positions(again, metas, 1), flat_positions(rest, metas, 1))


def test_the_loader_reads_the_index_lists_as_arrays(tmp_path):
    path = make_dataset(str(tmp_path / "ds"), [6, 0, 4])
    lists, arrays = load_index(path), load_index(path, arrays=True)
    for a, b in zip(lists.shards, arrays.shards):
        for key in ("sample_frames", "sample_offsets", "sample_crc32"):
            if getattr(a, key):  # an empty shard's index has no crc32 list: [] both ways
                assert isinstance(getattr(b, key), np.ndarray) and getattr(b, key).dtype == np.int64
            assert list(getattr(b, key)) == getattr(a, key)
        assert b.to_dict() == a.to_dict()
    loader = StreamingLoader(path, batch_size=2)
    assert all(isinstance(e.offsets, np.ndarray) for e in loader.dataset.table)


@pytest.mark.parametrize("value,shown", [("[1, -2]", "a number (-2)"), ("[1, 2.5]", "a number (2.5)"),
                                         ('[1, "x"]', 'a string ("x")')])
def test_a_damaged_per_sample_list_is_named_either_way(tmp_path, value, shown):
    path = make_dataset(str(tmp_path / "ds"), [3, 3])
    text = open(path).read()
    d = json.loads(text)
    d["shardlist"][1]["sample_offsets"] = "@"
    with open(path, "w") as f:
        f.write(json.dumps(d, indent=1).replace('"@"', value))
    for arrays in (False, True):
        with pytest.raises(IndexFormatError, match=r"shardlist\[1\]\.sample_offsets\[1\]' is " + re.escape(shown)):
            load_index(path, arrays=arrays)


def test_a_state_from_the_previous_planner_is_refused(tmp_path):
    path = make_dataset(str(tmp_path / "ds"), [20, 20])
    loader = StreamingLoader(path, batch_size=4, num_workers=0)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state["plan"]["planner"] == PLANNER_VERSION == 5
    state["plan"]["planner"] = 4
    with pytest.raises(ResumeMismatch, match="different dataset or loader configuration"):
        StreamingLoader(path, batch_size=4, num_workers=0).load_state_dict(state)
