"""The dr_flac fast path (from ``miniaudio``) for whole 16-bit FLAC files."""

from __future__ import annotations

import os

import numpy as np

from .errors import Source

try:  # dr_flac: the fast whole-file FLAC decoder (see decode_flac_int16); optional
    import miniaudio as _miniaudio
except ImportError:  # pragma: no cover - a core dependency, but decoding works without it
    _miniaudio = None


def _dr_flac_lib():
    lib = getattr(_miniaudio, "lib", None)
    needed = ("ma_dr_flac_open_memory", "ma_dr_flac_read_pcm_frames_s16", "ma_dr_flac_close")
    return lib if lib is not None and all(hasattr(lib, n) for n in needed) else None


# Resolved once at import and never changed: which dr_flac entry points the installed miniaudio
# exports (a property of the installation, not state; None sends every file to libsndfile).
_DR_FLAC = _dr_flac_lib()


def decode_flac_int16(
    src: Source, offset: float, duration: float | None, dtype: str
) -> tuple[np.ndarray, int] | None:
    """A whole 16-bit FLAC file -> (int16 ``(frames, channels)``, rate) with dr_flac (from
    ``miniaudio``), or ``None`` to let libsndfile read it.

    FLAC decoding is most of the builder's CPU, and dr_flac decodes these files ~35% faster
    than libsndfile does, bit-identical (FLAC is lossless), straight into the numpy array.
    dr_flac drops a frame that fails its CRC and stops early on a truncated file, so a
    result shorter than the header's frame count is thrown away: libsndfile then reads the
    file and reports the fault with its usual message.
    """
    if _DR_FLAC is None or dtype != "int16" or offset or duration is not None:
        return None
    ffi = _miniaudio.ffi
    if not isinstance(src, (bytes, bytearray, memoryview)):
        path = os.fspath(src)
        if not path.lower().endswith(".flac"):
            return None
        # One read call: dr_flac's own file reader makes a 4 KB read (and seeks) per frame.
        try:
            with open(path, "rb") as f:
                src = f.read()
        except OSError:
            return None  # the libsndfile path raises the usual error for it
    if bytes(src[:4]) != b"fLaC":
        return None
    keep = ffi.from_buffer(src)  # must outlive the decoder, which reads from it
    flac = _DR_FLAC.ma_dr_flac_open_memory(keep, len(keep), ffi.NULL)
    if flac == ffi.NULL:
        return None
    try:
        total, channels = flac.totalPCMFrameCount, flac.channels
        if flac.bitsPerSample != 16 or total <= 0 or channels <= 0:
            return None
        out = np.empty((total, channels), dtype=np.int16)
        got = _DR_FLAC.ma_dr_flac_read_pcm_frames_s16(
            flac, total, ffi.cast("ma_dr_flac_int16 *", ffi.from_buffer(out))
        )
        return (out, int(flac.sampleRate)) if got == total else None
    finally:
        _DR_FLAC.ma_dr_flac_close(flac)
