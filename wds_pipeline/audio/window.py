"""The segment (offset, duration) of a file that a decoder reads, and the checks on it shared by
the decoding backends."""

from __future__ import annotations

import math

from .errors import AudioDecodeError


def frames_wanted(sr: int, offset: float, duration: float | None) -> tuple[int, int | None]:
    start = round(offset * sr)
    count = None if duration is None else round(duration * sr)
    return start, count


def validate_window(offset: float, duration: float | None) -> None:
    if not (offset >= 0 and math.isfinite(offset)):
        raise ValueError(f"offset must be a finite number of seconds >= 0, got {offset!r}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ValueError(
            f"duration must be > 0 seconds or None (read to the end), got {duration!r}"
        )


def check_declared(declared: tuple[int, int] | None, sr: int, name: str, offset: float,
                    duration: float | None, *, slack: int) -> None:
    """Raise when the window asked for reaches past the data present although the header
    declares more. ``declared`` is ``(declared frames, frames present)``; ``slack`` frames
    of shortfall are tolerated where the present count is itself an estimate."""
    if declared is None:
        return
    total, present = declared
    start, count = frames_wanted(sr, offset, duration)
    end = total if count is None else min(total, start + count)
    if present + slack < end:
        raise AudioDecodeError(
            name,
            f"truncated: header says {total} frames, file holds {present}; "
            "re-create or drop the file",
        )


def past_end(name: str, offset: float, length_seconds: float) -> AudioDecodeError:
    return AudioDecodeError(
        name,
        f"offset {offset:.3f}s is at or past the end of the audio ({length_seconds:.3f}s); "
        "fix the segment times",
    )
