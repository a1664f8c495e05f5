"""Row helpers the batch and feature transforms share: which frames of a padded batch are
valid, and which rows a transform applied with a probability picks."""

from __future__ import annotations

import torch


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, frames)`` bool: True where a row's frame is inside its length."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


POWER_BLOCK = 256  # frames summed in float32 before the float64 sum (see row_power)


def row_power(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(R,)`` float64: each row's mean square over its ``lengths`` valid frames (``x`` is zero
    past them), the same for a row whatever other rows are summed with it: blocks of
    ``POWER_BLOCK`` frames are summed in float32 (many small sums, each by one thread, with the
    same vector code, as norms: no array of squares), then the block sums in float64. A plain
    float32 sum of a lone row is split across threads (another order, other last bits); a
    float64 sum of every frame is ~10x slower."""
    head = x.shape[1] // POWER_BLOCK * POWER_BLOCK
    blocks = torch.linalg.vector_norm(x.unfold(1, POWER_BLOCK, POWER_BLOCK), dim=2).double().square().sum(1)
    tail = x[:, head:].double().square().sum(1)
    return (blocks + tail) / lengths.clamp(min=1)


def picked_rows(u: torch.Tensor, probability: float) -> torch.Tensor:
    """The indices of the rows whose uniform draw ``u`` falls under ``probability``: the
    transform's work then runs on those rows only (one host sync per batch on a GPU, for
    ~1/probability less work)."""
    return torch.nonzero(u < probability).squeeze(1)


def uniform_index(u: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``floor(u * count)`` as int64, kept below ``count`` (``u`` may round up to 1.0 in
    float32): a uniform pick among ``count`` items from a draw in [0, 1)."""
    return torch.minimum((u * count).long(), count.long() - 1)
