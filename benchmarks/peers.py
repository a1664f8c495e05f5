"""wds_pipeline against the loaders users would pick instead, on identical data.

One run generates two sets (fixed 3 s clips; 1-15 s utterances, read whole and padded per
batch), 16 kHz int16, converts each with every project's recommended writer, then reads
each back with its recommended loader at batch 64, shuffle on, ``num_workers`` 0 and 2:

  wds_pipeline   builder's shard writer + index  ->  StreamingLoader (default float32
                 output, and waveform_dtype="int16")
  webdataset     webdataset.ShardWriter (.npy)   ->  WebDataset + shuffle + WebLoader
  litdata        litdata.optimize                ->  StreamingDataset(batch_decode=0) +
                                                     StreamingDataLoader
  mosaic         streaming.MDSWriter             ->  StreamingDataset + DataLoader
  lhotse-wav     CutSet.to_shar (wav)            ->  CutSet.from_shar + DynamicCutSampler +
  lhotse-flac    CutSet.to_shar (flac)                IterableDatasetWrapper
  hf             datasets Arrow (save_to_disk)   ->  to_iterable_dataset + shuffle + DataLoader

Epoch 1 is a fresh loader (construction and worker start-up on the clock); epoch 2 is
the next pass (persistent workers where the loader supports them). The timed loop takes
each batch's (B, T) waveform tensor, as a training step would (for wds_pipeline's
default float32 output that access is what scales it). Every timed epoch must return
each key exactly once, and an untimed pass per format checks every array against the
source (a digest per key): a format that loses or changes a sample gets no figure.
Formats and settings are interleaved and repeated; medians and paired ratios (per
repeat, against wds_pipeline's default) are reported.

Conversion is timed the same way: every writer converts the whole set ``--convert-repeats``
times (hf and Lhotse, 5-50x slower than the rest, once), in an order that rotates each
repeat, each from the same generated audio (``wds_pipeline.testing.clip``); reported are
the median seconds, samples/s and MB/s of audio, the CPU seconds of the process and its
children (LitData converts in a worker process), the median over repeats of each writer's
rate / wds_pipeline's in the same repeat, and the fastest repeat of each (single runs swing
2-4x with the page cache's writeback and the kernel's supply of huge pages). MosaicML is
also timed with ``hashes=["xxh3_128"]``, the shard digest wds_pipeline's writer always
records (it adds a crc32 per sample). The last repeat's output is what the loaders read.

Needs the peers, in their own environment (see benchmarks/README.md)::

    .peers-venv/bin/python benchmarks/peers.py            # full run, ~35 min on 2 cores
    .peers-venv/bin/python benchmarks/peers.py --quick    # tiny smoke run
    .peers-venv/bin/python benchmarks/peers.py --only convert   # conversion alone, ~5 min

``--baseline REV`` instead compares wds_pipeline's own loader, the working tree against git
revision REV, on the same sets (peers_baseline.py; the main venv is enough)::

    .venv/bin/python benchmarks/peers.py --baseline c2f772d     # ~12 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, keep_quoted_results, machine, write_json  # noqa: E402
from loader_throughput import PeakMemory  # noqa: E402 (RSS and PSS of the process tree)

SR = 16000
BATCH = 64
FORMATS = ("wds_pipeline", "wds_pipeline-int16", "wds_pipeline-int16+f32", "webdataset", "litdata", "litdata+f32",
           "mosaic", "lhotse-wav", "lhotse-flac", "hf")
# "+f32": the same loader, and the timed loop then makes the float32 waveform in [-1, 1) a
# model takes, as a user's loop would (``wave.float().mul_(1 / 32768)``): every format read
# to the same end point as wds_pipeline's default float32 output.
TO_FLOAT32 = "+f32"


# ------------------------------------------------------------------ the data


def set_spec(name: str, n: int, seed: int = 1) -> tuple[list[int], Callable[[int, int], int], int]:
    """Shard sizes, frames(shard, i) and samples per shard of a generated set."""
    if name == "clips":
        per = 500
        return [min(per, n - s) for s in range(0, n, per)], lambda s, i: 3 * SR, per
    per = 100
    lengths = np.random.default_rng(seed).uniform(1.0, 15.0, size=n)
    return [min(per, n - s) for s in range(0, n, per)], lambda s, i: int(lengths[s * per + i] * SR), per


def samples(name: str, n: int) -> Iterator[tuple[str, np.ndarray, int]]:
    """(key, int16 audio, label) of every sample, identical to what wds_pipeline writes."""
    from wds_pipeline.testing import clip

    sizes, frames, _ = set_spec(name, n)
    for s, size in enumerate(sizes):
        for i in range(size):
            yield f"{name}-s{s}-u{i:04d}", clip(s, i, frames(s, i)), (s + i) % 5


def digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a, dtype=np.int16).tobytes(), digest_size=8).hexdigest()


def pad_collate(items: list[tuple[str, np.ndarray]]) -> tuple[list[str], Any, Any]:
    """Peers' batches: keys, a zero-padded (B, T) int16 tensor, lengths (as wds_pipeline)."""
    import torch

    lengths = torch.tensor([len(a) for _, a in items], dtype=torch.int64)
    out = torch.zeros((len(items), int(lengths.max())), dtype=torch.int16)
    for r, (_, a) in enumerate(items):
        out[r, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.int16))
    return [k for k, _ in items], out, lengths


