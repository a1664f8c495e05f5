"""Model factories and config builders for the trainer tests.

Importable by trainer subprocesses: the tests put this folder on PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch
import yaml

from wds_pipeline.train.models import SpeakerTDNN

HERE = os.path.dirname(os.path.abspath(__file__))


def hold_once(marker: str) -> None:
    """Block this process until it is killed, the first time only: create ``marker`` (the
    test waits for it, then kills) and sleep; a later process that finds ``marker`` (the
    resumed run) returns at once. A kill timed by this is exact on any machine, where one
    timed by a sleep in the test lands wherever the scheduler lets the trainer get to."""
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return
    while True:
        time.sleep(60)


class SlowTDNN(SpeakerTDNN):
    """The default model with a fixed sleep per training forward, and ``hold_after``: after
    that many training forwards in a process, :func:`hold_once` on ``hold_file``, so a test
    kills the trainer at a known step (the checkpoints before it written); the arithmetic
    is unchanged."""

    def __init__(self, num_classes: int, *, delay: float = 0.0, hold_after: int = 0,
                 hold_file: str = "", **kw: Any) -> None:
        super().__init__(num_classes, **kw)
        self.delay = delay
        self.hold_after, self.hold_file = hold_after, hold_file
        self.forwards = 0  # training forwards in this process

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.forwards += 1
            if self.hold_after and self.forwards > self.hold_after:
                hold_once(self.hold_file)
            if self.delay:
                time.sleep(self.delay)
        return super().forward(waveform, lengths)


def slow_tdnn(num_classes: int, sample_rate: int = 16000, **options: Any) -> SlowTDNN:
    return SlowTDNN(num_classes, sample_rate=sample_rate, **options)


class MeanModel(torch.nn.Module):
    """Next to no compute: a model far faster than any loader (the preflight slow-loader test)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, num_classes)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.linear(waveform.float().mean(-1, keepdim=True))


def mean_model(num_classes: int, sample_rate: int = 16000) -> MeanModel:
    return MeanModel(num_classes)


def small_config(train: str | list[str], out: str, **blocks: dict[str, Any]) -> dict[str, Any]:
    """A config for tiny synthetic datasets (0.1-0.3 s clips): 0.1 s crops, a small TDNN."""
    doc: dict[str, Any] = {
        "data": {"train": train if isinstance(train, list) else [train]},
        "loader": {"batch_size": 4, "crop_seconds": 0.1, "num_workers": 0, "shuffle_buffer": 16,
                   "persistent_workers": False},
        "model": {"factory": "wds_pipeline.train.models:speaker_tdnn", "channels": 16, "embed_dim": 8},
        "optim": {"lr": 0.01, "warmup_steps": 2},
        "checkpoint": {"dir": os.path.join(out, "ckpt"), "every_steps": 4},
        "run": {"epochs": 2, "out_dir": out, "num_threads": 1, "progress": False, "preflight": False,
                "tensorboard": False, "log_every": 2},
    }
    for name, values in blocks.items():
        doc[name] = {**doc.get(name, {}), **values}
    return doc


def write_config(path: str, doc: dict[str, Any]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    return path


def wait_until_held(proc: subprocess.Popen, marker: str, ready: Callable[[], bool] = lambda: True,
                    limit: float = 240) -> None:
    """Wait until ``proc`` (or a process under it) holds in :func:`hold_once` on ``marker``
    and ``ready()`` is true; fails if ``proc`` ends first or ``limit`` seconds pass (a hang
    guard, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not (os.path.exists(marker) and ready()):
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before it held"
        assert time.monotonic() < deadline, f"{marker} was not held within {limit} s"
        time.sleep(0.02)
