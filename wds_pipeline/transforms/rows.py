"""Row helpers the batch and feature transforms share: which frames of a padded batch are
valid, and which rows a transform applied with a probability picks."""

from __future__ import annotations

import torch


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, frames)`` bool: True where a row's frame is inside its length."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def row_power(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(R,)`` float64: each row's mean square over its ``lengths`` valid frames (``x`` is zero
    past them). Summed in float64: a lone row's sum is split across threads, so its float32
    sum would differ in the last bits from the same row's among others; in float64 the per-row
    scalars built from it round to the same float32 whatever the batch."""
    return x.square().sum(1, dtype=torch.float64) / lengths.clamp(min=1)


def picked_rows(u: torch.Tensor, probability: float) -> torch.Tensor:
    """The indices of the rows whose uniform draw ``u`` falls under ``probability``: the
    transform's work then runs on those rows only (one host sync per batch on a GPU, for
    ~1/probability less work)."""
    return torch.nonzero(u < probability).squeeze(1)


def uniform_index(u: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``floor(u * count)`` as int64, kept below ``count`` (``u`` may round up to 1.0 in
    float32): a uniform pick among ``count`` items from a draw in [0, 1)."""
    return torch.minimum((u * count).long(), count.long() - 1)
