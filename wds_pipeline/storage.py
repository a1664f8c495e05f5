"""fsspec storage helpers: atomic publish, small read/write helpers, mount detection.

    url_to_fs(url, **storage_options) -> (fs, path)
    is_remote(url) -> bool
    commit_file(local_path, url, *, keep_source=False, **so) -> None   # atomic publish
    write_bytes_atomic(url, data: bytes, *, retry=None, **so) -> None
    read_bytes(url, *, retry=None, **so) -> bytes
    exists(url, **so) -> bool ; file_size(url, **so) -> int ; remove(url, **so); makedirs(url, **so)
    listdir(url, *, fresh=False, retry=None, **so) -> list[str]   # entry names, sorted
    sha256_file(url, **so) -> tuple[str, int]         # streaming hash, size
    mount_of(path) -> MountInfo(mountpoint, fstype, device) ; is_fuse_path(path) -> bool
    is_transient(exc) -> bool                          # worth retrying?

All remote I/O goes through fsspec (``fsspec.core.url_to_fs``). "Local" means the
URL resolves to fsspec's LocalFileSystem, which includes FUSE mounts such as Colab's
Drive: those are plain paths to fsspec, so we detect them from /proc/self/mounts.

Transient errors (dropped connections, HTTP 5xx/429, ENOTCONN/EIO from a FUSE mount)
are retried a few times with backoff; anything else is raised unchanged. When the
retries run out a :class:`StorageError` (an ``OSError``) names the URL and the
last error. The helpers that take ``retry=`` accept a ``fetch.RetryPolicy`` in
place of that default schedule.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec
import fsspec.core
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:  # the policy type lives with the shard reader; only its fields are used here
    from .fetch import RetryPolicy

__all__ = [
    "BLOCK_SIZE",
    "MountInfo",
    "StorageError",
    "commit_file",
    "exists",
    "file_size",
    "is_fuse_path",
    "is_remote",
    "is_transient",
    "listdir",
    "local_path",
    "makedirs",
    "mount_of",
    "read_bytes",
    "remove",
    "sha256_file",
    "url_to_fs",
    "write_bytes_atomic",
]

# Large blocks: on Drive/FUSE every request costs a round trip, and on GCS every
# read_block is an HTTP range request. 8 MiB amortises both.
BLOCK_SIZE = 8 << 20

# errno values a FUSE/network mount or a socket returns when the link, not the
# file, is the problem (Colab Drive: "[Errno 107] Transport endpoint is not connected").
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.EIO,
        errno.ETIMEDOUT,
        errno.EHOSTDOWN,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.EAGAIN,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    }
)
TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})

# Filesystem types that behave like Drive: every open and read is a network trip.
NETWORK_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "sshfs",
        "gcsfuse",
        "ceph",
        "glusterfs",
        "afs",
        "davfs",
        "lustre",
        "s3fs",
        "rclone",
    }
)

_COMMIT_ATTEMPTS = 4
_COMMIT_BACKOFF = 0.5

T = TypeVar("T")


class StorageError(OSError):
    """A storage operation kept failing with transient errors after all retries."""


# --------------------------------------------------------------------------- urls


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
    use :func:`is_fuse_path` for those. ``memory://`` counts as remote because it is
    not an OS path (nothing can ``open()`` it).
    """
    if "://" not in url:
        return False
    proto = url.split("://", 1)[0]
    return proto not in ("file", "local")


def local_path(url: str) -> str:
    """OS path of a local URL (``file://`` stripped, made absolute)."""
    if is_remote(url):
        raise ValueError(f"{url!r} is not a local path")
    return LocalFileSystem._strip_protocol(url)  # type: ignore[no-any-return]


