"""Model factories and config builders for the trainer tests.

Importable by trainer subprocesses: the tests put this folder on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import yaml

from wds_pipeline.train.models import SpeakerTDNN

HERE = os.path.dirname(os.path.abspath(__file__))


class SlowTDNN(SpeakerTDNN):
    """The default model with a fixed sleep per training forward, so a test can kill the
    trainer mid-epoch reliably; the arithmetic is unchanged."""

    def __init__(self, num_classes: int, *, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(num_classes, **kw)
        self.delay = delay

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.delay:
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
