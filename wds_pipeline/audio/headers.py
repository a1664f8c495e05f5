"""Lengths that audio containers declare in their headers, read without decoding.

Decoders do not report truncation for every container: libsndfile shrinks a WAV's
frame count to the data actually on disk, and FFmpeg decodes a cut MP3 to its last
whole frame. Comparing the header's declared length with the data present is the
only way to tell a cut file from a short recording.
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

_NOT_DECLARED = (0, 0xFFFFFFFF)  # streaming writers leave the data size unset


def _open(src: str | os.PathLike | bytes | bytearray | memoryview) -> BinaryIO:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src))
    return open(os.fspath(src), "rb")


def _size(f: BinaryIO) -> int:
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end


def wav_frames(src: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(declared, present)`` frames of a RIFF/WAVE file's data chunk, or None when the
    file is not a plain RIFF WAV or leaves the data size unset."""
    with _open(src) as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        file_size = _size(f)
        block_align = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = f.read(size + (size & 1))
                if len(body) < 14:
                    return None
                block_align = struct.unpack("<H", body[12:14])[0]
            elif cid == b"data":
                if size in _NOT_DECLARED or block_align == 0:
                    return None
                present = min(size, file_size - f.tell())
                return size // block_align, present // block_align
            else:
                f.seek(size + (size & 1), io.SEEK_CUR)



def _id3v2_size(head: bytes) -> int:
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | (b & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def mp3_frames(src: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(declared samples, samples per MPEG frame)`` from the Xing/Info header of an MP3
    (as LAME and libsndfile write it), minus the LAME tag's encoder delay and padding;
    None for a file without one (plain CBR MP3 declares no length)."""
    with _open(src) as f:
        start = _id3v2_size(f.read(10))
        f.seek(start)
        frame = f.read(512)
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return None
    version = (frame[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = (frame[1] >> 1) & 3  # 1: Layer III, 2: Layer II, 3: Layer I
    if version == 1 or layer == 0:
        return None
    spf = {3: 384, 2: 1152}.get(layer, 1152 if version == 3 else 576)
    for tag in (b"Xing", b"Info"):
        i = frame.find(tag, 4, 64)
        if i >= 0:
            break
    else:
        return None
    flags = struct.unpack(">I", frame[i + 4 : i + 8])[0]
    if not flags & 1:
        return None
    frames = struct.unpack(">I", frame[i + 8 : i + 12])[0]
    p = i + 12 + (4 if flags & 2 else 0) + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
    delay = padding = 0
    if frame[p : p + 4] == b"LAME" and len(frame) >= p + 24:
        d = frame[p + 21 : p + 24]
        delay, padding = (d[0] << 4) | (d[1] >> 4), ((d[1] & 0x0F) << 8) | d[2]
    return max(0, frames * spf - delay - padding), spf
