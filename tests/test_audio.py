"""Decoding (soundfile + PyAV), resampling and preprocessing, on real files written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from wds_pipeline.audio import (
    AudioDecodeError,
    PreprocessConfig,
    chunk,
    decode_audio,
    load_and_preprocess,
    preprocess,
    probe_duration,
    resample,
    to_int16,
    trim_silence,
)


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def spectrum(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude spectrum (a sine of amplitude A peaks at ~A) and the bin frequencies."""
    w = np.hanning(len(x))
    mag = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    return mag, np.fft.rfftfreq(len(x), 1 / sr)


def dominant_hz(x: np.ndarray, sr: int) -> float:
    mag, freqs = spectrum(x, sr)
    return float(freqs[np.argmax(mag)])


def write_m4a(path: Path, x: np.ndarray, sr: int, *, faststart: bool = False) -> None:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        for i in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + 1024], format="flt", layout="mono")
            frame.sample_rate = sr
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ---------------------------------------------------------------------------------- resampling


def test_1khz_tone_stays_1khz_when_resampled_44k1_to_16k() -> None:
    x = tone(1000, 44100, 1.0)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x) * 16000 / 44100) <= 1
    mag, freqs = spectrum(y, 16000)
    peak = int(np.argmax(mag))
    bin_hz = freqs[1]
    assert abs(freqs[peak] - 1000) <= bin_hz
    assert mag[peak] == pytest.approx(0.5, rel=0.01)
    # Everything outside the tone's Hann main lobe (+-2 bins) is below -90 dB re the tone
    # (measured: -99 dB); aliasing or a wrong ratio would put energy at other bins.
    power = mag**2
    outside = power.sum() - power[peak - 2 : peak + 3].sum()
    assert outside / power.sum() < 1e-9


def test_8khz_unsigned_8bit_wav_decodes_and_upsamples(tmp_path: Path) -> None:
    x = tone(440, 8000, 0.5)
    path = tmp_path / "u8.wav"
    sf.write(path, x, 8000, subtype="PCM_U8")
    assert sf.info(path).subtype == "PCM_U8"

    wave, sr = decode_audio(str(path))
    assert sr == 8000 and wave.dtype == np.float32 and wave.shape == (4000, 1)
    # 8-bit quantisation step is 1/128; decoding maps 128 -> 0.0, not to 0.5 or 128.
    assert np.abs(wave[:, 0] - x).max() <= 1 / 128 + 1e-7

    y = preprocess(wave, sr, PreprocessConfig(sample_rate=16000))
    assert abs(len(y) - 8000) <= 1
    assert abs(dominant_hz(y, 16000) - 440) <= 16000 / len(y)


def test_stereo_44k1_becomes_mono_mean_at_16k(tmp_path: Path) -> None:
    left, right = tone(300, 44100, 1.0, amp=0.4), tone(700, 44100, 1.0, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")

    wave, sr = decode_audio(str(path))
    assert wave.shape == (44100, 2) and sr == 44100
    assert np.array_equal(wave[:, 0], left) and np.array_equal(wave[:, 1], right)

    y = preprocess(wave, sr, PreprocessConfig())
    assert y.ndim == 1 and abs(len(y) - 16000) <= 1
    mag, freqs = spectrum(y, 16000)
    # The mean of the channels halves each tone: 0.4 -> 0.2 at 300 Hz, 0.2 -> 0.1 at 700 Hz.
    assert mag[np.argmin(np.abs(freqs - 300))] == pytest.approx(0.2, rel=0.01)
    assert mag[np.argmin(np.abs(freqs - 700))] == pytest.approx(0.1, rel=0.01)


@pytest.mark.parametrize(
    ("subtype", "tol"), [("PCM_24", 2.0**-23), ("FLOAT", 0.0), ("PCM_16", 2.0**-15)]
)
def test_wav_sample_formats_decode_to_the_written_values(
    tmp_path: Path, subtype: str, tol: float
) -> None:
    x = tone(123, 22050, 0.3, amp=0.9)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 22050, subtype=subtype)
    wave, sr = decode_audio(str(path))
    assert sr == 22050 and wave.shape == (len(x), 1) and wave.dtype == np.float32
    assert np.abs(wave[:, 0] - x).max() <= tol


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_ogg_and_mp3_segments_equal_the_same_span_of_a_full_decode(
    tmp_path: Path, fmt: str
) -> None:
    # A chirp is not periodic, so a segment read from the wrong place cannot match by accident.
    sr = 16000
    t = np.arange(2 * sr) / sr
    x = (0.5 * np.sin(2 * np.pi * (200 * t + 400 * t**2))).astype(np.float32)
    path = tmp_path / f"chirp.{fmt.lower()}"
    sf.write(path, x, sr, format=fmt)

    full, full_sr = decode_audio(str(path))
    assert full_sr == sr and full.shape == (2 * sr, 1)
    assert np.abs(full[:, 0] - x).max() < 0.1  # lossy, but the same waveform, not shifted
    assert probe_duration(str(path)) == pytest.approx(2.0, abs=0.01)
    for offset in (0.3, 1.2):
        seg, _ = decode_audio(path.read_bytes(), offset=offset, duration=0.3)
        start = round(offset * sr)
        assert seg.shape == (4800, 1)
        # libsndfile 1.2.2 gets this wrong for MP3 after a seek (errors of ~0.5); PyAV is exact.
        assert np.array_equal(seg, full[start : start + 4800])