# ----------------------------------------------------------------- writers


def write_wds_pipeline(name: str, n: int, out: str) -> None:
    from wds_pipeline.testing import write_synthetic_dataset

    sizes, frames, _ = set_spec(name, n)
    write_synthetic_dataset(out, sizes, frames=frames, name=name)


def write_webdataset(name: str, n: int, out: str) -> None:
    import webdataset as wds

    os.makedirs(out, exist_ok=True)
    with wds.ShardWriter(os.path.join(out, "shard-%06d.tar"), maxcount=set_spec(name, n)[2], verbose=0) as w:
        for key, a, label in samples(name, n):
            w.write({"__key__": key, "audio.npy": a, "cls": label})


def _litdata_item(spec: tuple[str, int, int, int]) -> dict[str, Any]:
    from wds_pipeline.testing import clip

    key, s, i, frames = spec
    return {"key": key, "audio": clip(s, i, frames), "label": (s + i) % 5}


def write_litdata(name: str, n: int, out: str) -> None:
    import litdata

    sizes, frames, _ = set_spec(name, n)
    inputs = [(f"{name}-s{s}-u{i:04d}", s, i, frames(s, i)) for s, size in enumerate(sizes) for i in range(size)]
    litdata.optimize(fn=_litdata_item, inputs=inputs, output_dir=out, chunk_bytes="64MB",
                     num_workers=1, mode="overwrite", start_method="fork")


def write_mosaic(name: str, n: int, out: str, hashes: tuple[str, ...] = ()) -> None:
    from streaming import MDSWriter

    cols = {"key": "str", "audio": "ndarray:int16", "label": "int"}
    with MDSWriter(out=out, columns=cols, size_limit="64mb", progress_bar=False, hashes=list(hashes)) as w:
        for key, a, label in samples(name, n):
            w.write({"key": key, "audio": a, "label": label})


def write_lhotse(name: str, n: int, out: str, audio_format: str = "wav") -> None:
    import io

    import soundfile as sf
    from lhotse import CutSet, Recording

    def cuts() -> Iterator[Any]:
        for key, a, _ in samples(name, n):
            buf = io.BytesIO()
            sf.write(buf, a, SR, format="WAV", subtype="PCM_16")
            yield Recording.from_bytes(buf.getvalue(), recording_id=key).to_cut()

    os.makedirs(out, exist_ok=True)
    CutSet(cuts()).to_shar(out, fields={"recording": audio_format}, shard_size=set_spec(name, n)[2])


