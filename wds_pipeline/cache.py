"""A size-bounded, verified, multi-process local cache of whole shards.

Why: reading shards straight from Drive or GCS every epoch pays the slow link
every time; a local copy pays it once. Unlike webdataset's cache this one is
bounded, names entries by the full URL, verifies content, and is safe to share
between DataLoader workers and processes on one machine.

Layout under ``cache_dir``::

    data/<sha1(url)[:16]>-<basename>        verified shard bytes
    meta/<same>.json                        sidecar: url, size, digest, stamp
    tmp/<same>.<uuid>.part                  download in progress (never trusted)
    locks/<same>.lock, locks/.global.lock   filelock files (empty)

Verification policy. A download is hashed while it streams in and checked
against the expected digest/size; only then is it renamed into ``data/`` and the
sidecar written (sidecar last, so a crash in between leaves an entry that is
not trusted). On a hit the size is checked against the expected size and the
file's stamp (inode, size, mtime_ns) against the one recorded when it was last
hashed; if the stamp changed (the file was rewritten or modified in place) it
is re-hashed, and a mismatch drops and re-fetches it. ``verify=True`` forces a
re-hash on every hit (catches a corrupter that restored the mtime).

Bound. ``limit_bytes`` bounds the total size of everything under ``data/``,
``meta/`` and ``tmp/`` (by st_size). A download first reserves its full size,
under the global lock: it evicts least-recently-used entries (by the atime we
set on each hit) that nobody holds, then creates its temp file truncated to the
shard's size, so concurrent downloads count against the bound before writing.
A shard that can never fit, or that cannot fit because every entry is in use,
raises :class:`CacheFullError` (an ``OSError`` with ``ENOSPC``); the
:class:`~wds_pipeline.fetch.ShardReader` then streams that shard uncached. The disk
under ``cache_dir`` filling up before the bound is reached is handled the same way:
the partial entry is dropped and :class:`CacheDiskFullError` (a ``CacheFullError``)
sends that shard to be read uncached (``CacheStats.disk_full``; a warning the first time).
Eviction only ever deletes files inside ``cache_dir``. A file unlinked while a
reader still has it open stays readable until closed (its blocks are freed
then), so the OS may briefly hold more than the bound; the directory never does.

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
reservation (a temp file whose entry lock is free is by definition abandoned).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict, TypeVar

from filelock import FileLock, Timeout

from . import storage
from .counters import Counters
from .errors import WdsPipelineError
from .format import ShardFormatError
from .partial import Download, PartialShard
from .storage import Digest, ShardCheck

__all__ = [
    "CacheDiskFullError",
    "CacheFullError",
    "CacheStats",
    "FetchFn",
    "PartialShard",
    "ShardCache",
    "ShardIntegrityError",
    "cache_key",
    "download_verified",
]

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # annotations only: typing.Unpack/NotRequired need Python 3.11
    from typing_extensions import NotRequired, Unpack
T = TypeVar("T")

FetchFn = Callable[[str, BinaryIO], None]

META_VERSION = 2  # 2: '<algorithm>:<hex>' digests (1: sha256 hex; such entries are re-fetched)
META_RESERVE = 4096  # bytes set aside per entry for its sidecar
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


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


@dataclass
class CacheStats:
    """Counters of this process's use of the cache (not shared between processes)."""

    hits: int = 0
    misses: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0
    rehashes: int = 0  # hits whose stamp changed (or verify=True) and were re-hashed
    corrupt: int = 0  # cached entries found corrupt and dropped
    refetches: int = 0  # downloads whose hash mismatched and were fetched again
    stale_tmp_removed: int = 0
    # Calls that joined a download of the same shard already running in this process
    # (get() counts them as hits too; open() then hits the committed entry).
    joins: int = 0
    partial_opens: int = 0  # open_partial() calls served while the shard was downloading
    # Over those opens: bytes of the shard not yet downloaded when each first returned data
    # (> 0 means data was read before the download finished).
    partial_bytes_missing: int = 0
    # Downloads given up because the disk under the cache was full: read uncached instead.
    disk_full: int = 0


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


@dataclass
class _Meta:
    url: str
    size: int
    digest: str  # str(Digest): '<algorithm>:<hex>'
    stamp: list[int]  # [st_ino, st_size, st_mtime_ns] when last hashed
    version: int = META_VERSION


