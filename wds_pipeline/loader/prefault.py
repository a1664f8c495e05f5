"""The next mapped shard's pages faulted in on a thread, while this one is gathered.

A mapped shard's pages are mapped into the process one fault at a time as they are first
read (the locate of its headers, the crc32 checks, the gather): ~45 ms of kernel time per
400 MB of 3 s clips, on the gather's own thread, every epoch (a shard is unmapped after its
last batch). ``madvise(MADV_POPULATE_READ)`` (Linux 5.14+) maps a whole range in one call;
run on a thread over the *next* local shard while the loader works on this one, that time
moves off the batch's path onto a core the loader leaves idle between its gathers.

Only where such a core exists (the dataset's rule: more cores than loader processes), only
for plain local files (never a stream, a FUSE mount or a download: those are read, not
mapped ahead) and within the worker's mapped-bytes budget. The call goes through ctypes:
Python's ``mmap.madvise`` holds the GIL for the whole call, which stalled the gather. A
kernel without the flag answers EINVAL once and the thread stops asking. A file truncated
under the mapping makes the call fail (EFAULT), never raise SIGBUS: the gather's own size
check names it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import queue
import sys
import threading
from typing import Any

from .mapped import MappedShard

MADV_POPULATE_READ = 22  # <linux/mman.h>; not in Python's mmap module before 3.13

Job = tuple[MappedShard, int, int]  # (shard, first byte, end byte)


def _libc_madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _libc_madvise()


def populate(m: MappedShard, start: int, end: int) -> bool:
    """Map the pages of bytes [start, end) of ``m`` into this process (the page cache's, read
    from disk if they are not there yet). False when the kernel cannot (no such flag)."""
    if _MADVISE is None or m.size == 0:
        return False
    start -= start % mmap.PAGESIZE
    end = min(end, m.size)
    if end <= start:
        return True
    if _MADVISE(m.raw.ctypes.data + start, end - start, MADV_POPULATE_READ) != 0:
        return ctypes.get_errno() != 22  # EINVAL: an older kernel; EFAULT etc.: left to the gather
    return True


class Prefaulter:
    """Hands ranges of mapped shards to a daemon thread that populates them in order.
    Threads do not survive fork: a copy in a DataLoader worker starts its own on first use
    (the pid check); a pickled one (spawn) arrives without any."""

    def __init__(self) -> None:
        self._pid = -1
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.supported = _MADVISE is not None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def ahead(self, m: MappedShard, start: int, end: int) -> None:
        if not self.supported:
            return
        if self._pid != os.getpid():  # first use in this process
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._run, args=(self._jobs,), name="wds-prefault", daemon=True).start()
            self._pid = os.getpid()
        self._jobs.put((m, start, end))

    def _run(self, jobs: queue.SimpleQueue[Job]) -> None:
        while True:
            if not self._one(jobs.get()):
                self.supported = False  # the kernel has no MADV_POPULATE_READ
                return

    @staticmethod
    def _one(job: Job) -> bool:
        # In a call of its own: the job's shard is not referenced while the thread waits,
        # so a shard the loader is done with is unmapped as soon as the loader drops it.
        m, start, end = job
        try:
            return populate(m, start, end)
        except Exception:  # noqa: BLE001 - a hint to the kernel; the gather reads the bytes itself
            return True
