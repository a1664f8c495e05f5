"""Where a URL lives and how to open it: fsspec for everything, plain files locally.

All remote I/O goes through fsspec (``fsspec.core.url_to_fs``). "Local" means the
URL resolves to fsspec's LocalFileSystem, which includes FUSE mounts such as Colab's
Drive: those are plain paths, opened with the OS ``open`` (the fast path: no fsspec
buffering layer, one ``read`` per block).
"""

from __future__ import annotations

import errno
from typing import IO, Any

import fsspec
import fsspec.core
from fsspec.implementations.local import LocalFileSystem

from ..errors import WdsPipelineError

__all__ = [
    "BLOCK_SIZE", "DISK_FULL_ERRNOS", "DiskFullError", "ShortWriteError", "copy_stream",
    "disk_full_error", "is_disk_full", "is_remote", "local_path", "open_read", "url_to_fs",
    "write_all",
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


# errno values that mean "this disk (or this user's share of it) has no room left".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(WdsPipelineError, OSError):
    """A write failed because its disk is full (``ENOSPC``/``EDQUOT``); the message names
    the file. Nothing incomplete was published under a final name: free space (or point
    the output elsewhere) and rerun. ``reason``: the OS's words (or "short write");
    ``detail``: how far the write got, when known."""

    reason: str = ""
    detail: str = ""


class ShortWriteError(DiskFullError):
    """A write stored fewer bytes than it was given and no error said why (a full
    FUSE mount can do this): the file is incomplete and must not be published."""


def is_disk_full(exc: BaseException) -> bool:
    """True for an error that means the disk written to is full (a short write included)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(target: str, exc: OSError, *, done: int | None = None,
                    total: int | None = None,
                    hint: str = "free space on that disk and rerun") -> DiskFullError:
    """A :class:`DiskFullError` (a :class:`ShortWriteError` when ``exc`` is one) naming
    ``target``, what was being written; keeps what ``exc`` said about the cause and how
    far the write got, and ends with ``hint`` (what the user does about it)."""
    reason = getattr(exc, "reason", "") or exc.strerror or str(exc)
    detail = getattr(exc, "detail", "")
    if done is not None and total is not None:
        detail = f"{done} of {total} bytes written"
    cls = type(exc) if isinstance(exc, DiskFullError) else DiskFullError
    code = exc.errno if exc.errno in DISK_FULL_ERRNOS else errno.ENOSPC
    err = cls(code, f"disk full writing {target} ({reason}{'; ' + detail if detail else ''}); "
                    f"{hint}")
    err.reason, err.detail = reason, detail
    return err


def write_all(f: Any, data: Any, *, name: str | None = None) -> int:
    """Write every byte of ``data`` to ``f`` or raise; returns the byte count.

    A raw (unbuffered) file's ``write`` may store only a prefix and return its length:
    on a nearly full disk or a FUSE mount it does, and ``writelines`` and a plain
    ``f.write`` ignore that, so a truncated file would be published as complete. Each
    short write is retried from where it stopped (the OS then reports the real error,
    ENOSPC, on the next call); a write that makes no progress is a
    :class:`ShortWriteError`. A full disk raises :class:`DiskFullError` naming the file
    (``name``, else ``f.name``). Every write of file contents in the package goes
    through here.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        try:
            n = f.write(view[done:])
        except OSError as exc:
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full_error(_name_of(f, name), exc, done=done, total=total) from exc
            raise
        if n is None:  # buffered writers return None only in non-blocking mode
            n = total - done
        if n <= 0:
            short = ShortWriteError(errno.ENOSPC, "a write stored no bytes")
            short.reason = "short write: a write stored no bytes"
            raise disk_full_error(_name_of(f, name), short, done=done, total=total)
        done += n
    return total


def _name_of(f: Any, name: str | None) -> str:
    if name is not None:
        return name
    n = getattr(f, "name", None)
    return n if isinstance(n, str) else "<stream>"