def write_hf(name: str, n: int, out: str) -> None:
    import datasets

    datasets.disable_progress_bars()
    feats = datasets.Features({"key": datasets.Value("string"),
                               "audio": datasets.Sequence(datasets.Value("int16")),
                               "label": datasets.Value("int64")})

    def gen() -> Iterator[dict[str, Any]]:
        for key, a, label in samples(name, n):
            yield {"key": key, "audio": a, "label": label}

    ds = datasets.Dataset.from_generator(gen, features=feats, cache_dir=out + ".cache")
    ds.save_to_disk(out)
    shutil.rmtree(out + ".cache", ignore_errors=True)


WRITERS: dict[str, Callable[[str, int, str], None]] = {
    "wds_pipeline": write_wds_pipeline, "webdataset": write_webdataset, "litdata": write_litdata,
    "mosaic": write_mosaic, "lhotse-wav": write_lhotse,
    "lhotse-flac": lambda name, n, out: write_lhotse(name, n, out, audio_format="flac"),
    "hf": write_hf,
    # Conversion only (not read): MDSWriter hashing each shard with XXH3-128 as wds_pipeline's
    # writer does (plus a crc32 per sample there), for a comparison at equal integrity.
    "mosaic-xxh3": lambda name, n, out: write_mosaic(name, n, out, hashes=("xxh3_128",)),
}


