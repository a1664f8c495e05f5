"""Shard format v1: sample keys, field encodings and reproducible tar members.

The full specification is in ``docs/format.md``. In short, a shard is a POSIX tar
whose members are ``<key>.<field>``; one sample per utterance; keys contain no dots
(webdataset, wids and HF datasets all end the key at the first dot).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np

FORMAT_VERSION = 1

AUDIO_NPY = "audio.npy"
AUDIO_NPY_ZST = "audio.npy.zst"
AUDIO_FLAC = "audio.flac"
FBANK = "fbank.npy"
FBANK_ZST = "fbank.npy.zst"
JSON = "json"
CLS = "cls"
AUDIO_FIELDS = (AUDIO_NPY, AUDIO_NPY_ZST, AUDIO_FLAC)
FBANK_FIELDS = (FBANK, FBANK_ZST)

AudioCodec = Literal["npy", "flac"]
Compression = Literal["none", "zstd"]

BLOCK = 512  # tar block size

# Fixed tar header values so that the same input always gives the same bytes.
TAR_MTIME = 0
TAR_MODE = 0o644

_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
MAX_KEY_LENGTH = 80  # keeps "<key>.<field>" within a plain ustar name (100 bytes)


class ShardFormatError(ValueError):
    """A shard is truncated, corrupt, or not in the expected format."""


def make_key(*parts: str) -> str:
    """Build a sample key from id parts: characters other than [A-Za-z0-9_-] become '_'.

    Dots are the reason this exists: ``spk.utt`` would be split at the dot by every
    webdataset reader and silently merged with other samples.
    """
    key = "-".join(_KEY_BAD_CHARS.sub("_", p) for p in parts if p != "")
    validate_key(key)
    return key


def validate_key(key: str) -> None:
    if not key or not _KEY_OK.match(key):
        raise ValueError(
            f"invalid sample key {key!r}: keys may hold only letters, digits, '_' and '-' "
            "(a dot would split the sample in webdataset/HF readers); build keys with make_key()"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"sample key {key!r} is longer than {MAX_KEY_LENGTH} characters")


def audio_field(codec: AudioCodec, compression: Compression) -> str:
    if codec == "flac":
        if compression != "none":
            raise ValueError("--compress zstd applies to npy audio only; FLAC is already compressed")
        return AUDIO_FLAC
    return AUDIO_NPY_ZST if compression == "zstd" else AUDIO_NPY


# ---------------------------------------------------------------------------
# Field encoders / decoders


def encode_npy(array: np.ndarray) -> bytearray:
    """``np.save`` bytes of ``array`` (format 1.0), built with one copy of the data."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays are not stored: .npy fields are read with allow_pickle=False")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    head = header.getvalue()
    out = bytearray(len(head) + array.nbytes)
    out[: len(head)] = head
    if array.nbytes:
        out[len(head) :] = memoryview(array).cast("B")
    return out


_NPY_HEADER_CACHE: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}


