"""Reading tar members: one header parser, used by the stream and the buffer reader.

* :func:`iter_tar_members` reads a file object strictly sequentially (verify, the
  sample iterator, readers without an index);
* :func:`iter_buffer_members` parses a run of whole members already in memory (the
  loader reads a span of samples at once using the index's offsets).

Both refuse a bad checksum or a truncated member with a :class:`ShardFormatError`
naming the shard and the byte: a partial download must never look like a shorter shard.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import ShardFormatError

__all__ = ["BLOCK", "TarMember", "buffer_members", "header_error", "iter_buffer_members", "iter_tar_members",
           "members_end", "parse_header"]

BLOCK = 512  # tar block size

_FILE_TYPES = (b"0", b"\0", b"7")
_NAME_TYPES = (b"L", b"x", b"g")
_ZERO_BLOCK = b"\0" * BLOCK
_OFFSETS = np.arange(BLOCK)
_CHKSUM_FIELD = np.arange(148, 156)


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # offset of the header block
    data_offset: int
    size: int


# ----------------------------------------------------------------- the parser


def _parse_octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    if not field:
        return 0
    if field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    try:
        return int(field, 8)
    except ValueError:
        # No field bytes in the message: they may be anything (an HTML page, binary junk).
        raise ShardFormatError("a numeric field is not an octal number") from None


def _checksum_ok(header: bytes) -> bool:
    field = header[148:156]
    try:
        stored = _parse_octal(field)
    except ShardFormatError:
        return False
    # The checksum field counts as eight spaces in its own sum.
    return stored == sum(header) - sum(field) + 8 * 32


def header_error(header: bytes, pos: int, source: str, why: str) -> ShardFormatError:
    """The error for a header that cannot be parsed: names the shard, the byte and the fix."""
    if pos == 0 and header[257:262] != b"ustar" and not _checksum_ok(header):
        return ShardFormatError(
            f"{source}: not a tar archive (no valid tar header at byte 0: {why}); an error page "
            "or a partial download saved in place of the shard looks like this: re-download or "
            "rebuild this shard"
        )
    return ShardFormatError(
        f"{source}: corrupt tar header at byte {pos} ({why}); re-download or rebuild this shard"
    )


def _fault(header: bytes, pos: int, source: str, why: str) -> ShardFormatError:
    # A damaged header usually fails to parse before its checksum is looked at: say so.
    return header_error(header, pos, source, "checksum mismatch" if not _checksum_ok(header) else why)


def parse_header(header: bytes, pos: int, source: str, *, check: bool = True) -> tuple[bytes, int, int]:
    """(typeflag, size, stored checksum) of the 512-byte header at byte ``pos``.

    ``check``: verify the checksum now; the buffer reader passes False and verifies
    all checksums of its block at once (:func:`_verify_checksums`).
    """
    if check and not _checksum_ok(header):
        raise header_error(header, pos, source, "checksum mismatch")
    try:
        return header[156:157], _parse_octal(header[124:136]), _parse_octal(header[148:156])
    except ShardFormatError as e:
        raise _fault(header, pos, source, str(e)) from None


def member_name(header: bytes, pos: int, source: str) -> str:
    """The name a header holds (ustar prefix joined), decoded as UTF-8."""
    try:
        name = header[:100].split(b"\0", 1)[0].decode("utf-8")
        if header[257:262] == b"ustar" and header[345] != 0:
            name = header[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
    except UnicodeDecodeError as e:
        raise _fault(header, pos, source, str(e)) from None
    return name


def long_name(typeflag: bytes, payload: bytes, header: bytes, pos: int, source: str) -> str | None:
    """The name a GNU long-name (``L``) or pax (``x``) member gives the next member."""
    try:
        if typeflag == b"L":
            return payload.rstrip(b"\0").decode("utf-8")
        if typeflag == b"x":
            for rec in payload.decode("utf-8").split("\n"):
                if " path=" in rec:
                    return rec.split(" path=", 1)[1]
    except UnicodeDecodeError as e:
        raise _fault(header, pos, source, f"long name: {e}") from None
    return None


# ------------------------------------------------------------------- readers


def iter_tar_members(
    f: BinaryIO, *, start: int = 0, source: str = "<stream>", read_data: bool = True
) -> Iterator[tuple[TarMember, memoryview | None]]:
    """Yield ``(member, payload)`` for each regular file in a tar stream, in order.

    Reads strictly sequentially from ``start`` (which must be a header boundary, e.g.
    a sample offset from the index).
    """
    pos = start
    pending_name: str | None = None
    while True:
        header = f.read(BLOCK)
        if not header or header == b"\0" * len(header):
            if header and len(header) < BLOCK:
                raise ShardFormatError(f"{source}: truncated tar header at byte {pos}")
            return  # end of archive (zero block) or clean EOF
        if len(header) < BLOCK:
            raise ShardFormatError(f"{source}: truncated tar header at byte {pos}")
        typeflag, size, _ = parse_header(header, pos, source)
        offset, data_offset = pos, pos + BLOCK
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        pos = data_offset + padded
        if typeflag in _NAME_TYPES:
            payload = f.read(padded)
            if len(payload) < padded:
                raise ShardFormatError(f"{source}: truncated tar member at byte {offset}")
            pending_name = long_name(typeflag, payload[:size], header, offset, source) or pending_name
            continue
        if typeflag not in _FILE_TYPES:
            f.seek(padded, io.SEEK_CUR)  # directories, links: not part of the format
            pending_name = None  # a long name belongs to the header right after it
            continue
        name = pending_name if pending_name is not None else member_name(header, offset, source)
        pending_name = None
        member = TarMember(name=name, offset=offset, data_offset=data_offset, size=size)
        if read_data:
            payload = f.read(padded)
            if len(payload) < size:
                raise ShardFormatError(
                    f"{source}: truncated tar member {name!r} at byte {offset} "
                    f"({len(payload)} of {size} bytes); the shard is incomplete"
                )
            yield member, memoryview(payload)[:size]
        else:
            f.seek(padded, io.SEEK_CUR)
            yield member, None


def iter_buffer_members(
    buf: bytes | memoryview, *, base: int = 0, source: str = "<buffer>"
) -> Iterator[tuple[str, memoryview]]:
    """Yield ``(name, payload)`` for the regular files in an in-memory run of tar members.

    ``buf`` holds whole members read in one block; ``base`` is its offset in the shard,
    for error messages. Payloads are zero-copy views into ``buf``; see :func:`buffer_members`.
    """
    mv = memoryview(buf)
    for name, data, size in buffer_members(mv, base=base, source=source):
        yield name, mv[data : data + size]


def buffer_members(
    buf: bytes | memoryview, *, base: int = 0, source: str = "<buffer>"
) -> list[tuple[str, int, int]]:
    """``(name, payload offset in buf, payload size)`` of the regular files in an in-memory
    run of tar members (GNU long names and pax paths applied).

    All header checksums of the run are verified together, with numpy, before anything is
    returned: per-header checksums in Python were a third of the loader's parsing time.
    """
    mv = memoryview(buf)
    end = len(mv)
    pos = 0
    pending_name: str | None = None
    members: list[tuple[str, int, int]] = []
    positions: list[int] = []
    stored: list[int] = []
    while pos + BLOCK <= end:
        header = bytes(mv[pos : pos + BLOCK])
        if header[0] == 0 and header == _ZERO_BLOCK:
            break
        typeflag, size, checksum = parse_header(header, base + pos, source, check=False)
        positions.append(pos)
        stored.append(checksum)
        data = pos + BLOCK
        if data + size > end:
            if not _checksum_ok(header):  # a damaged size field, not a short file
                raise header_error(header, base + pos, source, "checksum mismatch")
            raise ShardFormatError(f"{source}: truncated tar member at byte {base + pos}; the shard is incomplete")
        if typeflag in _NAME_TYPES:
            payload = bytes(mv[data : data + size])
            pending_name = long_name(typeflag, payload, header, base + pos, source) or pending_name
        elif typeflag in _FILE_TYPES:
            if pending_name is None:
                name = member_name(header, base + pos, source)
            else:
                name, pending_name = pending_name, None
            members.append((name, data, size))
        else:
            pending_name = None  # a long name belongs to the header right after it
        pos = data + (size + BLOCK - 1) // BLOCK * BLOCK
    else:
        if pos < end:
            raise ShardFormatError(f"{source}: truncated tar header at byte {base + pos}")
    _verify_checksums(mv, positions, stored, base, source)
    return members


def members_end(buf: bytes | memoryview, pos: int, source: str = "<buffer>") -> int:
    """Where the members starting at ``pos`` in ``buf`` end: the offset of the first
    end-of-archive (zero) block after them, or of the end of ``buf``. Walks the headers'
    sizes only; used to find the last sample's bytes (its crc32 span)."""
    mv = memoryview(buf)
    end = len(mv)
    while pos + BLOCK <= end:
        header = bytes(mv[pos : pos + BLOCK])
        if header == _ZERO_BLOCK:
            return pos
        _, size, _ = parse_header(header, pos, source, check=False)
        pos += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
    return min(pos, end)


def _verify_checksums(mv: memoryview, positions: list[int], stored: list[int], base: int, source: str) -> None:
    if not positions:
        return
    raw = np.frombuffer(mv, dtype=np.uint8)
    pos = np.asarray(positions, dtype=np.int64)
    headers = raw[pos[:, None] + _OFFSETS]
    # The checksum field counts as eight spaces in its own sum.
    computed = headers.sum(axis=1, dtype=np.int64) - headers[:, _CHKSUM_FIELD].sum(axis=1, dtype=np.int64) + 256
    bad = np.flatnonzero(computed != np.asarray(stored, dtype=np.int64))
    if len(bad):
        raise ShardFormatError(
            f"{source}: corrupt tar header at byte {base + positions[bad[0]]} (checksum mismatch); "
            "re-download or rebuild this shard"
        )
