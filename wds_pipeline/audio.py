"""Audio decoding and preprocessing (STUB: being implemented by the audio helper).

Interface contract (keep these names and signatures):

    class AudioDecodeError(ValueError)
    @dataclass(frozen=True) class PreprocessConfig: sample_rate=16000, normalize="none"|"peak"|"loudness",
        peak_dbfs=-1.0, loudness_dbfs=-23.0, trim_silence=False, trim_db=40.0,
        chunk_seconds=None, min_chunk_seconds=0.5; to_dict()
    decode_audio(src: str | bytes, *, offset=0.0, duration=None) -> (np.ndarray float32 (frames, channels), sr)
    probe_duration(src: str) -> float
    preprocess(wave: np.ndarray, sr: int, cfg: PreprocessConfig) -> np.ndarray float32 mono at cfg.sample_rate
    to_int16(x: np.ndarray) -> np.ndarray int16
    chunk(x: np.ndarray, sr: int, chunk_seconds: float, min_seconds: float) -> list[tuple[int, np.ndarray]]
    resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray   # soxr HQ
"""
