"""The epoch planner: exactly-once coverage, equal batch counts, determinism (pure, no I/O)."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wds_pipeline.loader.plan import (
    PlanConfig,
    ShardMeta,
    partition,
    plan_epoch,
    resume_point,
    round_robin,
    shuffle_order,
)


def metas(sizes, frames=lambda s, i: 16000):
    return [ShardMeta(dataset=0, shard=s, nsamples=n, frames=tuple(frames(s, i) for i in range(n)))
            for s, n in enumerate(sizes)]


def yielded(plan, rank):
    """(slot, index) of every non-padding item the rank yields, plus padding count."""
    rp = plan.ranks[rank]
    out, pads = [], 0
    for wp in rp.workers:
        for b in wp.batches:
            for item, pad in zip(b.items, b.padding):
                if pad:
                    pads += 1
                else:
                    out.append((plan.slots[wp.read_slots[item]], int(wp.read_index[item])))
    return out, pads


def test_partition_covers_every_sample_once_even_with_fewer_shards_than_parts():
    parts = partition([5, 3], 7)
    seen = Counter()
    for p in parts:
        assert p, "no part may be empty when there are at least as many samples as parts"
        for slot, a, b in p:
            for i in range(a, b):
                seen[(slot, i)] += 1
    assert seen == Counter({(s, i): 1 for s, n in enumerate([5, 3]) for i in range(n)})
    assert sorted(sum(b - a for _, a, b in p) for p in parts) == [1, 1, 1, 1, 1, 1, 2]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    world=st.integers(1, 3),
    workers=st.integers(1, 4),
    bs=st.integers(1, 9),
    policy=st.sampled_from(["drop", "pad"]),
    shuffle=st.booleans(),
)
def test_every_sample_exactly_once_and_equal_batches(sizes, world, workers, bs, policy, shuffle):
    cfg = PlanConfig(batch_size=bs, last_batch=policy, shuffle=shuffle, shuffle_buffer=7, seed=3)
    plan = plan_epoch(metas(sizes), cfg, epoch=1, world_size=world, num_workers=workers)
    counts = {rp.num_batches for rp in plan.ranks}
    assert len(counts) == 1, "every rank must yield the same number of batches"
    everything = Counter()
    dropped = 0
    for r in range(world):
        items, _ = yielded(plan, r)
        everything.update(items)
        dropped += plan.ranks[r].dropped
        for wp in plan.ranks[r].workers:
            for b in wp.batches:
                assert len(b.items) == bs  # fixed batches are always full (padded or not)
    assert all(v == 1 for v in everything.values()), "no sample twice"
    total = sum(sizes)
    assert len(everything) + dropped == total
    if policy == "pad":
        assert dropped == 0 and len(everything) == total


def test_bucketing_keeps_padding_small_and_respects_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16000, 15 * 16000, size=(20, 50))
    m = metas([50] * 20, frames=lambda s, i: int(lengths[s, i]))
    bounds = tuple(int(q) for q in np.quantile(lengths, np.linspace(0, 1, 9)[1:-1]))
    cfg = PlanConfig(batch_size=None, max_batch_frames=60 * 16000, bucket_boundaries=bounds,
                     shuffle_buffer=500)
    plan = plan_epoch(m, cfg, epoch=0, world_size=1, num_workers=2)
    real = padded = 0
    for wp in plan.ranks[0].workers:
        fr = np.array([m[plan.slots[s]].frames[i] for s, i in zip(wp.read_slots, wp.read_index)])
        for b in wp.batches:
            f = fr[b.items]
            assert f.max() * len(f) <= 60 * 16000 or len(f) == 1
            real += f.sum()
            padded += f.max() * len(f)
    assert 1 - real / padded < 0.10


def test_plan_is_deterministic_and_differs_between_epochs():
    m = metas([30] * 6)
    cfg = PlanConfig(batch_size=4, shuffle_buffer=20, seed=11)
    a = plan_epoch(m, cfg, epoch=0, world_size=2, num_workers=2)
    b = plan_epoch(m, cfg, epoch=0, world_size=2, num_workers=2)
    c = plan_epoch(m, cfg, epoch=1, world_size=2, num_workers=2)
    assert yielded(a, 0) == yielded(b, 0)
    assert yielded(a, 0) != yielded(c, 0)


def test_shuffle_buffer_never_exceeds_capacity():
    order, at = shuffle_order(np.ones(1000), 50, 1e9, __import__("random").Random(0))
    assert sorted(order.tolist()) == list(range(1000))
    # An item cannot leave before it arrived, and at most capacity items wait.
    pos_of = np.empty(1000, dtype=int)
    pos_of[order] = np.arange(1000)
    assert (at[pos_of] >= np.arange(1000)).all()
    for k in range(len(order)):
        assert (at[k] + 1) - k <= 51


def test_shuffle_buffer_warms_up_then_fills_to_capacity():
    n, cap, initial = 1000, 200, 25
    order, at = shuffle_order(np.ones(n), cap, 1e9, __import__("random").Random(0), initial=initial)
    assert sorted(order.tolist()) == list(range(n))
    assert at[0] == initial  # the first sample leaves once initial + 1 were read
    waiting = [(at[k] + 1) - k for k in range(n)]  # held in the buffer after each release
    assert max(waiting) == cap + 1 and waiting[0] == initial + 1
    # one released for every two read until the buffer is full
    assert waiting[10] == initial + 1 + 10


def test_round_robin_and_resume_point():
    assert round_robin([2, 4, 1]) == [0, 1, 2, 0, 1, 1, 1]
    done, nxt = resume_point([0, 1, 2, 0, 1, 1, 1], 3, 4)
    assert done == [2, 1, 1] and nxt == 1


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="exactly one"):
        PlanConfig(batch_size=None)
    with pytest.raises(ValueError, match="last_batch"):
        PlanConfig(last_batch="keep")


@pytest.mark.parametrize("policy", ["drop", "pad"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_length_depends_on_data_batch_and_world_only(policy, world):
    """4,000 samples in uneven shards, batches of 64: every worker count gives the same
    number of batches per rank (before, drop trimmed a partial batch per worker: 62 batches
    with 1-2 workers, 60 with 3-4)."""
    m = metas([900, 700, 1100, 300, 1000])
    cfg = PlanConfig(batch_size=64, last_batch=policy, shuffle_buffer=500, seed=1)
    lengths = {w: plan_epoch(m, cfg, epoch=0, world_size=world, num_workers=w).num_batches
               for w in range(1, 5)}
    share = 4000 // world
    expected = share // 64 if policy == "drop" else -(-(share + (4000 % world > 0)) // 64)
    assert set(lengths.values()) == {expected}, lengths
    if world == 1:
        dropped = plan_epoch(m, cfg, epoch=0, world_size=1, num_workers=4).ranks[0].dropped
        assert dropped == (4000 % 64 if policy == "drop" else 0)
