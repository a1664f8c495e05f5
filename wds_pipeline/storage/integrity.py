"""sha256 streams and the one check of a shard against its index entry (size + sha256).

The builder hashes a shard while writing it (:class:`HashingWriter`), the cache and
the shard reader while downloading it, ``verify`` and a resumed build by re-reading
it (:func:`check_file`); all of them compare with :func:`check_shard`, so "intact"
means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from .access import BLOCK_SIZE, open_read
from .retry import RetryPolicy, retrying

__all__ = [
    "HashingWriter",
    "ShardCheck",
    "WriteLimitExceeded",
    "check_file",
    "check_shard",
    "sha256_file",
    "sha256_stream",
]


class WriteLimitExceeded(OSError):
    """More bytes were written to a :class:`HashingWriter` than its ``limit``."""


class HashingWriter:
    """A write-only file wrapper that hashes (sha256) and counts what passes through.

    ``limit``: refuse to grow past this many bytes (:class:`WriteLimitExceeded`, nothing
    of the refused write reaches the file); the cache uses it so that its bound holds
    even when a source is bigger than the index says.
    """

    def __init__(self, f: BinaryIO, *, limit: int | None = None) -> None:
        self._f = f
        self._limit = limit
        self._sha = hashlib.sha256()
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
        self._f.write(b)
        self._sha.update(b)
        self.size += len(b)
        return len(b)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True


def sha256_stream(f: Any, block_size: int = BLOCK_SIZE) -> tuple[str, int]:
    """(sha256 hex, byte count) of what is left in a binary stream, read in blocks."""
    h = hashlib.sha256()
    n = 0
    while True:
        block = f.read(block_size)
        if not block:
            return h.hexdigest(), n
        h.update(block)
        n += len(block)


def sha256_file(url: str, *, retry: RetryPolicy | None = None, **storage_options: Any
                ) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file at any URL, read in 8 MiB blocks."""

    def _hash() -> tuple[str, int]:
        with open_read(url, **storage_options) as f:
            return sha256_stream(f)

    return retrying("hashing", url, _hash, retry)


@dataclass(frozen=True)
class ShardCheck:
    """What a shard's bytes hash to, against what its index entry expects.

    An expected value of ``None`` (or an empty sha256) is not checked."""

    url: str
    sha256: str
    size: int
    expected_sha256: str | None
    expected_size: int | None

    @property
    def size_ok(self) -> bool:
        return self.expected_size is None or self.size == self.expected_size

    @property
    def sha256_ok(self) -> bool:
        return not self.expected_sha256 or self.sha256 == self.expected_sha256

    @property
    def ok(self) -> bool:
        return self.size_ok and self.sha256_ok

    def problems(self, name: str) -> list[str]:
        """One line per mismatch, naming the shard as ``name``."""
        out = []
        if not self.size_ok:
            assert self.expected_size is not None
            grown = "truncated" if self.size < self.expected_size else "grown"
            out.append(f"{name}: size {self.size} bytes, index says {self.expected_size} ({grown})")
        if not self.sha256_ok:
            assert self.expected_sha256 is not None
            out.append(f"{name}: sha256 mismatch (file {self.sha256[:16]}..., index "
                       f"{self.expected_sha256[:16]}...): the shard changed after the build")
        return out


def check_shard(url: str, sha256: str, size: int, *, expected_sha256: str | None,
                expected_size: int | None) -> ShardCheck:
    """Compare the digest and size of bytes already hashed with an index entry."""
    return ShardCheck(url, sha256, size, expected_sha256, expected_size)


def check_file(url: str, *, expected_sha256: str | None, expected_size: int | None,
               retry: RetryPolicy | None = None, **storage_options: Any) -> ShardCheck:
    """Re-read the file at ``url`` and compare it with an index entry. A missing file
    raises ``FileNotFoundError``."""
    sha, size = sha256_file(url, retry=retry, **storage_options)
    return check_shard(url, sha, size, expected_sha256=expected_sha256,
                       expected_size=expected_size)
