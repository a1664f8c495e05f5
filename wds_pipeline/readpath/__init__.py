"""The read path: how shard bytes get from storage to the loader.

    open_reader(first_url, *, cache_dir, cache_limit, prefetch, storage_options) -> ShardReader
    default_cache_policy(url) ; default_cache_dir() ; cache_dir_for(first_url, cache_dir)
    ShardReader(...).schedule(refs) / .open(ShardRef, offset) -> a sequential stream
    ShardCache(cache_dir, *, limit_bytes) .get / .open / .open_partial(url, digest=, size=)
    PartialShard: a shard read while the cache downloads it
    ResumableReader / copy_shard: remote reads that resume after transient errors

Modules: ``policy`` (whether and where to cache; the reader the loader gets), ``reader``
(the prefetching reader), ``resumable`` (retried reads), ``cache`` with ``entries``
(layout, sidecars), ``eviction`` (the bound) and ``download`` (one verified download),
``partial`` (read-while-downloading), ``stream`` (their common seekable stream),
``counters`` and ``errors``. It builds on :mod:`wds_pipeline.storage` and imports
nothing from the loader, the builder, the trainer, audio or the sources
(tests/test_readpath.py checks this).
"""

from __future__ import annotations

from .cache import CacheStats, ShardCache
from .counters import Counters
from .entries import cache_key
from .errors import (
    CacheDiskFullError,
    CacheFullError,
    PartialShardIntegrityError,
    ShardIntegrityError,
    ShardReadError,
)
from .partial import Download, PartialShard
from .policy import cache_dir_for, default_cache_dir, default_cache_policy, open_reader
from .reader import ShardReader, ShardRef
from .resumable import ReaderStats, ResumableReader, copy_shard

__all__ = [
    "CacheDiskFullError",
    "CacheFullError",
    "CacheStats",
    "Counters",
    "Download",
    "PartialShard",
    "PartialShardIntegrityError",
    "ReaderStats",
    "ResumableReader",
    "ShardCache",
    "ShardIntegrityError",
    "ShardReadError",
    "ShardReader",
    "ShardRef",
    "cache_dir_for",
    "cache_key",
    "copy_shard",
    "default_cache_dir",
    "default_cache_policy",
    "open_reader",
]
