"""Field codecs: the bytes of each member of a sample, and back.

npy (without pickle), npy + zstd, FLAC (16-bit mono), JSON metadata and class labels.
Optional backends (zstandard, soundfile, dr_flac) are imported on first use.
"""

from __future__ import annotations

import functools
import io
import json
import math
from typing import Any

import numpy as np

from ..errors import ShardFormatError
from . import keys as k
from .flac import decode_flac_field
from .keys import Payload


def encode_npy(array: np.ndarray) -> bytearray:
    """``np.save`` bytes of ``array`` (format 1.0), built with one copy of the data."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays are not stored: .npy fields are read with allow_pickle=False")
    head = _npy_save_header(array.dtype, array.shape)
    out = bytearray(len(head) + array.nbytes)
    out[: len(head)] = head
    if array.nbytes:
        out[len(head) :] = memoryview(array).cast("B")  # type: ignore[arg-type]
    return out


@functools.lru_cache(maxsize=1024)
def _npy_save_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The header ``np.save`` writes for a C-contiguous array: numpy builds it (so the
    bytes follow its version), once per dtype and shape; fixed-length clips share one.
    That took as long as copying a 3 s clip's samples."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"shape": shape, "fortran_order": False,
                                                  "descr": np.lib.format.dtype_to_descr(dtype)})
    return header.getvalue()


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes, start: int) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran order, data offset) of an npy header dict. The header
    repeats across samples of a dataset (only the shape differs), hence the cache."""
    import ast

    meta = ast.literal_eval(header.decode("latin1"))
    dtype = np.dtype(meta["descr"])
    if dtype.hasobject:
        raise ShardFormatError("object arrays are refused (they would need pickle)")
    return dtype, tuple(meta["shape"]), bool(meta["fortran_order"]), start + len(header)


def decode_npy(data: Payload) -> np.ndarray:
    """Decode ``.npy`` bytes without pickle; returns a read-only view when possible.

    Parsing the small header by hand (and caching it) is several times faster than
    np.load.
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
    dtype, shape, fortran, offset = _npy_header(bytes(mv[start : start + hlen]), start)
    count = math.prod(shape)  # 1 for a 0-d array; math.prod: np.prod costs ~5 us per call
    need = offset + count * dtype.itemsize
    if len(mv) < need:
        raise ShardFormatError(f".npy payload truncated: {len(mv)} bytes, header needs {need}")
    arr = np.frombuffer(mv, dtype=dtype, count=count, offset=offset)
    if fortran:
        return arr.reshape(shape[::-1]).T
    return arr.reshape(shape)


def zstd_compress(data: Payload, level: int = 3) -> bytes:
    import zstandard

    # Content size in the frame lets the reader decompress in one call.
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def zstd_decompress(data: Payload) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


def encode_flac(pcm_int16: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm_int16, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: Payload) -> np.ndarray:
    return decode_flac_field(data)  # dr_flac, libsndfile for the rest (format/flac.py)


def encode_audio(pcm_int16: np.ndarray, sample_rate: int, field: str) -> Payload:
    if pcm_int16.dtype != np.int16 or pcm_int16.ndim != 1:
        raise ValueError("audio must be mono int16 (1-D) before encoding")
    if field == k.AUDIO_NPY:
        return encode_npy(pcm_int16)
    if field == k.AUDIO_NPY_ZST:
        return zstd_compress(encode_npy(pcm_int16))
    if field == k.AUDIO_FLAC:
        return encode_flac(pcm_int16, sample_rate)
    raise ValueError(f"unknown audio field {field!r}; expected one of {k.AUDIO_FIELDS}")


def decode_field(field: str, data: Payload) -> Any:
    """Decode one member payload by its field name (the part of the name after the key)."""
    if field in (k.AUDIO_NPY, k.FBANK):
        return decode_npy(data)
    if field in (k.AUDIO_NPY_ZST, k.FBANK_ZST):
        return decode_npy(zstd_decompress(data))
    if field == k.AUDIO_FLAC:
        return decode_flac(data)
    if field == k.JSON:
        return json.loads(bytes(data))
    if field == k.CLS:
        return int(bytes(data).decode("ascii").strip())
    if field == "txt":
        return bytes(data).decode("utf-8")
    raise ShardFormatError(f"no decoder for field {field!r}")


def encode_json(meta: dict[str, Any]) -> bytes:
    # sort_keys + fixed separators: same metadata, same bytes.
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_cls(label: int) -> bytes:
    return str(int(label)).encode("ascii")
