"""How long the trainer waits for data, with the model's speed fixed.

The model consumes a fixed 300 three-second crops/s (``--model-rate``; a T4/2080 Ti-class
speaker model): its step sleeps ``batch / rate`` seconds, so it takes no CPU from the
loader workers and every second the loop spends beyond that is waiting for data. The
trainer (``wds-pipeline train``'s loop) reports the **data-wait fraction** = time blocked
on the loader / step time, per epoch. Runs, on the same clips (synthetic speech in the
LibriSpeech layout, 16 kHz), side by side in one process:

  (1) npy shards on local disk;
  (2) npy shards on the Drive-like FUSE mount (tools/slowfs.py: 100 ms per open, 20 MB/s
      shared), cache on local disk: epoch 1 streams the link, epoch 2 reads the cache;
  (3) the same with FLAC shards (about half the bytes over the link, decoded per read),
      and with zstd-compressed npy shards (``--compress zstd``);
  (3b) FLAC shards on the mount with a model 10x faster (``--link-model-rate``): at 300
      crops/s the model itself needs 2,000 / 300 = 6.7 s per epoch while the link moves the
      FLAC shards (120 MB) in 6.0 s, so that row cannot show the link above ~90% of its cap
      whatever the loader does; with the model out of the way the row measures whether two
      workers keep the link busy with FLAC (the 300-crops/s row stays, for comparison);
  (4) the baseline Colab notebooks use: one ``soundfile.read`` per FLAC file on the mount,
      ``DataLoader(num_workers=0)``, random 3 s crops, the same model step (a subset of
      the clips: its rate does not depend on how many there are).

    python benchmarks/train_input.py           # 2,000 clips, ~2 minutes
    python benchmarks/train_input.py --quick   # smoke run
    python benchmarks/train_input.py --rows npy,flac,flac-link   # only the mount rows named

Writes benchmarks/results/train_input.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, RESULTS, keep_quoted_results, machine, table, write_json

sys.path.insert(0, REPO)
from tools.slowfs import mount_slowfs
from wds_pipeline.builder import BuildOptions, build_dataset
from wds_pipeline.synth import synth_librispeech
from wds_pipeline.train import trainer as trainer_module
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.metrics import timed
from wds_pipeline.train.trainer import Trainer

warnings.filterwarnings("ignore", message="This DataLoader will create")
SR = 16000
PART = "train-clean-100"
TARGETS = {"epoch2_data_wait_on_mount": 0.02, "colab_first_batch_on_mount_s": 2.0}  # at most
FLAC_LINK_TARGET = 0.9  # at least: the link-bound FLAC row's epoch 1, share of the cap
# Shard encodings compared on the mount: name -> (--codec, --compress).
CODECS = {"npy": ("npy", "none"), "flac": ("flac", "none"), "zstd": ("npy", "zstd")}
# What --rows can pick (default: all): decode rates, (1), the mount rows (2)/(3)/(3b), (5), (4), (6).
ROWS = ("decode", "local", *CODECS, "flac-link", "colab", "per-file", "doctor")


class FixedRateModel(torch.nn.Module):
    """A model that consumes ``rate`` crops/s: each training forward sleeps batch/rate s."""

    def __init__(self, num_classes: int, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.linear = torch.nn.Linear(1, num_classes)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(waveform.shape[0] / self.rate)
        return self.linear(waveform.float().mean(-1, keepdim=True) / 32768.0)


def fixed_rate_model(num_classes: int, sample_rate: int = SR, rate: float = 300.0) -> FixedRateModel:
    return FixedRateModel(num_classes, rate)


def make_corpus(root: str, speakers: int, utterances: int) -> dict:
    """Synthetic speech (3-4 s) in the LibriSpeech layout, then npy and FLAC shards of it."""
    # crc32: indexes with per-sample checksums (streamed cold reads); older corpora are rebuilt
    stamp = os.path.join(root, f".done-{speakers}-{utterances}-{'-'.join(CODECS)}-crc32")
    corpus = os.path.join(root, "LibriSpeech")
    if not os.path.exists(stamp):
        shutil.rmtree(root, ignore_errors=True)
        synth_librispeech(corpus, speakers=speakers, chapters_per_speaker=1,
                          utterances_per_chapter=utterances, parts=(PART,), min_seconds=3.0,
                          max_seconds=4.0)
        for name, (codec, compress) in CODECS.items():
            r = build_dataset("librispeech", corpus, os.path.join(root, name),
                              options=BuildOptions(shard_size=100, codec=codec, compress=compress,
                                                   workers=2))
            if r.counts.rejected:
                raise RuntimeError(f"{r.counts.rejected} clips rejected: {r.summary()}")
        open(stamp, "w").close()
    flacs = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(corpus, PART))
                   for f in fs if f.endswith(".flac"))

    def shard_bytes(codec: str) -> int:
        d = os.path.join(root, codec, PART)
        return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".tar"))

    return {"flacs": [os.path.relpath(p, root) for p in flacs],
            **{f"{name}_bytes": shard_bytes(name) for name in CODECS},
            "flac_file_bytes": sum(os.path.getsize(p) for p in flacs)}


class LinkTimeline:
    """When the link moved its bytes and when the trainer's epochs ran, on one clock.

    A thread samples the bytes the slowfs process has read from its backing folder
    (``rchar`` of ``/proc/PID/io``: every byte that crosses the mount) every 20 ms, and the
    trainer's loop is timed batch by batch (its own figures are durations, not instants).
    From both, per epoch: when the link was in use (first to last byte moved), and the
    share of the cap it ran at meanwhile (the link kept busy or not), apart from the time
    before its first byte (start-up) and after its last (the model draining what the
    workers hold)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.epochs: list[list[tuple[float, float]]] = []  # per epoch: (arrival, wait) per batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> int:
        with open(f"/proc/{self.pid}/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._read()))
            self._stop.wait(0.02)

    def timed(self, items: Iterable) -> Iterator:
        """The trainer's ``timed``, recording when each batch came (one call per epoch)."""
        marks: list[tuple[float, float]] = []
        self.epochs.append(marks)
        for item, waited in timed(items):
            marks.append((time.perf_counter(), waited))
            yield item, waited

    def __enter__(self) -> LinkTimeline:
        self._thread.start()
        trainer_module.timed = self.timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        trainer_module.timed = timed  # type: ignore[assignment]
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self._read()))

    def epoch(self, e: int, bandwidth_mbps: float) -> dict:
        """Epoch ``e``'s phases: start-up (epoch start to the link's first byte), the link in
        use (first to last byte; its share of the cap meanwhile), the tail (last byte to
        the epoch's last batch)."""
        marks = self.epochs[e]
        start, end = marks[0][0] - marks[0][1], marks[-1][0]
        t = np.array([x for x, _ in self.samples])
        b = np.array([y for _, y in self.samples])
        inside = (t >= start) & (t <= end)
        moved = np.flatnonzero(inside[1:] & (np.diff(b) > 0)) + 1  # samples that saw new bytes
        if not len(moved):
            return {"link_bytes": 0}
        first, last = t[moved[0] - 1], t[moved[-1]]
        nbytes = int(b[moved[-1]] - b[moved[0] - 1])
        return {"startup_s": first - start, "link_s": last - first, "tail_s": end - last,
                "link_bytes": nbytes, "busy_MBps": nbytes / (last - first) / 1e6,
                "busy_share": nbytes / (last - first) / 1e6 / bandwidth_mbps}


