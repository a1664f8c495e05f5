"""Reading a WhisperX transcript JSON into checked segments and words.

``{"segments": [{"start", "end", "text", "words": [{"word", "start", "end", "score",
"speaker"?}], "speaker"?}], "word_segments"?, "language"?}``. WhisperX up to v3.3 leaves
words made of digits or symbols without ``start``/``end``/``score``; newer versions fill
them in and omit only the ``score``. Anything else that does not fit is a
:class:`TranscriptError` naming the segment or word, so the source records a reject.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from ..errors import WdsPipelineError

# Seconds two neighbours may overlap before it is an error: aligners round to 10-20 ms.
OVERLAP_TOLERANCE = 0.02


class TranscriptError(WdsPipelineError, ValueError):
    """The transcript cannot be used as it is; the message says where and why."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float | None  # None: untimed (an older WhisperX left it unaligned)
    end: float | None
    score: float | None = None
    speaker: str | None = None
    interpolated: bool = False  # times filled in here (--untimed interpolate)

    @property
    def timed(self) -> bool:
        return self.start is not None and self.end is not None


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    speaker: str | None = None


def read_transcript(path: str) -> list[Segment]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except UnicodeDecodeError as e:
        raise TranscriptError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TranscriptError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
                              ) from None
    except OSError as e:
        raise TranscriptError(f"cannot read it ({e.strerror or e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list):
        raise TranscriptError('expected a JSON object with a "segments" list, as WhisperX '
                              "writes it")
    return [_segment(i, s) for i, s in enumerate(doc["segments"])]


def _segment(i: int, s: Any) -> Segment:
    where = f"segment {i}"
    if not isinstance(s, dict):
        raise TranscriptError(f"{where}: expected an object, got {type(s).__name__}")
    start, end = _time(s.get("start"), f"{where} start"), _time(s.get("end"), f"{where} end")
    if start is None or end is None:
        raise TranscriptError(f"{where}: no start/end time")
    words = s.get("words", [])
    if not isinstance(words, list):
        raise TranscriptError(f"{where}: \"words\" must be a list")
    text = s.get("text", "")
    if not isinstance(text, str):
        raise TranscriptError(f"{where}: \"text\" must be a string")
    return Segment(start, end, text.strip(),
                   tuple(_word(f"{where} word {j}", w) for j, w in enumerate(words)),
                   _speaker(s.get("speaker"), where))


def _word(where: str, w: Any) -> Word:
    if not isinstance(w, dict) or not isinstance(w.get("word"), str):
        raise TranscriptError(f"{where}: expected an object with a \"word\" string")
    score = w.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise TranscriptError(f"{where}: score {score!r} is not a number")
    return Word(w["word"].strip(), _time(w.get("start"), f"{where} start"),
                _time(w.get("end"), f"{where} end"),
                None if score is None else float(score), _speaker(w.get("speaker"), where))


def _time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranscriptError(f"{where} {value!r} is not a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise TranscriptError(f"{where} {value!r} is negative or not finite")
    return float(value)


def _speaker(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise TranscriptError(f"{where}: speaker {value!r} is not a string")


def check_timing(segments: list[Segment], length: float, tolerance: float) -> None:
    """Raise on times a recording of ``length`` seconds cannot have: an end before its start,
    segments or words out of order or overlapping (beyond :data:`OVERLAP_TOLERANCE`), or a
    transcript that runs more than ``tolerance`` seconds past the end of the recording (the
    JSON of another recording?)."""
    prev_seg: Segment | None = None
    for i, s in enumerate(segments):
        where = f"segment {i}"
        if s.end < s.start:
            raise TranscriptError(f"{where} ends ({s.end:.3f} s) before it starts ({s.start:.3f} s)")
        if prev_seg is not None and s.start < prev_seg.start:
            raise TranscriptError(f"{where} starts at {s.start:.3f} s, before segment {i - 1} "
                                  f"({prev_seg.start:.3f} s): segments out of order")
        if prev_seg is not None and s.start < prev_seg.end - OVERLAP_TOLERANCE:
            raise TranscriptError(f"{where} starts at {s.start:.3f} s, inside segment {i - 1} "
                                  f"(ends {prev_seg.end:.3f} s): overlapping segments")
        if s.end > length + tolerance:
            raise TranscriptError(f"{where} ends at {s.end:.3f} s but the recording is "
                                  f"{length:.3f} s long: is this the transcript of another "
                                  "recording?")
        prev_seg = s
        prev: Word | None = None
        for j, w in enumerate(s.words):
            if not w.timed:
                continue
            assert w.start is not None and w.end is not None
            at = f"{where} word {j} ({w.word!r})"
            if w.end < w.start:
                raise TranscriptError(f"{at} ends ({w.end:.3f} s) before it starts "
                                      f"({w.start:.3f} s)")
            if w.end > length + tolerance:
                raise TranscriptError(f"{at} ends at {w.end:.3f} s but the recording is "
                                      f"{length:.3f} s long")
            if prev is not None and prev.start is not None and prev.end is not None:
                if w.start < prev.start:
                    raise TranscriptError(f"{at} starts at {w.start:.3f} s, before the word "
                                          f"before it ({prev.start:.3f} s): words out of order")
                if w.start < prev.end - OVERLAP_TOLERANCE:
                    raise TranscriptError(f"{at} starts at {w.start:.3f} s, inside the word "
                                          f"before it (ends {prev.end:.3f} s): overlapping words")
            prev = w


def interpolate(segment: Segment) -> Segment:
    """Untimed words given times: each run of them shares the gap between the timed words
    (or the segment's edges) around it evenly."""
    words = list(segment.words)
    i = 0
    while i < len(words):
        if words[i].timed:
            i += 1
            continue
        j = i
        while j < len(words) and not words[j].timed:
            j += 1
        lo = words[i - 1].end if i > 0 else segment.start
        hi = words[j].start if j < len(words) else segment.end
        assert lo is not None and hi is not None
        hi = max(hi, lo)
        step = (hi - lo) / (j - i)
        for k in range(i, j):
            a = lo + (k - i) * step
            words[k] = replace(words[k], start=round(a, 3), end=round(a + step, 3),
                               interpolated=True)
        i = j
    return replace(segment, words=tuple(words))
