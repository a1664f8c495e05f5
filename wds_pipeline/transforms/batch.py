"""Batch transforms: torch, run by the trainer on each batch once it is on the device.

A batch transform is a frozen dataclass (its fields are its ``params``) called as
``transform(batch, generator) -> batch`` on a :class:`DeviceBatch` whose ``wave`` is float32
in [-1, 1) (int16 batches are scaled first, exactly); it returns a new ``DeviceBatch``
(``dataclasses.replace``), leaving the one it was given unchanged. ``generator`` is a
``torch.Generator`` on the batch's device, seeded from (run seed, epoch, batch index in the
epoch, rank, position in the list): the same numbers after any resume, with no state to
save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from .registry import Registry, TransformSpec, as_specs

BATCH_TRANSFORMS = Registry("batch", {
    "noise": "wds_pipeline.transforms.noise:AddNoise",
    "reverb": "wds_pipeline.transforms.reverb:Reverb",
    "row_gain": "wds_pipeline.transforms.row_gain:RowGain",
})
# Run on the features the model computes from the batch: (features, lengths, generator).
FEATURE_TRANSFORMS = Registry("feature", {
    "spec_augment": "wds_pipeline.transforms.specaugment:SpecAugment",
})

INT16_SCALE = 1.0 / 32768.0  # int16 -> float32 in [-1, 1): exact (a power of two)


@dataclass(frozen=True)
class DeviceBatch:
    wave: torch.Tensor  # (B, T) float32 in [-1, 1), zero past each row's length
    lengths: torch.Tensor  # (B,) valid frames per row
    labels: torch.Tensor  # (B,) class ids (-1: none)
    keep: torch.Tensor  # (B,) rows that count in the loss (not padding, labelled)


class BatchTransform(Protocol):
    def __call__(self, batch: DeviceBatch, generator: torch.Generator) -> DeviceBatch: ...


def batch_seed(seed: int, epoch: int, index: int, rank: int, position: int) -> int:
    """A 63-bit seed that is a pure function of its arguments (SeedSequence mixes them)."""
    words = np.random.SeedSequence([seed & ((1 << 64) - 1), epoch, index, rank, position]).generate_state(2)
    return (int(words[0]) << 31 ^ int(words[1])) & ((1 << 63) - 1)


class BatchChain:
    """The configured batch transforms, in order, each seeded on its own."""

    def __init__(self, specs: Sequence[TransformSpec | Mapping[str, Any]], *, seed: int, rank: int,
                 device: torch.device) -> None:
        self.specs = as_specs(specs)
        self.transforms: tuple[BatchTransform, ...] = BATCH_TRANSFORMS.build_all(self.specs, "batch_transforms")
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator(device=device)

    def __call__(self, batch: DeviceBatch, *, epoch: int, index: int) -> DeviceBatch:
        if not batch.wave.is_floating_point():
            batch = replace(batch, wave=batch.wave.float() * INT16_SCALE)
        for position, transform in enumerate(self.transforms):
            self.generator.manual_seed(batch_seed(self.seed, epoch, index, self.rank, position))
            batch = transform(batch, self.generator)
        return batch
