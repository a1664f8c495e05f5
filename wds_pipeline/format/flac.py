"""Fast FLAC field decoding with dr_flac (from ``miniaudio``), imported on first use.

Only what the read path needs: bytes of a whole 16-bit FLAC file to int16 samples
(:func:`decode_flac_field`), libsndfile for what dr_flac does not take and for the
verdict on a damaged field. No resampler and no other decoder backend is loaded here.

Speed (``benchmarks/flac_decode.py``, one core): ~180 MB/s of int16 out on 3-4 s clips,
2x libsndfile/libFLAC and 1.1x miniaudio's own dr_flac call, so one loader worker decodes
FLAC ~9x faster than its half of a 20 MB/s link brings it in.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

from ..errors import ShardFormatError

__all__ = ["FLAC_MAGIC", "decode_flac_bytes", "decode_flac_field", "dr_flac_available"]

FLAC_MAGIC = b"fLaC"  # the first four bytes of every FLAC stream

_NEEDED = ("ma_dr_flac_open_memory", "ma_dr_flac_read_pcm_frames_s16", "ma_dr_flac_close")


@functools.cache
def _dr_flac() -> tuple[Any, Any] | None:
    """(ffi, lib) of miniaudio's dr_flac, or None when it is not installed."""
    try:
        import miniaudio
    except ImportError:  # a core dependency, but decoding works without it (libsndfile)
        return None
    lib = getattr(miniaudio, "lib", None)
    if lib is None or not all(hasattr(lib, n) for n in _NEEDED):
        return None
    return miniaudio.ffi, lib


def dr_flac_available() -> bool:
    """Whether the installed miniaudio exports dr_flac (else libsndfile reads every FLAC)."""
    return _dr_flac() is not None


def decode_flac_bytes(data: bytes | bytearray | memoryview) -> tuple[np.ndarray, int] | None:
    """The bytes of a whole 16-bit FLAC file -> (int16 ``(frames, channels)``, rate), or
    ``None`` to let libsndfile read it (no dr_flac, not 16-bit, or a short decode).

    dr_flac drops a frame that fails its CRC and stops early on a truncated file, so a
    result shorter than the header's frame count is thrown away: libsndfile then reads
    the data and reports the fault with its usual message.
    """
    backend = _dr_flac()
    if backend is None or bytes(data[:4]) != FLAC_MAGIC:
        return None
    ffi, lib = backend
    keep = ffi.from_buffer(data)  # must outlive the decoder, which reads from it
    flac = lib.ma_dr_flac_open_memory(keep, len(keep), ffi.NULL)
    if flac == ffi.NULL:
        return None
    try:
        total, channels = flac.totalPCMFrameCount, flac.channels
        if flac.bitsPerSample != 16 or total <= 0 or channels <= 0:
            return None
        out = np.empty((total, channels), dtype=np.int16)
        got = lib.ma_dr_flac_read_pcm_frames_s16(
            flac, total, ffi.cast("ma_dr_flac_int16 *", ffi.from_buffer(out))
        )
        return (out, int(flac.sampleRate)) if got == total else None
    finally:
        lib.ma_dr_flac_close(flac)


def decode_flac_field(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A FLAC field (a whole 16-bit file) -> int16 samples: 1-D for mono, else
    ``(frames, channels)``. dr_flac decodes it; libsndfile reads what dr_flac does not take
    (not 16-bit) and gives the reason a damaged field fails.

    Raises :class:`ShardFormatError` for a field that is not FLAC, or is truncated or
    corrupt (the loader adds the shard and the sample's key).
    """
    fast = decode_flac_bytes(data)
    if fast is not None:
        pcm = fast[0]
        return pcm[:, 0] if pcm.shape[1] == 1 else pcm
    head = bytes(data[:4])
    if head != FLAC_MAGIC:
        raise ShardFormatError(f"FLAC field of {len(data)} bytes does not start with {FLAC_MAGIC!r} "
                               f"(it starts with {head!r}): not a FLAC stream")
    import soundfile as sf

    try:
        pcm, _ = sf.read(io.BytesIO(bytes(data)), dtype="int16", always_2d=False)
    except sf.LibsndfileError as e:
        raise ShardFormatError(f"FLAC field of {len(data)} bytes does not decode (libsndfile: "
                               f"{e.error_string.rstrip('.')}): it is truncated or corrupt") from e
    return pcm
