"""Loader throughput: raw tar ceiling vs a plain webdataset pipeline vs wds_pipeline.

All three read the same shards, in page cache, in one process run (this machine is
noisy: compare ratios within a run, not absolute numbers across runs).

  (a) ceiling: one process, mmap of each tar, header parsing, np.frombuffer copied
      into a preallocated (B, T) batch tensor; no framework, no shuffling.
  (b) webdataset: WebDataset -> decode -> to_tuple -> batched -> WebLoader, as a user
      writes it (same batch size and workers).
  (c) wds_pipeline.StreamingLoader with a 5,000-sample shuffle buffer.

Also: peak memory of the whole loader (main + workers; RSS summed, and PSS summed,
which counts shared pages once), and the padding fraction of duration bucketing vs
fixed-size batches of shuffled variable-length (1-15 s) utterances.

    python benchmarks/loader_throughput.py            # full run (~20,000 clips)
    python benchmarks/loader_throughput.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import sys
import time

import numpy as np
import psutil
import torch
from _common import RESULTS, keep_quoted_results

import wds_pipeline
from wds_pipeline import StreamingLoader
from wds_pipeline.index import load_index
from wds_pipeline.testing import write_synthetic_dataset


def _sample_memory(pid: int, interval: float, stop, ready, out) -> None:
    """Runs in its own process: reading smaps is slow and must not take the GIL of
    the process being measured."""
    peak_rss = peak_pss = 0
    root = psutil.Process(pid)
    while not stop.is_set():
        rss = pss = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in procs:
            if p.pid == os.getpid():
                continue  # the sampler itself is a child of the measured process
            try:
                info = p.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            except psutil.Error:
                pass
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        ready.set()
        stop.wait(interval)
    out.put((peak_rss, peak_pss))


class PeakMemory:
    """Peak RSS and PSS of this process and all its children (PSS counts shared pages once)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_rss = self.peak_pss = 0

    def __enter__(self):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._stop, self._ready, self._out = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(
            target=_sample_memory, args=(os.getpid(), self.interval, self._stop, self._ready, self._out)
        )
        self._proc.start()
        self._ready.wait(60)  # measure from the first sample on, not from the sampler's start-up
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.peak_rss, self.peak_pss = self._out.get(timeout=30)
        self._proc.join()


def make_fixed_dataset(root: str, clips: int, seconds: float, shard_size: int, per_speaker: int) -> str:
    index = os.path.join(root, "index.json")
    stamp = os.path.join(root, ".done")
    if os.path.exists(stamp):
        return index
    frames = int(seconds * 16000)
    sizes = [min(shard_size, clips - s) for s in range(0, clips, shard_size)]
    speakers = max(1, clips // per_speaker)
    write_synthetic_dataset(root, sizes, frames=lambda s, i: frames, speakers=speakers,
                            label=lambda s, i: (s * shard_size + i) % speakers, name="fixed")
    open(stamp, "w").close()
    return index


def make_variable_dataset(root: str, clips: int) -> str:
    index = os.path.join(root, "index.json")
    stamp = os.path.join(root, ".done")
    if os.path.exists(stamp):
        return index
    rng = np.random.default_rng(1)
    lengths = rng.uniform(1.0, 15.0, size=clips)
    per = 100
    sizes = [min(per, clips - s) for s in range(0, clips, per)]
    write_synthetic_dataset(root, sizes, frames=lambda s, i: int(lengths[s * per + i] * 16000), name="var")
    open(stamp, "w").close()
    return index


def warm(index_path: str) -> None:
    idx = load_index(index_path)
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            while f.read(16 << 20):
                pass


def run_ceiling(index_path: str, batch: int, frames: int) -> dict:
    idx = load_index(index_path)
    out = torch.empty((batch, frames), dtype=torch.int16)
    view = out.numpy()
    n = row = 0
    t0 = time.perf_counter()
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            pos, end = 0, len(m)
            while pos + 512 <= end:
                header = m[pos : pos + 512]
                if header[0] == 0:
                    break
                size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
                name = header[:100].rstrip(b"\0")
                data = pos + 512
                if name.endswith(b".npy"):
                    count = (size - 128) // 2  # fixed 128-byte npy header for 1-D int16
                    # No reference kept: the mmap must be closable after the shard.
                    view[row, :count] = np.frombuffer(m, dtype=np.int16, count=count, offset=data + 128)
                    row += 1
                    n += 1
                    if row == batch:
                        row = 0
                pos = data + (size + 511) // 512 * 512
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt}


