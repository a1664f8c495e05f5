"""Shard digests, hashing streams and the one check of a shard against its index entry
(size + digest).

The builder hashes a shard while writing it (:class:`HashingWriter`), the cache and
the shard reader while downloading it, ``verify`` and a resumed build by re-reading
it (:func:`check_file`); all of them compare with :func:`check_shard`, so "intact"
means the same thing everywhere.

A shard's digest is XXH3-128 (:data:`SHARD_DIGEST`, ``xxhsum -H2`` prints the same hex):
the check is against corruption and truncation in transit and on disk, not against
tampering, and at ~50 GB/s it costs nothing next to writing or downloading the bytes.
sha256, which indexes of format 1 recorded, ran at ~1.7 GB/s: a third of the time to
write a shard. Both are read; every check hashes with the algorithm its index entry names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import xxhash

from ..errors import WdsPipelineError
from .access import BLOCK_SIZE, open_read, write_all
from .retry import RetryPolicy, retrying

__all__ = [
    "DIGEST_ALGORITHMS",
    "SHARD_DIGEST",
    "Digest",
    "HashingWriter",
    "ShardCheck",
    "WriteLimitExceeded",
    "algorithm_for",
    "check_bytes",
    "check_file",
    "check_shard",
    "digest_bytes",
    "digest_file",
    "digest_stream",
    "new_hash",
]


class _Hash(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...


# Index key (and sidecar prefix) -> hash constructor. Adding one is a line here.
DIGEST_ALGORITHMS: dict[str, Callable[[], _Hash]] = {
    "xxh3_128": xxhash.xxh3_128,
    "sha256": hashlib.sha256,
}
SHARD_DIGEST = "xxh3_128"  # what new shards record


def _known(algorithm: str) -> str:
    if algorithm not in DIGEST_ALGORITHMS:
        raise ValueError(f"unknown shard digest {algorithm!r}: this wds_pipeline reads "
                         f"{sorted(DIGEST_ALGORITHMS)}; upgrade wds-pipeline")
    return algorithm


def new_hash(algorithm: str) -> _Hash:
    return DIGEST_ALGORITHMS[_known(algorithm)]()


@dataclass(frozen=True)
class Digest:
    """A whole-file digest: the algorithm (a key of :data:`DIGEST_ALGORITHMS`) and its hex."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        _known(self.algorithm)  # unknown algorithms fail where they are read

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def short(self) -> str:
        return f"{self.algorithm} {self.hex[:16]}..."

    @classmethod
    def parse(cls, text: str) -> Digest:
        """The inverse of ``str()``: ``"xxh3_128:<hex>"``."""
        algorithm, sep, hex_ = text.partition(":")
        if not sep or not hex_:
            raise ValueError(f"not a digest: {text!r} (expected '<algorithm>:<hex>')")
        return cls(algorithm, hex_)


def algorithm_for(expected: Digest | None) -> str:
    """The algorithm to hash with to check against ``expected`` (nothing expected: ours)."""
    return expected.algorithm if expected is not None else SHARD_DIGEST


def digest_bytes(data: Any, algorithm: str = SHARD_DIGEST) -> Digest:
    h = new_hash(algorithm)
    h.update(data)
    return Digest(algorithm, h.hexdigest())


class WriteLimitExceeded(WdsPipelineError, OSError):
    """More bytes were written to a :class:`HashingWriter` than its ``limit``."""


class HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through.

    ``algorithm``: the digest to compute (a download verified against an index entry
    hashes with the entry's). ``limit``: refuse to grow past this many bytes
    (:class:`WriteLimitExceeded`, nothing of the refused write reaches the file); the
    cache uses it so that its bound holds even when a source is bigger than the index says.
    """

    def __init__(self, f: BinaryIO, *, algorithm: str = SHARD_DIGEST,
                 limit: int | None = None) -> None:
        self._f = f
        self._limit = limit
        self._algorithm = algorithm
        self._hash = new_hash(algorithm)
        self.size = 0
        self.overflow = False

    def write(self, data: Any) -> int:
        b = memoryview(data).cast("B")
        if self._limit is not None and self.size + len(b) > self._limit:
            self.overflow = True
            raise WriteLimitExceeded(
                f"more than the expected {self._limit} bytes were written; the source is "
                "bigger than its index entry says"
            )
        write_all(self._f, b)
        self._hash.update(b)
        self.size += len(b)
        return len(b)

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True


def digest_stream(f: Any, algorithm: str = SHARD_DIGEST, block_size: int = BLOCK_SIZE
                  ) -> tuple[Digest, int]:
    """(digest, byte count) of what is left in a binary stream, read in blocks."""
    h = new_hash(algorithm)
    n = 0
    while True:
        block = f.read(block_size)
        if not block:
            return Digest(algorithm, h.hexdigest()), n
        h.update(block)
        n += len(block)


def digest_file(url: str, algorithm: str = SHARD_DIGEST, *, retry: RetryPolicy | None = None,
                **storage_options: Any) -> tuple[Digest, int]:
    """(digest, size in bytes) of a file at any URL, read in 8 MiB blocks."""

    def _hash() -> tuple[Digest, int]:
        with open_read(url, **storage_options) as f:
            return digest_stream(f, algorithm)

    return retrying("hashing", url, _hash, retry)


@dataclass(frozen=True)
class ShardCheck:
    """What a shard's bytes hash to, against what its index entry expects.

    An expected value of ``None`` is not checked."""

    url: str
    digest: Digest | None  # None: the bytes could not be hashed (more than expected)
    size: int
    expected: Digest | None
    expected_size: int | None

    @property
    def size_ok(self) -> bool:
        return self.expected_size is None or self.size == self.expected_size

    @property
    def digest_ok(self) -> bool:
        return self.expected is None or self.digest == self.expected

    @property
    def ok(self) -> bool:
        return self.size_ok and self.digest_ok

    def problems(self, name: str) -> list[str]:
        """One line per mismatch, naming the shard as ``name``."""
        out = []
        if not self.size_ok:
            assert self.expected_size is not None
            grown = "truncated" if self.size < self.expected_size else "grown"
            out.append(f"{name}: size {self.size} bytes, index says {self.expected_size} ({grown})")
        if not self.digest_ok:
            assert self.expected is not None
            got = self.digest.short() if self.digest is not None else "not hashed"
            out.append(f"{name}: digest mismatch (file {got}, index {self.expected.short()}): "
                       "the shard changed after the build")
        return out


def check_shard(url: str, digest: Digest | None, size: int, *, expected: Digest | None,
                expected_size: int | None) -> ShardCheck:
    """Compare the digest and size of bytes already hashed with an index entry."""
    return ShardCheck(url, digest, size, expected, expected_size)


def check_bytes(url: str, data: Any, *, expected: Digest | None,
                expected_size: int | None) -> ShardCheck:
    """Hash a whole shard held in memory (with the entry's algorithm) and compare it with
    an index entry."""
    return check_shard(url, digest_bytes(data, algorithm_for(expected)), len(data),
                       expected=expected, expected_size=expected_size)


def check_file(url: str, *, expected: Digest | None, expected_size: int | None,
               retry: RetryPolicy | None = None, **storage_options: Any) -> ShardCheck:
    """Re-read the file at ``url`` and compare it with an index entry (hashing with the
    entry's algorithm). A missing file raises ``FileNotFoundError``."""
    digest, size = digest_file(url, algorithm_for(expected), retry=retry, **storage_options)
    return check_shard(url, digest, size, expected=expected, expected_size=expected_size)