# ----------------------------------------------------------------------------------- M4A / AAC


def test_m4a_aac_round_trip(tmp_path: Path) -> None:
    x = tone(1000, 44100, 2.0)
    path = tmp_path / "tone.m4a"
    write_m4a(path, x, 44100)

    wave, sr = decode_audio(str(path))
    assert sr == 44100 and wave.shape[1] == 1
    assert abs(len(wave) / sr - 2.0) < 0.05
    assert abs(dominant_hz(wave[:, 0], sr) - 1000) <= 1.0
    assert probe_duration(str(path)) == pytest.approx(2.0, abs=0.05)

    from_bytes, sr_b = decode_audio(path.read_bytes())
    assert sr_b == sr and np.array_equal(from_bytes, wave)

    pcm = load_and_preprocess(str(path), PreprocessConfig())
    assert pcm.dtype == np.int16 and abs(len(pcm) - 32000) <= 1
    assert abs(dominant_hz(pcm.astype(np.float32), 16000) - 1000) <= 1.0


def test_m4a_offset_duration_matches_full_decode(tmp_path: Path) -> None:
    sr = 44100
    x = np.concatenate([tone(500, sr, 1.5), tone(1500, sr, 1.5)])
    path = tmp_path / "two_tones.m4a"
    write_m4a(path, x, sr, faststart=True)
    full, _ = decode_audio(str(path))

    seg, seg_sr = decode_audio(str(path), offset=1.0, duration=0.4)
    start = sr
    assert seg_sr == sr and seg.shape == (int(0.4 * sr), 1)
    # Seeking pre-rolls the AAC decoder, so the segment equals the same span of a full decode.
    assert np.abs(seg - full[start : start + len(seg)]).max() < 1e-3
    assert abs(dominant_hz(seg[:, 0], sr) - 500) <= 2.5

    late, _ = decode_audio(str(path), offset=2.0, duration=0.5)
    assert abs(dominant_hz(late[:, 0], sr) - 1500) <= 2


# ---------------------------------------------------------------------------------- bad input


def test_zero_byte_file_is_rejected_by_name(tmp_path: Path) -> None:
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.flac: zero-byte file"):
        decode_audio(str(path))
    with pytest.raises(AudioDecodeError, match=r"empty\.flac: zero-byte file"):
        probe_duration(str(path))
    with pytest.raises(AudioDecodeError, match=r"spk1/utt2\.wav: zero-byte input"):
        decode_audio(b"", name="spk1/utt2.wav")


