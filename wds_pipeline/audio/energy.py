"""Energy voice activity detection (``--vad energy``): where speech starts and ends in a clip.

Frames of 10 ms are compared with a threshold adapted to the clip: ``MIN_SNR_DB`` above
its noise floor (a low percentile of the frame levels, capped at ``NOISE_CEILING_DB`` so
that a clip that is speech from end to end is not measured against its own quiet
syllables), raised to ``DYNAMIC_RANGE_DB`` below its loudest frame when the floor is far
down (formant ringing and breath after a word are not speech), and never below
``ABSOLUTE_FLOOR_DB`` (digital silence and a faint hiss are never speech). Speech is a run
of at least ``MIN_RUN_FRAMES`` frames above the threshold (a click is not speech); the kept
span runs from the first such run to the last one plus a short hangover, so word endings
that fade below the threshold are not clipped. Pure numpy; no file access.

:func:`speech_regions` (``--vad-split-pause``) applies the same rules per region: runs
separated by less than the pause belong to one region, each region gets the preroll and
the hangover.
"""

from __future__ import annotations

import numpy as np

from .vad import VadBackend

FRAME_SECONDS = 0.010
ABSOLUTE_FLOOR_DB = -60.0  # dBFS: quieter frames are silence whatever the clip
NOISE_CEILING_DB = -45.0  # dBFS: a background louder than this is taken for signal
MIN_SNR_DB = 6.0  # threshold at least this far above the noise floor
DYNAMIC_RANGE_DB = 40.0  # ... and no more than this far below the loudest frame
FLOOR_PERCENTILE = 5.0
MIN_RUN_FRAMES = 3  # 30 ms: shorter bursts (clicks) are not speech
PREROLL_FRAMES = 1  # kept before the first speech frame: soft onsets start below threshold
HANGOVER_FRAMES = 1  # kept after the last speech frame: endings fade below threshold
_LEVEL_FLOOR_DB = -100.0  # digital zero would be -inf


def frame_levels(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """dBFS of consecutive ``FRAME_SECONDS`` frames (the last one zero-padded), and the frame
    length in samples. ``x``: int16 (full scale 32768) or float (full scale 1.0), 1-D."""
    frame = max(1, round(FRAME_SECONDS * sr))
    y = np.asarray(x, dtype=np.float64)
    if x.dtype == np.int16:
        y = y / 32768.0
    n = -(-len(y) // frame)
    y = np.pad(y, (0, n * frame - len(y))).reshape(n, frame)
    power = np.mean(y * y, axis=1)
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (_LEVEL_FLOOR_DB / 10.0)))
    return db, frame


def active_frames(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """Which ``FRAME_SECONDS`` frames of ``x`` are above the clip's threshold (see the module
    docstring), and the frame length in samples. ``x`` non-empty."""
    db, frame = frame_levels(x, sr)
    floor = min(float(np.percentile(db, FLOOR_PERCENTILE)), NOISE_CEILING_DB)
    peak = float(db.max())
    threshold = max(ABSOLUTE_FLOOR_DB, floor + MIN_SNR_DB, peak - DYNAMIC_RANGE_DB)
    return db >= threshold, frame


def speech_span(x: np.ndarray, sr: int) -> tuple[int, int] | None:
    """``(begin, end)`` sample bounds of the speech in ``x``, or None when it is all silence."""
    if len(x) == 0:
        return None
    active, frame = active_frames(x, sr)
    found = runs(active, MIN_RUN_FRAMES)
    if not found:
        return None
    first, last = found[0][0], found[-1][1]  # frame indices, last exclusive
    begin = max(0, (first - PREROLL_FRAMES) * frame)
    end = min(len(x), (last + HANGOVER_FRAMES) * frame)
    return begin, end


def speech_regions(x: np.ndarray, sr: int, pause: float) -> list[tuple[int, int]]:
    """``[begin, end)`` sample bounds of the speech regions of ``x`` that are separated by at
    least ``pause`` seconds of non-speech, in order; [] when it is all silence. One region
    is :func:`speech_span`'s span."""
    if len(x) == 0:
        return []
    active, frame = active_frames(x, sr)
    found = runs(active, MIN_RUN_FRAMES)
    gap = max(1, round(pause * sr / frame))  # in frames
    merged: list[list[int]] = []
    for start, stop in found:
        if merged and start - merged[-1][1] < gap:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    regions: list[tuple[int, int]] = []
    for start, stop in merged:
        begin = max(0, (start - PREROLL_FRAMES) * frame)
        if regions:  # a pause shorter than preroll + hangover: never overlap
            begin = max(begin, regions[-1][1])
        regions.append((begin, min(len(x), (stop + HANGOVER_FRAMES) * frame)))
    return regions


def runs(active: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """``[start, stop)`` frame runs of ``active`` at least ``min_len`` long."""
    edges = np.diff(np.concatenate(([0], active.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops) if b - a >= min_len]


def _no_model() -> None:
    """Signal level only: nothing to install, no model version to record."""


BACKEND = VadBackend(name="energy", speech_span=speech_span, split_regions=speech_regions,
                     require=_no_model)
