"""Reading a shard while the cache downloads it (:meth:`ShardCache.open_partial`).

A :class:`Download` is the state of one download of one shard in one process: the
downloading thread publishes into it (temp file opened, bytes written, attempt
abandoned, committed, failed) and any number of :class:`PartialShard` readers in
other threads of that process read the temp file up to the bytes written so far,
waiting on a condition variable for more. Nothing here verifies bytes: the cache
verifies the whole shard when the download ends, and whoever reads a partial shard
checks what it reads (the loader: each sample's crc32 from the index).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any

from .counters import Counters
from .stream import PositionedStream

__all__ = ["Download", "PartialShard"]


class Download:
    """One download of one shard in this process (see the module docstring).

    The file descriptor held here is the temp file of the current attempt, then the
    committed file (the rename keeps the inode), or the cached file opened under the
    entry lock on a hit; readers ``dup`` it, so an eviction or a failed attempt's
    unlink never pulls the bytes from under a reader.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._attempt = 0
        self._size = 0  # expected size of the current attempt
        self._written = 0
        self._failed: dict[int, BaseException] = {}  # attempt -> why its bytes are wrong
        self._frozen: dict[int, int] = {}  # attempt -> bytes it had written when it failed
        self._path: str | None = None  # verified and committed there
        self._error: BaseException | None = None  # the download failed for good
        self._ended = False

    # -- the downloading thread ------------------------------------------------
    def begin(self, tmp: str, size: int) -> None:
        """A new attempt starts writing ``size`` bytes into ``tmp``."""
        fd = os.open(tmp, os.O_RDONLY)
        with self._cond:
            self._close_fd()
            self._fd, self._size, self._written = fd, size, 0
            self._attempt += 1
            self._cond.notify_all()

    def advance(self, written: int) -> None:
        """The first ``written`` bytes of the current attempt are in the temp file."""
        with self._cond:
            self._written = written
            self._cond.notify_all()

    def abandon(self, error: BaseException) -> None:
        """The current attempt's bytes did not verify: its readers may still read what it
        wrote (they check it themselves) and then fail with ``error``."""
        with self._cond:
            self._failed[self._attempt] = error
            self._frozen[self._attempt] = self._written
            self._close_fd()
            self._cond.notify_all()

    def settle(self, path: str) -> None:
        """Verified and committed at ``path``; call it holding the entry lock."""
        fd = self._fd if self._fd is not None else os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        with self._cond:
            self._fd, self._path, self._size, self._written = fd, path, size, size
            self._ended = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if self._path is None:
                self._error = error
                if self._attempt not in self._failed:
                    self._failed[self._attempt] = error
                    self._frozen[self._attempt] = self._written
            self._ended = True
            self._close_fd()
            self._cond.notify_all()

    def release(self) -> None:
        """No longer registered: later readers open the cache entry the usual way."""
        with self._cond:
            self._ended = True
            self._close_fd()
            self._cond.notify_all()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- other threads -----------------------------------------------------------
    def wait_remaining(self, remaining: int) -> None:
        """Wait until at most ``remaining`` bytes are left to download, or the end."""
        with self._cond:
            while not self._ended and (self._fd is None or self._size - self._written > remaining):
                self._cond.wait()

    def result(self) -> str:
        """Wait for the end; the committed path, or the download's error raised."""
        with self._cond:
            while not self._ended:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if self._path is None:
                raise RuntimeError(f"download of {self.url} ended without a result")
            return self._path

    def attach(self, stats: Counters[Any]) -> PartialShard | io.BufferedReader | None:
        """A reader once the download has begun (a :class:`PartialShard`) or settled (the
        verified file); None when it was released meanwhile. Raises the download's error."""
        with self._cond:
            while self._fd is None and not self._ended:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if self._fd is None:
                return None
            fd = os.dup(self._fd)
            if self._path is not None:
                return open(fd, "rb")  # noqa: SIM115 - returned to the caller
            return PartialShard(self, fd, self._attempt, stats)


class PartialShard(PositionedStream):
    """A seekable, read-only stream over a shard that is still downloading.

    Reads return only bytes already written, waiting for more when needed. When the
    download attempt it reads from failed (an error, or a digest/size mismatch at the
    end), the bytes that attempt wrote stay readable and a read past them raises its
    error. The bytes are unverified: check them, then call :meth:`wait_verified` for the
    verdict on the whole shard. It has no ``fileno`` (the file on disk is not complete yet).

    :meth:`read_rest_from` names errors that are no verdict on the bytes (the cache's
    disk filled up): after one of those the stream reads on from a source stream at the
    byte reached, and :meth:`wait_verified` does not raise it.
    """

    def __init__(self, dl: Download, fd: int, attempt: int, stats: Counters[Any]) -> None:
        super().__init__()
        self.url = dl.url
        self._dl = dl
        self._fd: int | None = fd
        self._attempt = attempt
        self._size = dl._size
        self._stats = stats
        self._pos = 0
        self._first = True
        self._open_rest: Callable[[int], Any] | None = None
        self._rest_when: Callable[[BaseException], bool] = lambda e: False
        self._rest: Any = None  # the source stream read from once the download gave up

    def read_rest_from(self, open_at: Callable[[int], Any],
                       when: Callable[[BaseException], bool]) -> None:
        """When the download fails with an error ``when`` accepts, read the bytes it did
        not write from ``open_at(offset)`` (a raw stream of the same shard from that byte)
        instead of raising it."""
        self._open_rest, self._rest_when = open_at, when

    def _end(self) -> int:
        return self._size

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a partial shard is not a complete file to map")

    def progress(self) -> tuple[int, int]:
        """(bytes downloaded so far, shard size) of the download this reads from."""
        dl = self._dl
        with dl._cond:  # an attempt is frozen when it fails, before any later one begins
            return dl._frozen.get(self._attempt, dl._written), self._size

    def _readable_end(self) -> int:
        """How far reading may go now; waits while nothing is available at ``pos``."""
        dl = self._dl
        with dl._cond:
            while True:
                err = dl._failed.get(self._attempt)
                written = dl._written if err is None else dl._frozen[self._attempt]
                if self._pos >= self._size or written > self._pos:
                    if self._first:
                        self._first = False
                        self._stats.add(partial_bytes_missing=self._size - written)
                    return written
                if err is not None:
                    raise err
                dl._cond.wait()

    def readinto(self, b: Any) -> int:
        if self._fd is None:
            raise ValueError(f"read of closed partial shard {self.url}")
        view = memoryview(b).cast("B")
        if self._rest is None:
            try:
                end = self._readable_end()
            except Exception as exc:
                if self._open_rest is None or not self._rest_when(exc):
                    raise
                self._rest = self._open_rest(self._pos)
            else:
                n = min(len(view), end - self._pos)
                if n <= 0:
                    return 0
                got = os.preadv(self._fd, [view[:n]], self._pos)
                self._pos += got
                return got
        if self._rest.tell() != self._pos:
            self._rest.seek(self._pos)
        got = self._rest.readinto(view) or 0
        self._pos += got
        return got

    def wait_verified(self) -> None:
        """Wait until the download ended; raises its error if the bytes read from this
        stream were not those the index describes."""
        dl = self._dl
        with dl._cond:
            while not dl._ended and self._attempt not in dl._failed:
                dl._cond.wait()
            err = dl._failed.get(self._attempt)
        if err is not None and not (self._open_rest is not None and self._rest_when(err)):
            raise err

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        rest, self._rest = self._rest, None
        if rest is not None:
            rest.close()
        super().close()
