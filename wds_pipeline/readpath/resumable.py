"""A remote or FUSE shard read that survives transient errors.

Every remote or FUSE read goes through :class:`ResumableReader`: a transient
error (dropped connection, HTTP 5xx/429, ENOTCONN/EIO from Drive) closes the
source, waits with exponential backoff and jitter, reopens and seeks to the byte
offset already delivered, so the consumer never sees duplicated or missing
bytes. The budget (``RetryPolicy.attempts``) counts consecutive failures without
progress; any byte delivered resets it, so a long shard over a flaky link still
completes. When it runs out a :class:`ShardReadError` names the shard, the
offset and the last error.

Note: gcsfs retries each HTTP request itself (6 tries, ~30 s of backoff) before
an error reaches this layer; fsspec's http backend and FUSE mounts do not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import storage
from ..storage import Digest, RetryPolicy
from .counters import Counters
from .errors import ShardIntegrityError, ShardReadError
from .stream import PositionedStream

__all__ = ["DEFAULT_RETRY", "ReaderStats", "ResumableReader", "copy_shard"]

log = logging.getLogger(__name__)

# The default budget of one shard read (a module constant: defaults are built once).
DEFAULT_RETRY = RetryPolicy()


@dataclass
class ReaderStats:
    retries: int = 0  # transient errors recovered from (reopen + seek)
    bytes_fetched: int = 0  # bytes read from remote/FUSE sources
    direct_opens: int = 0  # local plain files opened as is
    cached_opens: int = 0
    partial_opens: int = 0  # cache entries still downloading, read as they arrive
    memory_opens: int = 0  # served from an in-memory prefetch
    streamed_opens: int = 0
    prefetches: int = 0  # background fetches started
    # Shards read (wholly or from some byte on) from their source because the disk under
    # the cache was full.
    disk_full_uncached: int = 0


class ResumableReader(PositionedStream):
    """A raw, seekable, read-only stream over a shard that survives transient errors.

    Wrap it in ``io.BufferedReader(r, buffer_size=block_size)`` for small reads.
    If it is read from offset 0 to EOF without seeking and ``digest``/``size`` are
    given, the content is verified at EOF (:class:`ShardIntegrityError`).
    """

    def __init__(
        self,
        url: str,
        *,
        offset: int = 0,
        retry: RetryPolicy = DEFAULT_RETRY,
        storage_options: dict[str, Any] | None = None,
        block_size: int = storage.BLOCK_SIZE,
        digest: Digest | None = None,
        size: int | None = None,
        stats: Counters[ReaderStats] | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self._pos = offset
        self.retry = retry
        self.storage_options = storage_options or {}
        self.block_size = block_size
        self._src: Any = None
        self._stats = stats or Counters(ReaderStats())
        self._expect = (digest, size)
        self._algorithm = storage.algorithm_for(digest)
        verify = offset == 0 and (digest is not None or size is not None)
        self._hash = storage.new_hash(self._algorithm) if verify else None

    def _moved(self, offset: int) -> None:
        self._hash = None  # no longer a straight read: cannot verify at EOF
        if self._src is not None:
            self._src.seek(offset)

    def _end(self) -> int:
        if self._expect[1] is not None:
            return self._expect[1]
        return storage.file_size(self.url, **self.storage_options)

    def _open(self) -> Any:
        f = storage.open_read(self.url, block_size=self.block_size, **self.storage_options)
        if self._pos:
            f.seek(self._pos)
        return f

    def _drop_source(self) -> None:
        src, self._src = self._src, None
        if src is not None:
            try:
                src.close()
            except Exception:  # noqa: BLE001, S110 - the link is already broken
                pass

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not len(view):
            return 0
        failures = 0
        streak_start = time.monotonic()
        while True:
            try:
                if self._src is None:
                    self._src = self._open()
                data = self._src.read(len(view))
                n = len(data)
                view[:n] = data
                break
            except Exception as exc:
                if not storage.is_transient(exc):
                    self._drop_source()
                    raise
                self._drop_source()
                failures += 1
                if (
                    failures >= self.retry.attempts
                    or time.monotonic() - streak_start > self.retry.timeout
                ):
                    raise ShardReadError(self.url, self._pos, exc, failures) from exc
                self._stats.add(retries=1)
                log.warning(
                    "shard %s: %s at offset %d, retrying (%d)", self.url, exc, self._pos, failures
                )
                time.sleep(self.retry.backoff(failures))
        self._pos += n
        self._stats.add(bytes_fetched=n)
        if self._hash is not None:
            if n:
                self._hash.update(view[:n])
            else:
                self._verify_at_eof()
        return n

    def _verify_at_eof(self) -> None:
        h, self._hash = self._hash, None
        expected, size = self._expect
        digest = storage.Digest(self._algorithm, h.hexdigest()) if h is not None else None
        check = storage.check_shard(self.url, digest, self._pos, expected=expected,
                                    expected_size=size)
        if not check.ok:
            raise ShardIntegrityError.from_check(check, attempts=1)

    def close(self) -> None:
        self._drop_source()
        super().close()


def copy_shard(
    url: str,
    dst: BinaryIO,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    storage_options: dict[str, Any] | None = None,
    block_size: int = storage.BLOCK_SIZE,
    stats: Counters[ReaderStats] | None = None,
    copy_block: int | None = None,
) -> int:
    """Copy a whole shard into ``dst`` in ``copy_block`` blocks (default ``block_size``,
    which is also the request size of remote reads), resuming after transient errors.
    Returns the byte count. Usable as a ``ShardCache`` fetch."""
    r = ResumableReader(
        url, retry=retry, storage_options=storage_options, block_size=block_size, stats=stats
    )
    try:
        return storage.copy_stream(r, dst, copy_block or block_size)
    finally:
        r.close()
