"""One writer at a time per folder: a lock file (local disk, FUSE mounts) or a lease object
(``gs://`` and other remote stores) inside the folder. Builds lock their OUT with it
(``builder/lock.py``), training runs their checkpoint folder (``train/checkpoint.py``).

Two writers in one folder would delete each other's files (temp shards, old checkpoints)
and resume from each other's state. The lock record names its holder (host, pid, start
time, command) so that a refused writer can say who holds the folder.

What is guaranteed:

- Local disk and FUSE mounts: the lock file is created with ``O_CREAT | O_EXCL``, which
  is atomic on one machine (the kernel checks and creates under the folder's lock, on a
  FUSE mount too; ``flock`` is not used because many FUSE filesystems ignore it). A lock
  whose holder ran on this host and whose process is gone (kill -9, power cut) is stale
  and is taken over.
- Every holder renews its record every ``RENEW_SECONDS``. A record not renewed for
  ``LEASE_SECONDS`` is stale whatever host wrote it: that is how a writer on another
  machine (a second Colab runtime on the same Drive folder) or on a remote store is
  judged, and it assumes clocks that agree within a minute.
- Remote stores (``gs://``): fsspec offers no create-if-absent, so the lease is written
  and read back; two writers that start within the same second can both pass. A writer
  that started earlier (and renews its lease) always blocks a later one.
- A holder whose record was replaced by another writer's (its lease was judged stale)
  learns it from :meth:`HeldLock.check` and must stop writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import WdsPipelineError
from .access import is_remote, local_path, write_all
from .ops import exists, makedirs, read_bytes, remove, write_bytes_atomic

LOCK_NAME = ".wds-pipeline.lock"
LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0
_POLL_SECONDS = 2.0

# (lock url, holder record or None while it is being written) -> the error to raise
Refusal = Callable[[str, "LockRecord | None"], Exception]
# (lock url, who holds it now) -> the error a holder that lost its lock raises
LostError = Callable[[str, str], Exception]


class FolderLockedError(WdsPipelineError, OSError):
    """Another writer holds the folder (the default refusal)."""


def _default_refusal(url: str, rec: LockRecord | None) -> Exception:
    who = rec.describe() if rec else "a writer whose lock record is being written"
    return FolderLockedError(f"{url} is held by another writer ({who})")


def _default_lost(url: str, who: str) -> Exception:
    return FolderLockedError(f"lost the lock {url} to {who}")


@dataclass(frozen=True)
class LockRecord:
    host: str
    pid: int
    pid_start: str | None  # /proc start time: tells a reused pid from the holder
    started: float  # epoch seconds
    renewed: float
    command: str
    token: str

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LockRecord | None:
        try:
            d = json.loads(data)
            return cls(host=str(d["host"]), pid=int(d["pid"]), pid_start=d.get("pid_start"),
                       started=float(d["started"]), renewed=float(d["renewed"]),
                       command=str(d["command"]), token=str(d["token"]))
        except (ValueError, KeyError, TypeError):
            return None  # being written right now, or damaged: see stale_reason

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {since} (command: {self.command})"


def _pid_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(rec: LockRecord) -> bool:
    try:
        os.kill(rec.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = _pid_start(rec.pid)
    return rec.pid_start is None or start is None or start == rec.pid_start


def stale_reason(rec: LockRecord | None, age_seconds: float, now: float) -> str | None:
    """Why the lock may be taken over, or None while its holder may still be running."""
    if rec is None:
        # An unreadable record that nobody rewrites: a holder that died mid-write.
        return (f"unreadable lock record, untouched for {age_seconds:.0f} s"
                if age_seconds > LEASE_SECONDS else None)
    if rec.host == socket.gethostname() and not _alive(rec):
        return f"its process {rec.pid} on this host is gone"
    if now - rec.renewed > LEASE_SECONDS:
        return f"its lease was last renewed {now - rec.renewed:.0f} s ago"
    return None


class _Backend:
    """Create-if-absent, read, replace and remove of the lock record."""

    def __init__(self, url: str, so: Mapping[str, Any]):
        self.url = url
        self.so = dict(so)
        self.local = None if is_remote(url) else local_path(url)

    def create(self, data: bytes) -> bool:
        if self.local is None:
            if exists(self.url, **self.so):
                return False
            write_bytes_atomic(self.url, data, **self.so)
            return True
        try:
            fd = os.open(self.local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                write_all(f, data)  # a short write raises instead of leaving a half record
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.local)  # not a lock anyone holds: let the next writer in
            raise
        return True

    def read(self) -> tuple[bytes, float] | None:
        """(record bytes, seconds since last modified), or None when there is no lock."""
        try:
            if self.local is not None:
                with open(self.local, "rb") as f:
                    return f.read(), time.time() - os.fstat(f.fileno()).st_mtime
            return read_bytes(self.url, **self.so), 0.0
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        write_bytes_atomic(self.url, data, **self.so)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            remove(self.url, **self.so)

    def take_over(self, seen: bytes) -> None:
        """Remove the stale record ``seen``, but not a fresh one that another writer created
        after we looked (two writers breaking one stale lock at once)."""
        if self.local is None:
            self.remove()
            return
        aside = f"{self.local}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.local, aside)
        except FileNotFoundError:
            return
        with open(aside, "rb") as f:
            data = f.read()
        if data != seen:  # not the record judged stale: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.local)
        os.unlink(aside)


class HeldLock:
    """The held lock: renews its record in a thread; :meth:`check` raises once it is lost."""

    def __init__(self, backend: _Backend, record: LockRecord, lost_error: LostError = _default_lost):
        self._b = backend
        self.url = backend.url
        self.record = record
        self._lost_error = lost_error
        self._stop = threading.Event()
        self.lost: str | None = None  # who holds the lock now, once this holder lost it
        self._thread = threading.Thread(target=self._renew, name="wds-lock", daemon=True)
        self._thread.start()

    def _holder(self) -> LockRecord | None:
        got = self._b.read()
        return LockRecord.from_bytes(got[0]) if got else None

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                rec = self._holder()
                if rec is None or rec.token != self.record.token:
                    self.lost = rec.describe() if rec else "nobody (the lock file was deleted)"
                    return
                self.record = LockRecord(**{**asdict(self.record), "renewed": time.time()})
                self._b.replace(self.record.to_bytes())
            except OSError:
                continue  # a transient storage error: retried at the next renewal

    def check(self) -> None:
        if self.lost is not None:
            raise self._lost_error(self.url, self.lost)

    def release(self) -> None:
        """Stop renewing and remove the record if it is still ours (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with contextlib.suppress(OSError):
            rec = self._holder()
            if rec is not None and rec.token == self.record.token:
                self._b.remove()


def _new_record() -> LockRecord:
    now = time.time()
    return LockRecord(host=socket.gethostname(), pid=os.getpid(), pid_start=_pid_start(os.getpid()),
                      started=now, renewed=now, command=" ".join(sys.argv) or "python",
                      token=uuid.uuid4().hex)


def acquire(folder: str, storage_options: Mapping[str, Any], *, name: str = LOCK_NAME,
            wait_seconds: float = 0.0, what: str = "writer",
            log: Callable[[str], None] = lambda _msg: None,
            refusal: Refusal = _default_refusal, lost_error: LostError = _default_lost) -> HeldLock:
    """Take the lock ``folder/name`` (creating the folder), waiting up to ``wait_seconds``
    for its holder to finish; raises ``refusal(lock url, holder record)`` when it does not."""
    makedirs(folder, **storage_options)
    backend = _Backend(f"{folder.rstrip('/')}/{name}", storage_options)
    deadline = time.monotonic() + max(0.0, wait_seconds)
    waited = False
    while True:
        mine = _new_record()
        if backend.create(mine.to_bytes()):
            if backend.local is None:
                time.sleep(1.0)  # let a racing writer land, then see whose lease stands
                got = backend.read()
                rec = LockRecord.from_bytes(got[0]) if got else None
                if rec is None or rec.token != mine.token:
                    continue
            return HeldLock(backend, mine, lost_error)
        got = backend.read()
        if got is None:
            continue  # released between our create and read
        rec = LockRecord.from_bytes(got[0])
        stale = stale_reason(rec, got[1], time.time())
        if stale is not None:
            log(f"{backend.url}: taking over a stale lock ({rec.describe() if rec else 'no holder'}"
                f": {stale})")
            backend.take_over(got[0])
            continue
        if time.monotonic() >= deadline:
            raise refusal(backend.url, rec)
        if not waited:
            log(f"{backend.url}: waiting for the {what} that holds it "
                f"({rec.describe() if rec else '?'})")
            waited = True
        time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def locked(folder: str, storage_options: Mapping[str, Any], **kwargs: Any) -> Iterator[HeldLock]:
    """:func:`acquire` for a ``with`` block; a local folder it had to create is removed again
    when the block leaves it empty (a refused or failed writer leaves no trace)."""
    local = None if is_remote(folder) else local_path(folder)
    created = local is not None and not os.path.exists(local)
    try:
        lock = acquire(folder, storage_options, **kwargs)
        try:
            yield lock
        finally:
            lock.release()
    finally:
        if created and local is not None:
            with contextlib.suppress(OSError):
                os.rmdir(local)  # only if the writer left it empty
