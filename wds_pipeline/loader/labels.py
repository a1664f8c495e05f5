"""One label space over several datasets, and the remapping of each batch's labels into it;
speed-perturbed copies as classes of their own (``speed: {as_classes: true}``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..index import DatasetIndex
from ..records import label_order
from ..transforms import as_specs
from ..transforms.speed import Speed, configured_speed


def label_union(indexes: Sequence[DatasetIndex]) -> tuple[list[str], np.ndarray | None]:
    """One label space over several datasets, by class *name*: the same speaker in two
    builds is one class, and two different speakers never share an id although each
    build numbers its own classes from 0.

    Returns the class names (id = position) and a ``(datasets, max local id + 1)`` table
    mapping each dataset's ``cls`` ids to union ids, or ``None`` when the union is the
    single dataset's own label map (ids unchanged).
    """
    maps = [i.label_map for i in indexes]
    if len(maps) == 1 or all(m == maps[0] for m in maps):
        names = [n for n, _ in sorted(maps[0].items(), key=lambda kv: kv[1])]
        return names, None
    names = label_order(set().union(*maps))
    ids = {n: j for j, n in enumerate(names)}
    width = max((max(m.values(), default=-1) for m in maps), default=-1) + 1
    table = np.full((len(maps), max(width, 1)), -1, dtype=np.int64)
    for d, m in enumerate(maps):
        for name, local in m.items():
            table[d, local] = ids[name]
    return names, table


def remap_labels(table: np.ndarray, dataset_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    t = torch.from_numpy(table)
    known = (labels >= 0) & (labels < t.shape[1])
    out = torch.full_like(labels, -1)
    out[known] = t[dataset_ids[known], labels[known]]
    return out


def label_problem(label: int, num_classes: int | None) -> str | None:
    """Why ``label`` (a sample's ``cls``) is not a class of its dataset, or None when it is.
    ``num_classes``: the dataset's label map's ids are [0, num_classes); None when its
    index has no label map (then only a negative id is refused)."""
    if label >= 0 and (num_classes is None or label < num_classes):
        return None
    ids = f"ids 0..{num_classes - 1}" if num_classes else "ids are >= 0"
    return (
        f"cls {label} is not a class of this dataset (its label map's {ids}); "
        "fix the sample's cls or rebuild the dataset (wds-pipeline verify lists such samples)"
    )


class SpeedClasses:
    """Speed-perturbed copies as classes: ``names``, the label map with a block of names per
    perturbing factor (``id10001@sp0.9``), and each batch's labels moved into the block of
    the factor its sample got (the workers' draw, recomputed from the sample ids in one pass,
    after ``remap_labels``)."""

    def __init__(self, speed: Speed, seed: int, names: Sequence[str]) -> None:
        self.speed, self.seed, self.base = speed, seed, len(names)
        self.names = speed.class_names(names)

    def __call__(self, labels: torch.Tensor, epoch: int, sample_ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.speed.relabel(labels.numpy(), self.seed, epoch, sample_ids.numpy(), self.base))


def speed_classes(sample_transforms: Sequence[Any], seed: int, names: Sequence[str]) -> SpeedClasses | None:
    """The :class:`SpeedClasses` of a loader whose ``speed`` transform has ``as_classes``."""
    speed, _ = configured_speed(as_specs(sample_transforms))
    return SpeedClasses(speed, seed, names) if speed is not None and speed.as_classes else None