# ------------------------------------------------------------- conversion


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (LitData's worker)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# Timed once, in the first repeat: 5-50x slower than the rest, so repeats would only
# lengthen the run (a default run's conversion part would take ~10 min instead of ~3).
SLOW_WRITERS = ("hf", "lhotse-wav", "lhotse-flac")


def convert_once(fmt: str, name: str, n: int, out: str) -> dict[str, float]:
    """One timed conversion of the whole set into a fresh folder ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()  # the previous writer's garbage is not collected on this one's clock
    cpu, t = _cpu_seconds(), time.perf_counter()
    WRITERS[fmt](name, n, out)
    return {"seconds": time.perf_counter() - t, "cpu_seconds": _cpu_seconds() - cpu}


def convert_all(sets: dict[str, int], writers: list[str], data_dir: str, repeats: int,
                frames_of: dict[str, int]) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """Every writer on every set, ``repeats`` times, the order rotating each repeat;
    returns the summary per ``set/writer`` and the folder each writer's output is in."""
    for fmt in writers:  # untimed: each writer's first call imports and sets up what it uses
        convert_once(fmt, "clips", 8, os.path.join(data_dir, "warm-up", fmt))
    shutil.rmtree(os.path.join(data_dir, "warm-up"), ignore_errors=True)
    runs: dict[str, list[dict[str, float]]] = {}
    paths: dict[tuple[str, str], str] = {}
    for rep in range(repeats):
        order = writers[rep % len(writers):] + writers[: rep % len(writers)]
        for name, n in sets.items():
            for fmt in order:
                if rep and fmt in SLOW_WRITERS:
                    continue
                out = paths[(name, fmt)] = os.path.join(data_dir, f"{name}-{n}", fmt)
                r = convert_once(fmt, name, n, out)
                runs.setdefault(f"{name}/{fmt}", []).append(r)
                print(f"convert rep {rep} {name}/{fmt}: {r['seconds']:.2f} s ({n / r['seconds']:,.0f}/s)",
                      flush=True)
    summary: dict[str, Any] = {}
    for name, n in sets.items():
        base = [r["seconds"] for r in runs.get(f"{name}/wds_pipeline", [])]
        for fmt in writers:
            rs = runs[f"{name}/{fmt}"]
            secs = statistics.median(r["seconds"] for r in rs)
            best = min(r["seconds"] for r in rs)
            summary[f"{name}/{fmt}"] = {
                "seconds": secs, "samples_per_s": n / secs, "mb_per_s": frames_of[name] * 2 / 1e6 / secs,
                "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                # The fastest repeat: what the writer does when the page cache's writeback
                # and the kernel's huge-page supply do not get in its way (timeit's min).
                "best_seconds": best,
                "best_over_wds_pipeline": min(base) / best if base else None,
                # rate / wds_pipeline's rate in the same repeat = its seconds / these seconds
                "over_wds_pipeline": statistics.median(b / r["seconds"] for r, b in zip(rs, base)) if base else None,
                "bytes": dir_size(paths[(name, fmt)]), "runs": rs,
            }
    return summary, paths


def print_conversion(conversion: dict[str, Any]) -> None:
    print(f"\n{'conversion (median)':24}{'seconds':>9}{'samples/s':>11}{'MB/s':>8}{'CPU s':>8}"
          f"{'MB on disk':>11}{'vs wds_pipeline':>17}{'best s':>8}{'best vs':>9}")
    for key, c in conversion.items():
        ratio = f"{c['over_wds_pipeline']:.2f}x" if c["over_wds_pipeline"] else "-"
        best = f"{c['best_over_wds_pipeline']:.2f}x" if c["best_over_wds_pipeline"] else "-"
        print(f"{key:24}{c['seconds']:>9.2f}{c['samples_per_s']:>11,.0f}{c['mb_per_s']:>8,.0f}"
              f"{c['cpu_seconds']:>8.2f}{c['bytes'] / 1e6:>11,.0f}{ratio:>17}{c['best_seconds']:>8.2f}{best:>9}")


# ----------------------------------------------------------------- loaders
# Each yields (keys, waveform (B, T) tensor, lengths) per batch; built fresh per run.


def load_wds_pipeline(path: str, workers: int, dtype: str = "float32") -> Iterable[Any]:
    from wds_pipeline import StreamingLoader

    loader = StreamingLoader(os.path.join(path, "index.json"), batch_size=BATCH, num_workers=workers,
                             waveform_dtype=dtype, last_batch="pad")

    class Epochs:
        def __iter__(self) -> Iterator[Any]:
            for b in loader:
                keys = [k for k, p in zip(b.keys, b.is_padding.tolist()) if not p]
                yield keys, b.waveform, b.lengths

    return Epochs()


def load_webdataset(path: str, workers: int) -> Iterable[Any]:
    import webdataset as wds

    urls = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".tar"))
    ds = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False, nodesplitter=wds.split_by_node)
          .shuffle(1000).decode().to_tuple("__key__", "audio.npy").batched(BATCH, collation_fn=pad_collate))
    return wds.WebLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def _by_key(d: dict[str, Any]) -> tuple[str, np.ndarray]:
    return d["key"], d["audio"]


def _collate_dicts(items: list[dict[str, Any]]) -> Any:
    return pad_collate([_by_key(d) for d in items])


def load_litdata(path: str, workers: int) -> Iterable[Any]:
    import litdata

    ds = litdata.StreamingDataset(path, shuffle=True, batch_decode=0)
    return litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=_collate_dicts,
                                       persistent_workers=workers > 0)


def load_mosaic(path: str, workers: int) -> Iterable[Any]:
    import torch
    from streaming import StreamingDataset

    ds = StreamingDataset(local=path, shuffle=True, batch_size=BATCH, shuffle_seed=int(time.time()) % 1000)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=_collate_dicts,
                                       persistent_workers=workers > 0)


class _LhotseAudio:
    def __getitem__(self, cuts: Any) -> Any:
        return pad_collate([(c.id, c.load_audio()[0].astype(np.float32) * 32768) for c in cuts])


def load_lhotse(path: str, workers: int) -> Iterable[Any]:
    import torch
    from lhotse import CutSet
    from lhotse.dataset import DynamicCutSampler, IterableDatasetWrapper
    from lhotse.dataset.dataloading import make_worker_init_fn

    cuts = CutSet.from_shar(in_dir=path, shuffle_shards=True, seed="randomized")
    sampler = DynamicCutSampler(cuts, max_cuts=BATCH, shuffle=True, shuffle_buffer_size=1000, drop_last=False)
    ds = IterableDatasetWrapper(dataset=_LhotseAudio(), sampler=sampler)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                                       worker_init_fn=make_worker_init_fn(seed=0))


