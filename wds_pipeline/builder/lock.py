"""One build at a time per OUT: the folder lock of :mod:`wds_pipeline.storage.lock` (a lock
file, or a lease object on ``gs://``) at ``OUT/.wds-pipeline.lock``, with build wording.

Two builds into one OUT would delete each other's temp files and publish each other's
shards under their own journal. What the lock guarantees (atomic create on one machine,
a dead holder on this host taken over, leases that go stale when not renewed, best effort
on remote stores) is documented in ``storage/lock.py``. A holder that finds its record
replaced by another build's (its lease was judged stale) stops before writing any index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..storage import lock as _lock
from ..storage.lock import LEASE_SECONDS, LOCK_NAME, RENEW_SECONDS, HeldLock, LockRecord
from .options import BuildError

__all__ = ["LEASE_SECONDS", "LOCK_NAME", "RENEW_SECONDS", "LockRecord", "OutLock",
           "OutputLockedError", "acquire", "locked"]

OutLock = HeldLock  # the held lock on OUT: ``check()`` raises BuildError once it is lost


class OutputLockedError(BuildError):
    """Another build holds OUT."""


def _locked_error(url: str, rec: LockRecord | None) -> OutputLockedError:
    who = rec.describe() if rec else "a build whose lock record is being written"
    return OutputLockedError(
        f"{url} is being written by another build ({who}). Wait for it to finish, or pass "
        f"--wait-for-lock SECONDS to wait; if no such build is running, delete {url} "
        f"(it is also taken over by itself when not renewed for {LEASE_SECONDS:.0f} s).")


def _lost_error(url: str, who: str) -> BuildError:
    return BuildError(f"lost the lock on OUT ({url}) to {who}; "
                      "no index was written; rerun when that build has finished")


def _kwargs(wait_seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    return {"name": LOCK_NAME, "wait_seconds": wait_seconds, "what": "build", "log": log,
            "refusal": _locked_error, "lost_error": _lost_error}


def acquire(out: str, storage_options: Mapping[str, Any], *, wait_seconds: float = 0.0,
            log: Callable[[str], None] = lambda _msg: None) -> OutLock:
    """Take the lock on ``out`` (creating the folder), waiting up to ``wait_seconds``
    for another build to finish; raises :class:`OutputLockedError` naming the holder."""
    return _lock.acquire(out, storage_options, **_kwargs(wait_seconds, log))


@contextlib.contextmanager
def locked(out: str, storage_options: Mapping[str, Any], *, wait_seconds: float = 0.0,
           log: Callable[[str], None] = lambda _msg: None) -> Iterator[OutLock]:
    with _lock.locked(out, storage_options, **_kwargs(wait_seconds, log)) as held:
        yield held
