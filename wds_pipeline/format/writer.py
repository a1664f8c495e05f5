"""Writing shards: tar members with fixed metadata, so the same input gives the same bytes."""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from typing import Any, Protocol

from ..storage.access import write_all
from .checksum import crc32
from .keys import Payload, sample_members
from .tar import BLOCK

__all__ = ["TAR_MODE", "TAR_MTIME", "ReproducibleTarWriter", "Sink", "member_header"]

class Sink(Protocol):
    """Where a shard's bytes go: a file, or a wrapper such as ``storage.HashingWriter``
    (written through ``storage.write_all``, so a short write is retried or raised)."""

    def write(self, data: Any, /) -> Any: ...


# Fixed tar header values so that the same input always gives the same bytes.
TAR_MTIME = 0
TAR_MODE = 0o644

# The GNU header fields around a member's name and size, as TarInfo.tobuf writes them
# for a regular file with the fixed metadata above (offsets in docs/format.md's order:
# name 0-100, mode, uid, gid, size 124-136, mtime, checksum 148-156, type, linkname,
# magic "ustar  \0", uname, gname, devmajor, devminor, prefix, padding to 512).
_NAME_LEN = 100
_AFTER_NAME = b"%07o\0" % TAR_MODE + b"0000000\0" * 2  # mode, uid, gid
_AFTER_SIZE = b"%011o\0" % TAR_MTIME
_AFTER_CHKSUM = b"0" + bytes(100) + b"ustar  \0" + bytes(32 + 32 + 8 + 8 + 155 + 12)
# The checksum counts its own field as eight spaces.
_FIXED_SUM = sum(_AFTER_NAME) + sum(_AFTER_SIZE) + 8 * 32 + sum(_AFTER_CHKSUM)
_MAX_OCTAL_SIZE = 8**11  # 11 octal digits; larger sizes take GNU base-256
_ZEROS = bytes(BLOCK)
# Payloads up to this size are joined with their header and padding into one write:
# three writes per member (each through the digest, crc32 and the file) cost more than the copy.
_JOIN_MAX = 64 * 1024


def member_header(name: str, size: int) -> bytes:
    """The GNU-format header block(s) ``TarInfo.tobuf`` makes for a regular file ``name``
    of ``size`` bytes with the fixed metadata: built from constant fields here, since
    tarfile's general path was a fifth of the time to write a shard. Names over 100 bytes
    (a GNU long-name member first) and sizes of 8 GiB and more go to tarfile itself."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > _NAME_LEN or size >= _MAX_OCTAL_SIZE:
        return _tarfile_header(name, size)
    size_field = b"%011o\0" % size
    checksum = _FIXED_SUM + sum(raw) + sum(size_field)
    return b"".join((raw, _ZEROS[: _NAME_LEN - len(raw)], _AFTER_NAME, size_field, _AFTER_SIZE,
                     b"%06o\0 " % checksum, _AFTER_CHKSUM))


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


class ReproducibleTarWriter:
    """Writes tar members with fixed metadata so identical input gives identical bytes.

    Wraps a binary file object it does not own: the caller opens, finalises and
    closes it (see :mod:`wds_pipeline.storage`). Tracks the byte offset of every
    sample so readers can seek to a sample range without scanning, and the crc32 of
    every sample's bytes (its headers, payloads and padding, up to the next sample or
    the end-of-archive blocks) so readers can verify a sample before the whole shard
    has arrived; ``sample_crc32`` is complete once :meth:`close` ran.

    The bytes are those :mod:`tarfile` writes in GNU format (headers as
    ``TarInfo.tobuf`` makes them, see :func:`member_header`; NUL padding, two end
    blocks, records of 10 KiB); large payloads go to the file object in one ``write``
    each instead of tarfile's 16 KiB copy loop, small ones joined with the headers and
    padding around them.
    """

    def __init__(self, fileobj: Sink):
        self._f = fileobj
        self.offset = 0
        self.sample_offsets: list[int] = []
        self.sample_crc32: list[int] = []
        self.nsamples = 0
        self._crc = 0

    def _write(self, data: Payload) -> None:
        write_all(self._f, data)  # a raw file may store a prefix only: never drop the rest
        self._crc = crc32(data, self._crc)
        self.offset += len(data)

    def _end_sample(self) -> None:
        if len(self.sample_crc32) < self.nsamples:
            self.sample_crc32.append(self._crc)
        self._crc = 0

    def write_sample(self, key: str, fields: Mapping[str, Payload]) -> None:
        self._end_sample()
        self.sample_offsets.append(self.offset)
        pending: list[Payload] = []  # small pieces of this sample, written as one
        for name, payload in sample_members(key, fields):
            size = len(payload)
            pending.append(member_header(name, size))
            if size > _JOIN_MAX:
                self._write(b"".join(pending))
                self._write(payload)
                pending = []
            else:
                pending.append(payload)
            if size % BLOCK:
                pending.append(_ZEROS[: BLOCK - size % BLOCK])
        if pending:
            self._write(b"".join(pending))
        self.nsamples += 1

    def close(self) -> None:
        """Write the end-of-archive blocks; leaves the file object open."""
        self._end_sample()
        self._write(bytes(2 * BLOCK))
        if self.offset % tarfile.RECORDSIZE:
            self._write(bytes(tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))
