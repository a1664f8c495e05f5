"""Reading speech clips from GCS over a slow link: wds_pipeline vs a per-file loop vs
a plain webdataset pipeline.

The bucket is gcp-storage-emulator (in memory, over HTTP, gcsfs talks to it exactly
as to GCS). Every client reaches it through tools/faultproxy.py, which adds 30 ms to
every connection and every request and shares one 50 MB/s budget among all
connections: a cloud bucket seen from a VM in another region. Stored twice, with
identical samples: N clips (3 s, 16 kHz, int16) as one ``.npy`` object per clip,
and as wds_pipeline shards (``--shard-size`` clips each) + ``index.json``.

  (1) ``StreamingLoader`` on ``gs://.../index.json`` (2 workers, 2 shards prefetched
      per worker): with ``cache_dir`` on local disk (epoch 1 streams the shards into
      the cache, epoch 2 reads the cache), and without a cache (a ``cache_limit``
      below one shard: every shard is streamed uncached, epoch after epoch);
  (2) a plain gcsfs loop, one ``cat_file`` + ``np.load`` per ``.npy`` object, one
      process (on a subset: ``--baseline-files``; the rate does not depend on N);
  (3) plain webdataset: ``wds.WebDataset(urls)`` with ``gs://`` opened by gcsfs,
      registered in ``webdataset.gopen.gopen_schemes`` (webdataset itself would shell
      out to ``gsutil``), ``.decode()``, ``.to_tuple``, ``.batched``, ``WebLoader`` with
      2 workers. Two openers: ``fsspec.open(url).open()`` as most users write it (on
      ``--webdataset-default-shards`` shards: gcsfs's default "adaptive" cache sends
      one HTTP request per small read, so a tar stream crawls), and a tuned
      ``fs.open(path, block_size=8 MiB, cache_type="readahead")`` on all shards.

Ceilings, to tell who limits: all shards fetched from 4 threads with ``cat_file``
(i) straight from the emulator and (ii) through the proxy without latency or cap
(the proxy's relay speed); then through the proxy with the 30 ms / 50 MB/s settings,
in 8 MiB reads (our fetcher's pattern) from 1 and from 4 threads (the proxy paces
each connection chunk by chunk, so one connection reaches only about half the cap),
and with ``cat_file`` from 4 threads. MB/s counts payload bytes (1 MB = 10^6 B); the proxy's byte counter gives
the bytes on the wire (HTTP included) as well.

    python benchmarks/gcs_io.py            # 2,000 clips, ~2 minutes
    python benchmarks/gcs_io.py --quick    # smoke run

Writes benchmarks/results/gcs_io.json and gcs_io.png.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    PeakMemory,
    add_rates,
    add_speedup,
    apply_quick,
    bar_chart,
    check_keys,
    io_arg_parser,
    machine,
    make_clips,
    print_targets,
    repeat,
    run_epoch,
    start_emulator,
    table,
    targets_of,
    write_json,
)

from tools.faultproxy import FaultProxy

BUCKET = "bench"
TARGETS = {"ours_epoch1_cap_fraction": 0.80}


def _put_media(emulator_url: str, name: str, body: bytes) -> None:
    """One ``uploadType=media`` request: the bytes go up as the body, with no
    multipart encoding for the emulator to parse."""
    q = urllib.parse.urlencode({"uploadType": "media", "name": name})
    req = urllib.request.Request(
        f"{emulator_url}/upload/storage/v1/b/{BUCKET}/o?{q}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def upload(emulator_url: str, fs, data: dict) -> float:
    """Shards and index with gcsfs, .npy objects with media uploads;
    then every object's size is checked against its file."""
    t0 = time.perf_counter()
    shard_dir = os.path.join(data["root"], "shards")
    shards = {
        f"shards/{n}": os.path.join(shard_dir, n)
        for n in os.listdir(shard_dir)
        if n.endswith((".tar", ".json"))
    }
    for name, local in sorted(shards.items()):
        fs.put_file(local, f"{BUCKET}/{name}")
    npys = {f"npy/{k}.npy": os.path.join(data["root"], "npy", k + ".npy") for k in data["keys"]}

    def put(item: tuple[str, str]) -> None:
        with open(item[1], "rb") as f:
            _put_media(emulator_url, item[0], f.read())

    # Serial: the emulator's uploads slow down as its store grows, threads do not help.
    for item in sorted(npys.items()):
        put(item)
    fs.invalidate_cache()
    sizes = {}
    for prefix in ("shards", "npy"):
        sizes.update(
            {
                p.split("/", 1)[1]: s
                for p, s in (
                    (e["name"], e["size"]) for e in fs.ls(f"{BUCKET}/{prefix}", detail=True)
                )
            }
        )
    bad = [
        name
        for name, local in {**shards, **npys}.items()
        if sizes.get(name) != os.path.getsize(local)
    ]
    if bad:
        raise RuntimeError(f"{len(bad)} objects stored with the wrong size, e.g. {bad[:3]}")
    return time.perf_counter() - t0


