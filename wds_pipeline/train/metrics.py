"""Training metrics: equal error rate, and one log of figures to JSONL and TensorBoard."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def timed(items: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Each item with the seconds spent blocked waiting for it: the data-wait of a loop."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item, time.perf_counter() - t0


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER of verification ``scores`` (higher = same speaker) against 0/1 ``labels``:
    the error rate where false acceptance equals false rejection (interpolated)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    if pos == 0 or neg == 0:
        raise ValueError(f"EER needs target and non-target trials, got {pos} and {neg}")
    order = np.argsort(-scores, kind="stable")
    lab = labels[order]
    # Accept the top k trials, k = 0..N: false rejections fall, false acceptances rise.
    fa = np.concatenate([[0], np.cumsum(lab == 0)]) / neg
    fr = 1 - np.concatenate([[0], np.cumsum(lab == 1)]) / pos
    i = int(np.argmax(fa >= fr))  # first threshold where FA catches up with FR
    if i == 0:
        return float(fr[0])
    # Linear interpolation between thresholds i-1 and i.
    d0, d1 = fr[i - 1] - fa[i - 1], fr[i] - fa[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fa[i - 1] + t * (fa[i] - fa[i - 1]))


class MetricsLog:
    """Appends one JSON object per record to ``<out_dir>/metrics.jsonl`` and mirrors scalars
    to TensorBoard event files under ``<out_dir>/tensorboard`` when it is installed.

    After a resume, records for steps past the checkpoint are written again: the last
    record of a step is the one that counts (each record carries ``step``).
    """

    def __init__(self, out_dir: str | None, *, tensorboard: bool = True) -> None:
        """``out_dir=None``: a log that writes nothing (ranks other than 0)."""
        self.path = os.path.join(out_dir, "metrics.jsonl") if out_dir else ""
        self._tb = None
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        if tensorboard and out_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (pip install tensorboard)
                return
            self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    @property
    def tensorboard_dir(self) -> str | None:
        return self._tb.log_dir if self._tb is not None else None

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.path:
            return
        record = {"kind": kind, "step": step, **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
