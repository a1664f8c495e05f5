"""Fast FLAC field decoding with dr_flac (from ``miniaudio``), imported on first use.

Only what the read path needs: bytes of a whole 16-bit FLAC file to int16 samples.
No resampler and no other decoder backend is loaded by this module.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["decode_flac_bytes", "dr_flac_available"]

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
    if backend is None or bytes(data[:4]) != b"fLaC":
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