def train(index: str, out: str, args, cache_dir: str | bool | None, *, epochs: int = 2,
          model_rate: float | None = None, workers: int | None = None,
          mount_pid: int | None = None) -> dict:
    """The trainer's epochs; each one's data-wait fraction, crops/s and the input doctor's
    verdict (its bottleneck); with ``mount_pid`` (the slowfs process) each epoch's link
    phases too (:class:`LinkTimeline`)."""
    shutil.rmtree(out, ignore_errors=True)
    loader = {"batch_size": args.batch, "crop_seconds": 3.0,
              "num_workers": args.workers if workers is None else workers,
              "persistent_workers": True, "waveform_dtype": "int16", "shuffle_buffer": args.shuffle_buffer}
    if isinstance(cache_dir, str):
        shutil.rmtree(cache_dir, ignore_errors=True)
    if cache_dir is not None:
        loader["cache_dir"] = cache_dir
    cfg = parse_config({
        "data": {"train": [index]}, "loader": loader,
        "model": {"factory": "train_input:fixed_rate_model", "rate": model_rate or args.model_rate},
        "optim": {"warmup_steps": 1},
        "checkpoint": {"dir": os.path.join(out, "ckpt"), "every_steps": 10**6},
        "run": {"epochs": epochs, "out_dir": out, "progress": False, "tensorboard": False,
                "log_every": 10**6, "preflight": False},
    }, "train_input")
    verdicts: list[str] = []
    t = Trainer(cfg, log=lambda m: verdicts.append(m) if "input doctor" in m else None)
    with contextlib.ExitStack() as stack:
        timeline = stack.enter_context(LinkTimeline(mount_pid)) if mount_pid else None
        t.fit()
    bottlenecks = [v.split("bottleneck: ", 1)[1].split(" ", 1)[0] for v in verdicts]
    out = {f"epoch{e + 1}": {**s, "doctor": bottlenecks[e] if e < len(bottlenecks) else None,
                             "doctor_line": verdicts[e] if e < len(verdicts) else None,
                             **({"link": timeline.epoch(e, args.bandwidth_mbps)} if timeline else {})}
           for e, s in t.epoch_stats.items()}
    # Its persistent workers stop here, in this process: left to a later collection, the
    # DataLoader's __del__ may run in a worker forked by the next run and fail noisily there.
    del t
    gc.collect()
    return out


