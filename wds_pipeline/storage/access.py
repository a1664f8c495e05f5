"""Where a URL lives and how to open it: fsspec for everything, plain files locally.

All remote I/O goes through fsspec (``fsspec.core.url_to_fs``). "Local" means the
URL resolves to fsspec's LocalFileSystem, which includes FUSE mounts such as Colab's
Drive: those are plain paths, opened with the OS ``open`` (the fast path: no fsspec
buffering layer, one ``read`` per block).
"""

from __future__ import annotations

from typing import IO, Any

import fsspec
import fsspec.core
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "BLOCK_SIZE", "ShortWriteError", "copy_stream", "is_remote", "local_path", "open_read",
    "url_to_fs", "write_all",
]

# Large blocks: on Drive/FUSE every request costs a round trip, and on GCS every
# read_block is an HTTP range request. 8 MiB amortises both.
BLOCK_SIZE = 8 << 20


def url_to_fs(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """``fsspec.core.url_to_fs`` with a clear hint when a backend is missing."""
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as exc:
        proto = url.split("://", 1)[0] if "://" in url else "file"
        hint = " (pip install gcsfs)" if proto in ("gs", "gcs") else ""
        raise ImportError(f"no fsspec backend for {url!r}{hint}: {exc}") from exc


def is_remote(url: str) -> bool:
    """True unless the URL is a path on this machine's filesystem tree.

    FUSE mounts (Drive) are *not* remote here: they are local paths, slow ones;
    use :func:`~wds_pipeline.storage.is_fuse_path` for those. ``memory://`` counts as
    remote because it is not an OS path (nothing can ``open()`` it).
    """
    if "://" not in url:
        return False
    proto = url.split("://", 1)[0]
    return proto not in ("file", "local")


def local_path(url: str) -> str:
    """OS path of a local URL (``file://`` stripped, made absolute)."""
    if is_remote(url):
        raise ValueError(f"{url!r} is not a local path")
    return LocalFileSystem._strip_protocol(url)


def open_read(url: str, *, block_size: int = BLOCK_SIZE, **storage_options: Any) -> IO[bytes]:
    """A raw binary reader over ``url``: the OS file, unbuffered, for a local path or
    mount; an fsspec file reading ``block_size`` per request otherwise. The caller
    closes it."""
    if is_remote(url):
        fs, path = url_to_fs(url, **storage_options)
        return fs.open(path, "rb", block_size=block_size)
    return open(local_path(url), "rb", buffering=0)


def copy_stream(src: Any, dst: Any, block_size: int = BLOCK_SIZE) -> int:
    """Copy ``src`` to ``dst`` in ``block_size`` blocks; returns the byte count.

    One large write per block: on FUSE each write() is a request to the daemon (and
    on Drive a network round trip), so never stream small writes into it.
    """
    buf = bytearray(block_size)
    view = memoryview(buf)
    total = 0
    while True:
        n = src.readinto(buf)
        if not n:
            return total
        write_all(dst, view[:n])
        total += n


class ShortWriteError(OSError):
    """A write stored fewer bytes than it was given and no error said why (a full
    FUSE mount can do this): the file is incomplete and must not be published."""


def write_all(f: Any, data: Any) -> int:
    """Write every byte of ``data`` to ``f`` or raise; returns the byte count.

    A raw (unbuffered) file's ``write`` may store only a prefix and return its length:
    on a nearly full disk or a FUSE mount it does, and ``writelines`` and a plain
    ``f.write`` ignore that, so a truncated file would be published as complete. Each
    short write is retried from where it stopped (the OS then reports the real error,
    ENOSPC, on the next call); a write that makes no progress is a
    :class:`ShortWriteError`. Every write of file contents in the package goes
    through here.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        n = f.write(view[done:])
        if n is None:  # buffered writers return None only in non-blocking mode
            n = total - done
        if n <= 0:
            name = getattr(f, "name", "<stream>")
            raise ShortWriteError(
                f"short write to {name}: {done} of {total} bytes stored (disk full?)")
        done += n
    return total
