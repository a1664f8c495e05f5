"""One verified download: the bytes of a shard written into a file while they are hashed,
checked against the index, and fetched a second time on a mismatch (see :mod:`.cache`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from .. import storage
from ..storage import Digest, ShardCheck
from .counters import Counters
from .errors import ShardIntegrityError
from .partial import Download

__all__ = ["DOWNLOAD_ATTEMPTS", "FetchFn", "default_fetch", "download_verified", "fetch_into"]

log = logging.getLogger(__name__)

T = TypeVar("T")

FetchFn = Callable[[str, BinaryIO], None]

DOWNLOAD_ATTEMPTS = 2  # a second download tells a corrupt source from a corrupted transfer


def download_verified(
    url: str,
    download: Callable[[], tuple[ShardCheck, T]],
    *,
    on_refetch: Callable[[], None] | None = None,
) -> T:
    """``download()`` -> (check, result): the result of the first download whose bytes
    match the index; a second mismatch raises :class:`ShardIntegrityError`.
    ``on_refetch()`` runs before each download that repeats a mismatched one."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if attempt > 1 and on_refetch is not None:
            on_refetch()
        check, result = download()
        if check.ok:
            return result
        log.warning("shard %s: content mismatch on download %d", url, attempt)
    raise ShardIntegrityError.from_check(check, DOWNLOAD_ATTEMPTS)


def default_fetch(storage_options: dict[str, Any]) -> FetchFn:
    def fetch(url: str, dst: BinaryIO) -> None:
        with storage.open_read(url, **storage_options) as src:
            storage.copy_stream(src, dst)

    return fetch


def fetch_into(
    url: str, tmp: str, fetch: FetchFn, size: int, digest: Digest | None,
    stats: Counters[Any], dl: Download | None = None,
) -> ShardCheck:
    """Write ``url``'s bytes into ``tmp`` with ``fetch``, hashing them, and check them
    against (``digest``, ``size``); progress is published to ``dl``'s readers."""
    # The temp file already exists, truncated to `size` as a reservation. Unbuffered:
    # each block goes to the file through storage.write_all (short writes and a full
    # disk are seen at once), and partial readers can pread it as soon as it is written.
    with open(tmp, "r+b", buffering=0) as f:
        w = storage.HashingWriter(f, algorithm=storage.algorithm_for(digest), limit=size)
        sink: Any = w if dl is None else _Published(w, f, dl)
        try:
            fetch(url, sink)
        except storage.WriteLimitExceeded:
            pass
        finally:
            stats.add(bytes_downloaded=w.size)
        if w.overflow:
            return storage.check_shard(url, None, size + 1,
                                       expected=digest, expected_size=size)
        f.truncate(w.size)
        os.fsync(f.fileno())
    return storage.check_shard(url, w.digest(), w.size, expected=digest,
                               expected_size=size)


class _Published:
    """The write end of a download that readers stream from: each write goes through the
    hashing writer, is flushed to the temp file, and its new length is published."""

    def __init__(self, w: storage.HashingWriter, f: BinaryIO, dl: Download) -> None:
        self._w, self._f, self._dl = w, f, dl

    def write(self, data: Any) -> int:
        n = self._w.write(data)  # unbuffered file: the bytes are in it once this returns
        self._dl.advance(self._w.size)
        return n

    def tell(self) -> int:
        return self._w.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True