# ------------------------------------------------------------------- transients


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed.

    Transient: connection drops/resets, timeouts, aiohttp client errors, gcsfs HTTP
    5xx/429/408, and OSErrors with errno ENOTCONN/EIO/ETIMEDOUT/EHOSTDOWN & co.
    Not transient: missing files, permissions, bad arguments, HTTP 4xx.
    """
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 4:
        seen += 1
        if isinstance(
            e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
        ):
            # Final unless caused by a transient error: fsspec's http backend reports a
            # connection dropped while sizing a file as FileNotFoundError(url) from it.
            e = e.__cause__
            continue
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        # Optional backends are only checked when already imported: no import cost
        # and no hard dependency on aiohttp/gcsfs.
        aiohttp = sys.modules.get("aiohttp")
        if aiohttp is not None and isinstance(e, aiohttp.ClientError):
            return True
        gretry = sys.modules.get("gcsfs.retry")
        if gretry is not None and isinstance(e, gretry.HttpError):
            code = getattr(e, "code", None)
            try:
                return int(code) in TRANSIENT_HTTP_CODES  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
        # Wrappers (e.g. gcsfs re-raising as a bare OSError/RuntimeError) keep the
        # real error in __cause__; anything with a concrete errno was judged above.
        if isinstance(e, OSError) and e.errno is not None:
            return False
        e = e.__cause__
    return False


class _DefaultRetry:
    """The schedule storage helpers use unless given a ``fetch.RetryPolicy``: a few
    attempts, doubling from ~0.5 s (sized for commits and small metadata calls)."""

    attempts = _COMMIT_ATTEMPTS
    timeout = float("inf")

    @staticmethod
    def backoff(failure: int) -> float:
        return _COMMIT_BACKOFF * (2 ** (failure - 1)) * (0.5 + random.random())


def _retrying(what: str, url: str, fn: Callable[[], T], retry: RetryPolicy | None = None) -> T:
    """``fn()``, retried on transient errors per ``retry`` (attempts, backoff, and a
    ``timeout`` in seconds since the first failure); a non-transient error is raised
    unchanged, exhausted retries raise :class:`StorageError` naming ``url``."""
    policy: Any = retry if retry is not None else _DefaultRetry
    first_failure: float | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if attempt == policy.attempts or now - first_failure > policy.timeout:
                code = exc.errno if isinstance(exc, OSError) else None
                raise StorageError(
                    code,
                    f"{what} {url!r} failed {attempt} times with transient errors; last: "
                    f"{type(exc).__name__}: {exc}. Check the connection/mount and retry "
                    "(on Colab, remount Drive).",
                ) from exc
            time.sleep(policy.backoff(attempt))
    raise AssertionError("unreachable")


# -------------------------------------------------------------------- publishing


def _copy_stream(src, dst, block_size: int = BLOCK_SIZE) -> None:
    # One large write per block: on FUSE each write() is a request to the daemon
    # (and on Drive a network round trip), so never stream small writes into it.
    buf = bytearray(block_size)
    view = memoryview(buf)
    while True:
        n = src.readinto(buf)
        if not n:
            break
        dst.write(view[:n])


def _tmp_name(dest: str) -> str:
    d, name = os.path.split(dest)
    return os.path.join(d, f".{name}.tmp-{uuid.uuid4().hex}")


def _replace_atomically(dest: str, write: Callable[[Any], None]) -> None:
    """``write(f)`` into a temp file next to ``dest``, fsync, then ``os.replace`` it onto
    ``dest``; on any failure the temp file is removed."""
    tmp = _tmp_name(dest)
    try:
        with open(tmp, "wb", buffering=0) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _copy_then_replace(src_path: str, dest: str) -> None:
    with open(src_path, "rb", buffering=0) as src:
        _replace_atomically(dest, lambda dst: _copy_stream(src, dst))


def commit_file(
    local_path_: str, url: str, *, keep_source: bool = False, **storage_options: Any
) -> None:
    """Publish the finished local file ``local_path_`` at ``url``, atomically.

    Readers see either nothing or the complete file, never a prefix:

    * local or FUSE destination on the same filesystem as the source: ``os.replace``;
    * local or FUSE destination elsewhere: copy in 8 MiB blocks to
      ``<dir>/.<name>.tmp-<uuid>``, fsync, then ``os.replace`` onto the final name;
    * remote (``gs://``, ...): ``fs.put_file`` - a GCS object only becomes visible
      when its upload completes.

    The source is moved (deleted after a successful publish) unless ``keep_source``.
    Transient errors are retried; a failed commit leaves no temp file behind.
    """
    src = os.path.abspath(local_path_)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"commit_file: source {src!r} does not exist or is not a file")
    if is_remote(url):
        fs, path = url_to_fs(url, **storage_options)
        _retrying("uploading to", url, lambda: fs.put_file(src, path))
        if not keep_source:
            os.unlink(src)
        return
    dest = local_path(url)
    parent = os.path.dirname(dest)
    _retrying("creating folder", parent, lambda: os.makedirs(parent, exist_ok=True))
    if not keep_source and os.stat(src).st_dev == os.stat(parent).st_dev:
        os.replace(src, dest)
        return
    _retrying("copying to", url, lambda: _copy_then_replace(src, dest))
    if not keep_source:
        os.unlink(src)


def write_bytes_atomic(
    url: str, data: bytes, *, retry: RetryPolicy | None = None, **storage_options: Any
) -> None:
    """Write ``data`` at ``url`` so that readers never see a partial file.

    Local/FUSE: temp file beside it, fsync, rename; remote: one upload, which an
    object store only makes visible once complete. Each attempt rewrites the whole
    file, so a retry after a transient error never leaves a mix of two attempts.
    """
    if is_remote(url):
        fs, path = url_to_fs(url, **storage_options)
        # A single-request upload (pipe_file) is atomic on object stores.
        _retrying("writing", url, lambda: fs.pipe_file(path, bytes(data)), retry)
        return
    dest = local_path(url)
    parent = os.path.dirname(dest)

    def _blocks(f: Any) -> None:
        view = memoryview(data)
        f.writelines(view[i : i + BLOCK_SIZE] for i in range(0, len(view), BLOCK_SIZE))

    def _write() -> None:
        os.makedirs(parent, exist_ok=True)
        _replace_atomically(dest, _blocks)

    _retrying("writing", url, _write, retry)


# ------------------------------------------------------------------ small helpers


def read_bytes(url: str, *, retry: RetryPolicy | None = None, **storage_options: Any) -> bytes:
    fs, path = url_to_fs(url, **storage_options)
    return _retrying("reading", url, lambda: fs.cat_file(path), retry)


def exists(url: str, **storage_options: Any) -> bool:
    fs, path = url_to_fs(url, **storage_options)
    return _retrying("checking", url, lambda: bool(fs.exists(path)))


def file_size(url: str, **storage_options: Any) -> int:
    fs, path = url_to_fs(url, **storage_options)
    return _retrying("stat of", url, lambda: int(fs.size(path)))


def remove(url: str, *, retry: RetryPolicy | None = None, **storage_options: Any) -> None:
    """Delete one file. Missing files raise FileNotFoundError."""
    fs, path = url_to_fs(url, **storage_options)
    _retrying("removing", url, lambda: fs.rm_file(path), retry)


def makedirs(url: str, **storage_options: Any) -> None:
    """Create a folder and its parents (a no-op on object stores without folders)."""
    fs, path = url_to_fs(url, **storage_options)
    _retrying("creating folder", url, lambda: fs.makedirs(path, exist_ok=True))


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

    return _retrying("listing", url, _ls, retry)


def sha256_file(url: str, **storage_options: Any) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in 8 MiB blocks."""

    def _hash() -> tuple[str, int]:
        h = hashlib.sha256()
        n = 0
        if not is_remote(url):
            f = open(local_path(url), "rb", buffering=0)  # noqa: SIM115 - closed below
        else:
            fs, path = url_to_fs(url, **storage_options)
            f = fs.open(path, "rb", block_size=BLOCK_SIZE)
        with f:
            while True:
                block = f.read(BLOCK_SIZE)
                if not block:
                    break
                h.update(block)
                n += len(block)
        return h.hexdigest(), n

    return _retrying("hashing", url, _hash)


# ------------------------------------------------------------------------ mounts


@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    device: str


def _unescape_mount_field(s: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as \ooo octal.
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[MountInfo]:
    """Parse the text of /proc/self/mounts (pure; exposed for tests)."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 3:
            continue
        out.append(
            MountInfo(
                mountpoint=_unescape_mount_field(parts[1]),
                fstype=_unescape_mount_field(parts[2]),
                device=_unescape_mount_field(parts[0]),
            )
        )
    return out


def find_mount(path: str, mounts: list[MountInfo]) -> MountInfo:
    """Longest-prefix mount containing ``path`` (pure). Later entries win ties
    because a later mount on the same point hides the earlier one."""
    best: MountInfo | None = None
    for m in mounts:
        mp = m.mountpoint
        contains = mp == "/" or path == mp or path.startswith(mp.rstrip("/") + "/")
        if contains and (best is None or len(mp) >= len(best.mountpoint)):
            best = m
    if best is None:
        raise ValueError(f"no mount contains {path!r}")
    return best


def mount_of(path: str) -> MountInfo:
    """The mount holding ``path`` (need not exist yet), from /proc/self/mounts."""
    if is_remote(path):
        raise ValueError(f"{path!r} is a remote URL, not a mounted path")
    # realpath (non-strict) resolves symlinks such as /content/drive -> ... but
    # tolerates OSErrors, so a dead mount (ENOTCONN) still resolves.
    p = os.path.realpath(local_path(path))
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        return find_mount(p, parse_mounts(f.read()))


def is_fuse_path(path: str) -> bool:
    """True when ``path`` is on a FUSE or network mount (Colab Drive is ``fuse.drive``),
    where every open and read pays a network round trip. Remote URLs give False."""
    if is_remote(path):
        return False
    try:
        fstype = mount_of(path).fstype
    except (OSError, ValueError):
        return False
    return fstype.startswith("fuse") or fstype in NETWORK_FSTYPES