def ceiling(fs, paths: list[str], threads: int, how: str) -> dict:
    """All ``paths`` fetched from ``threads`` threads, whole (``cat_file``) or in 8 MiB
    ``read`` calls on ``fs.open(block_size=8 MiB)`` (the pattern of our fetcher)."""

    def whole(p: str) -> int:
        return len(fs.cat_file(p))

    def blocks(p: str) -> int:
        n = 0
        with fs.open(p, "rb", block_size=8 << 20) as f:
            while b := f.read(8 << 20):
                n += len(b)
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(whole if how == "cat_file" else blocks, paths))
    dt = time.perf_counter() - t0
    return {"bytes": n, "seconds": dt, "MBps": n / dt / 1e6, "threads": threads, "how": how}


def run_per_file(fs, keys: list[str], frames: int, file_bytes: int) -> dict:
    t0 = time.perf_counter()
    for k in keys:
        x = np.load(io.BytesIO(fs.cat_file(f"{BUCKET}/npy/{k}.npy")))
        assert x.shape == (frames,) and x.dtype == np.int16, (k, x.shape, x.dtype)
    dt = time.perf_counter() - t0
    return {"samples": len(keys), "seconds": dt, "bytes": len(keys) * file_bytes}


def run_webdataset(
    urls: list[str],
    so: dict,
    batch: int,
    workers: int,
    want: list[str],
    nbytes: int,
    *,
    tuned: bool,
) -> dict:
    """``tuned=False``: the opener most users write (``fsspec.open(url).open()``: gcsfs's
    default cache). ``tuned=True``: ``fs.open(path, block_size=8 MiB,
    cache_type="readahead")``, i.e. one range request per 8 MiB."""
    import importlib

    import fsspec
    import webdataset as wds

    gopen = importlib.import_module("webdataset.gopen")  # the module (the package exports
    # a function of the same name)

    def gopen_gcsfs(url, mode="rb", bufsize=8192, **kw):
        if not tuned:
            return fsspec.open(url, mode, **so).open()
        fs, path = fsspec.core.url_to_fs(url, **so)
        return fs.open(path, mode, block_size=8 << 20, cache_type="readahead")

    gopen.gopen_schemes["gs"] = gopen_gcsfs
    ds = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode()
        .to_tuple("__key__", "audio.npy", "cls")
        .batched(batch)
    )
    loader = wds.WebLoader(ds, batch_size=None, num_workers=min(workers, len(urls)))
    keys: list[str] = []
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for k, audio, _ in loader:
            keys.extend(k)
            assert str(audio.dtype).endswith("int16"), audio.dtype
        dt = time.perf_counter() - t0
    check_keys(keys, want)
    return {"samples": len(keys), "seconds": dt, "bytes": nbytes, "peak_rss": mem.peak_rss}


