"""A size-bounded, verified, multi-process local cache of whole shards.

Why: reading shards straight from Drive or GCS every epoch pays the slow link
every time; a local copy pays it once. Unlike webdataset's cache this one is
bounded, names entries by the full URL, verifies content, and is safe to share
between DataLoader workers and processes on one machine.

The cache is built in layers: :mod:`.entries` (the layout under ``cache_dir``, the
sidecars and the trust check of a hit), :mod:`.eviction` (the ``limit_bytes`` bound),
:mod:`.download` (one verified download) and this module (downloads shared between
threads, the public calls). A shard the cache cannot hold (:class:`CacheFullError`)
is streamed uncached by the :class:`~wds_pipeline.readpath.reader.ShardReader`. The disk
under ``cache_dir`` filling up before the bound is reached is handled the same way:
the partial entry is dropped and :class:`CacheDiskFullError` (a ``CacheFullError``)
sends that shard to be read uncached (``CacheStats.disk_full``; a warning the first time).

Streaming. :meth:`ShardCache.open_partial` returns a :class:`PartialShard` that reads a
shard while it downloads: the download writes into its temp file as usual and
publishes, to readers in the same process, how many bytes it has written; a reader
reads only up to that length and waits for more (or raises the download's error). The
download itself is unchanged: it still verifies size and digest and commits the entry
atomically (or not at all). The bytes a reader gets before that are unverified: the
caller checks them (the loader checks each sample against the index's crc32) and
asks :meth:`PartialShard.wait_verified` for the final verdict. One download per shard
per process: :meth:`ShardCache.get`, :meth:`ShardCache.open` and
:meth:`ShardCache.open_partial` called while another thread of this process downloads
the same shard join that download instead of starting or waiting for another
(``CacheStats.joins``). Across processes the entry lock serialises as before.

Locking. One ``filelock`` per entry serialises download/verify/evict of that
entry across threads and processes (the second getter waits, then hits: no
double download). A global lock serialises reservation and eviction. Order:
entry lock, then global lock, then other entries' locks only non-blocking, so
there is no deadlock. ``flock`` locks die with their process, so a killed
downloader leaves no stale lock, and its temp file is removed by the next
reservation.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict

from .. import storage
from ..storage import Digest, ShardCheck
from .download import FetchFn, default_fetch, download_verified, fetch_into
from .entries import CacheStats, cache_key
from .errors import CacheDiskFullError, CacheFullError, PartialShardIntegrityError
from .eviction import BoundedCacheFiles
from .partial import Download, PartialShard

__all__ = ["CacheStats", "ShardCache", "Want"]

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # annotations only: typing.Unpack/NotRequired need Python 3.11
    from typing_extensions import NotRequired, Unpack


class Want(TypedDict):
    """What :meth:`ShardCache.get` and :meth:`ShardCache.open` take besides the URL.

    digest/size: what the index expects (None: not checked; size None: asked of the
    source). fetch(url, dst): writes the shard's bytes sequentially to ``dst``
    (default: an fsspec copy in 8 MiB blocks). verify: re-hash on every hit.
    """

    digest: Digest | None
    size: int | None
    fetch: NotRequired[FetchFn | None]
    storage_options: NotRequired[dict[str, Any] | None]
    verify: NotRequired[bool]


class ShardCache(BoundedCacheFiles):
    """See the module docstring. Safe to pickle into DataLoader workers (it holds
    only paths and counters; locks are taken per call)."""

    def __init__(
        self, cache_dir: str, *, limit_bytes: int | None = None, lock_timeout: float | None = None
    ) -> None:
        super().__init__(cache_dir, limit_bytes=limit_bytes, lock_timeout=lock_timeout)
        self._warned_disk_full = False
        self._init_downloads()

    def _init_downloads(self) -> None:
        # Downloads running in this process, by entry key (see "Streaming" above).
        self._mu = threading.Lock()
        self._inflight: dict[str, Download] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        for k in ("_mu", "_inflight", "_pid"):
            d.pop(k)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._init_downloads()

    def _downloads(self) -> dict[str, Download]:
        if self._pid != os.getpid():  # forked: the parent's download threads are not here
            self._init_downloads()
        return self._inflight

    def _join_or_start(self, key: str, url: str) -> tuple[Download, bool]:
        """The download of ``key`` running in this process, or a new one the caller
        must run (second item True)."""
        inflight = self._downloads()
        with self._mu:
            dl = inflight.get(key)
            if dl is not None:
                return dl, False
            dl = inflight[key] = Download(url)
            return dl, True

    def _download_in_background(self, dl: Download, url: str, key: str, want: Want) -> None:
        try:
            self._run_download(dl, url, key, want)
        except BaseException as e:  # noqa: BLE001 - recorded in dl: its readers raise it
            log.debug("background download of %s failed: %s", url, e)

    def _run_download(self, dl: Download, url: str, key: str, want: Want) -> str:
        """Ensure the entry under its lock (downloading it when needed, publishing the
        progress to ``dl``), then settle ``dl`` and unregister it."""
        try:
            with self._lock(key):
                path = self._ensure(url, key, want, dl)
                dl.settle(path)  # opened under the lock: eviction cannot race it
            return path
        except BaseException as e:
            dl.fail(e)
            raise
        finally:
            with self._mu:
                if self._inflight.get(key) is dl:
                    del self._inflight[key]
            dl.release()

    # ------------------------------------------------------------------ public
    def get(self, url: str, **want: Unpack[Want]) -> str:
        """Local path of a verified copy of ``url``, downloading it if needed (see
        :class:`Want` for the options).

        Raises :class:`CacheFullError` when the shard cannot be cached within the limit
        and :class:`ShardIntegrityError` when two downloads mismatch the expected hash.
        The returned path may be evicted by another process later; use
        :meth:`open` to get a handle that stays valid.
        """
        key = cache_key(url)
        dl, own = self._join_or_start(key, url)
        if not own:
            self._count(joins=1, hits=1)  # served without a download of its own
            return dl.result()
        return self._run_download(dl, url, key, want)

    def open(self, url: str, **want: Unpack[Want]) -> BinaryIO:
        """Like :meth:`get` but returns the file opened while the entry is locked,
        so a concurrent eviction cannot remove it between check and open."""
        key = cache_key(url)
        inflight = self._downloads()
        with self._mu:
            dl = inflight.get(key)
        if dl is not None:  # a thread of this process is downloading it: wait for that one
            self._count(joins=1)
            dl.result()
        with self._lock(key):
            return open(self._ensure(url, key, want), "rb")

    def open_partial(self, url: str, **want: Unpack[Want]) -> BinaryIO:
        """Like :meth:`open`, but does not wait for a download: when the shard is being
        downloaded (by this call, which starts it in a background thread, or by another
        thread of this process, e.g. a prefetch, which it joins) it returns a
        :class:`PartialShard` reading the bytes as they arrive, unverified. When the
        shard is already cached (or another process downloaded it meanwhile) it returns
        the verified file, as :meth:`open` does."""
        key = cache_key(url)
        dl, own = self._join_or_start(key, url)
        if own:
            threading.Thread(target=self._download_in_background, args=(dl, url, key, want),
                             name=f"shard-download-{key[:16]}", daemon=True).start()
        else:
            self._count(joins=1)
        f = dl.attach(self._stats)
        if f is None:  # finished and unregistered meanwhile: the usual locked open
            return self.open(url, **want)
        if isinstance(f, PartialShard):
            self._count(partial_opens=1)
        return f  # type: ignore[return-value]

    def wait_nearly_downloaded(self, url: str, remaining: int) -> bool:
        """When a thread of this process is downloading ``url``: wait until at most
        ``remaining`` bytes are left (or it ended) and return True; else False at once."""
        inflight = self._downloads()
        with self._mu:
            dl = inflight.get(cache_key(url))
        if dl is None:
            return False
        dl.wait_remaining(remaining)
        return True

    # ---------------------------------------------------------------- internals
    def _ensure(self, url: str, key: str, want: Want, dl: Download | None = None) -> str:
        if not {"digest", "size"} <= set(want) <= set(Want.__annotations__):
            raise TypeError(f"ShardCache: options {sorted(want)} must include digest and size "
                            f"and be among {sorted(Want.__annotations__)}")
        digest, size = want["digest"], want["size"]
        storage_options = want.get("storage_options") or {}
        if self._check_hit(url, key, digest, size, want.get("verify", False)):
            self._count(hits=1)
            return self._data(key)
        self._count(misses=1)
        self._drop(key)
        if size is None:
            size = storage.file_size(url, **storage_options)
        fetch = want.get("fetch") or default_fetch(storage_options)
        expected = size

        def download() -> tuple[ShardCheck, str]:
            tmp: str | None = None
            try:
                tmp = self._reserve(key, url, expected)
                if dl is not None:
                    dl.begin(tmp, expected)
                check = fetch_into(url, tmp, fetch, expected, digest, self._stats, dl)
                if dl is not None and not check.ok:
                    dl.abandon(PartialShardIntegrityError.from_check(check, attempts=1))
                if check.ok:
                    self._commit(key, tmp, url, check.size, check.digest)
                return check, self._data(key)
            except OSError as exc:
                if isinstance(exc, CacheFullError) or not storage.is_disk_full(exc):
                    raise
                self._drop(key)  # a committed file without its sidecar is not an entry
                raise self._disk_full(url, expected, exc) from exc
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass

        return download_verified(url, download, on_refetch=lambda: self._count(refetches=1))

    def _disk_full(self, url: str, size: int, exc: OSError) -> CacheDiskFullError:
        """The error that sends a shard the cache's disk has no room for to be read
        uncached, as when ``limit_bytes`` is reached; counted, and a warning the first time."""
        self._count(disk_full=1)
        why = getattr(exc, "reason", "") or exc.strerror or str(exc)
        err = CacheDiskFullError(
            errno.ENOSPC,
            f"the disk under cache {self.cache_dir} is full ({why}): shard {url} ({size} "
            "bytes) will be read uncached - free space there, or pass a cache_limit below "
            "the free space (or another cache_dir)",
        )
        if not self._warned_disk_full:
            self._warned_disk_full = True
            log.warning("%s", err.strerror)
        else:
            log.info("%s", err.strerror)
        return err
