"""The storage layer: every byte the package reads or writes outside a shard's
contents goes through here, on any fsspec filesystem.

    url_to_fs(url, **so) -> (fs, path) ; is_remote(url) ; local_path(url)
    open_read(url, **so) -> raw reader (plain file locally, fsspec otherwise)
    write_all(f, data, *, name=None) -> every byte written, or DiskFullError/ShortWriteError
        naming the file (never a silent short write): the one way file contents are written
    is_disk_full(exc) ; disk_full_error(target, exc) ; DiskFullError ; ShortWriteError
    fsync_file(path) ; fsync_dir(path)      # before / after a rename into place
    commit_file(local_path, url, *, keep_source=False, **so)        # atomic publish
    write_bytes_atomic(url, data, *, retry=None, **so) ; read_bytes(url, *, retry=None, **so)
    exists / file_size / remove / makedirs / listdir(url, *, fresh=False, retry=None, **so)
    RetryPolicy, STORAGE_RETRY, retrying(what, url, fn, retry) ; is_transient(exc) ; StorageError
    Digest(algorithm, hex) ; SHARD_DIGEST ; new_hash(algorithm)
    HashingWriter(f, *, algorithm, limit=None) ; digest_stream(f, algorithm)
    digest_bytes(data, algorithm) ; digest_file(url, algorithm, **so) -> (Digest, size)
    algorithm_for(expected) -> the algorithm a check against ``expected`` hashes with
    check_shard(url, digest, size, *, expected, expected_size) -> ShardCheck
    check_file(url, *, expected, expected_size, **so) -> ShardCheck
    check_bytes(url, data, *, expected, expected_size) -> ShardCheck
    mount_of(path) -> MountInfo ; is_fuse_path(path) -> bool

"Local" means the URL resolves to fsspec's LocalFileSystem, which includes FUSE
mounts such as Colab's Drive: those are plain paths to fsspec, so they are detected
from /proc/self/mounts. Transient errors (dropped connections, HTTP 5xx/429,
ENOTCONN/EIO from a FUSE mount) are retried with backoff; anything else is raised
unchanged. When the retries run out a :class:`StorageError` (an ``OSError``) names
the URL and the last error.
"""

from __future__ import annotations

from .access import (
    BLOCK_SIZE,
    DISK_FULL_ERRNOS,
    DiskFullError,
    ShortWriteError,
    copy_stream,
    disk_full_error,
    is_disk_full,
    is_remote,
    local_path,
    open_read,
    url_to_fs,
    write_all,
)
from .integrity import (
    DIGEST_ALGORITHMS,
    SHARD_DIGEST,
    Digest,
    HashingWriter,
    ShardCheck,
    WriteLimitExceeded,
    algorithm_for,
    check_bytes,
    check_file,
    check_shard,
    digest_bytes,
    digest_file,
    digest_stream,
    new_hash,
)
from .mounts import NETWORK_FSTYPES, MountInfo, find_mount, is_fuse_path, mount_of, parse_mounts
from .ops import (
    commit_file,
    exists,
    file_size,
    fsync_dir,
    fsync_file,
    listdir,
    makedirs,
    read_bytes,
    remove,
    write_bytes_atomic,
)
from .retry import (
    STORAGE_RETRY,
    TRANSIENT_ERRNOS,
    TRANSIENT_HTTP_CODES,
    RetryPolicy,
    StorageError,
    is_transient,
    retrying,
)

__all__ = [
    "BLOCK_SIZE",
    "DIGEST_ALGORITHMS",
    "DISK_FULL_ERRNOS",
    "NETWORK_FSTYPES",
    "SHARD_DIGEST",
    "STORAGE_RETRY",
    "TRANSIENT_ERRNOS",
    "TRANSIENT_HTTP_CODES",
    "Digest",
    "DiskFullError",
    "HashingWriter",
    "MountInfo",
    "RetryPolicy",
    "ShardCheck",
    "ShortWriteError",
    "StorageError",
    "WriteLimitExceeded",
    "algorithm_for",
    "check_bytes",
    "check_file",
    "check_shard",
    "commit_file",
    "copy_stream",
    "digest_bytes",
    "digest_file",
    "digest_stream",
    "disk_full_error",
    "exists",
    "file_size",
    "find_mount",
    "fsync_dir",
    "fsync_file",
    "is_disk_full",
    "is_fuse_path",
    "is_remote",
    "is_transient",
    "listdir",
    "local_path",
    "makedirs",
    "mount_of",
    "new_hash",
    "open_read",
    "parse_mounts",
    "read_bytes",
    "remove",
    "retrying",
    "url_to_fs",
    "write_all",
    "write_bytes_atomic",
]
