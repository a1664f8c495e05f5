"""Silero voice activity detection (``--vad silero``): the neural model of the ``silero-vad``
package (it ships its weights, so it runs offline), with the energy VAD's contract.

The model scores 32 ms windows at 16 kHz (input at other rates is resampled for it), and
its speech ends where its score has stayed low for a while, so its own bounds are up to a
few windows off. It decides *whether and where* there is speech; :mod:`.refine` then
moves the bounds to the nearest energy frames, where the sound starts and ends. No speech
by the model: None, whatever the energy (a steady tone or a fan is loud but not speech).

The model is loaded once per process (a worker builds many shards) and run with one torch
thread: the builder already runs one worker per core.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import WdsPipelineError
from .refine import refine, refine_regions
from .signal import resample
from .vad import VadBackend

MODEL_RATE = 16000
THRESHOLD = 0.5  # the package's default speech probability
MIN_SPEECH_MS = 90  # shorter detections are clicks (the package's default 250 ms drops words)
MIN_SILENCE_MS = 100  # a pause this long separates two speech regions
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
    """``--vad-split-pause``: the model's speech regions, refined and joined across gaps
    shorter than ``pause`` seconds (:func:`.refine.refine_regions`). [] when the model finds
    no speech.

    The model is asked for regions at its usual pause (or ``pause`` when shorter) and the
    gaps are measured after refinement: its own silence starts late (its score falls a
    while after the sound does), so asking it for ``pause`` would miss pauses a little
    longer than that, which the energy backend splits at."""
    min_silence = min(MIN_SILENCE_MS, round(pause * 1000))
    regions = speech_regions(x, sr, min_silence_ms=min_silence)
    if not regions:
        return []
    return refine_regions(x, sr, regions, pause, lag_seconds=min_silence / 1000)


def model_name() -> str:
    """What the index records as ``vad_model``, or :class:`SileroMissingError`."""
    return f"silero-vad {require()}"


BACKEND = VadBackend(name="silero", speech_span=speech_span, split_regions=split_regions,
                     require=model_name)
