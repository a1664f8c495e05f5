"""Shared helpers of the I/O benchmarks (fuse_io.py, gcs_io.py).

* :func:`make_clips` writes N fixed-length int16 clips twice, with identical content:
  one WAV per clip and wds_pipeline shards + index (``wds_pipeline.testing``);
* :class:`PeakMemory` samples RSS of this process and its children in a thread;
* :func:`io_arg_parser` / :func:`apply_quick`: the options both benchmarks share;
* :func:`run_epoch`, :func:`check_keys`, :func:`median_run`, :func:`repeat` to measure;
* :func:`start_emulator` runs gcp-storage-emulator in a subprocess;
* :func:`add_rates`, :func:`add_speedup`, :func:`targets_of`, :func:`print_targets`,
  :func:`table`, :func:`bar_chart`, :func:`write_json`, :func:`machine` for reporting.

Run the benchmarks from the repository root (``python benchmarks/fuse_io.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
if REPO not in sys.path:  # `tools` (slowfs, faultproxy) is a top-level folder of the repo
    sys.path.insert(0, REPO)

from tools.gcs_emulator import run_emulator  # noqa: E402 (after the sys.path insert above)

SR = 16000


# ------------------------------------------------------------------- options


def io_arg_parser(
    doc: str,
    name: str,
    *,
    latency_ms: float,
    bandwidth_mbps: float,
    workers_help: str | None = None,
) -> argparse.ArgumentParser:
    """The options fuse_io.py and gcs_io.py share; results default to
    ``benchmarks/results/<name>.json`` / ``.png``, data to a temp folder ``<name>``.
    The caller adds ``--baseline-files`` and ``--repeats`` (and its own options)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--shard-size", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help=workers_help)
    ap.add_argument("--shard-prefetch", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=latency_ms)
    ap.add_argument("--bandwidth-mbps", type=float, default=bandwidth_mbps)
    ap.add_argument(
        "--data-dir", default=os.path.join(tempfile.gettempdir(), "wds_pipeline_bench", name)
    )
    ap.add_argument("--json-out", default=os.path.join(RESULTS, f"{name}.json"))
    ap.add_argument("--png-out", default=os.path.join(RESULTS, f"{name}.png"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 clips, 20 per baseline")
    return ap


QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "wds-bench-quick")


def keep_quoted_results(args: argparse.Namespace) -> None:
    """With ``--quick``, outputs that would go to ``results/`` (``--json-out``, ``--png-out``,
    ``--out`` left at their defaults) go to :data:`QUICK_RESULTS` instead: a smoke run's
    figures mean nothing, and ``results/`` holds the runs the README quotes."""
    if not getattr(args, "quick", False):
        return
    for attr in ("json_out", "png_out", "out"):
        path = getattr(args, attr, None)
        if isinstance(path, str) and os.path.dirname(os.path.abspath(path)) == os.path.abspath(RESULTS):
            setattr(args, attr, os.path.join(QUICK_RESULTS, os.path.basename(path)))


def apply_quick(args: argparse.Namespace, shard_size: int) -> None:
    """``--quick``: 200 clips in shards of ``shard_size``, 20 per baseline, one repeat,
    in a data folder of its own, the results outside ``results/``."""
    keep_quoted_results(args)
    if args.quick:
        args.clips, args.shard_size, args.baseline_files, args.repeats = 200, shard_size, 20, 1
        args.data_dir += "-quick"


# ---------------------------------------------------------------------- data


def clip_key(s: int, i: int) -> str:
    return f"synthetic-s{s}-u{i:04d}"


def make_clips(
    root: str, clips: int, seconds: float, shard_size: int, *, wavs: bool = True, npy: bool = False
) -> dict[str, Any]:
    """Write ``root/shards`` (index + tars) and, optionally, ``root/wav/<key>.wav`` and
    ``root/npy/<key>.npy`` holding the same clips. Reuses a previous identical run."""
    import soundfile as sf

    from wds_pipeline.testing import clip, write_synthetic_dataset

    frames = round(seconds * SR)
    sizes = [min(shard_size, clips - s) for s in range(0, clips, shard_size)]
    stamp = os.path.join(root, f".done-{clips}-{frames}-{shard_size}-{int(wavs)}{int(npy)}")
    keys = [(s, i) for s, n in enumerate(sizes) for i in range(n)]
    info = {
        "root": root,
        "index": os.path.join(root, "shards", "index.json"),
        "keys": [clip_key(s, i) for s, i in keys],
        "frames": frames,
        "shard_sizes": sizes,
    }
    if not os.path.exists(stamp):
        for name in os.listdir(root) if os.path.isdir(root) else []:
            if name.startswith(".done-"):
                os.unlink(os.path.join(root, name))
        write_synthetic_dataset(
            os.path.join(root, "shards"), sizes, frames=lambda s, i: frames, speakers=10
        )
        if wavs:
            os.makedirs(os.path.join(root, "wav"), exist_ok=True)
        if npy:
            os.makedirs(os.path.join(root, "npy"), exist_ok=True)
        for s, i in keys:
            x = clip(s, i, frames)
            if wavs:
                sf.write(
                    os.path.join(root, "wav", clip_key(s, i) + ".wav"), x, SR, subtype="PCM_16"
                )
            if npy:
                np.save(os.path.join(root, "npy", clip_key(s, i) + ".npy"), x)
        open(stamp, "w").close()
    shard_dir = os.path.join(root, "shards")
    info["shard_bytes"] = sum(
        os.path.getsize(os.path.join(shard_dir, n))
        for n in os.listdir(shard_dir)
        if n.endswith(".tar")
    )
    if wavs:
        info["wav_bytes"] = os.path.getsize(os.path.join(root, "wav", info["keys"][0] + ".wav"))
    if npy:
        info["npy_bytes"] = os.path.getsize(os.path.join(root, "npy", info["keys"][0] + ".npy"))
    return info


# -------------------------------------------------------------------- memory


class PeakMemory:
    """Peak of the summed RSS of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_rss = 0
        self._stop = threading.Event()

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# ----------------------------------------------------------------- measuring


def check_keys(keys: list[str], want: list[str]) -> None:
    """Every key of ``want`` yielded exactly once."""
    if Counter(keys) != Counter(want):
        raise RuntimeError(
            f"epoch yielded {len(keys)} samples ({len(set(keys))} distinct), "
            f"expected each of {len(want)} once"
        )


def run_epoch(loader: Any, want: list[str], nbytes: int) -> dict[str, Any]:
    """One epoch of a ``StreamingLoader`` (padding dropped), timed, with its peak RSS."""
    keys: list[str] = []
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for b in loader:
            keys.extend(k for k, p in zip(b.keys, b.is_padding.tolist()) if not p)
        dt = time.perf_counter() - t0
    check_keys(keys, want)
    return {"samples": len(keys), "seconds": dt, "bytes": nbytes, "peak_rss": mem.peak_rss}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by time (a copy), plus every run's seconds and the best."""
    runs = sorted(runs, key=lambda r: r["seconds"])
    out = dict(runs[len(runs) // 2])
    out["repeats_seconds"] = [r["seconds"] for r in runs]
    out["best_seconds"] = runs[0]["seconds"]
    return out


def repeat(n: int, fn: Callable[..., dict[str, Any]], *a: Any, **kw: Any) -> dict[str, Any]:
    """Run ``fn`` n times (this machine is shared and noisy); see :func:`median_run`."""
    return median_run([fn(*a, **kw) for _ in range(n)])


# ------------------------------------------------------------------ emulator


@contextlib.contextmanager
def start_emulator() -> Iterator[tuple[int, str]]:
    """gcp-storage-emulator (in memory) on a free port; sets the env vars gcsfs needs.
    Import gcsfs only inside this block (it reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT at
    import time)."""
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    with run_emulator() as (port, url):
        os.environ["STORAGE_EMULATOR_HOST"] = url
        yield port, url


# ----------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    import psutil
    import torch

    import wds_pipeline

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "wds_pipeline": wds_pipeline.__version__,
    }


def add_rates(runs: dict[str, dict[str, Any]]) -> None:
    """``samples_per_s`` and payload ``MBps`` of every run."""
    for r in runs.values():
        r["samples_per_s"] = r["samples"] / r["seconds"]
        r["MBps"] = r["bytes"] / r["seconds"] / 1e6


def add_speedup(runs: dict[str, dict[str, Any]], base: str, key: str) -> None:
    """``key``: every run's samples/s over that of run ``base``."""
    rate = runs[base]["samples_per_s"]
    for r in runs.values():
        r[key] = r["samples_per_s"] / rate


def targets_of(ratios: dict[str, float], targets: dict[str, float]) -> dict[str, Any]:
    return {
        k: {"target": v, "measured": ratios[k], "met": ratios[k] >= v} for k, v in targets.items()
    }


def print_targets(targets: dict[str, Any], key_width: int, value_width: int) -> None:
    print("targets:")
    for k, t in targets.items():
        print(
            f"  {k:{key_width}} {t['measured']:{value_width}.2f}  (target >= {t['target']:g})  "
            f"{'met' if t['met'] else 'MISSED'}"
        )


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table; ``columns`` are (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, spec in columns:
            v = r.get(key)
            line.append("-" if v is None else (format(v, spec) if spec else str(v)))
        cells.append(line)
    widths = [max(len(c[j]) for c in cells) for j in range(len(columns))]
    out = []
    for n, c in enumerate(cells):
        out.append(
            "  ".join(
                v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(c, widths))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)
        f.write("\n")


def bar_chart(
    path: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    ylabel: str,
    log: bool = True,
    hline: tuple[float, str] | None = None,
    notes: Sequence[str] = (),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(labels) + 1.5), 5.2))
    colors = [
        "#999999" if lab.startswith(("(a)", "(2)", "(3)", "ceiling")) else "#2a7ab9"
        for lab in labels
    ]
    bars = ax.bar(range(len(labels)), values, color=colors)
    for b, v in zip(bars, values):
        ax.annotate(
            f"{v:,.0f}" if v >= 10 else f"{v:.1f}",
            (b.get_x() + b.get_width() / 2, v),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if hline is not None:
        ax.axhline(hline[0], color="#c0392b", linestyle="--", linewidth=1)
        ax.annotate(
            hline[1], (-0.45, hline[0]), ha="left", va="bottom", fontsize=8, color="#c0392b"
        )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7.5)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom")
        fig.subplots_adjust(bottom=0.2 + 0.03 * len(notes), left=0.07, right=0.98)
    else:
        fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
