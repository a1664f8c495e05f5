"""Time to the first batch on the Drive-like mount from a cold cache (issue 21, build item 5).

What a user waits, from ``StreamingLoader(...)`` to the first batch in hand, with the
loader settings of README.md's "Train from shards" snippet (batch 64, 3 s crops, 2
workers, a local ``cache_dir`` with ``cache_limit="60GB"``, every other option its
default), and with ``configs/colab.yaml``'s loader section (only ``cache_dir`` changed),
on shards behind ``tools/slowfs.py`` (FUSE: 100 ms per open, 20 MB/s shared; the kernel
keeps no page of a FUSE file between opens) with the shard cache emptied first. Each
measurement runs in a fresh process (the library imported before the clock starts, as a
training script has it), the settings interleaved, ``--repeats`` each, medians.

The set: 2,000 clips of 3-4 s (16 kHz int16) in shards of 100, written by the project's
writer (``wds_pipeline.testing``): the layout of ``train_input.py``'s corpus.

    .venv/bin/python benchmarks/first_batch.py            # ~1 min
    .venv/bin/python benchmarks/first_batch.py --quick    # 1 repeat

Writes benchmarks/results/first_batch.json.
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
from scale import add_mount_options  # noqa: E402 (the same mount and child options)

TARGET_S = 2.0  # issue 21: the README snippet's settings, cold cache, Drive-like mount
SETTINGS = ("readme", "colab")


def loader_config(setting: str, cache_dir: str) -> Any:
    """The LoaderConfig of ``setting``, its cache in ``cache_dir``."""
    from dataclasses import replace

    from wds_pipeline import LoaderConfig
    from wds_pipeline.loader import load_yaml_config

    if setting == "readme":  # README.md, "Train from shards"
        return LoaderConfig().replace(batch_size=64, crop_seconds=3.0, num_workers=2, cache_dir=cache_dir,
                                      cache_limit="60GB")  # as StreamingLoader(**options) takes them
    _, cfg = load_yaml_config(os.path.join(REPO, "configs", "colab.yaml"))
    return replace(cfg, cache_dir=cache_dir)


def child(index: str, setting: str, cache_dir: str) -> dict[str, Any]:
    from wds_pipeline import StreamingLoader

    cfg = loader_config(setting, cache_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    loader = StreamingLoader(index, cfg)
    t1 = time.perf_counter()
    it = iter(loader)
    batch = next(it)
    t2 = time.perf_counter()
    del it
    return {"construct_s": t1 - t0, "first_batch_s": t2 - t0, "batch_size": len(batch),
            "num_workers": cfg.num_workers, "shuffle_buffer": cfg.shuffle_buffer,
            "waveform_dtype": cfg.waveform_dtype}


def measure(index: str, setting: str, cache_dir: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--index", index,
                          "--setting", setting, "--cache-dir", cache_dir],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"measurement failed ({setting}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_set(folder: str, clips: int, per_shard: int) -> None:
    from wds_pipeline.testing import write_synthetic_dataset

    stamp = os.path.join(folder, f".written-{clips}-{per_shard}")
    if os.path.exists(stamp):
        return
    shutil.rmtree(folder, ignore_errors=True)
    sizes = [min(per_shard, clips - s) for s in range(0, clips, per_shard)]
    write_synthetic_dataset(folder, sizes, speakers=40, frames=lambda s, i: 48000 + (s * 7919 + i * 104729) % 16000)
    open(stamp, "w").close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat")
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--per-shard", type=int, default=100)
    add_mount_options(ap, "/tmp/wds-first-batch-bench", "first_batch.json")
    ap.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    if args.child:
        print(json.dumps(child(args.index, args.setting, args.cache_dir)))
        return 0
    if args.quick:
        args.repeats = 1
    sys.path.insert(0, REPO)
    from tools.slowfs import mount_slowfs

    backing = os.path.join(args.data_dir, "set")
    write_set(backing, args.clips, args.per_shard)
    setup = {"clips": args.clips, "per_shard": args.per_shard, "clip_seconds": "3-4",
             "mount": f"slowfs: {args.latency_ms:g} ms per open, {args.bandwidth_mbps:g} MB/s",
             "repeats": args.repeats, "load_before": [round(x, 2) for x in os.getloadavg()]}
    print("setup:", setup, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    cache = os.path.join(args.data_dir, "cache")
    with mount_slowfs(backing, os.path.join(args.data_dir, "mnt"), latency_ms=args.latency_ms,
                      bandwidth_mbps=args.bandwidth_mbps) as m:
        for rep in range(args.repeats):
            for setting in (SETTINGS if rep % 2 == 0 else SETTINGS[::-1]):
                r = measure(os.path.join(m.mountpoint, "index.json"), setting, cache)
                runs.setdefault(setting, []).append(r)
                print(f"  {setting}: first batch {r['first_batch_s']:.2f} s (construct {r['construct_s']:.2f} s)",
                      flush=True)
    rows = {s: {"first_batch_s": statistics.median(r["first_batch_s"] for r in rs),
                "range_s": [min(r["first_batch_s"] for r in rs), max(r["first_batch_s"] for r in rs)],
                "construct_s": statistics.median(r["construct_s"] for r in rs),
                **{k: rs[0][k] for k in ("batch_size", "num_workers", "shuffle_buffer", "waveform_dtype")}}
            for s, rs in runs.items()}
    print("| settings | batch | workers | shuffle buffer | output | construct s | **first batch s** (range) |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for s, r in rows.items():
        print(f"| {s} | {r['batch_size']} | {r['num_workers']} | {r['shuffle_buffer']} | {r['waveform_dtype']} | "
              f"{r['construct_s']:.2f} | {r['first_batch_s']:.2f} ({r['range_s'][0]:.2f}-{r['range_s'][1]:.2f}) |")
    print(f"target (readme) <= {TARGET_S} s: {'met' if rows['readme']['first_batch_s'] <= TARGET_S else 'NOT met'}")
    setup["load_after"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"setup": setup, "rows": rows, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
