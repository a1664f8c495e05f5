"""Test helpers around :mod:`wds_pipeline.testing`."""

from __future__ import annotations

from wds_pipeline import format as fmt
from wds_pipeline.index import load_index
from wds_pipeline.testing import clip
from wds_pipeline.testing import write_synthetic_dataset as make_dataset

__all__ = ["all_keys", "clip", "make_dataset"]


def all_keys(index_path: str) -> set[str]:
    """Every key in a dataset, read back from its shards."""
    idx = load_index(index_path)
    keys = set()
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for key, _ in fmt.iter_samples(f, source=idx.shard_url(i)):
                keys.add(key)
    return keys