def load_hf(path: str, workers: int) -> Iterable[Any]:
    import datasets
    import torch

    ds = datasets.load_from_disk(path).to_iterable_dataset(num_shards=max(2, workers))
    ds = ds.shuffle(seed=int(time.time()) % 1000, buffer_size=1000).with_format("numpy")
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=_collate_dicts,
                                       persistent_workers=workers > 0)


def loader_for(fmt: str, path: str, workers: int) -> Iterable[Any]:
    fmt = fmt.removesuffix(TO_FLOAT32)
    if fmt == "wds_pipeline-int16":
        return load_wds_pipeline(path, workers, "int16")
    return {"wds_pipeline": load_wds_pipeline, "webdataset": load_webdataset, "litdata": load_litdata,
            "mosaic": load_mosaic, "lhotse-wav": load_lhotse, "lhotse-flac": load_lhotse,
            "hf": load_hf}[fmt](path, workers)


def data_of(fmt: str) -> str:
    fmt = fmt.removesuffix(TO_FLOAT32)
    return "wds_pipeline" if fmt.startswith("wds_pipeline") else fmt


# ----------------------------------------------------------------- measuring


def warm_page_cache(path: str) -> int:
    """Read every file under ``path`` (untimed), so that each run starts, as this benchmark
    says, with its set in the page cache. Without it, a host that pages out memory no one
    touched for a while (DAMON reclaim on this machine: 0 of 519 MB of a set left resident
    15 min after its last read) makes whichever format runs first in a repeat read from
    disk: formats alternate their order, so that penalty fell on a different format in
    different repeats. Bytes read."""
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(d, f), "rb", buffering=0) as fh:
                while chunk := fh.read(8 << 20):
                    total += len(chunk)
    return total


def run(fmt: str, path: str, workers: int, want: Counter[str], frames: int,
        memory: bool = True) -> dict[str, Any]:
    """Two epochs of one fresh loader: epoch 1 with construction on the clock, its set in
    the page cache first. ``memory``: sample the peak RSS/PSS (a spawned sampler process,
    seconds of start-up per run)."""
    out: dict[str, Any] = {}
    warm_page_cache(path)
    to_float32 = fmt.endswith(TO_FLOAT32)
    mem = PeakMemory() if memory else None
    with mem or contextlib.nullcontext():
        t0 = time.perf_counter()
        loader = loader_for(fmt, path, workers)
        for epoch in (1, 2):
            keys: list[str] = []
            first = None
            start = t0 if epoch == 1 else time.perf_counter()
            for k, wave, _ in loader:
                if to_float32:
                    wave = wave.float().mul_(1 / 32768)
                else:
                    wave.shape  # noqa: B018 (the step takes the tensor; wds_pipeline's float32 is made here)
                if first is None:
                    first = time.perf_counter() - start
                keys.extend(k)
            dt = time.perf_counter() - start
            got = Counter(keys)
            ok = got == want
            out[f"epoch{epoch}"] = {
                "samples": len(keys), "seconds": dt, "first_batch_s": first, "keys_ok": ok,
                "samples_per_s": len(keys) / dt if ok else None,
                "mb_per_s": frames * 2 / 1e6 / dt if ok else None,
            }
            if not ok:
                out[f"epoch{epoch}"]["key_error"] = (
                    f"{len(got - want)} extra/duplicate, {len(want - got)} missing of {len(want)}")
        del loader
        gc.collect()  # shut its workers down here, before the next loader forks new ones
    if mem is not None:
        out["peak_rss"], out["peak_pss"] = mem.peak_rss, mem.peak_pss
    return out


