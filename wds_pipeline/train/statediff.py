"""``state_dict_diff``: what differs between a checkpoint's saved settings and now.

The trainer compares the dataset fingerprints and loader/config dicts stored in a
checkpoint with the current ones and refuses to resume (unless forced) on any line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["state_dict_diff"]


_ABSENT = object()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a.cpu(), b.cpu()))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        # JSON/YAML round trips turn tuples into lists: compare the items.
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in python, not in a config
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)  # 1 == 1.0: a YAML/JSON round trip may change the number type
    except Exception:
        return False


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "<absent>"
    if isinstance(v, torch.Tensor):
        return f"tensor(shape={tuple(v.shape)}, dtype={v.dtype})"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def state_dict_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two nested dicts, one line per dotted key:
    ``"loader.batch_size: saved 32, now 64"`` (``<absent>`` for a missing key).
    Empty when they match. Used to refuse resuming against other data/settings."""
    a, b = _flatten(saved), _flatten(now)
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va is _ABSENT or vb is _ABSENT or not _same(va, vb):
            lines.append(f"{key}: saved {_show(va)}, now {_show(vb)}")
    return lines
