"""Shuffle quality of the loader's two-level shuffle vs a full random permutation.

Worst case on purpose: the dataset is written speaker-sorted (200 speakers x 100
utterances, 1,000-sample shards, so one shard holds 10 speakers; the builder's own
seeded input shuffle is NOT applied). The loader shuffles the shard order every
epoch and then samples through a bounded buffer; we measure, on the exact order the
loader yields (planner output = executed order, see tests/test_loader.py):

* rank correlation (Spearman) between storage position and yield position: 0 is ideal;
* mean displacement |yield pos - storage pos| / N: 1/3 for a uniform permutation;
* mean speaker run length (consecutive samples of the same speaker): ~1.005 ideal;
* distinct speakers per batch of 64 (ideal ~ 54.5 of 200 for a uniform draw).

    python benchmarks/shuffle_quality.py
"""

from __future__ import annotations

import argparse
import json
import os
import random

import numpy as np

from wds_pipeline.loader.plan import PlanConfig, ShardMeta, plan_epoch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def yielded_order(sizes: list[int], cfg: PlanConfig, workers: int) -> np.ndarray:
    """Global storage positions in the order rank 0 yields them (workers interleaved)."""
    return _yielded(sizes, cfg, workers)[0]


def first_batch_reads(sizes: list[int], cfg: PlanConfig, workers: int) -> int:
    """Samples worker 0 reads before its first batch is complete (what a cold epoch
    downloads per worker before the first training step)."""
    return _yielded(sizes, cfg, workers)[1]


def _yielded(sizes: list[int], cfg: PlanConfig, workers: int) -> tuple[np.ndarray, int]:
    metas = [ShardMeta(dataset=0, shard=s, nsamples=n, frames=(48000,) * n) for s, n in enumerate(sizes)]
    plan = plan_epoch(metas, cfg, epoch=0, world_size=1, num_workers=workers)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rp = plan.ranks[0]
    cursors = [0] * workers
    out = []
    for w in rp.order:
        wp = rp.workers[w]
        b = wp.batches[cursors[w]]
        cursors[w] += 1
        gpos = starts[np.asarray(plan.slots)[wp.read_slots[b.items]]] + wp.read_index[b.items]
        out.extend(gpos[~b.padding].tolist())
    return np.asarray(out), int(rp.workers[0].batches[0].ready_at) + 1


def metrics(order: np.ndarray, per_speaker: int, batch: int) -> dict:
    n = len(order)
    ranks = np.empty(n)
    ranks[np.argsort(order)] = np.arange(n)
    spearman = float(np.corrcoef(ranks, np.arange(n))[0, 1])
    displacement = float(np.abs(ranks - np.arange(n)).mean() / n)  # storage pos vs yield pos
    spk = order // per_speaker
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[-1], spk, [-1]])) != 0))
    per_batch = [len(set(spk[i : i + batch].tolist())) for i in range(0, n - batch + 1, batch)]
    return {"spearman": spearman, "displacement": displacement,
            "mean_speaker_run": float(runs.mean()), "speakers_per_batch": float(np.mean(per_batch)),
            # the epoch's start, where the buffer is still warming up
            "speakers_per_batch_first_4": float(np.mean(per_batch[:4]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--per-speaker", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(RESULTS, "shuffle_quality.json"))
    args = ap.parse_args(argv)
    sizes = [args.shard_size] * (args.samples // args.shard_size)
    rows = {}
    perm = np.arange(sum(sizes))
    random.Random(0).shuffle(perm)
    rows["full permutation"] = metrics(perm, args.per_speaker, args.batch)
    rows["no shuffle"] = metrics(yielded_order(sizes, PlanConfig(batch_size=args.batch, shuffle=False), args.workers),
                                 args.per_speaker, args.batch)
    for buf in (1, 100, 1000, 5000, 20000):
        cfg = PlanConfig(batch_size=args.batch, shuffle_buffer=buf, seed=0)
        rows[f"shards shuffled, buffer {buf}"] = metrics(yielded_order(sizes, cfg, args.workers),
                                                       args.per_speaker, args.batch)
        rows[f"shards shuffled, buffer {buf}"]["first_batch_reads"] = first_batch_reads(sizes, cfg, args.workers)
    print(f"{args.samples} samples, speaker-sorted, {args.shard_size}/shard, {args.workers} workers, batch {args.batch}")
    print(f"{'order':32} {'spearman':>9} {'displ.':>7} {'spk run':>8} {'spk/batch':>10} "
          f"{'first 4':>8} {'reads to 1st':>12}")
    for name, m in rows.items():
        print(f"{name:32} {m['spearman']:>9.3f} {m['displacement']:>7.3f} {m['mean_speaker_run']:>8.2f} "
              f"{m['speakers_per_batch']:>10.1f} {m['speakers_per_batch_first_4']:>8.1f} "
              f"{m.get('first_batch_reads', '-'):>12}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"setup": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
