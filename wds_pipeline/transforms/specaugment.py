"""``spec_augment``: SpecAugment on the fbank, batched on the device: time and frequency
masks (set to 0, the mean of mean-normalised features) on a ``(B, T, F)`` features tensor
with each row's valid frame count.

Each row is picked with ``probability``; a picked row gets ``time_masks`` masks of
1-``max_time_width`` frames placed inside its valid frames and ``freq_masks`` masks of
1-``max_freq_width`` bins across its valid frames (a mask wider than what is valid shrinks to
it). Frames past a row's length are never touched. Defaults: WeSpeaker's ``spec_aug_args``
(one mask each, at most 10 frames and 8 bins, probability 0.6).

A feature transform is called as ``transform(features, lengths, rng) -> features``, ``rng`` a
:class:`~.keyed.RowRandom`
after the model's fbank (``FEATURE_TRANSFORMS`` in :mod:`.batch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .keyed import RowRandom
from .rows import uniform_index, valid_frames


@dataclass(frozen=True)
class MaskDraws:
    """Per row (B,) whether it is masked; per mask (B, M) its first frame or bin and width
    (0 for a row not masked)."""

    picked: torch.Tensor
    time_start: torch.Tensor
    time_width: torch.Tensor
    freq_start: torch.Tensor
    freq_width: torch.Tensor


def _spans(u_width: torch.Tensor, u_start: torch.Tensor, widest: int, room: torch.Tensor,
           picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of 1-``widest`` wide (0 for rows not picked), placed inside ``room`` (B, 1)."""
    width = torch.minimum(1 + uniform_index(u_width, torch.tensor(widest, device=u_width.device)), room)
    width = width * picked[:, None]
    return uniform_index(u_start, (room - width + 1).clamp(min=1)), width


def _covered(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool: inside any of the (B, M) spans."""
    i = torch.arange(size, device=start.device)[None, None, :]
    return ((i >= start[:, :, None]) & (i < (start + width)[:, :, None])).any(1)


@dataclass(frozen=True)
class SpecAugment:
    probability: float = 0.6
    time_masks: int = 1
    max_time_width: int = 10
    freq_masks: int = 1
    max_freq_width: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if min(self.time_masks, self.freq_masks) < 0 or min(self.max_time_width, self.max_freq_width) < 1:
            raise ValueError("mask counts must be >= 0 and mask widths >= 1")

    def draw(self, lengths: torch.Tensor, bins: int, rng: RowRandom) -> MaskDraws:
        """Every random number of one batch (a fixed count per row, keyed per row) from ``rng``."""
        mt, mf = self.time_masks, self.freq_masks
        u = rng.uniform(1 + 2 * (mt + mf))
        picked = u[:, 0] < self.probability
        t_start, t_width = _spans(u[:, 1 : 1 + mt], u[:, 1 + mt : 1 + 2 * mt], self.max_time_width,
                                  lengths[:, None].long(), picked)
        freq = u[:, 1 + 2 * mt :]
        f_start, f_width = _spans(freq[:, :mf], freq[:, mf:], self.max_freq_width,
                                  torch.full_like(lengths[:, None], bins).long(), picked)
        return MaskDraws(picked, t_start, t_width, f_start, f_width)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, rng: RowRandom) -> torch.Tensor:
        d = self.draw(lengths, features.shape[2], rng)
        frames = features.shape[1]
        masked = _covered(d.time_start, d.time_width, frames)[:, :, None] | \
            _covered(d.freq_start, d.freq_width, features.shape[2])[:, None, :]
        return features.masked_fill(masked & valid_frames(lengths, frames)[:, :, None], 0.0)