def run_webdataset(index_path: str, batch: int, workers: int, shuffle: int = 0, epochs: int = 1) -> dict:
    import webdataset as wds

    idx = load_index(index_path)
    urls = [idx.shard_url(i) for i in range(len(idx.shards))]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    if shuffle:
        ds = ds.shuffle(shuffle)
    ds = ds.decode().to_tuple("audio.npy", "cls").batched(batch)
    loader = wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=epochs > 1 and workers > 0)
    with PeakMemory() as mem:
        for _ in range(epochs):  # the last epoch is timed
            n = 0
            t0 = time.perf_counter()
            for audio, cls in loader:
                n += len(audio)
            dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "peak_rss": mem.peak_rss, "peak_pss": mem.peak_pss}


def run_ours(index_path: str, batch: int, workers: int, shuffle_buffer: int, epochs: int = 1) -> dict:
    loader = StreamingLoader(index_path, batch_size=batch, num_workers=workers, shuffle_buffer=shuffle_buffer,
                             waveform_dtype="int16", fields=("waveform", "label"), last_batch="pad",
                             persistent_workers=epochs > 1 and workers > 0)
    with PeakMemory() as mem:
        for _ in range(epochs):  # the last epoch is timed
            n = 0
            t0 = time.perf_counter()
            for b in loader:
                n += len(b)
            dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "peak_rss": mem.peak_rss, "peak_pss": mem.peak_pss}


