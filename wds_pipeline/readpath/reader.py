"""Sequential shard reading with prefetch.

The loader builds one :class:`ShardReader` per DataLoader worker (through
:func:`~wds_pipeline.readpath.policy.open_reader`), tells it the shards it will read in
order (:meth:`ShardReader.schedule`) and opens them one by one (:meth:`ShardReader.open`).
What ``open`` returns depends on the source:

* a plain local file: the file itself, opened directly (no thread, no copy: the
  page cache already does the job);
* with a :class:`~wds_pipeline.readpath.cache.ShardCache`: the verified cached copy;
  background threads fill the cache up to ``prefetch`` shards ahead; for a
  :class:`ShardRef` with ``partial_ok`` (the caller checks every sample itself, e.g.
  against the index's crc32s) a shard still downloading is returned at once as a
  :class:`~wds_pipeline.readpath.partial.PartialShard` that reads the bytes as they arrive;
* without a cache: an in-memory copy fetched ahead in the background, or (when
  not prefetched) a streaming reader that reads ``block_size`` blocks.

A shard the cache cannot hold (:class:`~wds_pipeline.readpath.errors.CacheFullError`: over
its ``limit_bytes``, or its disk filled up) is streamed uncached; a shard whose download
ran out of disk while it was being read as a partial shard is read on from its source
at the byte reached (``ReaderStats.disk_full_uncached`` counts both disk-full cases).
Every remote or FUSE read is a :class:`~wds_pipeline.readpath.resumable.ResumableReader`
(retries with backoff, resuming at the byte reached).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import storage
from ..storage import Digest, RetryPolicy, ShardCheck
from .cache import ShardCache
from .counters import Counters
from .download import download_verified
from .errors import CacheDiskFullError, CacheFullError
from .partial import PartialShard
from .resumable import DEFAULT_RETRY, ReaderStats, ResumableReader, copy_shard

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PARTIAL_COPY_BLOCK", "PREFETCH_OVERLAP", "ShardReader", "ShardRef"]

log = logging.getLogger(__name__)


# Bytes per copy call of a download that may be read while it runs: how often progress
# reaches partial readers (the first sample waits for the first such block).
PARTIAL_COPY_BLOCK = 1 << 20
# A shard read while it downloads is read at the speed its download gets, so prefetches
# must not split the link with it: the next shard's download starts when the one before
# has this little left (enough to hide the open latency of the next).
PREFETCH_OVERLAP = 4 << 20


@dataclass(frozen=True)
class ShardRef:
    url: str
    digest: Digest | None = None
    size: int | None = None
    # The caller verifies each sample it reads (crc32s in the index), so the shard may be
    # read while the cache still downloads it; the whole-shard check comes at the end.
    partial_ok: bool = False


class ShardReader:
    """Opens shards for sequential reading, fetching the next ``prefetch`` ahead.

    Build one per DataLoader worker, after the fork: no thread exists until the
    first :meth:`schedule`, and a reader carried across a fork starts a fresh pool.
    """

    def __init__(
        self,
        *,
        cache: ShardCache | None = None,
        prefetch: int = 2,
        retry: RetryPolicy = DEFAULT_RETRY,
        storage_options: dict[str, Any] | None = None,
        block_size: int = storage.BLOCK_SIZE,
        max_threads: int = 4,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.cache = cache
        self.prefetch = prefetch
        self.retry = retry
        self.storage_options = dict(storage_options or {})
        self.block_size = block_size
        self.max_threads = max_threads
        self._stats = Counters(ReaderStats())
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._plan: list[ShardRef] = []
        self._pos = -1
        self._futures: dict[str, Future] = {}
        self._chain: tuple[str, Future] | None = None  # the last partial_ok prefetch
        self._direct: dict[str, bool] = {}  # by the real folder of a local shard; see _is_direct

    # ------------------------------------------------------------- public
    def stats(self) -> ReaderStats:
        return self._stats.snapshot()

    def schedule(self, refs: Sequence[ShardRef]) -> None:
        """Set the shards to be opened next, in order, and start fetching ahead."""
        with self._lock:
            self._plan = list(refs)
            self._pos = -1
            keep = {r.url for r in self._plan[: self.prefetch]}
            for url in [u for u in self._futures if u not in keep]:
                self._futures.pop(url).cancel()
        self._top_up(0)

    def open(self, ref: ShardRef, offset: int = 0) -> BinaryIO:
        """A sequential stream over ``ref`` positioned at ``offset`` (a sample boundary)."""
        if self._is_direct(ref.url):
            direct = open(storage.local_path(ref.url), "rb")  # noqa: SIM115 - returned to the caller
            direct.seek(offset)
            self._stats.add(direct_opens=1)
            return direct
        with self._lock:
            idx = next(
                (i for i in range(self._pos + 1, len(self._plan)) if self._plan[i].url == ref.url),
                None,
            )
            if idx is not None:
                self._pos = idx
            fut = self._futures.pop(ref.url, None)
        if idx is not None:
            self._top_up(idx + 1)
        if self.cache is not None and ref.partial_ok:
            return self._open_partial(ref, offset, fut)
        prefetched: bytes | None = None
        if fut is not None and not fut.cancelled():
            try:
                prefetched = fut.result()
            except CacheDiskFullError:
                # Its cache disk just ran out: downloading it again would fill it again.
                return self._uncached(ref, offset, disk_full=True)
            except CacheFullError:
                prefetched = None  # handled below: read uncached
        if self.cache is not None:
            try:
                f = self.cache.open(
                    ref.url,
                    digest=ref.digest,
                    size=ref.size,
                    fetch=self._fetch_fn(),
                    storage_options=self.storage_options,
                )
            except CacheFullError as exc:
                log.info("%s", exc)
                return self._uncached(ref, offset, disk_full=isinstance(exc, CacheDiskFullError))
            f.seek(offset)
            self._stats.add(cached_opens=1)
            return f
        if prefetched is not None:
            bio = io.BytesIO(prefetched)
            bio.seek(offset)
            self._stats.add(memory_opens=1)
            return bio
        return self._stream(ref, offset)

    def over_link(self, ref: ShardRef) -> bool:
        """Whether opening ``ref`` now reads its bytes over the network or a FUSE mount:
        not a local file, and not already whole in the cache."""
        if self._is_direct(ref.url):
            return False
        return self.cache is None or not self.cache.contains(ref.url)

    def close(self) -> None:
        with self._lock:
            for fut in self._futures.values():
                fut.cancel()
            self._futures.clear()
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- internals
    def _is_direct(self, url: str) -> bool:
        if storage.is_remote(url):
            return False
        # Once per folder (after symlinks) and reader: the mount table's read and parse took
        # ~0.5 ms a shard open, 5% of a 0.4 s epoch of 20 local shards in one process.
        path = os.path.realpath(storage.local_path(url))
        folder = os.path.dirname(path)
        direct = self._direct.get(folder)
        if direct is None:
            direct = self._direct[folder] = not storage.is_fuse_path(path)
        return direct

    def _open_partial(self, ref: ShardRef, offset: int, fut: Future | None) -> BinaryIO:
        # No waiting for the prefetch: open_partial joins its download if it is running.
        if fut is not None and fut.done() and not fut.cancelled():
            exc = fut.exception()
            if isinstance(exc, CacheFullError):
                return self._uncached(ref, offset, disk_full=isinstance(exc, CacheDiskFullError))
            if exc is not None:
                raise exc
        assert self.cache is not None
        try:
            f = self.cache.open_partial(
                ref.url,
                digest=ref.digest,
                size=ref.size,
                fetch=self._fetch_fn(ref),
                storage_options=self.storage_options,
            )
        except CacheFullError as exc:
            log.info("%s", exc)
            return self._uncached(ref, offset, disk_full=isinstance(exc, CacheDiskFullError))
        f.seek(offset)
        if isinstance(f, PartialShard):
            # Its download may still run out of cache disk: then read on from the source.
            f.read_rest_from(lambda pos: self._source_from(ref, pos),
                             when=lambda e: isinstance(e, CacheDiskFullError))
        self._stats.add(**{"partial_opens" if isinstance(f, PartialShard) else "cached_opens": 1})
        return f

    def _uncached(self, ref: ShardRef, offset: int, *, disk_full: bool) -> BinaryIO:
        """Stream a shard the cache cannot hold (its limit, or a full disk under it)."""
        if disk_full:
            self._stats.add(disk_full_uncached=1)
        return self._stream(ref, offset)

    def _source_from(self, ref: ShardRef, offset: int) -> ResumableReader:
        """The rest of a partial shard whose download ran out of cache disk, read straight
        from its source (the loader checks each sample's crc32 as before)."""
        log.info("shard %s: the cache's disk is full; reading it from byte %d on uncached",
                 ref.url, offset)
        self._stats.add(disk_full_uncached=1)
        return ResumableReader(ref.url, offset=offset, retry=self.retry,
                               storage_options=self.storage_options,
                               block_size=self.block_size, stats=self._stats)

    def _fetch_fn(self, ref: ShardRef | None = None):
        # Partial readers see a download's progress once per copy block: keep it small.
        block = self.block_size
        if ref is not None and ref.partial_ok:
            block = min(block, PARTIAL_COPY_BLOCK)

        def fetch(url: str, dst: BinaryIO) -> None:
            copy_shard(
                url,
                dst,
                retry=self.retry,
                storage_options=self.storage_options,
                block_size=self.block_size,
                stats=self._stats,
                copy_block=block,
            )

        return fetch

    def _stream(self, ref: ShardRef, offset: int) -> BinaryIO:
        raw = ResumableReader(
            ref.url,
            offset=offset,
            retry=self.retry,
            storage_options=self.storage_options,
            block_size=self.block_size,
            digest=ref.digest,
            size=ref.size,
            stats=self._stats,
        )
        self._stats.add(streamed_opens=1)
        return io.BufferedReader(raw, buffer_size=self.block_size)

    def _executor(self) -> ThreadPoolExecutor:
        # Threads do not survive fork: a reader copied into a DataLoader worker
        # gets its own pool (and forgets the parent's futures) on first use.
        if self._pool is None or self._pool_pid != os.getpid():
            if self._pool_pid != os.getpid():
                self._futures = {}
                self._chain = None
            self._pool = ThreadPoolExecutor(
                max_workers=self.max_threads, thread_name_prefix="shard-prefetch"
            )
            self._pool_pid = os.getpid()
        return self._pool

    def _top_up(self, start: int) -> None:
        if self.prefetch == 0:
            return
        with self._lock:
            window = self._plan[start : start + self.prefetch]
            for ref in window:
                if ref.url in self._futures or self._is_direct(ref.url):
                    continue
                chained = ref.partial_ok and self.cache is not None
                fut = self._executor().submit(self._prefetch_one, ref,
                                              self._chain if chained else None)
                self._futures[ref.url] = fut
                if chained:
                    self._chain = (ref.url, fut)
                self._stats.add(prefetches=1)

    def _after(self, prev: tuple[str, Future]) -> None:
        """Wait until the previous partial_ok shard's download is nearly done (it is, or
        will soon be, read while it downloads: it gets the link first)."""
        url, fut = prev
        assert self.cache is not None
        while not fut.done():
            if self.cache.wait_nearly_downloaded(url, PREFETCH_OVERLAP):
                return
            try:  # its download has not registered yet (or ran elsewhere): look again soon
                fut.result(timeout=0.05)
            except Exception:  # noqa: BLE001, S110 - its outcome is its reader's business
                pass

    def _prefetch_one(self, ref: ShardRef, after: tuple[str, Future] | None = None) -> bytes | None:
        if after is not None:
            self._after(after)
        if self.cache is not None:
            self.cache.get(
                ref.url,
                digest=ref.digest,
                size=ref.size,
                fetch=self._fetch_fn(ref),
                storage_options=self.storage_options,
            )
            return None
        return self._fetch_bytes(ref)

    def _fetch_bytes(self, ref: ShardRef) -> bytes:
        def download() -> tuple[ShardCheck, bytes]:
            buf = io.BytesIO()
            copy_shard(
                ref.url,
                buf,
                retry=self.retry,
                storage_options=self.storage_options,
                block_size=self.block_size,
                stats=self._stats,
            )
            data = buf.getvalue()
            check = storage.check_bytes(ref.url, data, expected=ref.digest,
                                        expected_size=ref.size)
            return check, data

        return download_verified(ref.url, download)