def cache_key(url: str) -> str:
    """Entry name: 16 hex of sha1(full URL) + readable basename, so
    ``a/x-000.tar`` and ``b/x-000.tar`` never collide."""
    h = hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
    base = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    base = _SAFE.sub("_", base)[:80] or "shard"
    return f"{h}-{base}"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _default_fetch(storage_options: dict[str, Any]) -> FetchFn:
    def fetch(url: str, dst: BinaryIO) -> None:
        with storage.open_read(url, **storage_options) as src:
            storage.copy_stream(src, dst)

    return fetch


def default_cache_dir() -> str:
    """Where the loader caches remote/FUSE shards when no ``cache_dir`` is given."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), "wds_pipeline_cache")


class ShardCache:
    """See the module docstring. Safe to pickle into DataLoader workers (it holds
    only paths and counters; locks are taken per call)."""

    def __init__(
        self, cache_dir: str, *, limit_bytes: int | None = None, lock_timeout: float | None = None
    ) -> None:
        if limit_bytes is not None and limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive or None, got {limit_bytes}")
        self.cache_dir = os.path.abspath(cache_dir)
        self.limit_bytes = limit_bytes
        self.lock_timeout = -1 if lock_timeout is None else lock_timeout
        for sub in ("data", "meta", "tmp", "locks"):
            os.makedirs(os.path.join(self.cache_dir, sub), exist_ok=True)
        self._stats = Counters(CacheStats())
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

    # ------------------------------------------------------------------- paths
    def _data(self, key: str) -> str:
        return os.path.join(self.cache_dir, "data", key)

    def _meta(self, key: str) -> str:
        return os.path.join(self.cache_dir, "meta", key + ".json")

    def _lock(self, key: str, *, blocking: bool = True) -> FileLock:
        return FileLock(
            os.path.join(self.cache_dir, "locks", key + ".lock"),
            timeout=self.lock_timeout if blocking else 0,
            blocking=blocking,
            preserve_lock_file=True,
        )

    def _global_lock(self) -> FileLock:
        return FileLock(
            os.path.join(self.cache_dir, "locks", ".global.lock"),
            timeout=self.lock_timeout,
            preserve_lock_file=True,
        )

    def path_for(self, url: str) -> str:
        """Where ``url`` is (or would be) cached. Presence there does not mean verified."""
        return self._data(cache_key(url))

    def _count(self, **inc: int) -> None:
        self._stats.add(**inc)

    def stats(self) -> CacheStats:
        return self._stats.snapshot()

    def usage_bytes(self) -> int:
        """Bytes counted against the bound: data + sidecars + temp files."""
        total = 0
        for sub in ("data", "meta", "tmp"):
            with os.scandir(os.path.join(self.cache_dir, sub)) as it:
                for e in it:
                    try:
                        total += e.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        pass
        return total

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

    def contains(self, url: str) -> bool:
        """Whether a trusted-looking entry (data + sidecar) exists; no hashing, no lock."""
        key = cache_key(url)
        return os.path.exists(self._data(key)) and os.path.exists(self._meta(key))

    def clear(self) -> None:
        """Remove every entry not in use."""
        with self._global_lock():
            for name in os.listdir(os.path.join(self.cache_dir, "data")):
                self._try_evict(name, count=False)

    # ---------------------------------------------------------------- internals
    def _read_meta(self, key: str) -> _Meta | None:
        try:
            with open(self._meta(key), encoding="utf-8") as f:
                d = json.load(f)
            m = _Meta(**d)
        except (OSError, ValueError, TypeError):
            return None
        return m if m.version == META_VERSION else None

    def _write_meta(self, key: str, m: _Meta) -> None:
        storage.write_bytes_atomic(self._meta(key), json.dumps(asdict(m)).encode("utf-8"))

    def _drop(self, key: str) -> None:
        for p in (self._meta(key), self._data(key)):  # sidecar first: untrust, then delete
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def _check_hit(
        self, url: str, key: str, digest: Digest | None, size: int | None, verify: bool
    ) -> bool:
        data = self._data(key)
        try:
            st = os.stat(data)
        except FileNotFoundError:
            return False
        m = self._read_meta(key)
        if m is None or m.url != url:
            return False  # no trust record (crash before the sidecar) or foreign entry
        if digest is not None and m.digest != str(digest):
            return False  # the index now expects other content
        if (size is not None and st.st_size != size) or st.st_size != m.size:
            return False
        if verify or _stamp(st) != m.stamp:
            self._count(rehashes=1)
            if not storage.check_file(data, expected=Digest.parse(m.digest), expected_size=m.size).ok:
                self._count(corrupt=1)
                return False
            st2 = os.stat(data)
            m.stamp = _stamp(st2)
            try:
                self._write_meta(key, m)
            except OSError as exc:
                if not storage.is_disk_full(exc):
                    raise
                # The bytes verified: serve them; the old stamp only costs a re-hash next time.
                log.debug("%s", exc)
            st = st2
        # LRU clock: atime set explicitly (relatime/noatime make automatic atime
        # useless); mtime is kept so the stamp stays valid.
        os.utime(data, ns=(time.time_ns(), st.st_mtime_ns))
        return True

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
        fetch = want.get("fetch") or _default_fetch(storage_options)
        expected = size

        def download() -> tuple[ShardCheck, str]:
            tmp: str | None = None
            try:
                tmp = self._reserve(key, url, expected)
                if dl is not None:
                    dl.begin(tmp, expected)
                check = self._download(url, tmp, fetch, expected, digest, dl)
                if dl is not None and not check.ok:
                    dl.abandon(PartialShardIntegrityError.from_check(check, attempts=1))
                if check.ok:
                    st = os.stat(tmp)
                    os.replace(tmp, self._data(key))
                    self._write_meta(
                        key, _Meta(url=url, size=check.size, digest=str(check.digest), stamp=_stamp(st))
                    )
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

    def _download(
        self, url: str, tmp: str, fetch: FetchFn, size: int, digest: Digest | None,
        dl: Download | None = None,
    ) -> ShardCheck:
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
                self._count(bytes_downloaded=w.size)
            if w.overflow:
                return storage.check_shard(url, None, size + 1,
                                           expected=digest, expected_size=size)
            f.truncate(w.size)
            os.fsync(f.fileno())
        return storage.check_shard(url, w.digest(), w.size, expected=digest,
                                   expected_size=size)

    def _try_evict(self, name: str, *, count: bool = True) -> int:
        """Delete entry ``name`` if nobody holds it; returns bytes freed."""
        lock = self._lock(name, blocking=False)
        try:
            lock.acquire()
        except Timeout:
            return 0
        try:
            freed = 0
            for p in (self._meta(name), self._data(name)):
                try:
                    freed += os.stat(p).st_size
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            if freed and count:
                self._count(evictions=1)
            return freed
        finally:
            lock.release()

    def _clean_tmp(self, own_key: str) -> None:
        """Remove temp files of downloads that died: their entry lock is free (or
        is ours - we hold it, so nobody else is writing that entry)."""
        tmpdir = os.path.join(self.cache_dir, "tmp")
        for name in os.listdir(tmpdir):
            if not name.endswith(".part"):
                continue
            key = name.rsplit(".", 2)[0]  # "<key>.<uuid>.part"; the key may contain dots
            if key != own_key:
                lock = self._lock(key, blocking=False)
                try:
                    lock.acquire()
                except Timeout:
                    continue  # a live download
                lock.release()
            try:
                os.unlink(os.path.join(tmpdir, name))
                self._count(stale_tmp_removed=1)
            except FileNotFoundError:
                pass

    def _reserve(self, key: str, url: str, size: int) -> str:
        need = size + META_RESERVE
        limit = self.limit_bytes
        if limit is not None and need > limit:
            raise CacheFullError(
                errno.ENOSPC,
                f"shard {url} ({size} bytes) is larger than the cache limit ({limit} bytes); "
                "it will be read uncached - raise limit_bytes to cache it",
            )
        with self._global_lock():
            self._clean_tmp(key)
            if limit is not None:
                usage = self.usage_bytes()
                if usage + need > limit:
                    datadir = os.path.join(self.cache_dir, "data")
                    entries = []
                    with os.scandir(datadir) as it:
                        for e in it:
                            try:
                                entries.append((e.stat().st_atime_ns, e.name))
                            except FileNotFoundError:
                                pass
                    for _, name in sorted(entries):
                        if name == key:
                            continue
                        usage -= self._try_evict(name)
                        if usage + need <= limit:
                            break
                    if usage + need > limit:
                        raise CacheFullError(
                            errno.ENOSPC,
                            f"cache {self.cache_dir} is full ({usage} of {limit} bytes) of shards in use; "
                            f"shard {url} ({size} bytes) will be read uncached - raise limit_bytes",
                        )
            tmp = os.path.join(self.cache_dir, "tmp", f"{key}.{uuid.uuid4().hex}.part")
            with open(tmp, "wb") as f:
                f.truncate(size)  # sparse: counts against the bound before any byte is written
            return tmp


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