def padding_fraction(index_path: str, **opts) -> dict:
    loader = StreamingLoader(index_path, num_workers=2, waveform_dtype="int16", **opts)
    real = padded = batches = 0
    for b in loader:
        real += int(b.lengths.sum())
        padded += b.waveform.shape[0] * b.waveform.shape[1]
        batches += 1
    return {"padding_fraction": 1 - real / padded, "batches": batches}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--shuffle-buffer", type=int, default=5000)
    ap.add_argument("--variable-clips", type=int, default=1200)
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration; the best is reported")
    ap.add_argument("--data-dir", default="/tmp/wds_pipeline_bench/loader")
    ap.add_argument("--out", default=os.path.join(RESULTS, "loader_throughput.json"),
                    help="JSON path (with --quick, by default a temp file: a smoke run never replaces reported figures)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.shard_size, args.variable_clips, args.workers, args.repeats = 640, 160, 120, "0,2", 1
        args.data_dir = args.data_dir + "-quick"
    keep_quoted_results(args)
    workers = [int(w) for w in args.workers.split(",")]
    frames = int(args.seconds * 16000)
    clip_mb = frames * 2 / 1e6

    fixed = make_fixed_dataset(os.path.join(args.data_dir, f"fixed-{args.clips}-{args.seconds}-{args.shard_size}"),
                               args.clips, args.seconds, args.shard_size, 100)
    variable = make_variable_dataset(os.path.join(args.data_dir, f"variable-{args.variable_clips}"), args.variable_clips)
    warm(fixed)
    warm(variable)

    setup = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": sys.version.split()[0], "torch": torch.__version__,
        "webdataset": __import__("webdataset").__version__, "wds_pipeline": wds_pipeline.__version__,
        "clips": args.clips, "clip_seconds": args.seconds, "shard_size": args.shard_size,
        "batch": args.batch, "shuffle_buffer": args.shuffle_buffer, "dtype": "int16",
        "repeats": args.repeats, "reported": "best of the repeats (interleaved b/c runs)",
    }
    print("setup:", json.dumps(setup))

    results: dict = {"setup": setup, "runs": []}
    ceiling = max((run_ceiling(fixed, args.batch, frames) for _ in range(args.repeats)),
                  key=lambda r: r["samples"] / r["seconds"])
    ceiling_rate = ceiling["samples"] / ceiling["seconds"]
    results["runs"].append({"name": "a_ceiling", "workers": 0, **ceiling, "samples_per_s": ceiling_rate})
    def best(runs: list[dict]) -> dict:
        top = max(runs, key=lambda r: r["samples"] / r["seconds"])
        top = dict(top, samples_per_s=top["samples"] / top["seconds"])
        top["all_samples_per_s"] = [round(r["samples"] / r["seconds"]) for r in runs]
        top["peak_rss"] = max(r["peak_rss"] for r in runs)
        top["peak_pss"] = max(r["peak_pss"] for r in runs)
        return top

    for w in workers:
        bs, cs = [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
            bs.append(run_webdataset(fixed, args.batch, w))
            cs.append(run_ours(fixed, args.batch, w, args.shuffle_buffer))
        results["runs"].append({"name": "b_webdataset", "workers": w, **best(bs)})
        results["runs"].append({"name": "c_wds_pipeline", "workers": w, **best(cs)})
    if 2 in workers:
        bsh = [run_webdataset(fixed, args.batch, 2, shuffle=args.shuffle_buffer) for _ in range(args.repeats)]
        results["runs"].append({"name": "b_webdataset+shuffle", "workers": 2, **best(bsh)})
        # Steady state of multi-epoch training: persistent workers, second epoch timed.
        bs, cs = [], []
        for _ in range(args.repeats):
            bs.append(run_webdataset(fixed, args.batch, 2, epochs=2))
            cs.append(run_ours(fixed, args.batch, 2, args.shuffle_buffer, epochs=2))
        results["runs"].append({"name": "b_webdataset_epoch2", "workers": 2, **best(bs)})
        results["runs"].append({"name": "c_wds_pipeline_epoch2", "workers": 2, **best(cs)})

    print(f"\n{'pipeline':24} {'workers':>7} {'samples/s':>10} {'MB/s':>8} {'peak RSS':>9} {'peak PSS':>9} {'c/b':>6} {'c/a':>6}")
    by = {(r["name"], r["workers"]): r for r in results["runs"]}
    ratios = {}
    for r in results["runs"]:
        rate = r["samples_per_s"]
        cb = ca = ""
        if r["name"].startswith("c_wds_pipeline"):
            base = "b_webdataset" + r["name"][len("c_wds_pipeline"):]
            cb_v = rate / by[(base, r["workers"])]["samples_per_s"]
            ca_v = rate / ceiling_rate
            ratios[f"{r['name']}@{r['workers']}"] = {"c_over_b": cb_v, "c_over_a": ca_v}
            cb, ca = f"{cb_v:6.2f}", f"{ca_v:6.2f}"
        rss, pss = (f"{r[k] / 2**30:7.2f}G" if k in r else "       -" for k in ("peak_rss", "peak_pss"))
        print(f"{r['name']:24} {r['workers']:>7} {rate:>10.0f} {rate * clip_mb:>8.0f} {rss:>9} {pss:>9} {cb:>6} {ca:>6}")
    results["ratios"] = ratios

    bucket_seconds = 32 * 8.0
    pad_fixed = padding_fraction(variable, batch_size=32)
    pad_bucket = padding_fraction(variable, batch_size=None, max_batch_seconds=bucket_seconds, num_buckets=10)
    results["padding"] = {"fixed_batch_32": pad_fixed, f"bucketed_{bucket_seconds:.0f}s": pad_bucket,
                          "clips": args.variable_clips}
    print(f"\npadding fraction on {args.variable_clips} clips of 1-15 s (shuffled, 2 workers):")
    print(f"  fixed batch of 32     : {pad_fixed['padding_fraction']:.1%} ({pad_fixed['batches']} batches)")
    print(f"  bucketed, {bucket_seconds:.0f} s/batch : {pad_bucket['padding_fraction']:.1%} ({pad_bucket['batches']} batches)")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
