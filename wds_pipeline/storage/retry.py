"""The one retry policy: which errors are worth retrying, and how often and how long.

Transient errors (dropped connections, HTTP 5xx/429, ENOTCONN/EIO from a FUSE mount)
are retried with exponential backoff and jitter; anything else is raised unchanged.
Every storage helper, the shard reader and the checkpoint writer take a
:class:`RetryPolicy`; :data:`STORAGE_RETRY` is the schedule of the small helpers
(commits and metadata calls) when none is given.
"""

from __future__ import annotations

import errno
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import WdsPipelineError

__all__ = [
    "STORAGE_RETRY",
    "TRANSIENT_ERRNOS",
    "TRANSIENT_HTTP_CODES",
    "RetryPolicy",
    "StorageError",
    "is_transient",
    "retrying",
]

T = TypeVar("T")

# errno values a FUSE/network mount or a socket returns when the link, not the
# file, is the problem (Colab Drive: "[Errno 107] Transport endpoint is not connected").
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.EIO,
        errno.ETIMEDOUT,
        errno.EHOSTDOWN,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.EAGAIN,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    }
)
TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})


class StorageError(WdsPipelineError, OSError):
    """A storage operation kept failing with transient errors after all retries."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed.

    Transient: connection drops/resets, timeouts, aiohttp client errors, gcsfs HTTP
    5xx/429/408, and OSErrors with errno ENOTCONN/EIO/ETIMEDOUT/EHOSTDOWN & co.
    Not transient: missing files, permissions, bad arguments, HTTP 4xx.
    """
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 4:
        seen += 1
        if isinstance(
            e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
        ):
            # Final unless caused by a transient error: fsspec's http backend reports a
            # connection dropped while sizing a file as FileNotFoundError(url) from it.
            e = e.__cause__
            continue
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        # Optional backends are only checked when already imported: no import cost
        # and no hard dependency on aiohttp/gcsfs.
        aiohttp = sys.modules.get("aiohttp")
        if aiohttp is not None and isinstance(e, aiohttp.ClientError):
            return True
        gretry = sys.modules.get("gcsfs.retry")
        if gretry is not None and isinstance(e, gretry.HttpError):
            code = getattr(e, "code", None)
            try:
                return int(code) in TRANSIENT_HTTP_CODES  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
        # Wrappers (e.g. gcsfs re-raising as a bare OSError/RuntimeError) keep the
        # real error in __cause__; anything with a concrete errno was judged above.
        if isinstance(e, OSError) and e.errno is not None:
            return False
        e = e.__cause__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Retry budget for one operation (a shard read, a commit, a metadata call).

    attempts: consecutive failed attempts (without a byte of progress) before giving up.
    initial_backoff/max_backoff: exponential backoff bounds in seconds, with jitter.
    timeout: give up once an operation has made no progress for this many seconds,
        even with attempts left (checked between attempts: a read blocked inside
        a hung FUSE mount cannot be interrupted from Python).
    """

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")

    def backoff(self, failure: int) -> float:
        """Sleep before retry number ``failure`` (1-based): exponential, 50-100 % jitter
        so that workers hitting the same outage do not retry in lockstep."""
        base = min(self.max_backoff, self.initial_backoff * (2 ** (failure - 1)))
        return base * (0.5 + 0.5 * random.random())

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return is_transient(exc)


# Commits and small metadata calls: a few attempts, doubling from ~0.5 s, no time limit.
STORAGE_RETRY = RetryPolicy(
    attempts=4, initial_backoff=0.5, max_backoff=float("inf"), timeout=float("inf")
)


def retrying(what: str, url: str, fn: Callable[[], T], retry: RetryPolicy | None = None) -> T:
    """``fn()``, retried on transient errors per ``retry`` (default :data:`STORAGE_RETRY`);
    a non-transient error is raised unchanged, exhausted retries raise
    :class:`StorageError` naming ``url`` and the last error."""
    policy = retry if retry is not None else STORAGE_RETRY
    first_failure: float | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if attempt == policy.attempts or now - first_failure > policy.timeout:
                code = exc.errno if isinstance(exc, OSError) else None
                raise StorageError(
                    code,
                    f"{what} {url!r} failed {attempt} times with transient errors; last: "
                    f"{type(exc).__name__}: {exc}. Check the connection/mount and retry "
                    "(on Colab, remount Drive).",
                ) from exc
            time.sleep(policy.backoff(attempt))
    raise AssertionError("unreachable")
