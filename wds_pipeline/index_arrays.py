"""An index's per-sample lists read straight into numpy arrays, not Python ints.

A VoxCeleb2-sized ``index.json`` (1.1 M samples) holds 3.3 M per-sample numbers
(``sample_frames``, ``sample_offsets``, ``sample_crc32``). ``json.loads`` makes each a
Python int (most of the 0.8 s the parse takes, ~35 bytes each), every loader process
then holds them. :func:`lift_sample_lists` cuts those lists out of the text before the
parse, reads each with numpy's C parser, and leaves a marker string in its place that
:func:`lifted` resolves. A list that is not plain whole numbers (a damaged or hand-edited
index) is left in the text, so the usual type checks name it.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

MARK = "\x00lifted:"  # a JSON string no real list is: the key then fails the type checks
_OPEN = re.compile(rb'"(sample_frames|sample_offsets|sample_crc32)"\s*:\s*\[')
_SATURATED = np.iinfo(np.int64).max  # numpy's parse of a number too big for int64
_PLAIN = b"0123456789, \t\r\n"  # all a plain list of whole numbers holds


def lift_sample_lists(text: bytes) -> tuple[bytes, list[np.ndarray]]:
    """(``text`` with each plain per-sample list replaced by a marker, the lists as int64
    arrays, in marker order)."""
    spans: list[tuple[int, int]] = []  # (first byte of the body, its closing bracket)
    at = text.find(b'"sample_')
    while at >= 0:
        m = _OPEN.match(text, at)  # the regex only where the fast find stops: a 40 MB text
        at = text.find(b'"sample_', at + 1)
        if m is None or (spans and m.start() < spans[-1][1]):
            continue
        close = text.find(b"]", m.end())
        if close < 0:
            break  # truncated: json.loads says so
        if not text[m.end() : close].translate(None, _PLAIN):
            spans.append((m.end(), close))
    arrays = _parse_all([text[a:b] for a, b in spans])
    pieces: list[bytes] = []
    lifted_: list[np.ndarray] = []
    pos = 0
    for (a, b), values in zip(spans, arrays):
        if values is None:
            continue  # left in the text: the type checks name what is wrong with it
        pieces += [text[pos : a - 1], b'"\\u0000lifted:%d"' % len(lifted_)]
        lifted_.append(values)
        pos = b + 1
    pieces.append(text[pos:])
    return b"".join(pieces), lifted_


def _parse_all(bodies: list[bytes]) -> list[np.ndarray | None]:
    """Each body's whole numbers (None where it is not a plain list of them): one numpy
    parse of them all, or one each when that finds a damaged one."""
    counts = [body.count(b",") + 1 if body.strip() else 0 for body in bodies]
    values = _parse(b",".join(body for body, n in zip(bodies, counts) if n), sum(counts))
    if values is None:
        return [_parse(body, n) for body, n in zip(bodies, counts)]
    parts: list[np.ndarray | None] = list(np.split(values, np.cumsum(counts)[:-1])) if bodies else []
    return parts


def _parse(body: bytes, count: int) -> np.ndarray | None:
    """The ``count`` whole numbers in ``body`` (digits, commas and spaces only), or None."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (and stops) at an empty item: ",,"
        try:
            values = np.fromstring(body, dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if len(values) != count or values.max() >= _SATURATED:
        return None
    return values


def lifted(value: Any, arrays: list[np.ndarray]) -> np.ndarray | None:
    """The array a marker stands for (None: ``value`` is not a marker)."""
    if isinstance(value, str) and value.startswith(MARK):
        i = value[len(MARK) :]
        return arrays[int(i)] if i.isdigit() and int(i) < len(arrays) else None
    return None