def test_truncated_flac_is_detected(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    rng = np.random.default_rng(0)
    sf.write(good, (0.3 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    data = good.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(AudioDecodeError, match=r"cut\.flac: truncated.*FLAC") as err:
        decode_audio(str(cut))
    assert isinstance(err.value, ValueError)
    assert err.value.source.endswith("cut.flac")
    with pytest.raises(AudioDecodeError, match=r"clip\.flac: truncated.*FLAC"):
        decode_audio(data[: len(data) // 2], name="clip.flac")
    # The header survives the cut, so a quick probe reports the declared length...
    assert probe_duration(str(cut)) == 3.0
    # ...and the intact first half is still readable on its own.
    head, _ = decode_audio(str(cut), duration=0.5)
    assert head.shape == (8000, 1)


def test_truncated_m4a_is_detected(tmp_path: Path) -> None:
    good = tmp_path / "good.m4a"
    write_m4a(good, tone(440, 44100, 3.0), 44100, faststart=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match=r"cut\.m4a: truncated"):
        decode_audio(str(cut))


def test_text_file_named_wav_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "transcript.wav"
    path.write_text("HELLO WORLD this is a transcript, not audio\n" * 20)
    with pytest.raises(
        AudioDecodeError, match=r"transcript\.wav: not a readable audio file \(text file\?\)"
    ):
        decode_audio(str(path))
    with pytest.raises(AudioDecodeError, match=r"transcript\.wav: not a readable audio file"):
        probe_duration(str(path))


def test_empty_recording_and_bad_offsets(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioDecodeError, match=r"nothing\.wav: decoded length is 0 samples"):
        decode_audio(str(path))

    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(440, 16000, 1.0), 16000)
    with pytest.raises(AudioDecodeError, match=r"clip\.wav: offset 1\.500s is at or past the end"):
        decode_audio(str(clip), offset=1.5)
    with pytest.raises(ValueError, match="offset must be"):
        decode_audio(str(clip), offset=-1.0)
    with pytest.raises(ValueError, match="duration must be > 0"):
        decode_audio(str(clip), duration=0.0)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        decode_audio(str(tmp_path / "missing.wav"))


# ------------------------------------------------------------------------ offset / duration


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "bytes"])
def test_offset_and_duration_read_exactly_those_samples(tmp_path: Path, fmt: str) -> None:
    # A ramp of distinct int16 values identifies every sample.
    pcm = (np.arange(16000 * 2, dtype=np.int64) % 60000 - 30000).astype(np.int16)
    path = tmp_path / ("ramp.flac" if fmt == "FLAC" else "ramp.wav")
    sf.write(path, pcm, 16000, subtype="PCM_16")
    src = path.read_bytes() if fmt == "bytes" else str(path)

    wave, sr = decode_audio(src, offset=0.25, duration=0.1)
    assert sr == 16000 and wave.shape == (1600, 1)
    assert np.array_equal(to_int16(wave[:, 0]), pcm[4000:5600])

    tail, _ = decode_audio(src, offset=1.9, duration=5.0)  # clipped at the end of the file
    assert np.array_equal(np.round(tail[:, 0] * 32768).astype(np.int16), pcm[30400:])
    if fmt != "bytes":
        assert probe_duration(str(path)) == 2.0


def test_load_and_preprocess_composes_decode_resample_and_int16(tmp_path: Path) -> None:
    sr = 48000
    stereo = np.stack([tone(600, sr, 2.0, amp=0.3), tone(600, sr, 2.0, amp=0.5)], axis=1)
    path = tmp_path / "s.flac"
    sf.write(path, stereo, sr, subtype="PCM_24")
    pcm = load_and_preprocess(str(path), PreprocessConfig(), offset=0.5, duration=1.0)
    assert pcm.dtype == np.int16 and pcm.shape == (16000,)
    mag, freqs = spectrum(pcm / 32768.0, 16000)
    assert freqs[np.argmax(mag)] == 600.0
    assert mag.max() == pytest.approx(0.4, rel=0.01)  # mean of 0.3 and 0.5


# ------------------------------------------------------------------------- trim / normalise


def test_trim_silence_keeps_the_sound_plus_a_margin() -> None:
    sr = 16000
    rng = np.random.default_rng(1)
    x = (1e-4 * rng.standard_normal(sr * 2)).astype(np.float32)  # -80 dB floor: trimmed
    x[8000:24000] += tone(440, sr, 1.0)
    out = trim_silence(x, sr, top_db=40.0, margin_seconds=0.05)
    begin = int(np.flatnonzero(x == out[0])[0])
    end = begin + len(out)
    assert np.array_equal(out, x[begin:end])
    # The tone is kept whole, with 50 ms of margin, give or take one 20 ms analysis frame.
    assert 8000 - 800 - 320 <= begin <= 8000 - 800
    assert 24000 + 800 <= end <= 24000 + 800 + 320

    cfg = PreprocessConfig(trim_silence=True)
    assert np.array_equal(preprocess(x, sr, cfg), out)


def test_trim_keeps_quiet_speech_above_the_threshold_and_silence_unchanged() -> None:
    sr = 16000
    x = np.concatenate([tone(300, sr, 0.5, amp=0.5 * 10 ** (-30 / 20)), tone(300, sr, 0.5)])
    assert len(trim_silence(x, sr, top_db=40.0)) == len(x)  # -30 dB is not silence at 40 dB
    assert len(trim_silence(x, sr, top_db=20.0)) < 0.7 * len(x)
    zeros = np.zeros(1000, np.float32)
    assert np.array_equal(trim_silence(zeros, sr), zeros)


def test_peak_normalisation_hits_peak_dbfs() -> None:
    x = tone(440, 16000, 0.5, amp=0.05)
    y = preprocess(x, 16000, PreprocessConfig(normalize="peak", peak_dbfs=-3.0))
    assert np.abs(y).max() == pytest.approx(10 ** (-3 / 20), rel=1e-6)
    assert np.allclose(y / y.max(), x / x.max(), atol=1e-6)


def test_loudness_normalisation_hits_rms_target() -> None:
    x = tone(440, 16000, 1.0, amp=0.01)  # whole periods: RMS is exactly 0.01 / sqrt(2)
    y = preprocess(x, 16000, PreprocessConfig(normalize="loudness", loudness_dbfs=-23.0))
    rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert rms_db == pytest.approx(-23.0, abs=0.01)
    # A sine with RMS r has amplitude r * sqrt(2), and the waveform shape is unchanged.
    assert np.abs(y).max() == pytest.approx(10 ** (-23 / 20) * np.sqrt(2), rel=1e-4)
    assert np.allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-6)


def test_loudness_gain_is_peak_limited_never_clipped() -> None:
    x = np.full(16000, 0.001, np.float32)
    x[100] = 0.5  # one click: reaching -23 dB RMS would need a x70 gain, peak 35
    y = preprocess(
        x, 16000, PreprocessConfig(normalize="loudness", loudness_dbfs=-23.0, peak_dbfs=-1.0)
    )
    assert np.abs(y).max() == pytest.approx(10 ** (-1 / 20), rel=1e-6)
    assert np.abs(to_int16(y)).max() < 32767
    rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert rms_db < -23.0


# ------------------------------------------------------------------------- int16 / chunking


def test_to_int16_scales_rounds_and_clips() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 1 / 32768, 0.4 / 32768, 2.5 / 32768])
    assert to_int16(x).tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768, 1, 0, 2]
    assert to_int16(x).dtype == np.int16
    with pytest.raises(ValueError, match="NaN or inf"):
        to_int16(np.array([0.1, np.nan], np.float32))


