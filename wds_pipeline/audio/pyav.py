"""The PyAV (FFmpeg) decoding backend: MP3, M4A/AAC/MP4, WebM and whatever libsndfile cannot
open. ``av`` is imported lazily: most corpora never need FFmpeg."""

from __future__ import annotations

import io
import os

import numpy as np

from . import headers as audio_headers
from .errors import AudioDecodeError, Source
from .window import check_declared, frames_wanted, past_end


def as_file(src: Source):
    """What soundfile and PyAV open: the path, or the bytes wrapped in a file object."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src))
    return os.fspath(src)


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


def read_pyav(
    src: Source, name: str, offset: float, duration: float | None
) -> tuple[np.ndarray, int]:
    import av  # imported lazily: most corpora never need FFmpeg

    container = av.open(as_file(src))
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
        start, count = frames_wanted(sr, offset, duration)
        if expected is not None and start >= expected:
            raise past_end(name, offset, expected / sr)
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
        check_declared((declared, end), sr, name, offset, duration, slack=2 * spf)
    if not pieces and start > 0 and end <= start:
        raise past_end(name, offset, end / sr)
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


def probe_pyav(src: Source, name: str) -> float:
    import av

    with av.open(as_file(src)) as container:
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