def digests(fmt: str, path: str) -> dict[str, str]:
    """Untimed: the digest of every array one pass of the loader returns, by key."""
    got: dict[str, str] = {}
    for keys, wave, lengths in loader_for(fmt, path, 0):
        w = wave.numpy()
        if w.dtype != np.int16:
            w = np.round(w * 32768).astype(np.int16)
        n = len(keys)  # wds_pipeline: padding rows come last and are not in keys
        for r in range(n):
            got[keys[r]] = digest(w[r, : int(lengths[r])])
    return got


def verify(fmt: str, path: str, ref: dict[str, str]) -> str | None:
    """Untimed: every array equal to the source. None when equal, else what differs."""
    return compare_digests(digests(fmt, path), ref)


def compare_digests(got: dict[str, str], ref: dict[str, str]) -> str | None:
    """None when ``got`` holds exactly ``ref``'s keys and digests, else what differs."""
    if set(got) != set(ref):
        return f"key set differs: {len(set(ref) - set(got))} missing, {len(set(got) - set(ref))} extra"
    bad = [k for k in ref if got[k] != ref[k]]
    return f"{len(bad)} arrays differ (e.g. {bad[0]})" if bad else None


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def stub_torchvision() -> None:
    """``import streaming`` imports torchvision at module level; PyPI's torchvision is a CUDA
    build that cannot load next to CPU torch, and MDSWriter/StreamingDataset never use it."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        stub = os.path.join(tempfile.gettempdir(), "peers-torchvision-stub")
        files = {  # exactly the names streaming imports
            "__init__.py": "",
            "datasets.py": "class VisionDataset:\n    pass\n\n\nclass CIFAR10(VisionDataset):\n    pass\n",
            "transforms/__init__.py": "",
            "transforms/functional.py": "def to_tensor(x):\n    raise NotImplementedError('torchvision stub')\n",
        }
        for rel, text in files.items():
            p = os.path.join(stub, "torchvision", rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        sys.path.insert(0, stub)
        os.environ["PYTHONPATH"] = stub + os.pathsep + os.environ.get("PYTHONPATH", "")


def available(formats: Iterable[str]) -> dict[str, str]:
    """Formats whose packages cannot be imported, with the reason."""
    mods = {"webdataset": "webdataset", "litdata": "litdata", "mosaic": "streaming",
            "lhotse-wav": "lhotse", "lhotse-flac": "lhotse", "hf": "datasets"}
    missing = {}
    for f in formats:
        f = f.removesuffix(TO_FLOAT32)
        if f in mods:
            try:
                __import__(mods[f])
            except Exception as e:  # an import error of any kind means: not runnable here
                missing[f] = f"{type(e).__name__}: {e}"
    return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 4,000 clips (62 batches an epoch) and 2,000 utterances: long enough that an epoch is
    # mostly steady reading, not worker start-up; 10,000 clips take ~2.5x longer to run.
    ap.add_argument("--clips", type=int, default=4000, help="3 s clips in the clips set")
    ap.add_argument("--utts", type=int, default=2000, help="1-15 s utterances in the utterances set")
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved repeats of every loader (medians and paired ratios over them; "
                         "default 5, with --baseline 9)")
    ap.add_argument("--convert-repeats", type=int, default=5,
                    help="timed conversions of each set per writer (hf and lhotse: one)")
    ap.add_argument("--only", choices=("all", "convert"), default="all",
                    help="convert: time the writers only (results in results/peers-convert.json)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "wds_pipeline_bench", "peers"))
    ap.add_argument("--json-out", default=None, help="default: results/peers.json (a temp file with --quick)")
    ap.add_argument("--png-out", default=None, help="default: results/peers.png (a temp file with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (results in a temp folder)")
    ap.add_argument("--check", action="store_true", help="only check that every peer imports (exit 2 if not)")
    ap.add_argument("--baseline", metavar="REV", default=None,
                    help="compare wds_pipeline's loader only: the working tree (new) against git revision "
                         "REV (old), interleaved, new/old per column (results/peers-old-new.json)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (9 if args.baseline else 5)
    if args.baseline:
        args.data_dir += "-old-new"
    if args.quick:
        args.clips, args.utts, args.repeats, args.convert_repeats = 130, 70, 1, 1
        args.data_dir += "-quick"
    # A conversion-only run never replaces the full figures, nor a smoke run any (keep_quoted_results).
    stem = "peers-old-new" if args.baseline else "peers-convert" if args.only == "convert" else "peers"
    args.json_out = args.json_out or os.path.join(RESULTS, stem + ".json")
    args.png_out = args.png_out or os.path.join(RESULTS, stem + ".png")
    keep_quoted_results(args)
    warnings.filterwarnings("ignore")
    if args.baseline:
        from peers_baseline import old_vs_new

        return old_vs_new(args)
    stub_torchvision()
    formats = args.formats.split(",")
    missing = available(formats)
    if missing:
        for f, why in missing.items():
            print(f"cannot run {f}: {why}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    workers = [int(w) for w in args.workers.split(",")]
    sets = {"clips": args.clips, "utts": args.utts}
    load = os.getloadavg()
    setup: dict[str, Any] = {**machine(), "batch": BATCH, "workers": workers, "repeats": args.repeats,
                             "convert_repeats": args.convert_repeats,
                             "sets": {"clips": f"{args.clips} x 3 s", "utts": f"{args.utts} x 1-15 s"},
                             "load_before": [round(x, 2) for x in load], "reported": "median of interleaved repeats"}
    for mod in ("litdata", "streaming", "lhotse", "datasets", "webdataset"):
        try:
            setup[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:  # not installed: none of the --formats asked needs it
            setup[mod] = None
    print("setup:", setup, flush=True)

    frames_of = {name: sum(len(a) for _, a, _ in samples(name, n)) for name, n in sets.items()}
    writers = sorted({data_of(f) for f in formats} | ({"mosaic-xxh3"} if "mosaic" in formats else set()))
    conversion, paths = convert_all(sets, writers, args.data_dir, args.convert_repeats, frames_of)
    print_conversion(conversion)
    if args.only == "convert":
        write_json(args.json_out, {"setup": {**setup, "load_after": [round(x, 2) for x in os.getloadavg()]},
                                   "conversion": conversion})
        print(f"wrote {args.json_out}")
        return 0

    refs = {name: {k: digest(a) for k, a, _ in samples(name, n)} for name, n in sets.items()}
    checks: dict[str, str | None] = {}
    for name in sets:
        for fmt in formats:
            base = fmt.removesuffix(TO_FLOAT32)
            if base != fmt and f"{name}/{base}" in checks:  # the same loader: checked once
                checks[f"{name}/{fmt}"] = checks[f"{name}/{base}"]
            else:
                checks[f"{name}/{fmt}"] = verify(fmt, paths[(name, data_of(fmt))], refs[name])
            print(f"arrays {name}/{fmt}: {checks[f'{name}/{fmt}'] or 'identical'}", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for name in sets:
            want = Counter(list(refs[name]))
            for w in workers:
                order = formats if rep % 2 == 0 else formats[::-1]  # alternate who runs first
                for fmt in order:
                    # Timed without the memory sampler: its reads of /proc/PID/smaps walk every
                    # mapped page of the process tree, which costs a loader that maps its shards
                    # (wds_pipeline, and MosaicML) CPU and mmap_lock time that one reading into
                    # its own buffers does not pay (measured: wds_pipeline's clips w0 epoch 1
                    # 355 ms without, 416 ms with). Memory has a pass of its own below.
                    r = run(fmt, paths[(name, data_of(fmt))], w, want, frames_of[name], memory=False)
                    runs.setdefault(f"{name}/w{w}/{fmt}", []).append(r)
                    print(f"rep {rep} {name}/w{w}/{fmt}: " + ", ".join(
                        f"ep{e} {r[f'epoch{e}']['samples_per_s'] or 0:,.0f}/s" for e in (1, 2)), flush=True)
    for name in sets:  # one untimed run per column and format, its peak RSS/PSS sampled
        want = Counter(list(refs[name]))
        for w in workers:
            for fmt in formats:
                m = run(fmt, paths[(name, data_of(fmt))], w, want, frames_of[name])
                for r in runs[f"{name}/w{w}/{fmt}"]:
                    r["peak_rss"], r["peak_pss"] = m["peak_rss"], m["peak_pss"]

    table = summarize(runs, checks, formats, sets, workers)
    result = {"setup": {**setup, "load_after": [round(x, 2) for x in os.getloadavg()]},
              "conversion": conversion, "array_checks": checks, "table": table, "runs": runs}
    write_json(args.json_out, result)
    chart(table, formats, args.png_out, setup)
    print_table(table, formats)
    print(f"wrote {args.json_out} and {args.png_out}")
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], checks: dict[str, str | None], formats: list[str],
              sets: dict[str, int], workers: list[int]) -> dict[str, dict[str, Any]]:
    """Per column (set, workers, epoch): median samples/s per format, and the median over
    repeats of each format's rate / wds_pipeline's default rate in the same repeat."""
    table: dict[str, dict[str, Any]] = {}
    for name in sets:
        for w in workers:
            for e in (1, 2):
                col: dict[str, Any] = {}
                base = [r[f"epoch{e}"]["samples_per_s"] for r in runs[f"{name}/w{w}/wds_pipeline"]]
                for fmt in formats:
                    rs = runs[f"{name}/w{w}/{fmt}"]
                    rates = [r[f"epoch{e}"]["samples_per_s"] for r in rs]
                    if checks[f"{name}/{fmt}"] or any(x is None for x in rates):
                        col[fmt] = {"samples_per_s": None,
                                    "why": checks[f"{name}/{fmt}"] or "a timed epoch lost or repeated keys"}
                        continue
                    ratios = [x / b for x, b in zip(rates, base) if b]
                    col[fmt] = {
                        "samples_per_s": statistics.median(rates),
                        "mb_per_s": statistics.median(r[f"epoch{e}"]["mb_per_s"] for r in rs),
                        "first_batch_s": statistics.median(r[f"epoch{e}"]["first_batch_s"] for r in rs),
                        "over_wds_pipeline": statistics.median(ratios) if ratios else None,
                        "peak_rss_mb": max(r["peak_rss"] for r in rs) / 1e6,
                        "peak_pss_mb": max(r["peak_pss"] for r in rs) / 1e6,
                    }
                table[f"{name}/w{w}/epoch{e}"] = col
    return table


def print_table(table: dict[str, dict[str, Any]], formats: list[str]) -> None:
    print(f"\n{'samples/s (median)':22}" + "".join(f"{f:>24}" for f in formats))
    for col, cells in table.items():
        row = []
        for f in formats:
            c = cells[f]
            if c["samples_per_s"] is None:
                row.append(f"{'n/a':>24}")
            else:
                row.append(f"{c['samples_per_s']:>15,.0f} ({c['over_wds_pipeline']:.2f}x)")
        print(f"{col:22}" + "".join(row))


def chart(table: dict[str, dict[str, Any]], formats: list[str], path: str, setup: dict[str, Any]) -> None:
    """Grouped bars: one group per column (set/workers/epoch), one bar per format."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # matplotlib is optional
        print(f"no chart: {e}")
        return
    cols = list(table)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.4 * len(cols)), 5.0))
    width = 0.8 / len(formats)
    for j, f in enumerate(formats):
        vals = [table[c][f]["samples_per_s"] or 0.0 for c in cols]
        ax.bar([i + j * width for i in range(len(cols))], vals, width, label=f)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))])
    ax.set_xticklabels([c.replace("/", "\n") for c in cols], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (median)")
    ax.set_title(f"batch {BATCH}, shuffle on; {setup['machine']}; load {setup['load_before']}", fontsize=9)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
