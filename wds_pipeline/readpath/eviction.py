"""The cache's bound: reserving room for a download, evicting, cleaning up (see :mod:`.cache`).

Bound. ``limit_bytes`` bounds the total size of everything under ``data/``,
``meta/`` and ``tmp/`` (by st_size). A download first reserves its full size,
under the global lock: it evicts least-recently-used entries (by the atime we
set on each hit) that nobody holds, then creates its temp file truncated to the
shard's size, so concurrent downloads count against the bound before writing.
A shard that can never fit, or that cannot fit because every entry is in use,
raises :class:`CacheFullError` (an ``OSError`` with ``ENOSPC``). Eviction only ever
deletes files inside ``cache_dir``. A file unlinked while a reader still has it open
stays readable until closed (its blocks are freed then), so the OS may briefly hold
more than the bound; the directory never does.

A killed downloader leaves its temp file behind; the next reservation removes it (a
temp file whose entry lock is free is by definition abandoned).
"""

from __future__ import annotations

import errno
import os
import uuid

from filelock import Timeout

from .entries import META_RESERVE, CacheFiles
from .errors import CacheFullError

__all__ = ["BoundedCacheFiles"]


class BoundedCacheFiles(CacheFiles):
    """:class:`CacheFiles` kept within ``limit_bytes`` (None: unbounded)."""

    def __init__(
        self, cache_dir: str, *, limit_bytes: int | None = None, lock_timeout: float | None = None
    ) -> None:
        if limit_bytes is not None and limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive or None, got {limit_bytes}")
        super().__init__(cache_dir, lock_timeout=lock_timeout)
        self.limit_bytes = limit_bytes

    def clear(self) -> None:
        """Remove every entry not in use."""
        with self._global_lock():
            for name in os.listdir(os.path.join(self.cache_dir, "data")):
                self._try_evict(name, count=False)

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
