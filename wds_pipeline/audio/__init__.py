"""Audio for shard building: decoding (``decode``: libsndfile, ``flac``: dr_flac, ``pyav``: FFmpeg)
and signal processing (``signal``; ``preprocess`` chains them).

Public API (the builder and the loader call these; keep names and signatures):

    class AudioDecodeError(ValueError)
    @dataclass(frozen=True) class PreprocessConfig  (sample_rate, normalize, peak_dbfs,
        loudness_dbfs, trim_silence, trim_db, trim_margin_seconds, chunk_seconds,
        min_chunk_seconds; to_dict())
    decode_audio(src, *, offset=0.0, duration=None, name=None) -> (float32 (frames, channels), sr)
    probe_duration(src, *, name=None) -> float seconds
    resample(x, sr_in, sr_out) -> float32                      # soxr "HQ"
    preprocess(wave, sr, cfg) -> float32 1-D mono at cfg.sample_rate
    to_int16(x) -> int16
    chunk(x, sr, chunk_seconds, min_seconds) -> [(start_frame, array)]
    load_and_preprocess(src, cfg, *, offset=0.0, duration=None, name=None) -> int16 1-D
    decode_dtype(cfg), finish(wave, sr, cfg): load_and_preprocess in two halves, so that
        segments cut from one decode give the same samples as decoding each alone
"""

from .decode import decode_audio, probe_duration
from .errors import AudioDecodeError
from .flac import decode_flac_int16
from .preprocess import PreprocessConfig, decode_dtype, finish, load_and_preprocess, preprocess
from .signal import chunk, normalize_loudness, normalize_peak, resample, to_int16, trim_silence

__all__ = [
    "AudioDecodeError",
    "PreprocessConfig",
    "chunk",
    "decode_audio",
    "decode_dtype",
    "decode_flac_int16",
    "finish",
    "load_and_preprocess",
    "normalize_loudness",
    "normalize_peak",
    "preprocess",
    "probe_duration",
    "resample",
    "to_int16",
    "trim_silence",
]
