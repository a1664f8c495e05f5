"""``row_gain``: scale each row of a batch by its own gain, uniform in [min_db, max_db] dB."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .batch import DeviceBatch
from .gain import DecibelRange


@dataclass(frozen=True)
class RowGain(DecibelRange):
    def __call__(self, batch: DeviceBatch, generator: torch.Generator) -> DeviceBatch:
        wave = batch.wave
        u = torch.rand(wave.shape[0], generator=generator, device=wave.device, dtype=torch.float32)
        factor = torch.pow(10.0, (self.min_db + (self.max_db - self.min_db) * u) / 20.0)
        return replace(batch, wave=wave * factor[:, None])
