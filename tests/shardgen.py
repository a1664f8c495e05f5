"""Test helpers around :mod:`wds_pipeline.testing`."""

from __future__ import annotations

import tarfile
import zlib

import xxhash

from wds_pipeline import format as fmt
from wds_pipeline.index import load_index
from wds_pipeline.storage import Digest
from wds_pipeline.testing import clip
from wds_pipeline.testing import write_synthetic_dataset as make_dataset

__all__ = ["all_keys", "clip", "make_dataset", "sample_crcs", "xxh3"]


def xxh3(data: bytes) -> Digest:
    """The digest an index records for ``data``, computed with the xxhash package itself:
    an oracle independent of the project's hashing code."""
    return Digest("xxh3_128", xxhash.xxh3_128(data).hexdigest())


def all_keys(index_path: str) -> set[str]:
    """Every key in a dataset, read back from its shards."""
    idx = load_index(index_path)
    keys = set()
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for key, _ in fmt.iter_samples(f, source=idx.shard_url(i)):
                keys.add(key)
    return keys


def sample_crcs(shard_path: str, offsets: list[int]) -> list[int]:
    """zlib.crc32 of each sample's bytes, found with the standard library's tarfile (not
    the project's parser): [offset_i, offset_i+1), the last up to the end of its last
    member's padding (where the end-of-archive blocks start)."""
    with tarfile.open(shard_path, "r:") as t:
        end = max(m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                  for m in t.getmembers())
    with open(shard_path, "rb") as f:
        data = f.read()
    return [zlib.crc32(data[a:b]) for a, b in zip(offsets, [*offsets[1:], end])]
