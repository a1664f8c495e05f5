"""One decode per recording per shard, however many segments are cut from it.

A recording is an audio reference (``PlannedInput.src``) shared by one or more segments
(planned inputs with their own offset/duration: manifest rows on one file, the words or
windows of a session). Decoding each segment on its own reopens the file every time, and
MP3 (decoded from the start to be sample-exact) decodes everything before the segment
again. Here the span of the file that a shard's segments cover is decoded once, kept
until the shard's last segment of it is cut, and then dropped: memory is the decoded
span (at most the recording), not the number of segments.

Cutting gives exactly the samples a per-segment decode gives (the segment's first frame
is ``round(offset * rate)`` as in :func:`wds_pipeline.audio.window.frames_wanted`, and
preprocessing runs on each cut as before), so shards stay byte-identical. Whatever the
shared decode cannot serve exactly (the decode fails, a segment starts past the decoded
data) falls back to decoding that segment alone, which reports the fault as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import audio, storage
from ..errors import WdsPipelineError
from .plan import PlannedInput, ShardTask, WorkerConfig

_MARGIN = 0.01  # seconds decoded beyond the last segment's end
_Span = tuple[np.ndarray, int, int]  # decoded (frames, channels), rate, first frame


def decode_segment(p: PlannedInput, cfg: WorkerConfig,
                   storage_options: Mapping[str, Any]) -> np.ndarray:
    """One segment decoded on its own: int16 mono at the target rate."""
    src = _local_or_bytes(p.src, storage_options)
    # name= keeps absolute corpus paths out of reject reasons (and so out of the index).
    return audio.load_and_preprocess(src, cfg.preprocess, offset=p.record.offset,
                                     duration=p.record.duration, name=p.rel)


def _local_or_bytes(src: str, storage_options: Mapping[str, Any]) -> str | bytes:
    """What the decoder reads: a local path as is, a URL's bytes fetched through storage."""
    return storage.read_bytes(src, **storage_options) if "://" in src else src


# What a source's ``read_inputs`` yields per planned input, in plan order: its audio bytes,
# or the error that makes it a reject (e.g. a dataset row without audio).
Fetched = bytes | Exception


class SourceReadError(WdsPipelineError):
    """A source's ``read_inputs`` failed as a whole (not one bad input): the shard fails,
    and a rerun resumes it. Deliberately no ValueError/OSError, which mark a bad input."""


def source_reader(task: ShardTask) -> Iterator[Fetched] | None:
    """The bytes of ``task``'s inputs from their source, when the source reads its inputs
    itself (``read_inputs(root, inputs, options, storage_options)``, e.g. dataset rows); None when
    they are files or URLs that the worker opens."""
    if task.source is None:
        return None
    from ..sources import get_source

    read = get_source(task.source).read_inputs
    if read is None:  # the plan names a source only when it reads its inputs
        raise SourceReadError(f"the {task.source} source does not read its inputs itself "
                              f"(no read_inputs), but shard task {task.name} asks it to")
    root = task.source_root or ""
    return iter(read(root, task.inputs, task.source_options, task.storage_options))


class ShardRecordings:
    """Decoded audio for the segments of one shard, in the shard's order.

    ``fetched``: each input's bytes in plan order (:func:`source_reader`), decoded one at a
    time; memory is one input, whatever the shard holds.
    """

    def __init__(self, inputs: Sequence[PlannedInput], cfg: WorkerConfig,
                 storage_options: Mapping[str, Any],
                 fetched: Iterator[Fetched] | None = None):
        self._cfg = cfg
        self._storage_options = storage_options
        self._fetched = fetched
        self._left = Counter(p.src for p in inputs)  # segments still to cut, per recording
        self._windows: dict[str, tuple[float, float | None]] = {}
        for p in inputs:
            if self._left[p.src] > 1:
                self._windows[p.src] = _cover(self._windows.get(p.src), p)
        self._spans: dict[str, _Span | None] = {}  # None: the shared decode failed

    def segment(self, p: PlannedInput) -> np.ndarray:
        """int16 mono at the target rate, as :func:`decode_segment` gives it."""
        if self._fetched is not None:
            try:
                data = next(self._fetched, None)
            except Exception as e:  # the source, not this input: the shard fails (rerun)
                raise SourceReadError(f"{p.rel}: reading the source failed: "
                                      f"{type(e).__name__}: {e}") from e
            if data is None:
                raise SourceReadError(f"{p.rel}: the source gave fewer inputs than planned")
            if isinstance(data, Exception):
                raise data
            return audio.load_and_preprocess(data, self._cfg.preprocess, name=p.rel)
        try:
            if p.src not in self._windows:
                return decode_segment(p, self._cfg, self._storage_options)
            if p.src not in self._spans:
                self._spans[p.src] = self._decode_span(p)
            cut = self._cut(p, self._spans[p.src])
            if cut is None:
                return decode_segment(p, self._cfg, self._storage_options)
            return audio.finish(cut[0], cut[1], self._cfg.preprocess)
        finally:
            self._left[p.src] -= 1
            if self._left[p.src] == 0:
                self._spans.pop(p.src, None)

    def _decode_span(self, p: PlannedInput) -> _Span | None:
        lo, hi = self._windows[p.src]
        try:
            src = _local_or_bytes(p.src, self._storage_options)
            # _MARGIN: rounding the span's length to frames must not cut the last segment short.
            wave, rate = audio.decode_audio(
                src, offset=lo, duration=None if hi is None else hi - lo + _MARGIN,
                name=p.rel.split("#", 1)[0], dtype=audio.decode_dtype(self._cfg.preprocess))
        except (ValueError, OSError, RuntimeError, EOFError):
            return None  # each segment decodes alone and reports its own fault
        return wave, rate, round(lo * rate)

    @staticmethod
    def _cut(p: PlannedInput, span: _Span | None) -> tuple[np.ndarray, int] | None:
        if span is None:
            return None
        wave, rate, first = span
        start = round(p.record.offset * rate) - first
        if start < 0 or start >= len(wave):
            return None  # past the decoded data: decoding alone names the fault
        stop = None if p.record.duration is None else start + round(p.record.duration * rate)
        cut = wave[start:stop]
        return (cut, rate) if len(cut) else None  # empty: decoding alone reports it


def _cover(window: tuple[float, float | None] | None, p: PlannedInput
           ) -> tuple[float, float | None]:
    """The smallest (start, end) window holding ``window`` and ``p``'s segment; end None:
    to the end of the file."""
    start = p.record.offset
    end = None if p.record.duration is None else start + p.record.duration
    if window is None:
        return start, end
    lo, hi = window
    return min(lo, start), (None if hi is None or end is None else max(hi, end))
