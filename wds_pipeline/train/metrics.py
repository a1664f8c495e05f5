"""Training metrics: equal error rate, and one log of figures to JSONL and TensorBoard."""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from .. import storage
from ..storage import STORAGE_RETRY, RetryPolicy
from ..sv.metrics import eer

T = TypeVar("T")


def timed(items: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Each item with the seconds spent blocked waiting for it: the data-wait of a loop."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item, time.perf_counter() - t0


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER of verification ``scores`` (higher = same speaker) against 0/1 ``labels``:
    :func:`wds_pipeline.sv.metrics.eer` (tied scores are one threshold; interpolated where
    false acceptance meets false rejection), the one implementation the scoring CLI shares."""
    return eer(scores, labels)


class AppendFile:
    """A file that grows by whole records (metrics.jsonl, a TensorBoard event file), on any
    local or FUSE path. A retried append first cuts the file back to the end of the last
    complete record, so a write that failed half-way never leaves a fragment behind."""

    def __init__(self, path: str, header: bytes = b"") -> None:
        self.path = path
        # Bytes of complete records; None until the file is first looked at (an earlier
        # run's records are continued, never cut).
        self._size: int | None = None
        self._pending = header  # written before the next record (a file header, a newline)

    def append(self, data: bytes) -> None:
        if self._size is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        with open(fd, "r+b", buffering=0) as f:
            size = os.fstat(fd).st_size
            if self._size is None:  # first write: continue after an earlier run's records
                self._size = size
                if size:
                    f.seek(size - 1)
                    if f.read(1) != b"\n" and not self._pending:  # a line cut short by a kill
                        self._pending = b"\n"
            elif size > self._size:  # a failed attempt left part of a record: cut it off
                os.ftruncate(fd, self._size)
            self._size = min(size, self._size)
            data = self._pending + data
            f.seek(self._size)
            storage.write_all(f, data)
        self._size += len(data)
        self._pending = b""

    def reset(self, size: int) -> None:
        """The file was replaced as a whole and now holds ``size`` bytes of records."""
        self._size = size
        self._pending = b""


class MetricsLog:
    """Appends one JSON object per record to ``<out_dir>/metrics.jsonl`` and mirrors scalars
    to a TensorBoard event file under ``<out_dir>/tensorboard`` when tensorboard is installed.

    After a resume, records for steps past the checkpoint are written again: the last
    record of a step is the one that counts (each record carries ``step``).

    ``out_dir`` may be a Drive folder: every write is retried on transient errors
    (``Errno 107``, EIO) per ``retry``, and a write that still fails never stops training:
    it is warned about once per sink (``metrics.jsonl``, ``TensorBoard``, ``metrics mirror``),
    counted in :attr:`failed`, and later writes are tried once each (no backoff: a dead link
    must not stall every step) until one succeeds again. TensorBoard events are written here,
    synchronously, through the same retried append as metrics.jsonl: its own writer's
    background thread fails for good on one error.
    """

    def __init__(self, out_dir: str | None, *, tensorboard: bool = True, retry: RetryPolicy | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """``out_dir=None``: a log that writes nothing (ranks other than 0)."""
        self.path = os.path.join(out_dir, "metrics.jsonl") if out_dir else ""
        self.retry = retry or STORAGE_RETRY
        self._log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.failed: dict[str, int] = {}  # records (or mirror uploads) not written, per sink
        self._degraded: set[str] = set()  # sinks whose last write failed: one attempt each
        self._warned: set[str] = set()
        self._jsonl = AppendFile(self.path) if out_dir else None
        if out_dir:
            self._attempt("metrics.jsonl", out_dir, lambda: os.makedirs(out_dir, exist_ok=True))
        self._tb: AppendFile | None = None
        if out_dir and tensorboard and _tensorboard_available():
            # TensorBoard's own naming; the last part keeps two logs of one process apart.
            name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                    f"{next(_EVENT_FILES)}")
            self._tb = AppendFile(os.path.join(out_dir, "tensorboard", name),
                                  header=_tb_record(_tb_event(file_version="brain.Event:2")))

    @property
    def tensorboard_dir(self) -> str | None:
        return os.path.dirname(self._tb.path) if self._tb is not None else None

    @property
    def failures(self) -> int:
        """Records and mirror uploads that could not be written, over every sink."""
        return sum(self.failed.values())

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if self._jsonl is None:
            return
        record = {"kind": kind, "step": step, **values}
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        self._attempt("metrics.jsonl", self.path, lambda: self._jsonl.append(line) if self._jsonl else None)
        tb = self._tb
        if tb is not None:
            scalars = {f"{kind}/{k}": float(v) for k, v in values.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            event = _tb_record(_tb_event(step=step, scalars=scalars))
            self._attempt("TensorBoard", tb.path, lambda: tb.append(event))

    def read_bytes(self, retry: RetryPolicy | None = None) -> bytes | None:
        """The records written so far (None: no metrics.jsonl yet)."""
        if not self.path:
            return None

        def read() -> bytes | None:
            try:
                with open(self.path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        return storage.retrying("reading", self.path, read, retry or self.retry)

    def replace(self, data: bytes) -> None:
        """Make ``data`` the whole of metrics.jsonl (a history restored from a mirror)."""
        storage.write_bytes_atomic(self.path, data, retry=self.retry)
        if self._jsonl is not None:
            self._jsonl.reset(len(data))

    def mirror(self, url: str, **storage_options: Any) -> bool:
        """Upload metrics.jsonl to ``url`` (beside checkpoints kept elsewhere); False when
        there is nothing to upload yet or the upload failed (warned once, counted)."""
        once = RetryPolicy(attempts=1)  # each attempt once: _attempt retries the whole upload

        def upload() -> bool:
            data = self.read_bytes(once)
            if not data:  # no record yet (a checkpoint before the first log line)
                return False
            storage.write_bytes_atomic(url, data, retry=once, **storage_options)
            return True

        return bool(self._attempt("metrics mirror", url, upload))

    def close(self) -> None:
        """Nothing is held open between records; kept for callers that close."""

    def _attempt(self, sink: str, url: str, fn: Callable[[], T]) -> T | None:
        """``fn()`` retried on transient errors; a failure is warned about (once per sink),
        counted, and swallowed: metrics never stop training."""
        policy = RetryPolicy(attempts=1) if sink in self._degraded else self.retry
        try:
            result = storage.retrying(f"writing {sink}", url, fn, policy)
        except OSError as e:
            self.failed[sink] = self.failed.get(sink, 0) + 1
            self._degraded.add(sink)
            if sink not in self._warned:
                self._warned.add(sink)
                self._log(f"warning: {sink}: could not write {url} ({type(e).__name__}: {e}); training "
                          "continues, and what is not written is counted in the summary")
            return None
        self._degraded.discard(sink)
        return result


_EVENT_FILES = itertools.count()


def _tensorboard_available() -> bool:
    try:
        import tensorboard.compat.proto.event_pb2  # noqa: F401
    except ImportError:  # tensorboard is optional (pip install tensorboard)
        return False
    return True


def _tb_event(*, step: int = 0, scalars: dict[str, float] | None = None, file_version: str = "") -> Any:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    if file_version:
        return Event(wall_time=time.time(), file_version=file_version)
    values = [Summary.Value(tag=k, simple_value=v) for k, v in (scalars or {}).items()]
    return Event(wall_time=time.time(), step=step, summary=Summary(value=values))


def _tb_record(event: Any) -> bytes:
    """One TFRecord: length, its masked crc32c, the serialized event, its masked crc32c."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    buf = io.BytesIO()
    RecordWriter(buf).write(event.SerializeToString())
    return buf.getvalue()


def metrics_mirror_url(checkpoint_dir: str, out_dir: str) -> str | None:
    """Where metrics.jsonl is copied with every checkpoint: beside the checkpoints when they
    live elsewhere than ``<out_dir>/<folder>`` (a gs:// bucket cannot be appended to; a Drive
    folder outlives the VM). None when they are already side by side."""
    from ..storage.urls import join_url

    if not storage.is_remote(checkpoint_dir) and \
            os.path.abspath(os.path.dirname(checkpoint_dir.rstrip("/"))) == os.path.abspath(out_dir):
        return None
    return join_url(checkpoint_dir, "metrics.jsonl")


def restore_metrics(metrics: MetricsLog, mirror_url: str, *, upto_step: int,
                    log: Callable[[str], None], **storage_options: Any) -> bool:
    """After a resume from step ``upto_step``: when the local metrics.jsonl is missing or holds
    fewer records than the mirror beside the checkpoints has up to that step (the VM was reset,
    the local folder lost), make it those records, so the history goes on and the next upload
    does not shrink the mirror. False when the history could not be read or restored: the
    caller must then leave the mirror alone."""
    try:
        data = storage.read_bytes(mirror_url, retry=metrics.retry, **storage_options)
    except FileNotFoundError:
        return True
    except OSError as e:
        log(f"warning: cannot read the metrics history {mirror_url} ({e}); this run leaves it as it is")
        return False
    kept = records_upto(data, upto_step)
    try:
        local = metrics.read_bytes() or b""
        if len(kept) <= len([line for line in local.splitlines() if line.strip()]):
            return True
        metrics.replace(b"".join(kept))
    except OSError as e:
        log(f"warning: cannot restore {metrics.path} from {mirror_url} ({e}); this run leaves the "
            "mirror as it is")
        return False
    log(f"restored {len(kept)} metrics records (up to step {upto_step}) from {mirror_url} into "
        f"{metrics.path}: the local copy was missing or shorter")
    return True


def records_upto(data: bytes, step: int) -> list[bytes]:
    """The lines of a metrics.jsonl whose record has ``step`` <= ``step`` (each ending in a
    newline); lines that are no record (cut short) are left out."""
    kept = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + b"\n")
    return kept
