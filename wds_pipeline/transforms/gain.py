"""``gain``: scale a sample by a gain drawn uniformly in [min_db, max_db] decibels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecibelRange:
    """The params of a random gain: drawn uniformly in [min_db, max_db] decibels."""

    min_db: float = -6.0
    max_db: float = 6.0

    def __post_init__(self) -> None:
        if not self.min_db <= self.max_db:
            raise ValueError(f"min_db ({self.min_db}) must be <= max_db ({self.max_db})")


@dataclass(frozen=True)
class Gain(DecibelRange):
    def __call__(self, wave: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
        factor = np.float32(10.0 ** (rng.uniform(self.min_db, self.max_db) / 20.0))
        # Rounded and clipped back to int16: a loud clip saturates instead of wrapping.
        out = np.rint(wave.astype(np.float32) * factor)
        return np.clip(out, -32768, 32767).astype(np.int16)
