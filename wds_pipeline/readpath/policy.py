"""Whether and where shards are cached, and the reader the loader gets.

The loader does not decide: it passes its read settings and the first shard's URL to
:func:`open_reader`. Verify and the trainer's preflight ask the same questions
(:func:`default_cache_policy`, :func:`default_cache_dir`) so they report what the
loader will do.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Literal

from .. import storage
from .cache import ShardCache
from .reader import ShardReader

__all__ = ["cache_dir_for", "default_cache_dir", "default_cache_policy", "open_reader"]

log = logging.getLogger(__name__)


def default_cache_policy(url: str) -> bool:
    """True when ``url`` is remote or on a FUSE/network mount: caching pays there."""
    return storage.is_remote(url) or storage.is_fuse_path(url)


def default_cache_dir() -> str:
    """Where the loader caches remote/FUSE shards when no ``cache_dir`` is given."""
    return os.path.join(tempfile.gettempdir(), "wds_pipeline_cache")


def cache_dir_for(first_url: str | None, cache_dir: str | Literal[False] | None) -> str | None:
    """The cache folder for shards like ``first_url``, or None for no cache.
    ``cache_dir``: a folder (always cached there), False (never), None (automatic:
    :func:`default_cache_dir` when :func:`default_cache_policy` says caching pays)."""
    if cache_dir is False:
        return None
    if cache_dir is None and first_url is not None and default_cache_policy(first_url):
        cache_dir = default_cache_dir()
        log.info("shards are on remote/FUSE storage (%s): caching them in %s", first_url, cache_dir)
    return cache_dir


def open_reader(
    first_url: str | None,
    *,
    cache_dir: str | Literal[False] | None = None,
    cache_limit: int | None = None,
    prefetch: int = 2,
    storage_options: Mapping[str, Any] | None = None,
) -> ShardReader:
    """A :class:`ShardReader` for shards like ``first_url`` (None: no shards), with a
    :class:`ShardCache` where :func:`cache_dir_for` puts one (bounded by ``cache_limit``
    bytes). Build it inside the process that reads: threads and file handles must not
    cross a fork."""
    folder = cache_dir_for(first_url, cache_dir)
    cache = None if folder is None else ShardCache(folder, limit_bytes=cache_limit)
    return ShardReader(cache=cache, prefetch=prefetch, storage_options=dict(storage_options or {}))
