"""One build at a time per OUT: a lock file (local disk, FUSE mounts) or a lease object
(``gs://`` and other remote stores) at ``OUT/.wds-pipeline.lock``.

Two builds into one OUT would delete each other's temp files and publish each
other's shards under their own journal. The lock record names its holder (host,
pid, start time, command) so that a refused build can say who holds OUT.

What is guaranteed:

- Local disk and FUSE mounts: the lock file is created with ``O_CREAT | O_EXCL``, which
  is atomic on one machine (the kernel checks and creates under the folder's lock, on a
  FUSE mount too; ``flock`` is not used because many FUSE filesystems ignore it). A lock
  whose holder ran on this host and whose process is gone (kill -9, power cut) is stale
  and is taken over.
- Every holder renews its record every ``RENEW_SECONDS``. A record not renewed for
  ``LEASE_SECONDS`` is stale whatever host wrote it: that is how a build on another
  machine (a second Colab runtime on the same Drive folder) or on a remote store is
  judged, and it assumes clocks that agree within a minute.
- Remote stores (``gs://``): fsspec offers no create-if-absent, so the lease is written
  and read back; two builds that start within the same second can both pass. A build
  that started earlier (and renews its lease) always blocks a later one.
- A holder that finds its record replaced by another build's (its lease was judged
  stale) stops before writing any index.
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

from .. import storage
from ..index import join_url
from .options import BuildError

LOCK_NAME = ".wds-pipeline.lock"
LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0
_POLL_SECONDS = 2.0


class OutputLockedError(BuildError):
    """Another build holds OUT."""


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
            return None  # being written right now, or damaged: see _stale_reason

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


def _stale_reason(rec: LockRecord | None, age_seconds: float, now: float) -> str | None:
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


def _locked_error(url: str, rec: LockRecord | None) -> OutputLockedError:
    who = rec.describe() if rec else "a build whose lock record is being written"
    return OutputLockedError(
        f"{url} is being written by another build ({who}). Wait for it to finish, or pass "
        f"--wait-for-lock SECONDS to wait; if no such build is running, delete {url} "
        f"(it is also taken over by itself when not renewed for {LEASE_SECONDS:.0f} s).")


class _Backend:
    """Create-if-absent, read, replace and remove of the lock record."""

    def __init__(self, url: str, so: Mapping[str, Any]):
        self.url = url
        self.so = dict(so)
        self.local = None if storage.is_remote(url) else storage.local_path(url)

    def create(self, data: bytes) -> bool:
        if self.local is None:
            if storage.exists(self.url, **self.so):
                return False
            storage.write_bytes_atomic(self.url, data, **self.so)
            return True
        try:
            fd = os.open(self.local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def read(self) -> tuple[bytes, float] | None:
        """(record bytes, seconds since last modified), or None when there is no lock."""
        try:
            if self.local is not None:
                with open(self.local, "rb") as f:
                    return f.read(), time.time() - os.fstat(f.fileno()).st_mtime
            return storage.read_bytes(self.url, **self.so), 0.0
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        storage.write_bytes_atomic(self.url, data, **self.so)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            storage.remove(self.url, **self.so)

    def take_over(self, seen: bytes) -> None:
        """Remove the stale record ``seen``, but not a fresh one that another build created
        after we looked (two builds breaking one stale lock at once)."""
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


class OutLock:
    """The held lock: renews its record in a thread; :meth:`check` raises once it is lost."""

    def __init__(self, backend: _Backend, record: LockRecord):
        self._b = backend
        self.record = record
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew, name="wds-out-lock", daemon=True)
        self._thread.start()

    def _holder(self) -> LockRecord | None:
        got = self._b.read()
        return LockRecord.from_bytes(got[0]) if got else None

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                rec = self._holder()
                if rec is None or rec.token != self.record.token:
                    self._lost = rec.describe() if rec else "nobody (the lock file was deleted)"
                    return
                self.record = LockRecord(**{**asdict(self.record), "renewed": time.time()})
                self._b.replace(self.record.to_bytes())
            except OSError:
                continue  # a transient storage error: retried at the next renewal

    def check(self) -> None:
        if self._lost is not None:
            raise BuildError(f"lost the lock on OUT ({self._b.url}) to {self._lost}; "
                             "no index was written; rerun when that build has finished")

    def release(self) -> None:
        self._stop.set()
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


def acquire(out: str, storage_options: Mapping[str, Any], *, wait_seconds: float = 0.0,
            log: Callable[[str], None] = lambda _msg: None) -> OutLock:
    """Take the lock on ``out`` (creating the folder), waiting up to ``wait_seconds``
    for another build to finish; raises :class:`OutputLockedError` naming the holder."""
    storage.makedirs(out, **storage_options)
    backend = _Backend(join_url(out, LOCK_NAME), storage_options)
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
            return OutLock(backend, mine)
        got = backend.read()
        if got is None:
            continue  # released between our create and read
        rec = LockRecord.from_bytes(got[0])
        stale = _stale_reason(rec, got[1], time.time())
        if stale is not None:
            log(f"{backend.url}: taking over a stale lock ({rec.describe() if rec else 'no holder'}"
                f": {stale})")
            backend.take_over(got[0])
            continue
        if time.monotonic() >= deadline:
            raise _locked_error(backend.url, rec)
        if not waited:
            log(f"{backend.url}: waiting for the build that holds it ({rec.describe() if rec else '?'})")
            waited = True
        time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def locked(out: str, storage_options: Mapping[str, Any], *, wait_seconds: float = 0.0,
           log: Callable[[str], None] = lambda _msg: None) -> Iterator[OutLock]:
    local = None if storage.is_remote(out) else storage.local_path(out)
    created = local is not None and not os.path.exists(local)
    lock = acquire(out, storage_options, wait_seconds=wait_seconds, log=log)
    try:
        yield lock
    finally:
        lock.release()
        if created and local is not None:
            with contextlib.suppress(OSError):
                os.rmdir(local)  # only if the build left it empty (a refusal)
