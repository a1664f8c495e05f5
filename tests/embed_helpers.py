"""A trained checkpoint for the embedding tests, and a model whose ``embed`` can be slowed or
held, for a test to kill ``wds-pipeline embed`` between two parts (importable by
subprocesses: the tests put this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from trainer_helpers import hold_once, small_config

from wds_pipeline.train.config import parse_config
from wds_pipeline.train.models import SpeakerTDNN
from wds_pipeline.train.trainer import Trainer

# "N:MARKER": after N inference ``embed`` calls, hold_once(MARKER). An environment variable,
# not a model option: the model's options are saved in its checkpoint, which the run that
# must not hold (the uninterrupted reference) loads too.
HOLD_ENV = "WDS_TEST_HOLD_AFTER_EMBEDS"


class SlowEmbedTDNN(SpeakerTDNN):
    """The default model with a fixed sleep per inference ``embed`` call, and the hold of
    ``HOLD_ENV`` when a test sets it; arithmetic unchanged."""

    def __init__(self, num_classes: int, *, embed_delay: float = 0.0, **kw: Any) -> None:
        super().__init__(num_classes, **kw)
        self.embed_delay = embed_delay
        self.embeds = 0  # inference embed calls in this process

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.embeds += 1
            after, _, marker = os.environ.get(HOLD_ENV, "").partition(":")
            if after and self.embeds > int(after):
                hold_once(marker)
            if self.embed_delay:
                time.sleep(self.embed_delay)
        return super().embed(waveform, lengths)


def slow_embed_tdnn(num_classes: int, sample_rate: int = 16000, **options: Any) -> SlowEmbedTDNN:
    return SlowEmbedTDNN(num_classes, sample_rate=sample_rate, **options)


def trained_checkpoints(data: str, out: str, *, steps: int = 2, **blocks: dict[str, Any]) -> str:
    """Train the tests' small TDNN for ``steps`` optimizer steps on ``data``; its checkpoint folder."""
    doc = small_config(data, out, **blocks)
    doc["run"].update(max_steps=steps, epochs=1)
    trainer = Trainer(parse_config(doc, "test.yaml"))
    trainer.fit()
    return trainer.cfg.checkpoint_dir