def main(argv: list[str] | None = None) -> int:
    ap = io_arg_parser(__doc__, "gcs_io", latency_ms=30.0, bandwidth_mbps=50.0)
    ap.add_argument("--baseline-files", type=int, default=300)
    ap.add_argument(
        "--webdataset-default-shards",
        type=int,
        default=1,
        help="shards read by (3) with gcsfs's default opener (~1 MB/s)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of the main measurements; the median is reported",
    )
    args = ap.parse_args(argv)
    apply_quick(args, shard_size=25)

    data = make_clips(
        os.path.join(args.data_dir, "data"),
        args.clips,
        args.seconds,
        args.shard_size,
        wavs=False,
        npy=True,
    )
    nbytes = data["shard_bytes"]
    cap = args.bandwidth_mbps
    setup = {
        **machine(),
        "storage": "gcp-storage-emulator (in memory) behind tools/faultproxy.py: "
        f"{args.latency_ms:g} ms per connection and per request, {cap:g} MB/s shared",
        "latency_ms": args.latency_ms,
        "bandwidth_MBps": cap,
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "sample_rate": 16000,
        "dtype": "int16",
        "npy_object_bytes": data["npy_bytes"],
        "shard_size": args.shard_size,
        "shards": len(data["shard_sizes"]),
        "shard_bytes_total": nbytes,
        "batch": args.batch,
        "workers": args.workers,
        "shard_prefetch": args.shard_prefetch,
        "baseline_files": min(args.baseline_files, args.clips),
        "quick": args.quick,
    }
    print("setup:", setup)
    cache_dir = os.path.join(args.data_dir, "cache")
    results: dict = {"setup": setup}
    runs: dict[str, dict] = {}

    with start_emulator() as (port, _url):
        import gcsfs
        import webdataset

        setup["gcsfs"] = gcsfs.__version__
        setup["webdataset"] = webdataset.__version__
        so = {"token": "anon", "project": "test"}
        fs = gcsfs.GCSFileSystem(skip_instance_cache=True, **so)
        fs.mkdir(BUCKET)
        setup["upload_seconds"] = upload(_url, fs, data)
        shard_paths = sorted(
            p for p in fs.ls(f"{BUCKET}/shards", detail=False) if p.endswith(".tar")
        )

        with FaultProxy("127.0.0.1", port) as proxy:
            so_p = dict(so, endpoint_url=proxy.url)
            fs_p = gcsfs.GCSFileSystem(skip_instance_cache=True, **so_p)
            # -- ceilings: who limits, the emulator, the proxy, or the cap?
            print("ceilings ...", flush=True)
            ceil = {
                "emulator_direct": ceiling(fs, shard_paths, 4, "cat_file"),
                "proxy_no_limits": ceiling(fs_p, shard_paths, 4, "cat_file"),
            }
            proxy.set_latency(args.latency_ms / 1000)
            proxy.set_bandwidth(cap * 1e6)
            ceil["limited_1_stream"] = ceiling(fs_p, shard_paths[:4], 1, "8MiB_reads")
            ceil["limited_4_streams"] = ceiling(fs_p, shard_paths, 4, "8MiB_reads")
            ceil["limited_cat_file_4"] = ceiling(fs_p, shard_paths, 4, "cat_file")
            results["ceilings"] = ceil
            nb = min(args.baseline_files, args.clips)
            direct = run_per_file(fs, data["keys"][:nb], data["frames"], data["npy_bytes"])
            results["emulator_direct_per_file"] = {
                "files": nb,
                "seconds": direct["seconds"],
                "files_per_s": nb / direct["seconds"],
            }

            def measured(fn, *a, **kw) -> dict:
                """Run fn; add the bytes on the wire and the rate while bytes flowed
                (first to last byte through the proxy, sampled every 20 ms)."""
                proxy.reset_stats()
                trace: list[tuple[float, int]] = []
                stop = threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        trace.append((time.perf_counter(), proxy.stats().bytes_down))
                        stop.wait(0.02)

                t = threading.Thread(target=sample, daemon=True)
                t.start()
                try:
                    r = fn(*a, **kw)
                finally:
                    stop.set()
                    t.join()
                total = proxy.stats().bytes_down
                r["wire_bytes"] = total
                if total:
                    t_first = next(t for t, b in trace if b > 0)
                    t_last = next((t for t, b in trace if b >= 0.999 * total), trace[-1][0])
                    if t_last > t_first:
                        r["transfer_MBps"] = total / (t_last - t_first) / 1e6
                return r

            from wds_pipeline import StreamingLoader

            index = f"gs://{BUCKET}/shards/index.json"
            common = {
                "batch_size": args.batch,
                "num_workers": args.workers,
                "shard_prefetch": args.shard_prefetch,
                "storage_options": so_p,
                "waveform_dtype": "int16",
                "last_batch": "pad",
            }
            last: dict = {}

            def ours_cached_epoch1() -> dict:
                shutil.rmtree(cache_dir, ignore_errors=True)
                last["loader"] = StreamingLoader(index, cache_dir=cache_dir, **common)
                return measured(run_epoch, last["loader"], data["keys"], nbytes)

            def ours_uncached_epoch() -> dict:
                # No switch turns the cache off for remote shards (cache_dir=None picks a
                # temp dir); a limit below one shard makes every shard stream uncached.
                shutil.rmtree(nocache, ignore_errors=True)
                loader = StreamingLoader(index, cache_dir=nocache, cache_limit=4096, **common)
                r = measured(run_epoch, loader, data["keys"], nbytes)
                if os.listdir(os.path.join(nocache, "data")):
                    raise RuntimeError("the no-cache run cached shards")
                return r

            nocache = os.path.join(args.data_dir, "nocache")
            print(f"(1) StreamingLoader + cache, epoch 1 (x{args.repeats}) ...", flush=True)
            runs["ours_cache_epoch1"] = repeat(args.repeats, ours_cached_epoch1)
            print("(1) StreamingLoader + cache, epoch 2 ...", flush=True)
            runs["ours_cache_epoch2"] = measured(run_epoch, last["loader"], data["keys"], nbytes)
            print(f"(1) StreamingLoader, no cache (x{args.repeats}) ...", flush=True)
            runs["ours_nocache"] = repeat(args.repeats, ours_uncached_epoch)
            # -- (2) per-file loop
            print(f"(2) gcsfs cat_file per .npy object ({nb}) ...", flush=True)
            runs["per_file_gcsfs"] = measured(
                run_per_file, fs_p, data["keys"][:nb], data["frames"], data["npy_bytes"]
            )
            # -- (3) webdataset: gcsfs's default opener on a few shards (it is slow),
            # a tuned opener on all of them
            urls = [f"gs://{p}" for p in shard_paths]
            k = max(1, min(args.webdataset_default_shards, len(urls)))
            sub_keys = [key for key in data["keys"] if int(key.split("-s")[1].split("-")[0]) < k]
            sub_bytes = sum(
                os.path.getsize(os.path.join(data["root"], "shards", u.rsplit("/", 1)[1]))
                for u in urls[:k]
            )
            print(f"(3) webdataset, fsspec.open(url) opener ({k} shards) ...", flush=True)
            runs["webdataset_default_opener"] = measured(
                run_webdataset,
                urls[:k],
                so_p,
                args.batch,
                args.workers,
                sub_keys,
                sub_bytes,
                tuned=False,
            )
            print(f"(3) webdataset, tuned opener (x{args.repeats}) ...", flush=True)
            runs["webdataset_tuned_opener"] = repeat(
                args.repeats,
                measured,
                run_webdataset,
                urls,
                so_p,
                args.batch,
                args.workers,
                data["keys"],
                nbytes,
                tuned=True,
            )

    add_rates(runs)
    for r in runs.values():
        r["wire_MBps"] = r["wire_bytes"] / r["seconds"] / 1e6
        r["cap_fraction"] = r["MBps"] / cap
    add_speedup(runs, "per_file_gcsfs", "x_vs_per_file")
    wd = runs["webdataset_tuned_opener"]["samples_per_s"]
    ceil = results["ceilings"]
    ratios = {
        "ours_epoch1_cap_fraction": runs["ours_cache_epoch1"]["cap_fraction"],
        "ours_epoch1_best_cap_fraction": nbytes
        / runs["ours_cache_epoch1"]["best_seconds"]
        / 1e6
        / cap,
        "ours_nocache_cap_fraction": runs["ours_nocache"]["cap_fraction"],
        "ours_epoch1_over_per_file": runs["ours_cache_epoch1"]["x_vs_per_file"],
        "ours_epoch1_over_webdataset_tuned": runs["ours_cache_epoch1"]["samples_per_s"] / wd,
        "ours_epoch1_over_webdataset_default": runs["ours_cache_epoch1"]["samples_per_s"]
        / runs["webdataset_default_opener"]["samples_per_s"],
        "ours_epoch2_over_webdataset_tuned": runs["ours_cache_epoch2"]["samples_per_s"] / wd,
        "limited_4_streams_cap_fraction": ceil["limited_4_streams"]["MBps"] / cap,
        "limited_1_stream_cap_fraction": ceil["limited_1_stream"]["MBps"] / cap,
    }
    targets = targets_of(ratios, TARGETS)
    results.update(runs=runs, ratios=ratios, targets=targets)

    rep = f" (median of {args.repeats})" if args.repeats > 1 else ""
    names = {
        "ours_cache_epoch1": f"(1) StreamingLoader + cache, epoch 1{rep}",
        "ours_cache_epoch2": "(1) StreamingLoader + cache, epoch 2",
        "ours_nocache": f"(1) StreamingLoader, no cache{rep}",
        "per_file_gcsfs": f"(2) gcsfs cat_file per .npy ({nb} files)",
        "webdataset_default_opener": f"(3) webdataset, fsspec.open(url) ({k} shard)",
        "webdataset_tuned_opener": f"(3) webdataset, fs.open readahead 8 MiB{rep}",
    }
    print(
        f"\nemulator alone, per-file loop (2) without the proxy: "
        f"{results['emulator_direct_per_file']['files_per_s']:,.0f} files/s"
    )
    print(f"ceilings (payload MB/s over {len(shard_paths)} shards):")
    for key, c in ceil.items():
        print(f"  {key:20} {c['MBps']:8.1f} MB/s  ({c['how']}, {c['threads']} thread(s))")
    rows = [{"name": names[key], **r} for key, r in runs.items()]
    print()
    print(
        table(
            rows,
            [
                ("name", "pipeline", ""),
                ("samples", "clips", "d"),
                ("seconds", "s", ".2f"),
                ("samples_per_s", "clips/s", ",.0f"),
                ("MBps", "MB/s", ".1f"),
                ("wire_MBps", "wire MB/s", ".1f"),
                ("transfer_MBps", "while flowing", ".1f"),
                ("cap_fraction", "of cap", ".0%"),
                ("x_vs_per_file", "x (2)", ",.1f"),
            ],
        )
    )
    print("\nratios:")
    for key, v in ratios.items():
        print(f"  {key:38} {v:8.2f}")
    print_targets(targets, key_width=26, value_width=6)
    write_json(args.json_out, results)
    bar_chart(
        args.png_out,
        [
            names[key].replace(", ", "\n").replace(" (", "\n(").replace(" + ", "\n+ ")
            for key in runs
        ],
        [r["MBps"] for r in runs.values()],
        title=f"{args.clips} clips of {args.seconds:g} s from GCS (emulator) through "
        f"{args.latency_ms:g} ms/request, {cap:g} MB/s",
        ylabel="payload MB/s (log)",
        hline=(cap, f"{cap:g} MB/s cap"),
        notes=[
            (
                f"ceilings: emulator alone {ceil['emulator_direct']['MBps']:.0f} MB/s, proxy "
                f"without limits {ceil['proxy_no_limits']['MBps']:.0f} MB/s; with limits, "
                f"8 MiB reads: 1 stream {ceil['limited_1_stream']['MBps']:.1f} MB/s, "
                f"4 streams {ceil['limited_4_streams']['MBps']:.1f} MB/s"
            )
        ],
    )
    print(f"\nwrote {args.json_out} and {args.png_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
