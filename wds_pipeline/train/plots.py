"""Pictures of a run: loss, accuracy, EER and data-wait per epoch, from ``metrics.jsonl``.

``wds-pipeline train`` draws them into ``<run.out_dir>/plots/`` when training ends (rank 0;
:func:`write_training_plots`, which never fails a finished training), and
``wds-pipeline plot RUN_DIR`` redraws them from a run's metrics, during or after it.

Each plot has one curve per source of that metric, per epoch:

* ``train``: the epoch record's value (``data_wait``), else the mean of the epoch's
  ``train`` records (``loss``, logged every ``run.log_every`` steps);
* every other key naming the metric (``valid_accuracy``, ``valid_noisy_eer``,
  ``valid_eer/<trial list>``: the part before any ``/`` is the metric or ends in
  ``_<metric>``), labelled without the metric's name (``valid``, ``valid_noisy``).

After a resume, records past the checkpoint are written again: the last record of a
(kind, step), and of a (kind, epoch) for the per-epoch records, is the one that counts,
as for every reader of the log. A plot whose metric never appears is not drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .. import storage
from ..plots import figure, save_png, whole_numbers
from ..storage.urls import join_url

PLOTS: dict[str, str] = {  # file stem -> y-axis label; the stem is the metric's key
    "loss": "loss",
    "accuracy": "accuracy",
    "eer": "equal error rate",
    "data_wait": "fraction of time waiting for data",
}
SIZE = (800, 500)  # pixels
PER_EPOCH = ("epoch", "valid")  # record kinds written once per epoch

Curves = dict[str, dict[int, float]]  # curve label -> {epoch: value}

PLOT_EPILOG = """\
examples:
  wds-pipeline plot runs/demo                   # runs/demo/metrics.jsonl -> runs/demo/plots/
  wds-pipeline plot runs/demo --out /tmp/plots

Writes loss.png, accuracy.png, eer.png and data_wait.png (each metric that the log holds)
per epoch; `wds-pipeline train` writes the same at the end of training.
"""


def read_records(data: bytes) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, the last of each (kind, step) or, for per-epoch
    kinds, of each (kind, epoch); lines that are no record (cut short) are left out."""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in data.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict) or not isinstance(r.get("epoch"), int):
            continue
        kind = str(r.get("kind"))
        by = "epoch" if kind in PER_EPOCH else "step"
        if isinstance(r.get(by), int):
            last.pop((kind, by, r[by]), None)  # a rewritten record moves to the end
            last[kind, by, r[by]] = r
    return list(last.values())


def _metric_of(key: str, metric: str) -> str | None:
    """The curve label of ``key`` when it names ``metric`` (``valid_noisy_eer`` -> eer:
    ``valid_noisy``; ``valid_eer/list.txt`` -> ``valid/list.txt``), else None."""
    head, sep, tail = key.partition("/")
    if head == metric:
        return None  # the metric itself: the train curve
    if not head.endswith("_" + metric):
        return None
    return head.removesuffix("_" + metric) + sep + tail


def epoch_curves(records: list[dict[str, Any]]) -> dict[str, Curves]:
    """``{metric: {curve: {epoch: value}}}`` for the metrics of :data:`PLOTS` (see the
    module's doc); metrics without a value are absent."""
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)  # train records, per epoch
    out: dict[str, Curves] = {}
    for r in records:
        epoch = r["epoch"]
        for key, value in r.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or key in ("epoch", "step"):
                continue
            for metric in PLOTS:
                if key == metric and r.get("kind") == "train":
                    sums[metric, epoch].append(float(value))
                elif key == metric and r.get("kind") == "epoch":
                    out.setdefault(metric, {}).setdefault("train", {})[epoch] = float(value)
                elif (label := _metric_of(key, metric)) is not None:
                    out.setdefault(metric, {}).setdefault(label, {})[epoch] = float(value)
    for (metric, epoch), values in sums.items():  # an epoch record's own value wins
        out.setdefault(metric, {}).setdefault("train", {}).setdefault(
            epoch, sum(values) / len(values))
    return out


def plot_metrics(metrics_jsonl_path: str, out_dir: str, **storage_options: Any) -> list[str]:
    """Draw ``<out_dir>/<metric>.png`` for each metric of :data:`PLOTS` that the log at
    ``metrics_jsonl_path`` holds (local path, Drive or ``gs://``); returns the URLs
    written, in :data:`PLOTS` order. Raises ``FileNotFoundError`` for a missing log."""
    records = read_records(storage.read_bytes(metrics_jsonl_path, **storage_options))
    curves = epoch_curves(records)
    written = []
    for metric, ylabel in PLOTS.items():
        if metric not in curves:
            continue
        fig, (ax,) = figure(*SIZE)
        for label, points in sorted(curves[metric].items(), key=lambda kv: kv[0] != "train"):
            epochs = sorted(points)
            ax.plot(epochs, [points[e] for e in epochs], marker="o", label=label)
        ax.set(title=f"{ylabel} per epoch", xlabel="epoch", ylabel=ylabel)
        whole_numbers(ax, axis="x")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(save_png(fig, join_url(out_dir, f"{metric}.png"), **storage_options))
    return written


def write_training_plots(metrics_jsonl_path: str, run_dir: str, *,
                         log: Callable[[str], None] | None = None) -> list[str]:
    """The end-of-training hook: :func:`plot_metrics` into ``<run_dir>/plots`` and their
    paths printed; any failure is one warning line, never an error (the training is done
    and saved whatever happens to its pictures)."""
    warn = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if not metrics_jsonl_path:  # a rank other than 0 writes no metrics
        return []
    try:
        written = plot_metrics(metrics_jsonl_path, join_url(run_dir, "plots"))
    except Exception as e:  # noqa: BLE001 - pictures must never fail a finished training
        warn(f"warning: training plots not drawn ({type(e).__name__}: {e}); redraw them with "
             f"`wds-pipeline plot {run_dir}`")
        return []
    if written:
        print("plots: " + ", ".join(written))
    return written


def add_command(sub: Any, raw: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("plot", help="draw a run's loss, accuracy, EER and data-wait per epoch",
                       epilog=PLOT_EPILOG, formatter_class=raw)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's out_dir (holding metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the PNGs (default: RUN_DIR/plots)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..errors import EXIT_FAIL, EXIT_OK
    from ..plots import require_matplotlib

    require_matplotlib()
    metrics = join_url(args.run_dir, "metrics.jsonl")
    try:
        written = plot_metrics(metrics, args.out or join_url(args.run_dir, "plots"))
    except FileNotFoundError:
        print(f"wds-pipeline plot: {metrics}: no such file; pass the run's out_dir "
              "(run.out_dir of its config)", file=sys.stderr)
        return EXIT_FAIL
    if not written:
        print(f"wds-pipeline plot: {metrics} holds no per-epoch figures yet (no epoch "
              "finished)", file=sys.stderr)
        return EXIT_FAIL
    print("plots: " + ", ".join(written))
    return EXIT_OK
