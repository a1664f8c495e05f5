"""How raw audio becomes the mono waveform stored in shards: :class:`PreprocessConfig`,
:func:`preprocess` (signal chain) and :func:`load_and_preprocess` (decode + chain + int16)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import soxr

from .decode import decode_audio
from .errors import Source
from .signal import normalize_loudness, normalize_peak, resample, to_int16, to_mono, trim_silence


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw audio becomes the mono waveform stored in shards.

    normalize:
        "none"      leave the gain alone.
        "peak"      scale so the sample peak is ``peak_dbfs`` dBFS.
        "loudness"  scale so the RMS level is ``loudness_dbfs`` dBFS (plain RMS over the whole
                    clip, full scale = 1.0; not ITU-R BS.1770 / LUFS). If that gain would push the
                    peak above ``peak_dbfs``, the gain is reduced so the peak sits at ``peak_dbfs``:
                    we never clip, so quiet-but-peaky clips may end up below the loudness target.
    trim_silence:
        drop leading/trailing frames (20 ms, hop 10 ms) whose RMS is more than ``trim_db`` below
        the loudest frame, keeping ``trim_margin_seconds`` of context on each side.
    chunk_seconds / min_chunk_seconds:
        ignored by ``preprocess`` (kept for callers that cut with :func:`chunk` themselves); the
        builder's chunking is its own option (``WorkerConfig.chunk_seconds``), not these.
    """

    sample_rate: int = 16000
    normalize: Literal["none", "peak", "loudness"] = "none"
    peak_dbfs: float = -1.0
    loudness_dbfs: float = -23.0
    trim_silence: bool = False
    trim_db: float = 40.0
    trim_margin_seconds: float = 0.05
    chunk_seconds: float | None = None
    min_chunk_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(
                f"PreprocessConfig.sample_rate must be a positive int, got {self.sample_rate!r}"
            )
        if self.normalize not in ("none", "peak", "loudness"):
            raise ValueError(
                "PreprocessConfig.normalize must be 'none', 'peak' or 'loudness', "
                f"got {self.normalize!r}"
            )
        if self.peak_dbfs > 0:
            raise ValueError(
                f"PreprocessConfig.peak_dbfs must be <= 0 dBFS (no clipping), got {self.peak_dbfs}"
            )
        if self.trim_db <= 0:
            raise ValueError(f"PreprocessConfig.trim_db must be > 0, got {self.trim_db}")
        if self.trim_margin_seconds < 0:
            raise ValueError(
                f"PreprocessConfig.trim_margin_seconds must be >= 0, got {self.trim_margin_seconds}"
            )
        if self.chunk_seconds is not None and self.chunk_seconds <= 0:
            raise ValueError(
                f"PreprocessConfig.chunk_seconds must be > 0 or None, got {self.chunk_seconds}"
            )
        if self.min_chunk_seconds < 0:
            raise ValueError(
                f"PreprocessConfig.min_chunk_seconds must be >= 0, got {self.min_chunk_seconds}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess(wave: np.ndarray, sr: int, cfg: PreprocessConfig) -> np.ndarray:
    """Downmix (mean of channels), resample to ``cfg.sample_rate``, optionally trim silence and
    normalise. Returns float32 1-D."""
    x = to_mono(wave)
    x = resample(x, sr, cfg.sample_rate)
    if cfg.trim_silence:
        x = trim_silence(x, cfg.sample_rate, cfg.trim_db, cfg.trim_margin_seconds)
    if cfg.normalize == "peak":
        x = normalize_peak(x, cfg.peak_dbfs)
    elif cfg.normalize == "loudness":
        x = normalize_loudness(x, cfg.loudness_dbfs, cfg.peak_dbfs)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_and_preprocess(
    src: Source,
    cfg: PreprocessConfig,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """decode_audio -> preprocess -> to_int16: int16 1-D mono at ``cfg.sample_rate``.

    When preprocessing is only resampling (no trim, no normalisation) and the file is
    mono integer PCM, the audio is decoded as int16 and resampled in float32 sample units
    (no scaling: resampling is linear), then rounded and clipped. Within 1 LSB of the
    float path, and bit-exact when no resampling is needed; the builder's hot path.

    Not soxr's own int16 -> int16 mode, although ~15% cheaper: the last few hundred
    output samples of its int16 path depend on uninitialised memory (python-soxr 1.1,
    +-1 LSB), which broke byte-identical rebuilds one file in a few hundred.
    """
    wave, sr = decode_audio(src, offset=offset, duration=duration, name=name,
                            dtype=decode_dtype(cfg))
    return finish(wave, sr, cfg)


def decode_dtype(cfg: PreprocessConfig) -> Literal["float32", "int16"]:
    """What :func:`load_and_preprocess` asks the decoder for: int16 when preprocessing is only
    resampling (the fast path), float32 otherwise."""
    return "int16" if cfg.normalize == "none" and not cfg.trim_silence else "float32"


def finish(wave: np.ndarray, sr: int, cfg: PreprocessConfig) -> np.ndarray:
    """The second half of :func:`load_and_preprocess`: decoded ``(frames, channels)`` (as
    :func:`decode_audio` returns it with ``dtype=decode_dtype(cfg)``) -> int16 1-D mono at
    ``cfg.sample_rate``. A segment sliced out of a longer decode gives the same samples as
    decoding the segment alone, so the builder decodes a recording once for all its segments."""
    if wave.dtype == np.int16:
        if wave.shape[1] == 1:
            mono = wave[:, 0]
            if sr == cfg.sample_rate:
                return np.ascontiguousarray(mono)
            y = soxr.resample(mono.astype(np.float32), sr, cfg.sample_rate, quality="HQ")
            np.rint(y, out=y)
            np.clip(y, -32768, 32767, out=y)
            return y.astype(np.int16)
        wave = wave.astype(np.float32) * np.float32(1 / 32768)  # several channels: downmix in float
    return to_int16(preprocess(wave, sr, cfg))
