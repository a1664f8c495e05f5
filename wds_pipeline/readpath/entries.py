"""The cache's files: entries, their sidecars, their locks (see :mod:`.cache`).

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass

from filelock import FileLock

from .. import storage
from ..storage import Digest
from .counters import Counters

__all__ = ["META_RESERVE", "META_VERSION", "CacheFiles", "CacheStats", "cache_key"]

log = logging.getLogger(__name__)

META_VERSION = 2  # 2: '<algorithm>:<hex>' digests (1: sha256 hex; such entries are re-fetched)
META_RESERVE = 4096  # bytes set aside per entry for its sidecar
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


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


class CacheFiles:
    """The entries under ``cache_dir``: their paths, locks and sidecars, the trust check
    of a hit, and this process's counters. Holds only paths and counters (it pickles into
    DataLoader workers); locks are taken per call."""

    def __init__(self, cache_dir: str, *, lock_timeout: float | None = None) -> None:
        self.cache_dir = os.path.abspath(cache_dir)
        self.lock_timeout = -1 if lock_timeout is None else lock_timeout
        for sub in ("data", "meta", "tmp", "locks"):
            os.makedirs(os.path.join(self.cache_dir, sub), exist_ok=True)
        self._stats = Counters(CacheStats())

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

    def contains(self, url: str) -> bool:
        """Whether a trusted-looking entry (data + sidecar) exists; no hashing, no lock."""
        key = cache_key(url)
        return os.path.exists(self._data(key)) and os.path.exists(self._meta(key))

    # ---------------------------------------------------------------- sidecars
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

    def _commit(self, key: str, tmp: str, url: str, size: int, digest: Digest | None) -> None:
        """Rename a verified download into ``data/``, then write its sidecar (last: a crash
        in between leaves an entry that is not trusted)."""
        st = os.stat(tmp)
        os.replace(tmp, self._data(key))
        self._write_meta(key, _Meta(url=url, size=size, digest=str(digest), stamp=_stamp(st)))

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
