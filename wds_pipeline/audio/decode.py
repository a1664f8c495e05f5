"""Decoding audio files: libsndfile (soundfile) first, the dr_flac fast path for whole 16-bit
FLAC files, PyAV (FFmpeg) for MP3 and whatever libsndfile cannot open.

Decoding goes through libsndfile (soundfile) first: WAV/FLAC/OGG etc. are read with a seek to
the offset and only the frames asked for. MP3 and anything libsndfile cannot open (M4A/AAC/MP4,
WebM, ...) go through PyAV (FFmpeg): libsndfile 1.2.2 returns wrong MP3 samples after a seek or
after the first read call.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import soundfile as sf

from . import headers as audio_headers
from .errors import AudioDecodeError, Source
from .flac import decode_flac_int16
from .pyav import as_file, probe_pyav, read_pyav
from .window import check_declared, frames_wanted, past_end, validate_window


def _source_name(src: Source, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return os.fspath(src)


def _head(src: Source, n: int = 512) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:n])
    with open(src, "rb") as f:
        return f.read(n)


def _sniff(head: bytes) -> str | None:
    """Container named by the magic bytes, for error messages only."""
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"OggS"):
        return "OGG"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)


def _check_source(src: Source, name: str) -> None:
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise AudioDecodeError(
                name, "zero-byte input (empty bytes; re-read or re-download the file)"
            )
        return
    path = os.fspath(src)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such audio file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, expected an audio file")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(
            name, "zero-byte file (an interrupted copy? re-copy it or drop it from the corpus)"
        )


def _unreadable(
    src: Source, name: str, sf_err: Exception | None, av_err: Exception | None
) -> AudioDecodeError:
    head = _head(src)
    kind = _sniff(head)
    if kind is not None:
        return AudioDecodeError(
            name,
            f"truncated or corrupt {kind} (header present but neither libsndfile nor FFmpeg "
            "can decode it: "
            f"{sf_err}; {av_err}); re-create or drop the file",
        )
    if _looks_like_text(head):
        return AudioDecodeError(
            name, "not a readable audio file (text file?); check what was saved under this name"
        )
    return AudioDecodeError(
        name,
        f"not a readable audio file (unrecognised format; libsndfile: {sf_err}; FFmpeg: {av_err})",
    )


def _read_soundfile(
    f: sf.SoundFile, name: str, offset: float, duration: float | None, dtype: str = "float32"
) -> tuple[np.ndarray, int]:
    sr = f.samplerate
    total = f.frames
    start, count = frames_wanted(sr, offset, duration)
    if start >= total > 0:
        raise past_end(name, offset, total / sr)
    n = max(0, total - start if count is None else min(count, total - start))
    try:
        if start:
            f.seek(start)
        # int16 only from integer PCM: libsndfile would wrap float samples beyond +-1.0.
        if dtype == "int16" and not str(f.subtype).startswith("PCM"):
            dtype = "float32"
        data = f.read(n, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioDecodeError(
            name, f"truncated or corrupt {f.format} ({e}); re-create or drop the file"
        ) from e
    # The header's frame count is exact for the formats read here (MP3 goes to PyAV), so a short
    # read means a truncated file.
    if len(data) < n:
        raise AudioDecodeError(
            name,
            f"truncated {f.format}: header says {total} frames, "
            f"only {start + len(data)} decodable; "
            "re-create or drop the file",
        )
    return data, sr


def decode_audio(
    src: Source,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    name: str | None = None,
    dtype: Literal["float32", "int16"] = "float32",
) -> tuple[np.ndarray, int]:
    """Decode ``src`` (a path, or the raw bytes of a file) to float32 ``(frames, channels)`` in
    [-1, 1] at the file's own sample rate.

    ``dtype="int16"`` returns int16 straight from the decoder where the file holds integer
    PCM (WAV/FLAC/OGG via libsndfile; whole 16-bit FLAC files via dr_flac, see
    :func:`decode_flac_int16`): about 20% cheaper than float32 and exact for 16-bit
    sources. Other files still come back as float32; callers check the dtype.

    ``offset``/``duration`` (seconds) select a segment; libsndfile formats seek and read only that
    segment, PyAV seeks to the nearest keyframe before it. ``duration=None`` reads to the end.
    ``name`` is used in error messages (useful for bytes; defaults to the path).

    Raises :class:`AudioDecodeError` for zero-byte input, unreadable/text files, truncated files
    (a truncation past the segment read is only detected when that part is read), an offset past
    the end, or a decoded length of 0; ``FileNotFoundError`` for a missing path.
    """
    label = _source_name(src, name)
    validate_window(offset, duration)
    _check_source(src, label)

    fast = decode_flac_int16(src, offset, duration, dtype)
    if fast is not None:
        return fast

    sf_err: Exception | None = None
    data: np.ndarray | None = None
    try:
        f = sf.SoundFile(as_file(src))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        sf_err = e
    else:
        with f:
            # libsndfile 1.2's MP3 support estimates the frame count (libsndfile#1001) and
            # returns wrong samples after a seek or a second read call, so MP3 goes to FFmpeg.
            if f.format != "MP3":
                if f.format == "WAV":
                    check_declared(audio_headers.wav_frames(src), f.samplerate, label,
                                    offset, duration, slack=0)
                data, sr = _read_soundfile(f, label, offset, duration, dtype)

    if data is None:
        import av

        try:
            data, sr = read_pyav(src, label, offset, duration)
        except AudioDecodeError:
            raise
        except (av.error.FFmpegError, OSError) as av_err:
            raise _unreadable(src, label, sf_err, av_err) from av_err

    if data.shape[0] == 0:
        raise AudioDecodeError(
            label, "decoded length is 0 samples (an empty recording?); drop the file"
        )
    if data.dtype != np.int16:
        data = np.ascontiguousarray(data, dtype=np.float32)
    return data, int(sr)


def probe_duration(src: Source, *, name: str | None = None) -> float:
    """Duration in seconds, from the header when possible (libsndfile formats; MP4 and most FFmpeg
    containers), decoding only when the container does not declare a length.

    A truncated file whose header is intact reports the header's duration; :func:`decode_audio`
    is what detects the truncation.
    """
    label = _source_name(src, name)
    _check_source(src, label)
    try:
        info = sf.info(as_file(src))
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_err:
        import av

        try:
            return probe_pyav(src, label)
        except AudioDecodeError:
            raise
        except (av.error.FFmpegError, OSError) as av_err:
            raise _unreadable(src, label, sf_err, av_err) from av_err
    if info.format == "MP3":
        return probe_pyav(src, label)  # libsndfile's MP3 frame count is an estimate
    if info.samplerate <= 0:
        raise AudioDecodeError(label, "header has no sample rate; the file is corrupt")
    return info.frames / info.samplerate
