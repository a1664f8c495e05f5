"""Signal processing on decoded waveforms: resampling, downmix, silence trim, normalisation,
conversion to int16 and chunking. Pure numpy/soxr; no file access."""

from __future__ import annotations

import numpy as np
import soxr


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling with soxr "HQ". ``x`` is float 1-D or ``(frames, channels)``."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got sr_in={sr_in}, sr_out={sr_out}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"resample expects 1-D or (frames, channels) audio, got shape {x.shape}")
    if sr_in == sr_out:
        return x.copy()
    if x.shape[0] == 0:
        return x.copy()
    return np.asarray(soxr.resample(x, sr_in, sr_out, quality="HQ"), dtype=np.float32)


def to_mono(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2:
        return wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    raise ValueError(f"audio must be 1-D or (frames, channels), got shape {wave.shape}")


def _frame_rms_db(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    # Include the tail as a last (zero-padded) frame so trailing speech is never cut.
    if (n - 1) * hop + frame < len(x):
        x = np.pad(x, (0, n * hop + frame - len(x)))
        n += 1
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop][:n].astype(np.float64)
    power = np.mean(frames * frames, axis=1)
    return 10.0 * np.log10(np.maximum(power, 1e-20))


def trim_silence(
    x: np.ndarray, sr: int, top_db: float = 40.0, margin_seconds: float = 0.05
) -> np.ndarray:
    """Drop leading/trailing audio quieter than ``top_db`` below the loudest 20 ms frame.

    All-zero input is returned unchanged: there is nothing to measure "relative to peak" against,
    and an empty clip would only fail later.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0 or not np.any(x):
        return x
    frame = max(1, round(0.020 * sr))
    hop = max(1, round(0.010 * sr))
    db = _frame_rms_db(x, frame, hop)
    loud = np.flatnonzero(db >= db.max() - top_db)
    margin = round(margin_seconds * sr)
    begin = max(0, loud[0] * hop - margin)
    end = min(len(x), loud[-1] * hop + frame + margin)
    return x[begin:end]


def _db_to_amp(db: float) -> float:
    return 10.0 ** (db / 20.0)


def normalize_peak(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x
    return (x * (_db_to_amp(peak_dbfs) / peak)).astype(np.float32)


def normalize_loudness(x: np.ndarray, loudness_dbfs: float, peak_dbfs: float) -> np.ndarray:
    """RMS normalisation to ``loudness_dbfs``, the gain capped so the peak stays <= peak_dbfs."""
    if len(x) == 0:
        return x
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.max(np.abs(x)))
    if rms == 0.0:
        return x
    gain = min(_db_to_amp(loudness_dbfs) / rms, _db_to_amp(peak_dbfs) / peak)
    return (x * gain).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16: scale by 32768, round half to even, clip to [-32768, 32767].

    32768 (not 32767) because every decoder here maps int16 ``v`` to ``v / 32768`` (libsndfile,
    FFmpeg): int16 sources then come back bit-exact when no resampling or gain is applied. The
    cost is that +1.0 clips by one LSB to 32767.
    """
    x = np.asarray(x)
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError(
            "to_int16: audio contains NaN or inf; check the decoder/normalisation upstream"
        )
    return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def chunk(
    x: np.ndarray, sr: int, chunk_seconds: float, min_seconds: float
) -> list[tuple[int, np.ndarray]]:
    """Split ``x`` (first axis = time) into consecutive ``chunk_seconds`` pieces.

    Returns ``[(start_frame, piece), ...]``; pieces are views of ``x``. The final shorter piece is
    kept only if it is at least ``min_seconds`` long.
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    size = round(chunk_seconds * sr)
    if size <= 0:
        raise ValueError(f"chunk_seconds={chunk_seconds} is shorter than one sample at {sr} Hz")
    min_frames = min_seconds * sr
    out = []
    for start in range(0, len(x), size):
        piece = x[start : start + size]
        if len(piece) < size and len(piece) < min_frames:
            break
        out.append((start, piece))
    return out
