"""Silero voice activity detection (``--vad silero``): the neural model of the ``silero-vad``
package (it ships its weights, so it runs offline), with the energy VAD's contract.

The model scores 32 ms windows at 16 kHz (input at other rates is resampled for it), and
its speech ends where its score has stayed low for a while, so its own bounds are up to a
few windows off. It decides *whether and where* there is speech; the bounds are then moved
to the nearest 10 ms energy frames (:mod:`.vad`'s threshold) within ``REFINE_SECONDS`` of
its edges, which puts them where the sound starts and ends. No speech by the model: None,
whatever the energy (a steady tone or a fan is loud but not speech).

The model is loaded once per process (a worker builds many shards) and run with one torch
thread: the builder already runs one worker per core.
"""

from __future__ import annotations

import bisect
import functools
from typing import Any

import numpy as np

from ..errors import WdsPipelineError
from .signal import resample
from .vad import MIN_RUN_FRAMES, active_frames, runs

MODEL_RATE = 16000
THRESHOLD = 0.5  # the package's default speech probability
MIN_SPEECH_MS = 90  # shorter detections are clicks (the package's default 250 ms drops words)
MIN_SILENCE_MS = 100  # a pause this long separates two speech regions
REFINE_SECONDS = 0.3  # how far an energy frame may move a model bound
INSTALL_HINT = "pip install 'wds-pipeline[vad]'"


class SileroMissingError(WdsPipelineError, ImportError):
    def __init__(self) -> None:
        super().__init__(f"--vad silero needs the silero-vad package: {INSTALL_HINT}")


def require() -> str:
    """The installed silero-vad version, or :class:`SileroMissingError`."""
    try:
        import silero_vad  # noqa: F401
    except ImportError as e:
        raise SileroMissingError() from e
    from importlib.metadata import version

    return version("silero-vad")


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    """The model, loaded on first use in this process and kept: loading takes longer than
    scoring a clip."""
    require()
    import warnings

    from silero_vad import load_silero_vad

    with warnings.catch_warnings():  # the package's loader uses APIs its deps deprecate
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


def speech_regions(x: np.ndarray, sr: int, min_silence_ms: int = MIN_SILENCE_MS
                   ) -> list[tuple[int, int]]:
    """``[start, end)`` sample bounds (at ``sr``) of the speech regions the model finds in
    ``x`` (int16 or float in [-1, 1], 1-D), in order; [] when it finds none. Regions are
    separated by pauses of at least ``min_silence_ms``."""
    if len(x) == 0:
        return []
    import torch
    from silero_vad import get_speech_timestamps

    y = np.asarray(x, dtype=np.float32)
    if x.dtype == np.int16:
        y = y / 32768.0
    if sr != MODEL_RATE:
        y = resample(y, sr, MODEL_RATE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below: an in-process build shares the caller's torch
    try:
        model = _model()
        found = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(y)), model, threshold=THRESHOLD,
            sampling_rate=MODEL_RATE, min_speech_duration_ms=MIN_SPEECH_MS,
            min_silence_duration_ms=min_silence_ms, speech_pad_ms=0)
    finally:
        torch.set_num_threads(threads)
    scale = sr / MODEL_RATE
    return [(min(len(x), round(t["start"] * scale)), min(len(x), round(t["end"] * scale)))
            for t in found]


def speech_span(x: np.ndarray, sr: int) -> tuple[int, int] | None:
    """``(begin, end)`` sample bounds of the speech in ``x``, or None when the model finds
    none; the model's outer bounds refined by energy frames (see the module docstring)."""
    regions = speech_regions(x, sr)
    if not regions:
        return None
    return refine(x, sr, regions[0][0], regions[-1][1])


def split_regions(x: np.ndarray, sr: int, pause: float) -> list[tuple[int, int]]:
    """``--vad-split-pause``: the model's speech regions, each refined as
    :func:`speech_span`'s bounds are (but only towards energy runs between its neighbours'
    model bounds: a short pause must not pull a bound into the next region), then joined
    across refined gaps shorter than ``pause`` seconds. [] when the model finds no speech.

    The model is asked for regions at its usual pause (or ``pause`` when shorter) and the
    gaps are measured after refinement: its own silence starts late (its score falls a
    while after the sound does), so asking it for ``pause`` would miss pauses a little
    longer than that, which the energy backend splits at."""
    min_silence = min(MIN_SILENCE_MS, round(pause * 1000))
    regions = speech_regions(x, sr, min_silence_ms=min_silence)
    if not regions:
        return []
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
                                      inward=REFINE_SECONDS + min_silence / 1000)
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
