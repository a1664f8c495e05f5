"""Audio and text file writers for the synthetic corpora (deterministic bytes)."""

from __future__ import annotations

import os

import numpy as np


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_soundfile(path: str, pcm: np.ndarray, sr: int, fmt: str) -> None:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, pcm, sr, format=fmt, subtype="PCM_16")


def write_m4a(path: str, pcm: np.ndarray, sr: int) -> None:
    """AAC in an M4A (``ipod`` muxer) like VoxCeleb2; ``bitexact`` keeps version strings out."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w", format="ipod", options={"fflags": "+bitexact"}) as container:
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


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
