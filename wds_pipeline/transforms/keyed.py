"""Counter-based random numbers keyed per row: what the batch and feature transforms draw.

Every number a row of a batch gets is a hash of (run seed, epoch, the transform's position
in the chain, the row's global sample id, the draw's index), so a sample gets the same
augmentation whatever batch it lands in and at whatever row: with 0 or 2 loader workers,
after a resume, on any rank under torchrun. Nothing is stateful and nothing is saved.

The hash is MurmurHash3's 32-bit block and finaliser over 32-bit words held in int64
tensors, each product kept exact (a 32-bit word times a constant under 2^31 fits in int64;
a constant's top bit is added back as ``(x & 1) << 31``) and masked to 32 bits: the same
integers on the CPU and on CUDA, with no generator state. The fixed words (seed, epoch,
position) are folded once in Python; per row and draw it costs a few dozen integer ops on
(rows, draws) tensors.
"""

from __future__ import annotations

from typing import TypeVar

import torch

M32 = 0xFFFFFFFF
_C1, _C2 = 0xCC9E2D51, 0x1B873593  # MurmurHash3's block constants
_F1, _F2 = 0x85EBCA6B, 0xC2B2AE35  # and its finaliser's
_NO_IDS = 0x6E6F6964  # marks rows keyed by where they sit (a batch built without sample ids)
_UNIT = 2.0**-24  # 24 random bits -> float32 in [0, 1), exactly

W = TypeVar("W", int, torch.Tensor)


def _mul(x: W, c: int) -> W:
    """``x * c mod 2^32`` for a 32-bit ``x`` and constant ``c``, exact in int64."""
    out = x * (c & 0x7FFFFFFF)
    if c >> 31:
        out = out + ((x & 1) << 31)
    return out & M32


def _rotl(x: W, r: int) -> W:
    return ((x << r) | (x >> (32 - r))) & M32


def _absorb(h: W, k: W) -> W:
    """One MurmurHash3 block: the 32-bit word ``k`` folded into the state ``h``."""
    k = _mul(_rotl(_mul(k, _C1), 15), _C2)
    h = _rotl(h ^ k, 13)
    return (h * 5 + 0xE6546B64) & M32


def _finish(h: W) -> W:
    h = h ^ (h >> 16)
    h = _mul(h, _F1)
    h = h ^ (h >> 13)
    h = _mul(h, _F2)
    return h ^ (h >> 16)


def _words(values: tuple[int, ...]) -> list[int]:
    """Each value as its two 32-bit words (low, high): seeds and ids may use 64 bits."""
    return [w for v in values for w in (v & M32, (v >> 32) & M32)]


class RowRandom:
    """Uniform draws in [0, 1) for the rows of a batch, each row keyed on its own.

    ``rng.uniform(count)`` is ``(rows, count)`` float32: draws ``0..count-1`` of every row;
    ``rng.uniform(count, first=j)`` the draws from ``j`` on; ``rng[rows]`` the same keys for
    the picked rows only (a transform draws whether a row is picked first, then the rest for
    the picked rows alone).
    """

    def __init__(self, state: torch.Tensor) -> None:
        self.state = state  # (R,) int64: each row's key folded, 32 bits

    @classmethod
    def keyed(cls, words: tuple[int, ...], ids: torch.Tensor) -> RowRandom:
        """Rows keyed by the fixed ``words`` (seed, epoch, position, ...) and their ``ids``."""
        h = 0x5EED0000 + len(words)
        for w in _words(words):
            h = _absorb(h, w)
        ids = ids.long()
        state = _absorb(_absorb(torch.full_like(ids, h), ids & M32), (ids >> 32) & M32)
        return cls(state)

    def __len__(self) -> int:
        return len(self.state)

    def __getitem__(self, rows: torch.Tensor) -> RowRandom:
        return RowRandom(self.state[rows])

    def bits(self, count: int, first: int = 0) -> torch.Tensor:
        """``(rows, count)`` int64: the 32-bit hashes of draws ``first..first+count-1``."""
        j = torch.arange(first, first + count, dtype=torch.int64, device=self.state.device)
        return _finish(_absorb(self.state[:, None], j[None, :]))

    def uniform(self, count: int, first: int = 0) -> torch.Tensor:
        return (self.bits(count, first) >> 8).to(torch.float32) * _UNIT


def row_random(seed: int, epoch: int, position: int, ids: torch.Tensor | None, *, index: int, rank: int,
               rows: int, device: torch.device) -> RowRandom:
    """The draws of transform ``position`` for a batch: keyed by each row's global sample id
    (``ids``); a batch built without ids (by hand, in a test) is keyed by where its rows sit
    instead: (batch ``index``, ``rank``, row)."""
    if ids is not None:
        return RowRandom.keyed((seed, epoch, position), ids.to(device))
    return RowRandom.keyed((seed, epoch, position, _NO_IDS, index, rank),
                           torch.arange(rows, dtype=torch.int64, device=device))
