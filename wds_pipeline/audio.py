"""Audio decoding and preprocessing for shard building.

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

Decoding goes through libsndfile (soundfile) first: WAV/FLAC/OGG etc. are read with a seek to
the offset and only the frames asked for. MP3 and anything libsndfile cannot open (M4A/AAC/MP4,
WebM, ...) go through PyAV (FFmpeg): libsndfile 1.2.2 returns wrong MP3 samples after a seek or
after the first read call.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from . import audio_headers

try:  # dr_flac: the fast whole-file FLAC decoder (see decode_flac_int16); optional
    import miniaudio as _miniaudio
except ImportError:  # pragma: no cover - a core dependency, but decoding works without it
    _miniaudio = None

__all__ = [
    "AudioDecodeError",
    "PreprocessConfig",
    "chunk",
    "decode_audio",
    "decode_flac_int16",
    "load_and_preprocess",
    "preprocess",
    "probe_duration",
    "resample",
    "to_int16",
]

Source = str | os.PathLike | bytes | bytearray | memoryview


class AudioDecodeError(ValueError):
    """A file that cannot be decoded into audio. ``str(err)`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


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
        read by the builder, which cuts long recordings with :func:`chunk`; ``preprocess`` ignores
        them.
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


# --------------------------------------------------------------------------------------------
# decoding


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


def _as_file(src: Source):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src))
    return os.fspath(src)


def _frames_wanted(sr: int, offset: float, duration: float | None) -> tuple[int, int | None]:
    start = round(offset * sr)
    count = None if duration is None else round(duration * sr)
    return start, count


def _validate_window(offset: float, duration: float | None) -> None:
    if not (offset >= 0 and math.isfinite(offset)):
        raise ValueError(f"offset must be a finite number of seconds >= 0, got {offset!r}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ValueError(
            f"duration must be > 0 seconds or None (read to the end), got {duration!r}"
        )


def _read_soundfile(
    f: sf.SoundFile, name: str, offset: float, duration: float | None, dtype: str = "float32"
) -> tuple[np.ndarray, int]:
    sr = f.samplerate
    total = f.frames
    start, count = _frames_wanted(sr, offset, duration)
    if start >= total > 0:
        raise _past_end(name, offset, total / sr)
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


def _frame_to_array(frame) -> np.ndarray:
    """PyAV AudioFrame -> float32 (samples, channels)."""
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if fmt.is_planar:
        arr = arr.T
    else:
        arr = arr.reshape(-1, channels)
    kind = fmt.name.rstrip("p")
    if kind == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if kind == "s16":
        return arr.astype(np.float32) / 32768.0
    if kind == "s32":
        return (arr.astype(np.float64) / 2147483648.0).astype(np.float32)
    if kind == "s64":
        return (arr.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    return arr.astype(np.float32)


_PYAV_PREROLL_SECONDS = 0.25
_PYAV_PREROLL_SAMPLES = 4096
# Containers with a per-packet sample index, where FFmpeg's seek lands where the timestamps say.
# Elsewhere (notably MP3, whose seek is a bitrate/TOC estimate) we decode from the start and
# discard up to the offset: slower, but sample-exact.
_PYAV_EXACT_SEEK = frozenset({"mov", "mp4", "m4a", "matroska", "webm"})


def _read_pyav(
    src: Source, name: str, offset: float, duration: float | None
) -> tuple[np.ndarray, int]:
    import av  # imported lazily: most corpora never need FFmpeg

    container = av.open(_as_file(src))
    try:
        if not container.streams.audio:
            raise AudioDecodeError(name, "no audio stream in the container (a video-only file?)")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        if not sr:
            raise AudioDecodeError(name, "audio stream has no sample rate; the file is corrupt")
        tb = stream.time_base
        origin = stream.start_time if stream.start_time is not None else 0
        indexed = any(n in _PYAV_EXACT_SEEK for n in container.format.name.split(","))
        mp3 = audio_headers.mp3_frames(src) if "mp3" in container.format.name.split(",") else None
        # An indexed container's declared length is exact: it lets us drop encoder padding at the
        # end (AAC pads to whole 1024-sample frames) and notice truncation. Elsewhere (MP3) the
        # length may be a bitrate estimate, so it is not used.
        expected = None
        if indexed and stream.duration is not None and tb is not None:
            expected = round(float(stream.duration * tb) * sr)
        start, count = _frames_wanted(sr, offset, duration)
        if expected is not None and start >= expected:
            raise _past_end(name, offset, expected / sr)
        stop = None if count is None else start + count
        if expected is not None:
            stop = expected if stop is None else min(stop, expected)
        # Lossy decoders (AAC, Opus) need the previous frame(s) to reconstruct a frame
        # (overlapped MDCT), so seek to a pre-roll point well before the target and discard the
        # warm-up samples; seeking straight to `offset` gives ~20 ms of garbage at 44.1 kHz.
        preroll = max(_PYAV_PREROLL_SECONDS, _PYAV_PREROLL_SAMPLES / sr)
        if indexed and offset - preroll > 0 and tb is not None:
            target = origin + int((offset - preroll) / tb)
            container.seek(target, stream=stream, backward=True, any_frame=False)

        pieces: list[np.ndarray] = []
        pos: int | None = None  # sample index (from the stream origin) of the next decoded sample
        try:
            for frame in container.decode(stream):
                if pos is None:
                    # Only the first frame's pts is trusted, then samples are counted: robust
                    # to containers with jittery or missing timestamps.
                    if frame.pts is not None and frame.time_base is not None:
                        pos = round(float((frame.pts - origin) * frame.time_base) * sr)
                    else:
                        pos = 0
                arr = _frame_to_array(frame)
                lo = max(start - pos, 0)
                hi = len(arr) if stop is None else min(len(arr), stop - pos)
                if hi > lo:
                    pieces.append(arr[lo:hi])
                pos += len(arr)
                if stop is not None and pos >= stop:
                    break
        except av.error.FFmpegError as e:
            raise AudioDecodeError(
                name, f"truncated or corrupt audio ({e}); re-create or drop the file"
            ) from e
    finally:
        container.close()

    end = pos if pos is not None else 0
    if mp3 is not None:
        # The declared length counts samples after the encoder delay and padding, as FFmpeg
        # delivers them; two MPEG frames of slack cover encoders that write no LAME tag.
        declared, spf = mp3
        _check_declared((declared, end), sr, name, offset, duration, slack=2 * spf)
    if not pieces and start > 0 and end <= start:
        raise _past_end(name, offset, end / sr)
    if expected is not None and stop is not None:
        # One large codec frame of slack: declared durations are rounded per codec.
        missing = stop - max(end, start)
        if missing > max(4096, int(0.02 * expected)):
            raise AudioDecodeError(
                name,
                f"truncated audio: container says {expected / sr:.3f}s, "
                f"only {end / sr:.3f}s decodable; re-create or drop the file",
            )
    data = np.concatenate(pieces) if pieces else np.zeros((0, 1), np.float32)
    return data, sr


def _check_declared(declared: tuple[int, int] | None, sr: int, name: str, offset: float,
                    duration: float | None, *, slack: int) -> None:
    """Raise when the window asked for reaches past the data present although the header
    declares more. ``declared`` is ``(declared frames, frames present)``; ``slack`` frames
    of shortfall are tolerated where the present count is itself an estimate."""
    if declared is None:
        return
    total, present = declared
    start, count = _frames_wanted(sr, offset, duration)
    end = total if count is None else min(total, start + count)
    if present + slack < end:
        raise AudioDecodeError(
            name,
            f"truncated: header says {total} frames, file holds {present}; "
            "re-create or drop the file",
        )


def _past_end(name: str, offset: float, length_seconds: float) -> AudioDecodeError:
    return AudioDecodeError(
        name,
        f"offset {offset:.3f}s is at or past the end of the audio ({length_seconds:.3f}s); "
        "fix the segment times",
    )


def _dr_flac_lib():
    lib = getattr(_miniaudio, "lib", None)
    needed = ("ma_dr_flac_open_memory", "ma_dr_flac_read_pcm_frames_s16", "ma_dr_flac_close")
    return lib if lib is not None and all(hasattr(lib, n) for n in needed) else None


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
    _validate_window(offset, duration)
    _check_source(src, label)

    fast = decode_flac_int16(src, offset, duration, dtype)
    if fast is not None:
        return fast

    sf_err: Exception | None = None
    data: np.ndarray | None = None
    try:
        f = sf.SoundFile(_as_file(src))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        sf_err = e
    else:
        with f:
            # libsndfile 1.2's MP3 support estimates the frame count (libsndfile#1001) and
            # returns wrong samples after a seek or a second read call, so MP3 goes to FFmpeg.
            if f.format != "MP3":
                if f.format == "WAV":
                    _check_declared(audio_headers.wav_frames(src), f.samplerate, label,
                                    offset, duration, slack=0)
                data, sr = _read_soundfile(f, label, offset, duration, dtype)

    if data is None:
        import av

        try:
            data, sr = _read_pyav(src, label, offset, duration)
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
        info = sf.info(_as_file(src))
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_err:
        import av

        try:
            return _probe_pyav(src, label)
        except AudioDecodeError:
            raise
        except (av.error.FFmpegError, OSError) as av_err:
            raise _unreadable(src, label, sf_err, av_err) from av_err
    if info.format == "MP3":
        return _probe_pyav(src, label)  # libsndfile's MP3 frame count is an estimate
    if info.samplerate <= 0:
        raise AudioDecodeError(label, "header has no sample rate; the file is corrupt")
    return info.frames / info.samplerate


def _probe_pyav(src: Source, name: str) -> float:
    import av

    with av.open(_as_file(src)) as container:
        if not container.streams.audio:
            raise AudioDecodeError(name, "no audio stream in the container (a video-only file?)")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        sr = stream.codec_context.sample_rate or stream.rate
        n = sum(frame.samples for frame in container.decode(stream))
        return n / sr


# --------------------------------------------------------------------------------------------
# preprocessing


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


def _to_mono(wave: np.ndarray) -> np.ndarray:
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


def preprocess(wave: np.ndarray, sr: int, cfg: PreprocessConfig) -> np.ndarray:
    """Downmix (mean of channels), resample to ``cfg.sample_rate``, optionally trim silence and
    normalise. Returns float32 1-D."""
    x = _to_mono(wave)
    x = resample(x, sr, cfg.sample_rate)
    if cfg.trim_silence:
        x = trim_silence(x, cfg.sample_rate, cfg.trim_db, cfg.trim_margin_seconds)
    if cfg.normalize == "peak":
        x = normalize_peak(x, cfg.peak_dbfs)
    elif cfg.normalize == "loudness":
        x = normalize_loudness(x, cfg.loudness_dbfs, cfg.peak_dbfs)
    return np.ascontiguousarray(x, dtype=np.float32)


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
    fast = cfg.normalize == "none" and not cfg.trim_silence
    wave, sr = decode_audio(src, offset=offset, duration=duration, name=name,
                            dtype="int16" if fast else "float32")
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