def decode_npy(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode ``.npy`` bytes without pickle; returns a read-only view when possible.

    The header of an npy file is small and repeats across samples of a dataset (only
    the shape differs), so parsing it by hand is several times faster than np.load.
    """
    mv = memoryview(data)
    if bytes(mv[:6]) != b"\x93NUMPY":
        raise ShardFormatError("not an .npy payload (bad magic)")
    major = mv[6]
    if major == 1:
        hlen = int.from_bytes(mv[8:10], "little")
        start = 10
    elif major in (2, 3):
        hlen = int.from_bytes(mv[8:12], "little")
        start = 12
    else:
        raise ShardFormatError(f"unsupported .npy version {major}")
    header = bytes(mv[start : start + hlen])
    parsed = _NPY_HEADER_CACHE.get(header)
    if parsed is None:
        import ast

        meta = ast.literal_eval(header.decode("latin1"))
        dtype = np.dtype(meta["descr"])
        if dtype.hasobject:
            raise ShardFormatError("object arrays are refused (they would need pickle)")
        parsed = (dtype, tuple(meta["shape"]), bool(meta["fortran_order"]), start + hlen)
        if len(_NPY_HEADER_CACHE) < 4096:
            _NPY_HEADER_CACHE[header] = parsed
    dtype, shape, fortran, offset = parsed
    count = int(np.prod(shape)) if shape else 1
    need = offset + count * dtype.itemsize
    if len(mv) < need:
        raise ShardFormatError(f".npy payload truncated: {len(mv)} bytes, header needs {need}")
    arr = np.frombuffer(mv, dtype=dtype, count=count, offset=offset)
    if fortran:
        return arr.reshape(shape[::-1]).T
    return arr.reshape(shape)


def zstd_compress(data: bytes, level: int = 3) -> bytes:
    import zstandard

    # Content size in the frame lets the reader decompress in one call.
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def zstd_decompress(data: bytes | memoryview) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


def encode_flac(pcm_int16: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm_int16, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes | memoryview) -> np.ndarray:
    import soundfile as sf

    from .audio import decode_flac_int16

    fast = decode_flac_int16(data, 0.0, None, "int16")  # dr_flac; None if it cannot
    if fast is not None and fast[0].shape[1] == 1:
        return fast[0][:, 0]
    # libsndfile: other layouts, and the error for a truncated or corrupt field
    pcm, _ = sf.read(io.BytesIO(bytes(data)), dtype="int16", always_2d=False)
    return pcm


def encode_audio(pcm_int16: np.ndarray, sample_rate: int, field: str) -> bytes:
    if pcm_int16.dtype != np.int16 or pcm_int16.ndim != 1:
        raise ValueError("audio must be mono int16 (1-D) before encoding")
    if field == AUDIO_NPY:
        return encode_npy(pcm_int16)
    if field == AUDIO_NPY_ZST:
        return zstd_compress(encode_npy(pcm_int16))
    if field == AUDIO_FLAC:
        return encode_flac(pcm_int16, sample_rate)
    raise ValueError(f"unknown audio field {field!r}; expected one of {AUDIO_FIELDS}")


def decode_field(field: str, data: bytes | memoryview):
    """Decode one member payload by its field name (the part of the name after the key)."""
    if field in (AUDIO_NPY, FBANK):
        return decode_npy(data)
    if field in (AUDIO_NPY_ZST, FBANK_ZST):
        return decode_npy(zstd_decompress(data))
    if field == AUDIO_FLAC:
        return decode_flac(data)
    if field == JSON:
        return json.loads(bytes(data))
    if field == CLS:
        return int(bytes(data).decode("ascii").strip())
    if field == "txt":
        return bytes(data).decode("utf-8")
    raise ShardFormatError(f"no decoder for field {field!r}")


def encode_json(meta: dict) -> bytes:
    # sort_keys + fixed separators: same metadata, same bytes.
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_cls(label: int) -> bytes:
    return str(int(label)).encode("ascii")


# ---------------------------------------------------------------------------
# Writing


def sample_members(key: str, fields: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Order a sample's fields canonically (sorted by field name) as tar members."""
    validate_key(key)
    return [(f"{key}.{name}", fields[name]) for name in sorted(fields)]


class ReproducibleTarWriter:
    """Writes tar members with fixed metadata so identical input gives identical bytes.

    Wraps a binary file object it does not own: the caller opens, finalises and
    closes it (see :mod:`wds_pipeline.storage`). Tracks the byte offset of every
    sample so readers can seek to a sample range without scanning.

    The bytes are those :mod:`tarfile` writes in GNU format (headers from
    ``TarInfo.tobuf``, NUL padding, two end blocks, records of 10 KiB); payloads go
    to the file object in one ``write`` each instead of tarfile's 16 KiB copy loop,
    which was a visible share of the builder's time.
    """

    def __init__(self, fileobj: BinaryIO):
        self._f = fileobj
        self.offset = 0
        self.sample_offsets: list[int] = []
        self.nsamples = 0

    def _write(self, data) -> None:
        self._f.write(data)
        self.offset += len(data)

    def write_sample(self, key: str, fields: dict[str, bytes]) -> None:
        self.sample_offsets.append(self.offset)
        for name, payload in sample_members(key, fields):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = TAR_MTIME
            info.mode = TAR_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
            self._write(payload)
            if len(payload) % BLOCK:
                self._write(bytes(BLOCK - len(payload) % BLOCK))
        self.nsamples += 1

    def close(self) -> None:
        """Write the end-of-archive blocks; leaves the file object open."""
        self._write(bytes(2 * BLOCK))
        if self.offset % tarfile.RECORDSIZE:
            self._write(bytes(tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))


# ---------------------------------------------------------------------------
# Reading: a minimal, fast tar member scanner (plain files only)

@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # offset of the header block
    data_offset: int
    size: int


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


def _parse_header(header: bytes, pos: int, source: str) -> tuple[bytes, int, str]:
    """(typeflag, size, name) of one 512-byte header; raises on a corrupt header."""
    if not _checksum_ok(header):
        raise header_error(header, pos, source, "checksum mismatch")
    try:
        name = header[0:100].rstrip(b"\0").decode("utf-8")
        if header[257:262] == b"ustar":
            prefix = header[345:500].rstrip(b"\0")
            if prefix:
                name = prefix.decode("utf-8") + "/" + name
        return header[156:157], _parse_octal(header[124:136]), name
    except (ShardFormatError, UnicodeDecodeError) as e:
        raise header_error(header, pos, source, str(e)) from None


def _long_name(typeflag: bytes, payload: bytes) -> str | None:
    if typeflag == b"L":
        return payload.rstrip(b"\0").decode("utf-8")
    if typeflag == b"x":
        for rec in payload.decode("utf-8").split("\n"):
            if " path=" in rec:
                return rec.split(" path=", 1)[1]
    return None


_FILE_TYPES = (b"0", b"\0", b"7")
_NAME_TYPES = (b"L", b"x", b"g")


def iter_tar_members(
    f: BinaryIO, *, start: int = 0, source: str = "<stream>", read_data: bool = True
) -> Iterator[tuple[TarMember, memoryview | None]]:
    """Yield ``(member, payload)`` for each regular file in a tar stream, in order.

    Reads strictly sequentially from ``start`` (which must be a header boundary, e.g.
    a sample offset from the index). Raises :class:`ShardFormatError` naming
    ``source`` on a bad checksum or a truncated member: a partial download must never
    look like a shorter shard.
    """
    pos = start
    long_name: str | None = None
    while True:
        header = f.read(BLOCK)
        if not header or header == b"\0" * len(header):
            if header and len(header) < BLOCK:
                raise ShardFormatError(f"{source}: truncated tar header at byte {pos}")
            return  # end of archive (zero block) or clean EOF
        if len(header) < BLOCK:
            raise ShardFormatError(f"{source}: truncated tar header at byte {pos}")
        typeflag, size, name = _parse_header(header, pos, source)
        data_offset = pos + BLOCK
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        pos = data_offset + padded
        if typeflag in _NAME_TYPES:
            payload = f.read(padded)
            if len(payload) < padded:
                raise ShardFormatError(f"{source}: truncated tar member at byte {data_offset - BLOCK}")
            try:
                long_name = _long_name(typeflag, payload[:size]) or long_name
            except UnicodeDecodeError as e:
                raise header_error(header, data_offset - BLOCK, source, f"long name: {e}") from None
            continue
        if long_name is not None:
            name, long_name = long_name, None
        member = TarMember(name=name, offset=data_offset - BLOCK, data_offset=data_offset, size=size)
        if typeflag not in _FILE_TYPES:
            f.seek(padded, io.SEEK_CUR)  # directories, links: not part of the format
        elif read_data:
            payload = f.read(padded)
            if len(payload) < size:
                raise ShardFormatError(
                    f"{source}: truncated tar member {name!r} at byte {member.offset} "
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

    ``buf`` holds whole members read in one block (the loader reads a span of samples
    at once using the index's offsets); ``base`` is its offset in the shard, for error
    messages. Payloads are zero-copy views into ``buf``. All header checksums of the
    block are verified together, with numpy, before anything is yielded: per-header
    checksums in Python were a third of the loader's parsing time.
    """
    mv = memoryview(buf)
    end = len(mv)
    pos = 0
    long_name: str | None = None
    members: list[tuple[str, int, int]] = []
    positions: list[int] = []
    stored: list[int] = []
    while pos + BLOCK <= end:
        header = bytes(mv[pos : pos + BLOCK])
        if header[0] == 0 and header == _ZERO_BLOCK:
            break
        positions.append(pos)
        data = pos + BLOCK
        try:
            stored.append(_parse_octal(header[148:156]))
            size = _parse_octal(header[124:136])
            if data + size > end and not _checksum_ok(header):
                raise ShardFormatError("checksum mismatch")  # a damaged size field, not a short file
            typeflag = header[156:157]
            name = None
            if typeflag in _NAME_TYPES and data + size <= end:
                long_name = _long_name(typeflag, bytes(mv[data : data + size])) or long_name
            elif typeflag in _FILE_TYPES and long_name is None:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8")
                if header[257:262] == b"ustar" and header[345] != 0:
                    name = header[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
        except (ShardFormatError, UnicodeDecodeError) as e:
            why = "checksum mismatch" if not _checksum_ok(header) else str(e)
            raise header_error(header, base + pos, source, why) from None
        if data + size > end:
            raise ShardFormatError(f"{source}: truncated tar member at byte {base + pos}; the shard is incomplete")
        if typeflag in _FILE_TYPES:
            if long_name is not None:
                name, long_name = long_name, None
            members.append((name, data, size))
        pos = data + (size + BLOCK - 1) // BLOCK * BLOCK
    else:
        if pos < end:
            raise ShardFormatError(f"{source}: truncated tar header at byte {base + pos}")
    _verify_checksums(mv, positions, stored, base, source)
    for name, data, size in members:
        yield name, mv[data : data + size]


_ZERO_BLOCK = b"\0" * BLOCK
_OFFSETS = np.arange(BLOCK)
_CHKSUM_FIELD = np.arange(148, 156)


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


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.audio.npy`` -> (``dir/key``, ``audio.npy``): the key ends at the first dot."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def group_samples(
    members: Iterator[tuple[str, memoryview]],
) -> Iterator[tuple[str, dict[str, memoryview]]]:
    """Group consecutive ``(name, payload)`` members by key into samples."""
    key: str | None = None
    fields: dict[str, memoryview] = {}
    for name, payload in members:
        k, field = split_member_name(name)
        if k != key:
            if key is not None:
                yield key, fields
            key, fields = k, {}
        fields[field] = payload
    if key is not None:
        yield key, fields


def iter_samples(
    f: BinaryIO, *, start: int = 0, source: str = "<stream>", limit: int | None = None
) -> Iterator[tuple[str, dict[str, memoryview]]]:
    """Read ``(key, {field: payload})`` samples from a tar stream, at most ``limit``."""
    members = ((m.name, p) for m, p in iter_tar_members(f, start=start, source=source))
    for n, sample in enumerate(group_samples(members)):  # type: ignore[arg-type]
        if limit is not None and n >= limit:
            return
        yield sample
