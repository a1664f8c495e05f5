"""A daemon thread of this process fed through a queue, started on first use.

Threads do not survive fork: a copy of the owner in a DataLoader worker (forked) starts its
own thread on its first :meth:`DaemonQueue.put` (the pid check), and one pickled (spawn)
arrives without any (pickle only what the owner needs, never this object).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DaemonQueue(Generic[T]):
    """``handle(item)`` for each item put, in order, on one daemon thread named ``name``.
    ``handle`` runs in a call of its own per item, so the thread keeps no reference to an
    item while it waits for the next one."""

    def __init__(self, handle: Callable[[T], object], name: str) -> None:
        self._handle = handle
        self._name = name
        self._pid = -1
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        if self._pid != os.getpid():  # first use in this process
            self._queue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(self._queue, self._handle), name=self._name,
                             daemon=True).start()
            self._pid = os.getpid()
        self._queue.put(item)


def _serve(items: queue.SimpleQueue[T], handle: Callable[[T], object]) -> None:
    while True:
        handle(items.get())
