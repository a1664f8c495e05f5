"""Audio and text file writers for the synthetic corpora (deterministic bytes).

Each file is encoded in memory and written with ``storage.write_bytes_atomic`` (every
byte checked, renamed into place), like every other write of the package. Without the
fsync (``durable=False``): these are scratch corpora, regenerated at will, and an fsync
per file would dominate writing thousands of small files.
"""

from __future__ import annotations

import io

import numpy as np

from .. import storage


def _publish(path: str, data: bytes) -> None:
    storage.write_bytes_atomic(path, data, durable=False)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_soundfile(path: str, pcm: np.ndarray, sr: int, fmt: str) -> None:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, sr, format=fmt, subtype="PCM_16")
    _publish(path, buf.getvalue())


def write_m4a(path: str, pcm: np.ndarray, sr: int) -> None:
    """AAC in an M4A (``ipod`` muxer) like VoxCeleb2; ``bitexact`` keeps version strings out."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ipod", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(
            "aac", rate=sr, options={"flags": "+bitexact", "aac_coder": "fast"}
        )
        stream.layout = "mono"
        stream.bit_rate = 64000
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sr
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    _publish(path, buf.getvalue())


def write_text(path: str, text: str) -> None:
    _publish(path, text.encode("utf-8"))
