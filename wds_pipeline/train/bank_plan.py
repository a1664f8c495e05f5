"""Which clips a noise or RIR bank holds, planned before any audio is read.

A bank is bounded by ``augment.bank_bytes``, counted as the device holds it: float32, every
clip padded to the longest (:func:`padded_bytes`). Each clip's frames come from the corpus's
index (``sample_frames``, cut to ``max_clip_seconds``), its category from its class label.
When every clip fits, the bank holds them all; otherwise it holds a subset
(:func:`plan_subset`) drawn from a generator the caller keys by (run seed, epoch, segment),
so a resumed run, and every rank, plans the same subset without saving it. Every category
is in every subset (a ``noise`` kind would otherwise find no clip mid-epoch), each with its
share of the clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..index import DatasetIndex

FLOAT32_BYTES = 4


def padded_bytes(count: int, longest: int) -> int:
    """What ``count`` clips take on the device: float32, each padded to the ``longest``."""
    return count * longest * FLOAT32_BYTES


def max_frames(max_clip_seconds: float | None, sample_rate: int) -> int | None:
    """The frames a clip is cut to (None: whole clips)."""
    return round(max_clip_seconds * sample_rate) if max_clip_seconds else None


def index_frames(index: DatasetIndex, cut: int | None) -> np.ndarray | None:
    """Each sample's frames as a bank holds it (cut to ``cut``), in index order: the
    index's ``sample_frames``; None when an index written without them lacks some."""
    if any(len(s.sample_frames) != s.nsamples for s in index.shards):
        return None
    frames = np.concatenate([np.asarray(s.sample_frames, dtype=np.int64) for s in index.shards]
                            or [np.zeros(0, dtype=np.int64)])
    return np.minimum(frames, cut) if cut else frames


@dataclass(frozen=True)
class Catalog:
    """The clips a bank may hold (those of its wanted categories): per clip, its sample id
    in the corpus (index order), its frames after the cut, and its category (a position in
    ``names``, the wanted categories, sorted)."""

    ids: np.ndarray
    frames: np.ndarray
    category: np.ndarray
    names: tuple[str, ...]

    def fits(self, budget: int) -> bool:
        return padded_bytes(len(self.ids), int(self.frames.max(initial=0))) <= budget


def plan_subset(catalog: Catalog, budget: int, rng: np.random.Generator, *, where: str) -> np.ndarray:
    """The positions in ``catalog`` (ascending) of the clips a bank of ``budget`` bytes holds.

    All of them when they fit. Otherwise: one clip of each category first (the first in a
    random order short enough for one of each to fit), then the categories' clips in a
    random order, interleaved so that any prefix holds about the same fraction of each
    category's clips, each taken while the padded bank stays within ``budget`` (a clip that
    would take it past is skipped, as a longer clip lowers how many fit)."""
    if catalog.fits(budget):
        return np.arange(len(catalog.ids))
    frames = catalog.frames
    orders = [rng.permutation(np.flatnonzero(catalog.category == c)) for c in range(len(catalog.names))]
    cap = budget // padded_bytes(len(orders), 1)  # the longest clip one of each category can have
    taken: list[int] = []
    for name, order in zip(catalog.names, orders):
        short = order[frames[order] <= cap]
        if not len(short):
            raise ConfigError(
                f"{where}: no clip fits augment.bank_bytes={budget} with one clip of each of its {len(orders)} "
                f"categories ({', '.join(catalog.names)}): the shortest {name} clip has "
                f"{int(frames[order].min())} frames, at most {cap} fit; raise bank_bytes or lower "
                "max_clip_seconds")
        taken.append(int(short[0]))
    share = np.concatenate([(np.arange(len(o)) + 0.5) / len(o) for o in orders])
    category = np.concatenate([np.full(len(o), c) for c, o in enumerate(orders)])
    sequence = np.concatenate(orders)[np.lexsort((category, share))]
    heads = set(taken)
    longest = int(frames[taken].max())
    for p in sequence.tolist():
        if len(taken) >= budget // padded_bytes(1, longest):  # full: no clip, however short, fits now
            break
        if p not in heads and padded_bytes(len(taken) + 1, max(longest, int(frames[p]))) <= budget:
            taken.append(p)
            longest = max(longest, int(frames[p]))
    return np.sort(np.asarray(taken, dtype=np.int64))
