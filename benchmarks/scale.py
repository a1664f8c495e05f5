"""A VoxCeleb2-sized index (issue 21): construction, first batch, epoch plan and memory.

The index has 1,092 shards x 1,000 samples (1.09 M samples; VoxCeleb2 dev is 1,092,009
utterances), written by the project's writer: ``index.json`` is as big as a real one
(every sample's frame count, byte offset and crc32). Only ``--real`` shards (default 2,
~35 MB each, 1,000 clips of 0.5-1.5 s) exist: entry i of the index is a copy of real
shard ``i % real``'s entry, pointing at that file, so every entry is readable and its
per-sample numbers are true. What it measures (each in a fresh process, the library
imported before the clock starts):

* construct: ``StreamingLoader(index, batch_size=32, num_workers=N)`` (reads and checks the
  index, builds the shard table, plans epoch 0);
* first batch: ``next(iter(loader))`` (with 2 workers, their start-up included);
* plan per epoch: ``loader.dataset.plan(e)`` for two fresh epochs, the mean (what every
  rank and worker pays at every epoch start);
* memory after the first batch, per process (psutil): USS (pages only that process holds;
  with forked workers the pages they still share with the main process count in nobody's
  USS) and PSS (every page divided among the processes sharing it: what each costs); the
  growth of the main process's USS over construction and first batch (mostly the index);
  and the bytes of the shard table's per-sample arrays.

On local disk and on the Drive-like mount (tools/slowfs.py: FUSE, ``--latency-ms`` per
open, ``--bandwidth-mbps`` shared; the kernel does not keep a FUSE file's pages between
opens, so every run reads the index over the link), with a cold shard cache in a local
folder. The working tree reads the index as the builder writes a split this large
(``index.json`` plus its per-sample lists in ``index-samples.npy``: "new") and, except with
``--quick``, the same index with the lists inline in the JSON ("new-inline"). ``--baseline
REV`` runs the same measurements with REV's wds_pipeline on the inline index (unpacked with
``git archive``, as ``peers.py --baseline`` does), interleaved with the working tree's.

    .venv/bin/python benchmarks/scale.py --baseline 6c97b66       # ~10 min on 2 cores
    .venv/bin/python benchmarks/scale.py --quick                   # working tree only, 1 repeat
    python benchmarks/scale.py --child ...                         # one measurement (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from _common import keep_quoted_results  # noqa: E402

TARGETS = {"local": 1.0, "drive": 3.0}  # construct + first batch, s (issue 21)
PLAN_TARGET = 0.5  # s per epoch plan


INLINE = "index-inline.json"  # the same index with its per-sample lists in the JSON (format 2)


def write_index(data_dir: str, shards: int, per_shard: int, real: int) -> str:
    """The synthetic index (reused when already written with these sizes), as the builder
    writes it: ``index.json`` with its per-sample lists in ``index-samples.npy``; and the same
    index with the lists inline (:data:`INLINE`, what builds wrote before the sidecar)."""
    import numpy as np  # noqa: F401  (the writer's dependency, imported before timing nothing)

    from wds_pipeline.index import DatasetIndex
    from wds_pipeline.testing import write_synthetic_dataset

    path = os.path.join(data_dir, "index.json")
    stamp = os.path.join(data_dir, f".written-{shards}x{per_shard}-{real}-sidecar")
    if os.path.exists(stamp):
        return path
    shutil.rmtree(data_dir, ignore_errors=True)
    real_dir = os.path.join(data_dir, "real")
    # 0.5-1.5 s clips, spread over the range (a fixed pseudo-random pattern).
    write_synthetic_dataset(real_dir, [per_shard] * real, speakers=1000,
                            frames=lambda s, i: 8000 + (s * 7919 + i * 104729) % 16000)
    with open(os.path.join(real_dir, "index.json")) as f:
        d = json.load(f)
    base = d["shardlist"]
    d["shardlist"] = [dict(base[i % real], url="real/" + base[i % real]["url"]) for i in range(shards)]
    d["wds_pipeline"]["num_samples"] = shards * per_shard
    d["wds_pipeline"]["total_duration"] = round(sum(s["duration"] for s in d["shardlist"]), 3)
    d["wds_pipeline"]["counts"] = {k: shards * per_shard for k in ("inputs", "written", "samples")}
    with open(os.path.join(data_dir, INLINE), "w") as f:
        f.write(json.dumps(d, sort_keys=True, indent=1, ensure_ascii=False) + "\n")  # as DatasetIndex.to_json
    with open(os.path.join(data_dir, INLINE), "rb") as f:
        index = DatasetIndex.from_json(f.read(), base_url=data_dir, arrays=True)
    for url, data in index.files(path):  # as the builder writes a split this large
        with open(url, "wb") as f:
            f.write(data)
    open(stamp, "w").close()
    return path


# ------------------------------------------------------------------ one measurement


def child(index: str, workers: int, cache_dir: str, root: str) -> dict[str, Any]:
    """Runs in a fresh process whose wds_pipeline is the one under ``root``."""
    import numpy as np
    import psutil

    import wds_pipeline
    from wds_pipeline import StreamingLoader

    where = os.path.dirname(os.path.dirname(os.path.abspath(wds_pipeline.__file__)))
    if where != os.path.abspath(root):
        raise SystemExit(f"wds_pipeline imported from {where}, not {root}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    me = psutil.Process()
    uss0 = me.memory_full_info().uss
    t0 = time.perf_counter()
    loader = StreamingLoader(index, batch_size=32, num_workers=workers, cache_dir=cache_dir,
                             rank=0, world_size=1)
    t1 = time.perf_counter()
    it = iter(loader)
    batch = next(it)
    t2 = time.perf_counter()
    assert batch.waveform.shape[0] == 32
    kids = [c.memory_full_info() for c in me.children(recursive=True)]
    mine = me.memory_full_info()
    uss = mine.uss
    plans = []
    for epoch in (1, 2):
        t = time.perf_counter()
        loader.dataset.plan(epoch)
        plans.append(time.perf_counter() - t)
    table = getattr(loader.dataset, "table", [])
    arrays = sum(getattr(getattr(e, k), "nbytes", 0) for e in table for k in ("offsets", "crc32"))
    arrays += sum(getattr(e.meta.frames, "nbytes", 0) for e in table)
    del it
    return {"construct_s": t1 - t0, "first_batch_s": t2 - t1, "start_s": t2 - t0,
            "plan_s": float(np.mean(plans)), "uss_main_MB": uss / 1e6,
            "uss_main_growth_MB": (uss - uss0) / 1e6,
            "pss_main_MB": mine.pss / 1e6,
            "uss_worker_MB": max(k.uss for k in kids) / 1e6 if kids else None,
            "pss_worker_MB": max(k.pss for k in kids) / 1e6 if kids else None,
            "table_arrays_MB": arrays / 1e6 if arrays else None,
            "samples": loader.num_samples}


def measure(root: str, index: str, workers: int, cache_dir: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--index", index,
                          "--workers", str(workers), "--cache-dir", cache_dir, "--root", root],
                         env=env, capture_output=True, text=True, cwd=root)
    if out.returncode:
        raise RuntimeError(f"measurement failed ({root}, {workers} workers):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the run


def add_mount_options(ap: argparse.ArgumentParser, data_dir: str, out_name: str) -> None:
    """Options of a benchmark on the Drive-like mount that measures in child processes
    (this one and first_batch.py): the mount, where its data and results go, the child's."""
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--bandwidth-mbps", type=float, default=20.0)
    ap.add_argument("--data-dir", default=data_dir)
    ap.add_argument("--out", default=os.path.join(BENCH, "results", out_name))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="REV", help="also measure REV's wds_pipeline, interleaved")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat, local disk and the mount, 0 workers")
    ap.add_argument("--shards", type=int, default=1092)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--real", type=int, default=2, help="shard files that exist (the rest point at them)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    add_mount_options(ap, "/tmp/wds-scale-bench", "scale.json")
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    if args.child:
        print(json.dumps(child(args.index, args.workers[0], args.cache_dir, args.root)))
        return 0
    if args.quick:
        args.repeats, args.workers = 1, [0]
    sys.path.insert(0, REPO)
    from peers_baseline import unpack

    from tools.slowfs import mount_slowfs

    backing = os.path.join(args.data_dir, "set")
    index = write_index(backing, args.shards, args.per_shard, args.real)
    # side -> (the wds_pipeline it imports, the index it reads): the working tree on the
    # builder's index (sidecar) and on the inline one; REV on the inline one (it predates
    # the sidecar's format 3, which it refuses).
    sides = {"new": (REPO, "index.json")}
    if not args.quick:
        sides["new-inline"] = (REPO, INLINE)
    if args.baseline:
        sides["old"] = (unpack(args.baseline, args.data_dir)[0], INLINE)
    sidecar = os.path.join(backing, "index-samples.npy")
    setup = {"index_MB": os.path.getsize(index) / 1e6,
             "sidecar_MB": os.path.getsize(sidecar) / 1e6 if os.path.exists(sidecar) else None,
             "inline_index_MB": os.path.getsize(os.path.join(backing, INLINE)) / 1e6,
             "samples": args.shards * args.per_shard,
             "shards": args.shards, "real_shards": args.real, "batch_size": 32,
             "mount": f"slowfs: {args.latency_ms:g} ms per open, {args.bandwidth_mbps:g} MB/s",
             "baseline": args.baseline, "repeats": args.repeats}
    print("setup:", setup, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    cache = os.path.join(args.data_dir, "cache")

    def run_all(storage: str, folder: str) -> None:
        for rep in range(args.repeats):
            for workers in args.workers:
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for side in order:
                    root, name = sides[side]
                    r = measure(root, os.path.join(folder, name), workers, cache)
                    runs.setdefault(f"{storage}|{workers}|{side}", []).append(r)
                    print(f"  {storage} {workers}w {side}: construct {r['construct_s']:.2f} s, first batch "
                          f"{r['first_batch_s']:.2f} s, plan {r['plan_s']:.2f} s, USS {r['uss_main_MB']:.0f} MB",
                          flush=True)

    run_all("local", backing)
    with mount_slowfs(backing, os.path.join(args.data_dir, "mnt"), latency_ms=args.latency_ms,
                      bandwidth_mbps=args.bandwidth_mbps) as m:
        run_all("drive", m.mountpoint)
    rows = summarize(runs)
    print_table(rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"setup": setup, "rows": rows, "runs": runs}, f, indent=1)
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for key, rs in runs.items():
        storage, workers, side = key.split("|")
        row: dict[str, Any] = {"storage": storage, "workers": int(workers), "side": side}
        for k in rs[0]:
            vals = [r[k] for r in rs if r[k] is not None]
            row[k] = statistics.median(vals) if vals else None
        if side.startswith("new"):
            row["meets"] = row["start_s"] <= TARGETS[storage] and row["plan_s"] <= PLAN_TARGET
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print("| storage | workers | side | construct s | first batch s | construct + first s | plan/epoch s "
          "| USS main MB (growth) | PSS main MB | USS / PSS per worker MB | table arrays MB | target met |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r["storage"] != "local", r["workers"], r["side"])):
        print(f"| {r['storage']} | {r['workers']} | {r['side']} | {f(r['construct_s'], '.2f')} | "
              f"{f(r['first_batch_s'], '.2f')} | {f(r['start_s'], '.2f')} | {f(r['plan_s'], '.2f')} | "
              f"{f(r['uss_main_MB'], '.0f')} ({f(r['uss_main_growth_MB'], '.0f')}) | {f(r['pss_main_MB'], '.0f')} | "
              f"{f(r['uss_worker_MB'], '.0f')} / {f(r['pss_worker_MB'], '.0f')} | {f(r['table_arrays_MB'], '.1f')} | "
              f"{({True: 'yes', False: 'NO'}).get(r.get('meets'), '')} |")


if __name__ == "__main__":
    raise SystemExit(main())
