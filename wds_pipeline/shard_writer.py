"""One shard as the builder writes it, and the index entry that describes it.

Reproducible tar members (:class:`~wds_pipeline.format.ReproducibleTarWriter`) go
through a digest stream (:class:`~wds_pipeline.storage.HashingWriter`), so the
size, digest, sample offsets, sample crc32s and frame counts recorded in :class:`ShardInfo` are
those of the bytes written, without reading the file again. Every writer of shards
(the builder, the synthetic datasets of tests and benchmarks) goes through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

from . import format as fmt
from . import storage
from .index import ShardInfo

__all__ = ["ShardWriter"]


class ShardWriter:
    """Writes samples into the binary file ``f`` (which the caller opens and closes)."""

    def __init__(self, f: BinaryIO) -> None:
        self._hashed = storage.HashingWriter(f)
        self._tar = fmt.ReproducibleTarWriter(self._hashed)
        self._frames: list[int] = []

    @property
    def nsamples(self) -> int:
        return self._tar.nsamples

    def write_sample(self, key: str, fields: Mapping[str, fmt.Payload], frames: int) -> None:
        """One sample: its fields by name, and its audio's frame count (for the index)."""
        self._tar.write_sample(key, fields)
        self._frames.append(frames)

    def close(self) -> None:
        """End the archive; the file stays open."""
        self._tar.close()

    def info(self, url: str, sample_rate: int) -> ShardInfo:
        """The index entry of the closed shard, published at ``url`` (relative to the index)."""
        return ShardInfo(
            url=url,
            nsamples=self._tar.nsamples,
            filesize=self._hashed.size,
            digest=self._hashed.digest(),
            duration=sum(self._frames) / sample_rate,
            sample_frames=list(self._frames),
            sample_offsets=list(self._tar.sample_offsets),
            sample_crc32=list(self._tar.sample_crc32),
        )