# The input doctor's four built-in bottlenecks: run -> (what is slow, the bottleneck it must name).
DOCTOR_CASES = {
    "slow model": "model",  # local npy shards, the model at a tenth of its rate
    "too few workers": "workers",  # local npy shards, num_workers 0, a model 100x faster
    "slow decoding": "decoding",  # local FLAC shards, 2 workers on 2 cores, a model 100x faster
    "slow link": "link",  # npy shards on the mount, no cache, a model 100x faster
}


def doctor_cases(backing: str, mountpoint: str, args) -> list[dict]:
    """One epoch of each case; the doctor's verdict against the bottleneck built."""
    fast, slow = 100 * args.model_rate, args.model_rate / 10
    local = {c: os.path.join(backing, c, PART, "index.json") for c in ("npy", "flac")}
    runs = {
        "slow model": (local["npy"], {"model_rate": slow}),
        "too few workers": (local["npy"], {"model_rate": fast, "workers": 0}),
        "slow decoding": (local["flac"], {"model_rate": fast}),
        "slow link": (os.path.join(mountpoint, "npy", PART, "index.json"), {"model_rate": fast, "cache": False}),
    }
    rows = []
    for name, (index, opts) in runs.items():
        cache = opts.pop("cache", None)
        r = train(index, os.path.join(args.data_dir, "doctor"), args, cache, epochs=1, **opts)["epoch1"]
        rows.append({"case": name, "expected": DOCTOR_CASES[name], "named": r["doctor"],
                     "right": r["doctor"] == DOCTOR_CASES[name], "line": r["doctor_line"]})
        print(f"  {name}: {r['doctor_line']}", flush=True)
    return rows


