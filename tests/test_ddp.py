"""Real multi-process torch.distributed (gloo): equal batch counts and exactly-once coverage."""

import json
import os
import socket
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from shardgen import all_keys, make_dataset

from wds_pipeline import StreamingLoader


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, scenarios, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # 2-core CI machine: ranks x workers already oversubscribe it
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, index, opts in scenarios:
            _run_scenario(rank, world, name, index, opts, out_dir)
    finally:
        dist.destroy_process_group()


def _run_scenario(rank, world, name, index, opts, out_dir):
    if True:
        loader = StreamingLoader(index, **opts)  # rank/world come from torch.distributed
        assert (loader.rank, loader.world_size) == (rank, world)
        steps, keys, pads = 0, [], 0
        for batch in loader:
            # A collective every step: a rank with fewer batches would hang here.
            t = torch.ones(1)
            dist.all_reduce(t)
            assert int(t) == world
            keys += [k for k, p in zip(batch.keys, batch.is_padding.tolist()) if not p]
            pads += int(batch.is_padding.sum())
            steps += 1
        with open(os.path.join(out_dir, f"{name}-rank{rank}.json"), "w") as f:
            json.dump({"steps": steps, "len": len(loader.plan(0).ranks[rank].order), "keys": keys,
                       "pads": pads, "dropped": loader.dropped_samples(0)}, f)


def run_ranks(world, scenarios, tmp_path):
    """Start ``world`` real processes once and run every scenario in them (startup dominates)."""
    mp.start_processes(_rank_main, args=(world, _free_port(), scenarios, str(tmp_path)),
                       nprocs=world, join=True, start_method="spawn")
    return {name: [json.load(open(tmp_path / f"{name}-rank{r}.json")) for r in range(world)]
            for name, _, _ in scenarios}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    # 4 unequal shards, fewer than ranks x workers (3 x 2 = 6 streams).
    fixed = make_dataset(str(root / "fixed"), [23, 4, 31, 9])
    varied = make_dataset(str(root / "varied"), [40, 17, 25],
                          frames=lambda s, i: 1600 * (1 + (s * 13 + i * 7) % 9))
    return fixed, varied


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_equal_batches_and_every_sample_once(tmp_path, datasets, world):
    fixed, varied = datasets
    # Ranks started by mp.spawn make DataLoader workers default to "spawn" too (each
    # re-imports torch, ~2 s). torchrun starts ranks as fresh interpreters whose default
    # is fork; match that.
    common = dict(num_workers=2, shuffle_buffer=16, multiprocessing_context="fork")
    scenarios = [
        ("pad", fixed, dict(batch_size=4, last_batch="pad", **common)),
        ("drop", fixed, dict(batch_size=4, last_batch="drop", **common)),
        ("bucketed", varied, dict(batch_size=None, max_batch_seconds=3.0, last_batch="pad", **common)),
    ]
    results = run_ranks(world, scenarios, tmp_path)
    for name, index, _ in scenarios:
        _check(results[name], index, policy="drop" if name == "drop" else "pad")


def _check(res, index, policy):
    steps = {r["steps"] for r in res}
    assert len(steps) == 1 and steps == {res[0]["len"]}
    seen = Counter(k for r in res for k in r["keys"])
    assert all(v == 1 for v in seen.values())
    everything = all_keys(index)
    if policy == "pad":
        assert set(seen) == everything
    else:
        assert len(seen) + sum(r["dropped"] for r in res) == len(everything)
        assert sum(r["pads"] for r in res) == 0