@pytest.mark.parametrize(("fmt", "ext"), [("FLAC", "flac"), ("WAV", "wav")])
def test_int16_source_at_the_target_rate_comes_back_bit_exact(
    tmp_path: Path, fmt: str, ext: str
) -> None:
    # Every int16 value, so full-scale samples (where a 32767 scale would be off by one) count.
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    path = tmp_path / f"all_values.{ext}"
    sf.write(path, pcm, 16000, format=fmt, subtype="PCM_16")
    assert np.array_equal(load_and_preprocess(str(path), PreprocessConfig()), pcm)


def test_chunk_fixed_length_and_min_tail() -> None:
    x = np.arange(40000, dtype=np.float32)  # 2.5 s at 16 kHz
    pieces = chunk(x, 16000, 1.0, 0.5)
    assert [(s, len(p)) for s, p in pieces] == [(0, 16000), (16000, 16000), (32000, 8000)]
    assert all(np.array_equal(p, x[s : s + len(p)]) for s, p in pieces)
    assert [s for s, _ in chunk(x, 16000, 1.0, 0.6)] == [0, 16000]
    assert [len(p) for _, p in chunk(x[:32000], 16000, 1.0, 0.5)] == [16000, 16000]  # no empty tail
    assert chunk(x[:4000], 16000, 1.0, 0.5) == []
    assert [len(p) for _, p in chunk(x[:9000], 16000, 1.0, 0.5)] == [9000]
    with pytest.raises(ValueError, match="chunk_seconds must be > 0"):
        chunk(x, 16000, 0.0, 0.5)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 5000),
    chunk_frames=st.integers(1, 1200),
    min_frames=st.integers(0, 1500),
)
def test_chunk_covers_the_signal_in_order(n: int, chunk_frames: int, min_frames: int) -> None:
    sr = 1000
    x = np.arange(n)
    pieces = chunk(x, sr, chunk_frames / sr, min_frames / sr)
    joined = np.concatenate([p for _, p in pieces]) if pieces else np.zeros(0, int)
    assert np.array_equal(joined, x[: len(joined)])
    assert [s for s, _ in pieces] == list(range(0, len(joined), chunk_frames))
    assert all(len(p) == chunk_frames for _, p in pieces[:-1])
    dropped = n - len(joined)
    assert dropped < chunk_frames and (dropped == 0 or dropped < min_frames)
    if pieces and len(pieces[-1][1]) < chunk_frames:
        assert len(pieces[-1][1]) >= min_frames


