"""``row_gain``: scale each row of a batch by its own gain, uniform in [min_db, max_db] dB."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .batch import DeviceBatch
from .gain import DecibelRange
from .keyed import RowRandom


@dataclass(frozen=True)
class RowGain(DecibelRange):
    def __call__(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch:
        return replace(batch, wave=batch.wave * self.factors(rng)[:, None])

    def apply_(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch:
        batch.wave.mul_(self.factors(rng)[:, None])
        return batch

    def factors(self, rng: RowRandom) -> torch.Tensor:
        """``(B,)`` float32: each row's gain as a factor."""
        u = rng.uniform(1)[:, 0]
        # In float64, then rounded: torch's vectorised pow and its scalar tail may differ in the
        # last bit, which would make a row's gain depend on its position in the batch.
        return torch.pow(10.0, (self.min_db + (self.max_db - self.min_db) * u.double()) / 20.0).float()
