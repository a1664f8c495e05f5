"""Thread-safe counters over a dataclass of ints (cache and shard reader statistics)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Generic, TypeVar

S = TypeVar("S")

__all__ = ["Counters"]


class Counters(Generic[S]):
    """Adds to the int fields of the dataclass ``stats`` under a lock; pickles without
    the lock (a copy carried into a DataLoader worker starts with its own)."""

    def __init__(self, stats: S) -> None:
        self._s = stats
        self._lock = threading.Lock()

    def add(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self._s, k, getattr(self._s, k) + v)

    def snapshot(self) -> S:
        with self._lock:
            return dataclasses.replace(self._s)  # type: ignore[type-var]

    def __getstate__(self) -> dict[str, Any]:
        return {"_s": self._s}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self._s = d["_s"]
        self._lock = threading.Lock()