def colab_first_batch(index: str, cache_dir: str) -> dict:
    """Time to the first batch of a fresh loader built from configs/colab.yaml's loader
    section (only the cache folder changed) with the cache empty: what a Colab user waits
    before the first step of a cold epoch."""
    from dataclasses import replace

    from wds_pipeline import StreamingLoader
    from wds_pipeline.loader import load_yaml_config

    _, cfg = load_yaml_config(os.path.join(REPO, "configs", "colab.yaml"))
    cfg = replace(cfg, cache_dir=cache_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    loader = StreamingLoader(index, cfg)
    it = iter(loader)
    batch = next(it)
    first = time.perf_counter() - t0
    del it, loader
    return {"first_batch_s": first, "batch_size": len(batch), "num_workers": cfg.num_workers,
            "shuffle_buffer": cfg.shuffle_buffer}


def decode_rate(index: str, shard_bytes: int, workers: int = 1) -> dict:
    """How fast one loader worker turns local shards of an encoding into batches (no model,
    page cache warm after a first pass): shard MB/s per worker. A worker keeps up with a
    link of L MB/s shared by W workers when this is above L / W."""
    from wds_pipeline import StreamingLoader

    loader = StreamingLoader(index, batch_size=64, crop_seconds=3.0, num_workers=workers,
                             waveform_dtype="int16", persistent_workers=True)
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(len(b) for b in loader)
        rates.append(shard_bytes / (time.perf_counter() - t0) / 1e6)
    return {"clips": n, "shard_MBps_per_worker": sorted(rates)[1]}


class FlacFiles(Dataset):
    """What a Colab notebook does: one ``soundfile.read`` per clip, a random 3 s crop."""

    def __init__(self, paths: list[str], crop: int) -> None:
        self.paths, self.crop = paths, crop
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        x, _ = sf.read(self.paths[i], dtype="int16")
        start = int(self.rng.integers(0, max(1, len(x) - self.crop + 1)))
        x = x[start:start + self.crop]
        return torch.from_numpy(np.pad(x, (0, self.crop - len(x))))


def per_file(paths: list[str], args) -> dict:
    """The same loop measure (time blocked on the loader / step time), per-file loading."""
    model = FixedRateModel(2, args.model_rate)
    dl = DataLoader(FlacFiles(paths, 3 * SR), batch_size=args.batch, num_workers=0, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
    wait = total = 0.0
    n = 0
    for batch, waited in timed(dl):
        t1 = time.perf_counter()
        model(batch, torch.full((len(batch),), batch.shape[1]))
        wait += waited
        total += waited + time.perf_counter() - t1
        n += len(batch)
    return {"samples": n, "seconds": total, "samples_per_s": n / total, "data_wait": wait / total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=40)
    ap.add_argument("--utterances", type=int, default=50, help="per speaker")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model-rate", type=float, default=300.0, help="crops/s the model consumes")
    ap.add_argument("--link-model-rate", type=float, default=3000.0,
                    help="crops/s of the model in the link-bound FLAC row (3b)")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated runs to make, of {', '.join(ROWS)} (default: all)")
    ap.add_argument("--shuffle-buffer", type=int, default=5000,
                    help="loader.shuffle_buffer of the trainer runs (samples, shared by the workers)")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--bandwidth-mbps", type=float, default=20.0)
    ap.add_argument("--baseline-files", type=int, default=128)
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "wds_pipeline_bench", "train_input"))
    ap.add_argument("--json-out", default=os.path.join(RESULTS, "train_input.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 clips, 32 per-file")
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    rows_wanted = set(args.rows.split(","))
    if not rows_wanted <= set(ROWS):
        ap.error(f"--rows: unknown {sorted(rows_wanted - set(ROWS))}; choose from {', '.join(ROWS)}")
    if args.quick:
        args.speakers, args.utterances, args.baseline_files, args.batch = 4, 32, 32, 32
        args.data_dir += "-quick"
    backing = os.path.join(args.data_dir, "backing")
    data = make_corpus(backing, args.speakers, args.utterances)
    clips = len(data["flacs"])
    setup = {
        **machine(),
        "storage": f"slowfs FUSE mount: {args.latency_ms:g} ms per open, {args.bandwidth_mbps:g} MB/s shared",
        "clips": clips, "clip_seconds": "3-4 (synthetic speech, LibriSpeech layout)", "crop_seconds": 3.0,
        "batch": args.batch, "loader_workers": args.workers, "model_rate_crops_per_s": args.model_rate,
        "shuffle_buffer": args.shuffle_buffer,
        "link_row_model_rate_crops_per_s": args.link_model_rate, "rows": sorted(rows_wanted),
        **{f"{name}_shard_bytes": data[f"{name}_bytes"] for name in CODECS},
        "baseline_files": min(args.baseline_files, clips), "quick": args.quick,
    }
    print("setup:", setup, flush=True)
    cache = os.path.join(args.data_dir, "cache")
    runs: dict[str, dict] = {}
    decode = {}
    if "decode" in rows_wanted:
        print("decode rate per worker, local shards ...", flush=True)
        decode = {name: decode_rate(os.path.join(backing, name, PART, "index.json"), data[f"{name}_bytes"])
                  for name in CODECS}
    for name, d in decode.items():
        keeps = d["shard_MBps_per_worker"] > args.bandwidth_mbps / args.workers
        print(f"  {name}: {d['shard_MBps_per_worker']:.1f} shard MB/s per worker "
              f"({'keeps up with' if keeps else 'SLOWER than'} {args.bandwidth_mbps:g} MB/s over "
              f"{args.workers} workers)", flush=True)
    if "local" in rows_wanted:
        print("(1) npy shards, local disk ...", flush=True)
        runs["local_npy"] = train(os.path.join(backing, "npy", PART, "index.json"),
                                  os.path.join(args.data_dir, "r1"), args, None)
    colab: list[dict] = []
    doctor: list[dict] = []
    with mount_slowfs(backing, os.path.join(args.data_dir, "mnt"), latency_ms=args.latency_ms,
                      bandwidth_mbps=args.bandwidth_mbps) as m:
        mounted = [(c, c, None) for c in CODECS if c in rows_wanted]
        if "flac-link" in rows_wanted:
            mounted.append(("flac", "flac_link", args.link_model_rate))
        for codec, name, rate in mounted:
            step = "3b" if rate else 2 if codec == "npy" else 3
            print(f"({step}) {codec} shards on the mount, cache on local disk"
                  + (f", the model at {rate:g} crops/s (the link, not the model, bounds the epoch)" if rate else "")
                  + " ...", flush=True)
            runs[f"mount_{name}"] = train(os.path.join(m.mountpoint, codec, PART, "index.json"),
                                          os.path.join(args.data_dir, f"r-{name}"), args, cache, model_rate=rate,
                                          mount_pid=m.process.pid)
            runs[f"mount_{name}"]["epoch1"]["MBps"] = (
                data[f"{codec}_bytes"] / runs[f"mount_{name}"]["epoch1"]["seconds"] / 1e6)
            for epoch, r in runs[f"mount_{name}"].items():
                print(f"  {epoch}: {r['seconds']:.2f} s, data-wait {100 * r['data_wait']:.1f}%; {r['doctor_line']}",
                      flush=True)
                link = r.get("link", {})
                if link.get("link_bytes", 0) > 1e6:  # epoch 2 reads the cache: only metadata crosses
                    print(f"    link: {link['startup_s']:.2f} s to its first byte, then {link['link_bytes'] / 1e6:.1f} MB "
                          f"in {link['link_s']:.2f} s ({link['busy_MBps']:.1f} MB/s, {100 * link['busy_share']:.0f}% "
                          f"of the cap while in use), then {link['tail_s']:.2f} s to the epoch's last batch",
                          flush=True)
        if "colab" in rows_wanted:
            print("(5) time to first batch, configs/colab.yaml loader, npy shards on the mount, cold cache ...",
                  flush=True)
            colab = [colab_first_batch(os.path.join(m.mountpoint, "npy", PART, "index.json"), cache)
                     for _ in range(3)]
            print("  first batch: " + ", ".join(f"{c['first_batch_s']:.2f} s" for c in colab)
                  + f" (batch {colab[0]['batch_size']}, {colab[0]['num_workers']} workers)", flush=True)
        if "per-file" in rows_wanted:
            print("(4) per-file FLAC on the mount, num_workers=0 ...", flush=True)
            paths = [os.path.join(m.mountpoint, p) for p in data["flacs"][: args.baseline_files]]
            runs["per_file_flac_nw0"] = {"epoch1": per_file(paths, args)}
        if "doctor" in rows_wanted:
            print("(6) the input doctor on four built-in bottlenecks (one epoch each) ...", flush=True)
            doctor = doctor_cases(backing, m.mountpoint, args)
    rows = []
    for name, r in runs.items():
        for epoch, s in r.items():
            row = {"run": f"{name} {epoch}", "crops_s": s["samples_per_s"], "wait": 100 * s["data_wait"],
                   "first": s.get("first_batch_wait_s"), "doctor": s.get("doctor") or ""}
            if "MBps" in s:
                row["MBps"] = s["MBps"]
                row["cap"] = 100 * s["MBps"] / args.bandwidth_mbps
                if s.get("link", {}).get("link_bytes", 0) > 1e6:
                    row["busy"] = 100 * s["link"]["busy_share"]
                    row["tail"] = s["link"]["tail_s"]
            rows.append(row)
    print(table(rows, [("run", "run", ""), ("crops_s", "crops/s", ".0f"), ("wait", "data-wait %", ".1f"),
                       ("first", "1st batch s", ".2f"),
                       ("MBps", "link MB/s", ".1f"), ("cap", "% of cap", ".0f"),
                       ("busy", "% of cap in use", ".0f"), ("tail", "tail s", ".2f"), ("doctor", "doctor", "")]))
    if doctor:
        print(table(doctor, [("case", "bottleneck built", ""), ("expected", "expected", ""),
                             ("named", "doctor named", ""), ("right", "right", "")]))
    targets: dict[str, dict] = {}
    print("targets:")
    if "mount_npy" in runs:
        e2 = runs["mount_npy"]["epoch2"]["data_wait"]
        targets["epoch2_data_wait_on_mount"] = {"target_at_most": TARGETS["epoch2_data_wait_on_mount"],
                                                "measured": e2, "met": e2 <= TARGETS["epoch2_data_wait_on_mount"]}
        print(f"  epoch2_data_wait_on_mount: {e2:.3f} (target <= {TARGETS['epoch2_data_wait_on_mount']})  "
              f"{'met' if targets['epoch2_data_wait_on_mount']['met'] else 'MISSED'}")
    if "mount_flac" in runs:
        # The 300-crops/s row's ceiling: the model's own time for the epoch bounds it.
        ceiling = data["flac_bytes"] / (clips / args.model_rate) / 1e6 / args.bandwidth_mbps
        print(f"  (FLAC row at {args.model_rate:g} crops/s: the model alone takes {clips / args.model_rate:.2f} s, "
              f"so its link share is at most {100 * min(1.0, ceiling):.0f}% of the cap)")
    if "mount_flac_link" in runs:
        share = runs["mount_flac_link"]["epoch1"]["MBps"] / args.bandwidth_mbps
        targets["flac_epoch1_link_share"] = {"target_at_least": FLAC_LINK_TARGET, "measured": share,
                                             "met": share >= FLAC_LINK_TARGET}
        print(f"  flac_epoch1_link_share (model at {args.link_model_rate:g} crops/s): {100 * share:.0f}% "
              f"(target >= {100 * FLAC_LINK_TARGET:.0f}%)  {'met' if share >= FLAC_LINK_TARGET else 'MISSED'}")
    if colab:
        first = sorted(c["first_batch_s"] for c in colab)[1]
        targets["colab_first_batch_on_mount_s"] = {"target_at_most": TARGETS["colab_first_batch_on_mount_s"],
                                                   "measured": first,
                                                   "met": first <= TARGETS["colab_first_batch_on_mount_s"]}
        print(f"  colab_first_batch_on_mount_s (median of 3): {first:.2f} (target <= "
              f"{TARGETS['colab_first_batch_on_mount_s']})  "
              f"{'met' if first <= TARGETS['colab_first_batch_on_mount_s'] else 'MISSED'}")
    if doctor:
        right = sum(r["right"] for r in doctor)
        targets["doctor_names_the_bottleneck"] = {"target": len(doctor), "measured": right,
                                                  "met": right == len(doctor)}
        print(f"  doctor_names_the_bottleneck: {right} of {len(doctor)}  {'met' if right == len(doctor) else 'MISSED'}")
    write_json(args.json_out, {"setup": setup, "decode_rate": decode, "runs": runs, "colab_first_batch": colab,
                               "doctor": doctor, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())
