"""The read path's errors: a shard the cache cannot hold, a shard whose bytes do not match
the index, a shard whose reads kept failing. All are in the package's family
(:mod:`wds_pipeline.errors`) and keep the builtin bases callers catch (``OSError``,
``ValueError``)."""

from __future__ import annotations

from typing import Any

from ..errors import ShardError, ShardFormatError, WdsPipelineError
from ..storage import Digest, ShardCheck

__all__ = [
    "CacheDiskFullError",
    "CacheFullError",
    "PartialShardIntegrityError",
    "ShardIntegrityError",
    "ShardReadError",
]


class CacheFullError(WdsPipelineError, OSError):
    """The shard cannot be cached within ``limit_bytes`` (too big, or the cache is
    full of entries in use). Read it uncached or raise the limit."""


class CacheDiskFullError(CacheFullError):
    """The disk under the cache filled up while caching a shard (before ``limit_bytes``
    was reached): the partial entry was dropped; read the shard uncached."""


class ShardIntegrityError(ShardFormatError):
    """A shard's bytes do not match the digest/size recorded in the index."""

    def __init__(
        self,
        url: str,
        *,
        expected: Digest | None,
        actual: Digest | None,
        expected_size: int | None,
        actual_size: int,
        attempts: int,
    ) -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size
        super().__init__(
            f"shard {url} failed verification after {attempts} downloads: expected "
            f"{expected} ({expected_size} bytes), got {actual or 'more bytes than expected'} "
            f"({actual_size} bytes). The source file changed or is corrupt: rebuild the shard "
            "or its index entry so both agree (wds-pipeline verify checks all shards)."
        )

    @classmethod
    def from_check(cls, check: ShardCheck, attempts: int) -> ShardIntegrityError:
        return cls(
            check.url,
            expected=check.expected,
            actual=check.digest,
            expected_size=check.expected_size,
            actual_size=check.size,
            attempts=attempts,
        )


class PartialShardIntegrityError(ShardIntegrityError):
    """A shard read while it downloaded did not verify once the download ended."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.args = (
            f"{self.args[0]} It was read while downloading: every sample read from it "
            "passed its crc32 from the index, so the damage is outside the sample bytes "
            "(e.g. in the end-of-archive blocks) or the file changed during the download.",
        )


class ShardReadError(ShardError, OSError):
    """Reading a shard kept failing after the retry budget."""

    def __init__(self, url: str, offset: int, last_error: BaseException, attempts: int) -> None:
        self.url = url
        self.offset = offset
        self.last_error = last_error
        code = last_error.errno if isinstance(last_error, OSError) else None
        super().__init__(
            code,
            f"reading shard {url} failed at byte offset {offset} after {attempts} attempts "
            f"without progress; last error: {type(last_error).__name__}: {last_error}. "
            "The storage is unreachable or flaky: check the connection (on Colab, remount "
            "Drive or copy the shards to local disk) or raise RetryPolicy.attempts/timeout.",
        )
