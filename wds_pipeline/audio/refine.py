"""Energy refinement of a model's speech bounds: a detector that scores long windows (the
Silero model: 32 ms, its speech ending once its score has stayed low for a while) finds
*whether and where* there is speech; its bounds are then moved to the nearest 10 ms energy
frames (:mod:`.energy`'s threshold) within ``REFINE_SECONDS`` of its edges, which puts them
where the sound starts and ends. Pure numpy; no model here.
"""

from __future__ import annotations

import bisect

import numpy as np

from .energy import MIN_RUN_FRAMES, active_frames, runs

REFINE_SECONDS = 0.3  # how far an energy frame may move a model bound


def refine_regions(x: np.ndarray, sr: int, regions: list[tuple[int, int]], pause: float,
                   lag_seconds: float) -> list[tuple[int, int]]:
    """``--vad-split-pause``: a model's speech ``regions`` of ``x``, each refined as
    :func:`refine` refines a span (but only towards energy runs between its neighbours'
    model bounds: a short pause must not pull a bound into the next region), then joined
    across refined gaps shorter than ``pause`` seconds. ``lag_seconds``: how late the
    model ends a region (its own pause), which a bound may move inwards on top of
    ``REFINE_SECONDS``."""
    found, frame = _energy_runs(x, sr)  # once: a long recording has many regions
    starts, ends = [r[0] for r in found], [r[1] for r in found]
    refined: list[tuple[int, int]] = []
    for i, (begin, end) in enumerate(regions):
        lo = regions[i - 1][1] if i else 0
        hi = regions[i + 1][0] if i + 1 < len(regions) else len(x)
        own = runs_within(found, starts, ends, lo, hi, frame)
        # A region that runs into the end of the recording was left open by the model
        # (no pause after it), up to its pause plus its lag late.
        new_begin, new_end = _refined(own, frame, len(x), begin, end, sr,
                                      inward=REFINE_SECONDS + lag_seconds)
        if refined:  # refined bounds of neighbours never overlap
            new_begin = max(new_begin, refined[-1][1])
        if new_end > new_begin:
            refined.append((new_begin, new_end))
    gap = round(pause * sr)
    merged: list[tuple[int, int]] = []
    for begin, end in refined:
        if merged and begin - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged


def runs_within(found: list[tuple[int, int]], starts: list[int], ends: list[int], lo: int,
                hi: int, frame: int) -> list[tuple[int, int]]:
    """The runs of ``found`` (frame indices; ``starts``/``ends`` their columns) that lie
    within samples [lo, hi]. The runs are in order and disjoint, so starts and ends both
    increase and those runs are one slice, found by bisection (a scan of every run for
    every region was quadratic in a long recording)."""
    return found[bisect.bisect_left(starts, -(-lo // frame)) : bisect.bisect_right(ends, hi // frame)]


def _energy_runs(x: np.ndarray, sr: int) -> tuple[list[tuple[int, int]], int]:
    active, frame = active_frames(x, sr)
    return runs(active, MIN_RUN_FRAMES), frame


def refine(x: np.ndarray, sr: int, begin: int, end: int) -> tuple[int, int]:
    """``begin``/``end`` moved to the first/last energy-active run within
    ``REFINE_SECONDS`` of them; kept where no such run is near."""
    found, frame = _energy_runs(x, sr)
    return _refined(found, frame, len(x), begin, end, sr)


def _refined(found: list[tuple[int, int]], frame: int, n: int, begin: int, end: int,
             sr: int, inward: float = REFINE_SECONDS) -> tuple[int, int]:
    """:func:`refine` over the energy runs ``found`` (frame indices) of a signal of ``n``
    samples; a bound moves up to ``inward`` seconds into the model's region."""
    reach = round(REFINE_SECONDS * sr / frame)
    inside = round(inward * sr / frame)
    lo, hi = begin // frame, -(-end // frame)  # frames holding the bounds
    near_begin = [r for r in found if r[1] > lo - reach and r[0] < lo + inside]
    near_end = [r for r in found if r[1] > hi - inside and r[0] < hi + reach]
    new_begin, new_end = begin, end
    if near_begin:
        new_begin = max(min(near_begin[0][0], lo + inside), lo - reach) * frame
    if near_end:
        new_end = min(n, min(max(near_end[-1][1], hi - inside), hi + reach) * frame)
    # A short detection can refine to nothing: the model's own bounds then.
    return (new_begin, new_end) if new_end > new_begin else (begin, end)
