"""Whole-file operations on any URL: atomic publish, small reads and writes, listing.

Every call is retried on transient errors (:mod:`.retry`); the ones that take
``retry=`` accept a :class:`~wds_pipeline.storage.RetryPolicy` in place of the default.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from .access import (
    BLOCK_SIZE,
    copy_stream,
    disk_full_error,
    is_disk_full,
    is_remote,
    local_path,
    url_to_fs,
    write_all,
)
from .retry import RetryPolicy, retrying

__all__ = [
    "commit_file",
    "fsync_dir",
    "fsync_file",
    "exists",
    "file_size",
    "listdir",
    "makedirs",
    "read_bytes",
    "remove",
    "write_bytes_atomic",
]


# How a failed publish ends its message: the final name was never touched.
PUBLISHED_NOTHING = "nothing was published under that name; free space on that disk and rerun"


def _tmp_name(dest: str) -> str:
    d, name = os.path.split(dest)
    return os.path.join(d, f".{name}.tmp-{uuid.uuid4().hex}")


def _replace_atomically(dest: str, write: Callable[[Any], object], durable: bool = True) -> None:
    """``write(f)`` into a temp file next to ``dest``, fsync, then ``os.replace`` it onto
    ``dest`` and fsync the folder; on any failure the temp file is removed. ``f`` is a
    raw (unbuffered) file: write to it with :func:`write_all`. A full disk raises
    :class:`~wds_pipeline.storage.DiskFullError` naming ``dest``. ``durable=False``
    skips both fsyncs (scratch files only: a power cut may then leave the name empty)."""
    tmp = _tmp_name(dest)
    try:
        with open(tmp, "wb", buffering=0) as f:
            write(f)
            if durable:  # a full disk or a dropped FUSE link can surface only here
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(dest, exc, hint=PUBLISHED_NOTHING) from exc
        raise
    if durable:
        fsync_dir(os.path.dirname(dest))


def fsync_dir(path: str) -> None:
    """Make a rename in folder ``path`` durable (a power cut could otherwise undo it).
    Best effort: some filesystems (FUSE mounts among them) cannot fsync a folder, and
    the rename itself is already visible to every reader."""
    try:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Flush a finished (closed) file's bytes to its disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_then_replace(src_path: str, dest: str, durable: bool = True) -> None:
    with open(src_path, "rb", buffering=0) as src:
        _replace_atomically(dest, lambda dst: copy_stream(src, dst), durable)


def commit_file(
    local_path_: str, url: str, *, keep_source: bool = False, durable: bool = True,
    **storage_options: Any
) -> None:
    """Publish the finished local file ``local_path_`` at ``url``, atomically.

    Readers see either nothing or the complete file, never a prefix:

    * local or FUSE destination on the same filesystem as the source: fsync, then
      ``os.replace``;
    * local or FUSE destination elsewhere: copy in 8 MiB blocks to
      ``<dir>/.<name>.tmp-<uuid>``, fsync, then ``os.replace`` onto the final name;
    * remote (``gs://``, ...): ``fs.put_file`` - a GCS object only becomes visible
      when its upload completes.

    The source is moved (deleted after a successful publish) unless ``keep_source``.
    Transient errors are retried; a failed commit leaves no temp file behind; a full
    disk raises :class:`~wds_pipeline.storage.DiskFullError` naming ``url``.
    ``durable=False`` skips the fsyncs (scratch files: synthetic test datasets).
    """
    src = os.path.abspath(local_path_)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"commit_file: source {src!r} does not exist or is not a file")
    if is_remote(url):
        fs, path = url_to_fs(url, **storage_options)
        retrying("uploading to", url, lambda: fs.put_file(src, path))
        if not keep_source:
            os.unlink(src)
        return
    dest = local_path(url)
    parent = os.path.dirname(dest)
    retrying("creating folder", parent, lambda: os.makedirs(parent, exist_ok=True))
    if not keep_source and os.stat(src).st_dev == os.stat(parent).st_dev:
        # The bytes reach the disk before the name does: after a power cut the final
        # name holds the whole file or is absent, never a prefix.
        if durable:
            try:
                fsync_file(src)
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(dest, exc, hint=PUBLISHED_NOTHING) from exc
                raise
        os.replace(src, dest)
        if durable:
            fsync_dir(parent)
        return
    retrying("copying to", url, lambda: _copy_then_replace(src, dest, durable))
    if not keep_source:
        os.unlink(src)


def write_bytes_atomic(
    url: str, data: bytes, *, retry: RetryPolicy | None = None, durable: bool = True,
    **storage_options: Any
) -> None:
    """Write ``data`` at ``url`` so that readers never see a partial file.

    Local/FUSE: temp file beside it, every byte written (:func:`write_all`), fsync,
    rename, fsync of the folder; remote: one upload, which an object store only makes
    visible once complete. Each attempt rewrites the whole file, so a retry after a
    transient error never leaves a mix of two attempts. A full disk raises
    :class:`~wds_pipeline.storage.DiskFullError` naming ``url``. ``durable=False``: no
    fsyncs, for scratch files regenerated at will (synthetic corpora).
    """
    if is_remote(url):
        fs, path = url_to_fs(url, **storage_options)
        # A single-request upload (pipe_file) is atomic on object stores.
        retrying("writing", url, lambda: fs.pipe_file(path, bytes(data)), retry)
        return
    dest = local_path(url)
    parent = os.path.dirname(dest)

    def _blocks(f: Any) -> None:
        view = memoryview(data).cast("B")
        for i in range(0, len(view), BLOCK_SIZE):
            write_all(f, view[i : i + BLOCK_SIZE])

    def _write() -> None:
        os.makedirs(parent, exist_ok=True)
        _replace_atomically(dest, _blocks, durable)

    retrying("writing", url, _write, retry)


def read_bytes(url: str, *, retry: RetryPolicy | None = None, **storage_options: Any) -> bytes:
    fs, path = url_to_fs(url, **storage_options)
    return retrying("reading", url, lambda: fs.cat_file(path), retry)


def exists(url: str, **storage_options: Any) -> bool:
    fs, path = url_to_fs(url, **storage_options)
    return retrying("checking", url, lambda: bool(fs.exists(path)))


def file_size(url: str, **storage_options: Any) -> int:
    fs, path = url_to_fs(url, **storage_options)
    return retrying("stat of", url, lambda: int(fs.size(path)))


def remove(url: str, *, retry: RetryPolicy | None = None, **storage_options: Any) -> None:
    """Delete one file. Missing files raise FileNotFoundError."""
    fs, path = url_to_fs(url, **storage_options)
    retrying("removing", url, lambda: fs.rm_file(path), retry)


def makedirs(url: str, **storage_options: Any) -> None:
    """Create a folder and its parents (a no-op on object stores without folders)."""
    fs, path = url_to_fs(url, **storage_options)
    retrying("creating folder", url, lambda: fs.makedirs(path, exist_ok=True))


def listdir(
    url: str, *, fresh: bool = False, retry: RetryPolicy | None = None, **storage_options: Any
) -> list[str]:
    """Names (not paths) of the entries directly under ``url``, sorted.

    ``fresh``: drop fsspec's cached listing first (object-store backends cache
    listings per filesystem instance; another process may have written since).
    """
    fs, path = url_to_fs(url, **storage_options)

    def _ls() -> list[str]:
        if fresh:
            fs.invalidate_cache(path)
        entries = fs.ls(path, detail=False)
        base = path.rstrip("/")
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base}
        return sorted(n for n in names if n)

    return retrying("listing", url, _ls, retry)