# ------------------------------------------------------------------------------ config


def test_preprocess_config_to_dict_and_validation() -> None:
    cfg = PreprocessConfig(normalize="loudness", chunk_seconds=4.0)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert PreprocessConfig(**d) == cfg
    assert d["sample_rate"] == 16000 and d["normalize"] == "loudness" and d["chunk_seconds"] == 4.0
    with pytest.raises(ValueError, match="normalize must be 'none', 'peak' or 'loudness'"):
        PreprocessConfig(normalize="lufs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="peak_dbfs must be <= 0"):
        PreprocessConfig(peak_dbfs=1.0)


def test_int16_fast_path_matches_the_float_path(tmp_path):
    import soundfile as sf

    from wds_pipeline.audio import (
        PreprocessConfig,
        decode_audio,
        load_and_preprocess,
        preprocess,
        to_int16,
    )

    rng = np.random.default_rng(3)
    x = (np.sin(np.arange(44100 * 2) * 2 * np.pi * 997 / 44100) * 12000 + rng.normal(0, 500, 88200)).astype(np.int16)
    sf.write(tmp_path / "a.flac", x, 44100)
    cfg = PreprocessConfig(sample_rate=16000)
    fast = load_and_preprocess(str(tmp_path / "a.flac"), cfg)
    wave, sr = decode_audio(str(tmp_path / "a.flac"))
    slow = to_int16(preprocess(wave, sr, cfg))
    assert fast.dtype == np.int16 and len(fast) == len(slow)
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
    # no resampling needed: bit-exact
    sf.write(tmp_path / "b.wav", x, 16000)
    assert np.array_equal(load_and_preprocess(str(tmp_path / "b.wav"), cfg), x)
    # float WAV beyond full scale: must not take the int16 path (libsndfile would wrap)
    sf.write(tmp_path / "c.wav", np.full(1600, 1.5, dtype=np.float32), 16000, subtype="FLOAT")
    assert decode_audio(str(tmp_path / "c.wav"), dtype="int16")[0].dtype == np.float32
    assert (load_and_preprocess(str(tmp_path / "c.wav"), cfg) == 32767).all()


@pytest.mark.parametrize("channels", [1, 2])
def test_dr_flac_whole_file_path_is_bit_identical_to_libsndfile(tmp_path, channels):
    from wds_pipeline.audio import decode_flac_int16

    rng = np.random.default_rng(channels)
    x = rng.integers(-20000, 20000, size=(44100 * 2 + 123, channels), dtype=np.int16)
    path = tmp_path / "a.flac"
    sf.write(path, x, 44100)
    for src in (str(path), path.read_bytes()):
        got = decode_flac_int16(src, 0.0, None, "int16")
        assert got is not None  # the dr_flac path was taken
        assert got[1] == 44100 and np.array_equal(got[0], x)
    wave, sr = decode_audio(str(path), dtype="int16")
    assert sr == 44100 and np.array_equal(wave, x)
    assert np.array_equal(wave, sf.read(str(path), dtype="int16", always_2d=True)[0])
    # Segments, float output, 24-bit files and other formats stay with libsndfile.
    assert decode_flac_int16(str(path), 0.5, None, "int16") is None
    assert decode_flac_int16(str(path), 0.0, 1.0, "int16") is None
    assert decode_flac_int16(str(path), 0.0, None, "float32") is None
    sf.write(tmp_path / "b.flac", x, 44100, subtype="PCM_24")
    assert decode_flac_int16(str(tmp_path / "b.flac"), 0.0, None, "int16") is None
    sf.write(tmp_path / "c.wav", x, 44100)
    assert decode_flac_int16(str(tmp_path / "c.wav"), 0.0, None, "int16") is None
    (tmp_path / "d.flac").write_text("not audio at all\n" * 50)
    assert decode_flac_int16(str(tmp_path / "d.flac"), 0.0, None, "int16") is None


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_flac_with_a_corrupt_frame_is_rejected_not_decoded_short(tmp_path, where):
    # dr_flac skips a frame that fails its CRC; the length check must hand the file back to
    # libsndfile, which reports the fault, instead of returning audio with a hole in it.
    from wds_pipeline.audio import decode_flac_int16

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "good.flac", (0.3 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000)
    data = bytearray((tmp_path / "good.flac").read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    bad = tmp_path / "bad.flac"
    bad.write_bytes(bytes(data))
    assert decode_flac_int16(str(bad), 0.0, None, "int16") is None
    assert decode_flac_int16(bytes(data), 0.0, None, "int16") is None
    with pytest.raises(AudioDecodeError, match=r"bad\.flac: .*(truncated|corrupt).*FLAC"):
        decode_audio(str(bad), dtype="int16")


def test_flac_shard_field_round_trips_and_a_cut_field_raises():
    from wds_pipeline import format as fmt

    pcm = np.random.default_rng(5).integers(-30000, 30000, 16000 * 2 + 7, dtype=np.int16)
    payload = fmt.encode_audio(pcm, 16000, fmt.AUDIO_FLAC)
    for data in (payload, memoryview(payload), bytearray(payload)):
        got = fmt.decode_field(fmt.AUDIO_FLAC, data)
        assert got.dtype == np.int16 and np.array_equal(got, pcm)
    # A cut field is the package's ShardFormatError naming its size (it was a bare
    # soundfile.LibsndfileError naming a BytesIO object before format/flac.decode_flac_field).
    from wds_pipeline.errors import ShardFormatError

    with pytest.raises(ShardFormatError, match=r"FLAC field of \d+ bytes"):
        fmt.decode_field(fmt.AUDIO_FLAC, payload[: len(payload) // 2])


def test_int16_resampling_is_deterministic_whatever_the_heap_holds(tmp_path):
    # python-soxr's int16 -> int16 mode let uninitialised memory change the last few
    # hundred output samples by 1 LSB: the same file built twice gave different shards.
    # Filling freed heap memory with random bytes between runs exposed it ~half the time.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(44100 * 12 + 17) * 3000).astype(np.int16)
    sf.write(tmp_path / "a.flac", x, 44100)
    cfg = PreprocessConfig(sample_rate=16000)
    ref = load_and_preprocess(str(tmp_path / "a.flac"), cfg)
    for _ in range(12):
        junk = [np.frombuffer(rng.bytes(int(n)), dtype=np.uint8).copy()
                for n in rng.integers(1_000, 3_000_000, 5)]
        del junk
        assert np.array_equal(load_and_preprocess(str(tmp_path / "a.flac"), cfg), ref)


@pytest.mark.parametrize("fmt", ["WAV", "MP3"])
def test_truncated_wav_and_mp3_are_rejected_not_decoded_short(tmp_path: Path, fmt: str) -> None:
    # libsndfile shrinks a cut WAV's frame count to the data on disk and FFmpeg decodes a cut MP3
    # up to its last whole frame: only the header's declared length shows the cut.
    sr = 16000
    rng = np.random.default_rng(1)
    good = tmp_path / f"good.{fmt.lower()}"
    sf.write(good, (0.2 * rng.standard_normal(4 * sr)).astype(np.float32), sr, format=fmt)
    assert decode_audio(str(good))[0].shape == (4 * sr, 1)
    data = good.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError,
                       match=rf"cut\.{fmt.lower()}: truncated: header says 64000 frames, "
                             r"file holds \d+"):
        decode_audio(str(cut))
    with pytest.raises(AudioDecodeError, match=r"truncated: header says 64000 frames"):
        decode_audio(data[: len(data) // 2], name="clip", dtype="int16")
    # The intact first second is still a valid segment.
    head, _ = decode_audio(str(cut), duration=1.0)
    assert head.shape == (sr, 1)
