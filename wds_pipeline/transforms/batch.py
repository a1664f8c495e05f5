"""Batch transforms: torch, run by the trainer on each batch once it is on the device.

A batch transform is a frozen dataclass (its fields are its ``params``) called as
``transform(batch, rng) -> batch`` on a :class:`DeviceBatch` whose ``wave`` is float32
in [-1, 1) (int16 batches are scaled first, exactly); it returns a new ``DeviceBatch``
(``dataclasses.replace``), leaving the one it was given unchanged. ``rng`` is a
:class:`~.keyed.RowRandom`: counter-based draws per row, keyed by (run seed, epoch, position
in the list, the row's global sample id ``batch.ids``), so a sample gets the same numbers
whatever batch and row it is in (0 or 2 loader workers, a resume, any rank), with no state to
save. A transform draws whether a row is picked from ``rng.uniform(1)``, then the rest from
``rng[rows]`` for the picked rows alone, and does its work on those rows only (no Python per
row).

A transform may also have ``apply_(batch, rng) -> batch``: the same result written into
``batch.wave`` in place. The chain calls it once it holds a wave of its own (after the int16
scaling or a transform's new wave): a batch is then copied once, not once per transform (on
a CPU each copy of a 64 x 2 s batch costs about as much as a transform's own work).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch

from .keyed import RowRandom, row_random
from .registry import Registry, TransformSpec, as_specs

BATCH_TRANSFORMS = Registry("batch", {
    "noise": "wds_pipeline.transforms.noise:AddNoise",
    "reverb": "wds_pipeline.transforms.reverb:Reverb",
    "row_gain": "wds_pipeline.transforms.row_gain:RowGain",
})
# Run on the features the model computes from the batch: (features, lengths, rng), ``rng`` a
# RowRandom keyed like the batch transforms' (positions after them).
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
    # (B,) int64 each row's global sample id (loader Batch.sample_ids): the key of its random
    # draws. None (a batch built by hand): rows are keyed by (batch index, rank, row) instead.
    ids: torch.Tensor | None = None


class BatchTransform(Protocol):
    def __call__(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch: ...


@runtime_checkable
class InPlace(Protocol):
    def apply_(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch: ...


class ChangesRows:
    """Base of a batch transform that replaces some rows of the wave: it defines
    ``changed_rows(batch, rng)`` (the rows and their new values, or None); the call and its
    in-place form follow."""

    def changed_rows(self, batch: DeviceBatch, rng: RowRandom) -> tuple[torch.Tensor, torch.Tensor] | None:
        raise NotImplementedError

    def __call__(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch:
        changed = self.changed_rows(batch, rng)
        return batch if changed is None else replace(batch, wave=batch.wave.index_copy(0, *changed))

    def apply_(self, batch: DeviceBatch, rng: RowRandom) -> DeviceBatch:
        changed = self.changed_rows(batch, rng)
        if changed is not None:
            batch.wave.index_copy_(0, *changed)
        return batch


class BatchChain:
    """The configured batch transforms, in order, each with its own keyed draws."""

    def __init__(self, specs: Sequence[TransformSpec | Mapping[str, Any]], *, seed: int, rank: int,
                 device: torch.device) -> None:
        self.specs = as_specs(specs)
        self.transforms: tuple[BatchTransform, ...] = BATCH_TRANSFORMS.build_all(self.specs, "batch_transforms")
        self.seed, self.rank = seed, rank

    def __call__(self, batch: DeviceBatch, *, epoch: int, index: int) -> DeviceBatch:
        owned = not batch.wave.is_floating_point()  # the scaled copy is the chain's own
        if owned:
            batch = replace(batch, wave=batch.wave.float() * INT16_SCALE)
        for position, transform in enumerate(self.transforms):
            rng = self.random(batch, epoch=epoch, index=index, position=position)
            if owned and isinstance(transform, InPlace):
                batch = transform.apply_(batch, rng)
                continue
            given = batch.wave.untyped_storage().data_ptr()
            batch = transform(batch, rng)
            owned = owned or batch.wave.untyped_storage().data_ptr() != given  # a new wave: ours
        return batch

    def random(self, batch: DeviceBatch, *, epoch: int, index: int, position: int) -> RowRandom:
        """The draws of the transform at ``position`` (the feature transforms take the
        positions after the batch transforms') for ``batch``'s rows."""
        return row_random(self.seed, epoch, position, batch.ids, index=index, rank=self.rank,
                          rows=batch.wave.shape[0], device=batch.wave.device)
