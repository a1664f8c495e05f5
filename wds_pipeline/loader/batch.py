"""The typed batch the loader yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch


@dataclass
class Batch:
    """A padded batch of utterances.

    ``waveform`` is (B, T) zero-padded; ``lengths`` holds each row's real length in
    frames. Rows with ``is_padding`` True repeat real samples only to keep batch
    shapes or per-rank batch counts equal: mask them out of losses and metrics.

    ``waveform``'s dtype is the loader's ``waveform_dtype``, as the workers wrote it:
    float32 in [-1, 1) (exactly ``int16 / 32768``; the default) or int16 (half the bytes:
    move it with ``to(device)`` and scale it there). Nothing is converted after it arrives.
    """

    waveform: torch.Tensor | None  # (B, T) int16 or float32
    lengths: torch.Tensor  # (B,) int64, frames
    labels: torch.Tensor  # (B,) int64, -1 when the sample has no class label
    keys: list[str]
    is_padding: torch.Tensor  # (B,) bool
    dataset_ids: torch.Tensor  # (B,) int64: which of the loader's datasets
    # (B,) int64: each row's global sample id across the loader's datasets (padding rows
    # repeat their sample's): per-sample randomness on the device is keyed by it.
    sample_ids: torch.Tensor | None = None
    texts: list[str] | None = None
    fbank: torch.Tensor | None = None  # (B, frames, bins)
    fbank_lengths: torch.Tensor | None = None
    meta: list[dict[str, Any]] | None = None
    epoch: int = 0
    index: int = 0  # position of this batch in its rank's epoch
    skipped: list[str] = field(default_factory=list)  # keys that failed to decode since the last batch
    # Where its worker's time went since its previous batch (loader/stages.py: seconds blocked
    # on storage, decoding, ...; link bytes and shard opens), for the input-pipeline doctor.
    stage_seconds: tuple[float, ...] | None = None
    # Internal: which recycled shared-memory buffer of its worker holds ``waveform``
    # (-1: none). See ``BatchBufferPool``.
    buffer_slot: int = -1

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def size(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> Batch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return self.materialize()._map(lambda t: t.pin_memory())

    def materialize(self) -> Batch:
        """Turn small numpy fields into tensors.

        Workers send per-row fields (lengths, labels, ...) as numpy arrays: those are
        pickled inline, while every tensor costs a shared-memory segment and a file
        descriptor hand-off, which dominated the transfer cost of small fields.
        """
        changes: dict[str, Any] = {f.name: torch.from_numpy(v) for f in fields(self)
                   if isinstance(v := getattr(self, f.name), np.ndarray)}
        return replace(self, **changes) if changes else self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Every tensor field moved to ``device`` (dtypes unchanged)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        changes: dict[str, Any] = {f.name: fn(v) for f in fields(self)
                                   if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return replace(self, **changes)
