"""The shard table the workers execute a plan over: one :class:`ShardEntry` per shard of every
dataset, with where it is, how to check it and where its samples start.

Per-sample columns (frames, offsets, crc32s) are numpy arrays, one per shard, not tuples of
Python ints: a VoxCeleb2-sized index has 3.3 M of them, and every worker holds the table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import format as fmt
from ..index import DatasetIndex
from ..storage import Digest
from .plan import ShardMeta


@dataclass(frozen=True)
class ShardEntry:
    """A shard as the workers see it: where it is, how to check it, where its samples start."""

    meta: ShardMeta
    url: str
    digest: Digest | None
    size: int | None
    offsets: np.ndarray  # int64: byte offset of each sample's first header
    first_gid: int  # global id of its first sample (seeds crops independently of order)
    audio_field: str
    has_fbank: str | None  # the fbank field name when precomputed
    # int64 per-sample crc32s, empty when the index has none
    crc32: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # Class ids of its dataset's label map: a ``cls`` outside [0, num_classes) is refused
    # (None: the index has no label map to check against).
    num_classes: int | None = None


def shard_table(indexes: Sequence[DatasetIndex]) -> list[ShardEntry]:
    table: list[ShardEntry] = []
    gid = 0
    for d, index in enumerate(indexes):
        fb = next((f for f in index.fields if f in fmt.FBANK_FIELDS), None)
        num_classes = max(index.label_map.values()) + 1 if index.label_map else None
        for i, s in enumerate(index.shards):
            if len(s.sample_frames) != s.nsamples or len(s.sample_offsets) != s.nsamples:
                raise ValueError(
                    f"{index.shard_url(i)}: index lists {s.nsamples} samples but "
                    f"{len(s.sample_frames)} frame counts / {len(s.sample_offsets)} offsets; "
                    "rebuild the index with `wds-pipeline build`"
                )
            if len(s.sample_crc32) and len(s.sample_crc32) != s.nsamples:
                raise ValueError(
                    f"{index.shard_url(i)}: index lists {s.nsamples} samples but "
                    f"{len(s.sample_crc32)} crc32s; rebuild the index with `wds-pipeline build`"
                )
            table.append(
                ShardEntry(
                    meta=ShardMeta(dataset=d, shard=i, nsamples=s.nsamples,
                                   frames=np.asarray(s.sample_frames, dtype=np.int64)),
                    url=index.shard_url(i),
                    digest=s.expected_digest,
                    size=s.filesize or None,
                    offsets=np.asarray(s.sample_offsets, dtype=np.int64),
                    first_gid=gid,
                    audio_field=index.audio_field,
                    has_fbank=fb,
                    crc32=np.asarray(s.sample_crc32, dtype=np.int64),
                    num_classes=num_classes,
                )
            )
            gid += s.nsamples
    return table
