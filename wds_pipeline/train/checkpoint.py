"""Training checkpoints on any fsspec URL (local folder, a Drive/FUSE folder, gs://).

    mgr = CheckpointManager(url, keep_last=2, keep_best=1, metric="val_acc", mode="max")
    info = mgr.save(state, step=1200, epoch=3, metrics={"val_acc": 0.91})
    found = mgr.load_latest()            # (state, CheckpointInfo) or None
    mgr.list()                           # CheckpointInfo of each complete-looking checkpoint

Layout: ``ckpt-000001200.pt`` (``torch.save`` of the state dict) and its sidecar
``ckpt-000001200.json`` (step, epoch, metrics, sha256 and size of the .pt, format
version). The sidecar is written only after the .pt is committed, so it is the
commit marker: a .pt without one is an interrupted save and is never resumed from.
Both files are written atomically (temp name + fsync + rename on local disk and FUSE,
one completed upload on object stores); temp names start with "." and never match
the checkpoint pattern. Nothing committed is deleted before its replacement is: saving a
step again first rewrites its sidecar to vouch for the old bytes *and* the new ones
("previous"), then replaces the .pt, then drops the old entry, so a kill at any point
leaves the step loadable (old or new contents); older steps are pruned only after the
new checkpoint is committed.

One run at a time per folder: :meth:`CheckpointManager.lock` takes the folder lock of
``storage/lock.py`` (``.wds-pipeline-train.lock``: holder named, taken over when its
process on this host is gone or its lease is not renewed, a lease object on gs://);
a holder that lost it is refused by :meth:`CheckpointManager.save`.

Resume takes the highest *step* (never file times) whose sidecar parses and whose
.pt has the recorded size and sha256 and loads with ``torch.load(weights_only=True)``;
skipping a damaged newer one warns with both names. State must therefore hold only
tensors and plain values (dicts, lists, str, int, float, bool, None); ``save``
checks that before writing anything.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import signal
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch

from .. import storage
from ..storage import RetryPolicy
from ..storage import lock as folder_lock
from .checkpoint_files import (
    CHECKPOINT_FORMAT_VERSION,
    JSON_RE,
    PT_RE,
    TMP_RE,
    CheckpointInfo,
    checkpoint_step,
    file_names,
)
from .checkpoint_io import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointWarning,
    load_failure,
    serialize,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "DEFAULT_SAVE_RETRY",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointLockedError",
    "CheckpointManager",
    "CheckpointWarning",
    "checkpoint_step",
    "lower_is_better",
]

# Drive remounts and GCS hiccups can last tens of seconds; losing a checkpoint costs
# far more than waiting, so saves retry longer than shard reads do (~1 min of backoff).
DEFAULT_SAVE_RETRY = RetryPolicy(attempts=8, initial_backoff=0.5, max_backoff=30.0, timeout=300.0)

LOCK_NAME = ".wds-pipeline-train.lock"
# Test hook: a save SIGKILLs its own process at the named point (see _kill_point), so that
# tests kill a real save at each step of its sequence deterministically.
KILL_AT_ENV = "WDS_PIPELINE_CHECKPOINT_KILL_AT"


# Figures where lower is better (error rates, detection costs, losses: valid_eer,
# valid_min_dcf_0.01, valid_eer/<list>, loss): keep_best by one in mode "max" keeps the worst.
_LOWER_IS_BETTER = re.compile(r"(?:^|_)(?:eer|min_dcf|loss)(?:[_/]|$)")


def lower_is_better(metric: str) -> bool:
    """True for a metric name that is an error rate, a cost or a loss."""
    return bool(_LOWER_IS_BETTER.search(metric))




class CheckpointManager:
    """Save, list, prune and resume checkpoints under one folder URL.

    keep_last: how many of the newest checkpoints (by step) to keep.
    keep_best/metric/mode: also keep the ``keep_best`` checkpoints with the highest
        (``mode="max"``) or lowest (``"min"``) value of ``metric`` among the saves
        whose metrics carry it.
    storage_options: passed to fsspec (e.g. ``token``/``project`` for gs://).
    retry: backoff schedule for transient errors (Drive ENOTCONN/EIO, HTTP 5xx,
        connection resets) while saving, loading and pruning.
    """

    def __init__(
        self,
        url: str,
        *,
        keep_last: int = 2,
        keep_best: int = 0,
        metric: str | None = None,
        mode: Literal["max", "min"] = "max",
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy = DEFAULT_SAVE_RETRY,
    ) -> None:
        if not url:
            raise ValueError("CheckpointManager: url is empty; give a folder path or URL")
        if keep_last < 1:
            raise ValueError(f"CheckpointManager: keep_last must be >= 1, got {keep_last}")
        if keep_best < 0:
            raise ValueError(f"CheckpointManager: keep_best must be >= 0, got {keep_best}")
        if keep_best and not metric:
            raise ValueError(
                f"CheckpointManager: keep_best={keep_best} needs metric= "
                "(the metrics key to rank checkpoints by)"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"CheckpointManager: mode must be 'max' or 'min', got {mode!r}")
        self.url = url.rstrip("/") or url
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.metric = metric
        self.mode = mode
        self.storage_options = dict(storage_options or {})
        self.retry = retry
        self._lock: folder_lock.HeldLock | None = None

    def __repr__(self) -> str:
        best = f", keep_best={self.keep_best}, metric={self.metric!r}, mode={self.mode!r}"
        return (
            f"CheckpointManager({self.url!r}, keep_last={self.keep_last}"
            f"{best if self.keep_best else ''})"
        )

    # ------------------------------------------------------------------ helpers

    def _join(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _listing(self) -> list[str]:
        try:
            return storage.listdir(self.url, fresh=True, retry=self.retry, **self.storage_options)
        except FileNotFoundError:
            return []

    def _remove(self, name: str) -> bool:
        try:
            storage.remove(self._join(name), retry=self.retry, **self.storage_options)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # The new checkpoint is safely written; failing the run over cleanup
            # would lose more than a stale file costs.
            warnings.warn(
                f"could not delete old checkpoint file {self._join(name)!r}: {exc}; "
                "delete it by hand to free the space",
                CheckpointWarning,
                stacklevel=3,
            )
            return False
        return True

    def _complete(self, names: list[str], present: set[str]) -> list[CheckpointInfo]:
        out = []
        for name in names:
            m = JSON_RE.match(name)
            if m and file_names(int(m.group(1)))[0] in present:
                info = self._sidecar(int(m.group(1)))
                if info is not None:
                    out.append(info)
        return sorted(out, key=lambda i: i.step)

    def _sidecar(self, step: int) -> CheckpointInfo | None:
        """The sidecar of ``step`` read and parsed; None if it is missing or unreadable."""
        pt, side = file_names(step)
        try:
            raw = storage.read_bytes(self._join(side), retry=self.retry, **self.storage_options)
            return CheckpointInfo.from_sidecar(raw, pt_url=self._join(pt), step=step)
        except (ValueError, FileNotFoundError):
            return None

    # --------------------------------------------------------------------- save

    def save(
        self,
        state: dict[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
    ) -> CheckpointInfo:
        """Write ``state`` as the checkpoint of ``step``, then apply retention.

        After it returns, :meth:`load_latest` resumes from this checkpoint: saved
        checkpoints of later steps (from a run this one replaced) are deleted.
        Transient storage errors are retried per ``retry``; anything else, or
        retries running out, raises an ``OSError`` naming the URL.
        """
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"checkpoint step must be an int >= 0, got {step!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"checkpoint epoch must be an int >= 0, got {epoch!r}")
        clean_metrics: dict[str, float] = {}
        for k, v in (metrics or {}).items():
            try:
                clean_metrics[str(k)] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"checkpoint metric {k!r} is not a number: {v!r}") from None

        data = serialize(state)
        pt, side = file_names(step)
        info = CheckpointInfo(
            url=self._join(pt),
            step=step,
            epoch=epoch,
            metrics=clean_metrics,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        if self._lock is not None:
            self._lock.check()  # another run took the folder over: write nothing more
        try:
            old = self._committed(step) if side in self._listing() else None
            if old is not None:
                # Saving a committed step again: its sidecar first vouches for both the
                # old and the new bytes, so the step stays loadable while the .pt is
                # replaced (deleting the old sidecar first lost the run on a kill).
                self._write(side, CheckpointInfo(**{**vars(info), "previous": old}).to_sidecar())
                _kill_point("resave-vouches-both")
            _kill_point("before-pt")
            self._write(pt, data)
            _kill_point("pt-committed")
            self._write(side, info.to_sidecar())
            _kill_point("sidecar-committed")
        except storage.StorageError:
            raise  # already names the URL, the attempts and the last error
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"saving checkpoint step {step} to {info.url!r} failed: "
                f"{type(exc).__name__}: {exc}. Check that the folder exists and is writable.",
            ) from exc
        self._prune(info)
        return info

    def _write(self, name: str, data: bytes) -> None:
        storage.write_bytes_atomic(self._join(name), data, retry=self.retry, **self.storage_options)

    def _committed(self, step: int) -> CheckpointInfo | None:
        """The sidecar entry of ``step`` (without its own ``previous``), None if unreadable."""
        info = self._sidecar(step)
        return None if info is None else CheckpointInfo(**{**vars(info), "previous": None})

    # --------------------------------------------------------------------- lock

    def lock(self, *, wait_seconds: float = 0.0, log: Any = lambda _msg: None) -> None:
        """Hold the folder for this run until :meth:`unlock`: two runs in one folder would
        resume from and delete each other's checkpoints. Waits up to ``wait_seconds`` for
        the holder, then raises :class:`CheckpointLockedError` naming it."""
        if self._lock is None:
            self._lock = folder_lock.acquire(
                self.url, self.storage_options, name=LOCK_NAME, wait_seconds=wait_seconds,
                what="training run", log=log, refusal=_locked_error, lost_error=_lost_error)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _prune(self, new: CheckpointInfo) -> None:
        names = self._listing()
        present = set(names)
        infos = self._complete(names, present)
        newer = [i for i in infos if i.step > new.step]
        if newer:
            warnings.warn(
                f"deleting checkpoints {[i.url for i in newer]} of steps after the one just "
                f"saved ({new.url}): they belong to a run this one replaced, and resume "
                "must follow this run",
                CheckpointWarning,
                stacklevel=3,
            )
        older = [i for i in infos if i.step <= new.step]
        keep = {new.step} | {i.step for i in older[-self.keep_last :]}
        if self.keep_best:
            metric = self.metric or ""  # __init__ ensures one is set with keep_best
            ranked = [i for i in older if not math.isnan(i.metrics.get(metric, math.nan))]
            sign = 1.0 if self.mode == "max" else -1.0
            # Ties go to the later step.
            ranked.sort(key=lambda i: (sign * i.metrics[metric], i.step), reverse=True)
            keep |= {i.step for i in ranked[: self.keep_best]}
        for info in infos:
            if info.step in keep:
                continue
            pt, side = file_names(info.step)
            # Sidecar first: a checkpoint half-deleted by a crash is then an
            # ignored orphan .pt, never a sidecar vouching for a missing file.
            if self._remove(side):
                _kill_point("pruned-sidecar")
                self._remove(pt)
        # Leftovers of interrupted saves: .pt files without a sidecar and temp files.
        committed = {file_names(i.step)[0] for i in infos}
        for name in names:
            if (PT_RE.match(name) and name not in committed) or TMP_RE.match(name):
                if name != file_names(new.step)[0]:
                    self._remove(name)

    # --------------------------------------------------------------------- load

    def load_latest(
        self, map_location: Any = "cpu"
    ) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """The newest checkpoint (by step) that passes its integrity checks, loaded
        with ``torch.load(weights_only=True)``; ``None`` when there is none.

        Newer checkpoints that fail (truncated, corrupt, sidecar missing or garbled)
        are skipped with a :class:`CheckpointWarning` naming each and the one used.
        When committed checkpoints exist but every one is damaged,
        :class:`CheckpointError` lists them (starting over silently would discard
        the run).
        """
        names = self._listing()
        present = set(names)
        steps = sorted(
            {int(m.group(1)) for n in names if (m := PT_RE.match(n) or JSON_RE.match(n))},
            reverse=True,
        )
        skipped: list[tuple[str, str]] = []
        damaged_committed = False
        for step in steps:
            pt, side = file_names(step)
            if side not in present:
                skipped.append((self._join(pt), f"no sidecar {side}: its save was interrupted"))
                continue
            damaged_committed = True
            if pt not in present:
                skipped.append((self._join(side), f"its checkpoint file {pt} is missing"))
                continue
            found = self._verify_and_load(step, map_location, skipped)
            if found is not None:
                if skipped:
                    warnings.warn(
                        _skipped_text(skipped)
                        + f"; resuming from {found[1].url} (step {step}) instead",
                        CheckpointWarning,
                        stacklevel=2,
                    )
                return found
        if damaged_committed:
            raise CheckpointError(
                _skipped_text(skipped)
                + f"; no usable checkpoint is left in {self.url!r}. Restore one, or move "
                "these files away to start the run from scratch."
            )
        if skipped:
            warnings.warn(
                _skipped_text(skipped) + "; no checkpoint to resume from",
                CheckpointWarning,
                stacklevel=2,
            )
        return None

    def load(self, step: int, map_location: Any = "cpu") -> tuple[dict[str, Any], CheckpointInfo]:
        """The checkpoint of ``step``, checked as :meth:`load_latest` checks it (sidecar, size,
        sha256, ``weights_only``); :class:`CheckpointError` naming the file when it fails."""
        skipped: list[tuple[str, str]] = []
        try:
            found = self._verify_and_load(step, map_location, skipped)
        except FileNotFoundError as exc:
            skipped.append((self._join(file_names(step)[0]), f"missing ({exc})"))
            found = None
        if found is None:
            raise CheckpointError(_skipped_text(skipped) + "; pick another checkpoint of the run")
        return found

    def _verify_and_load(
        self, step: int, map_location: Any, skipped: list[tuple[str, str]]
    ) -> tuple[dict[str, Any], CheckpointInfo] | None:
        pt, side = file_names(step)
        pt_url, side_url = self._join(pt), self._join(side)
        try:
            raw = storage.read_bytes(side_url, retry=self.retry, **self.storage_options)
            info = CheckpointInfo.from_sidecar(raw, pt_url=pt_url, step=step)
        except ValueError as exc:
            skipped.append((side_url, f"sidecar unreadable: {exc}"))
            return None
        data = storage.read_bytes(pt_url, retry=self.retry, **self.storage_options)
        prev = info.previous
        if prev is not None and (len(data), hashlib.sha256(data).hexdigest()) == (prev.size, prev.sha256):
            info = prev  # a re-save of this step was cut before its new .pt was committed
        elif len(data) != info.size:
            what = "truncated" if len(data) < info.size else "wrong size"
            skipped.append((pt_url, f"{len(data)} bytes, its sidecar says {info.size} ({what})"))
            return None
        if hashlib.sha256(data).hexdigest() != info.sha256:
            skipped.append((pt_url, "sha256 differs from its sidecar (corrupt)"))
            return None
        try:
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except Exception as exc:  # a file that hashes right but does not load
            skipped.append((pt_url, load_failure(exc)))
            return None
        return state, info

    # --------------------------------------------------------------------- list
    # Last in the class: a method named ``list`` would shadow the builtin in the
    # signatures of methods defined after it.
    def list(self) -> list[CheckpointInfo]:
        """Checkpoints whose sidecar parses and whose .pt exists, sorted by step
        (contents are not hashed here; :meth:`load_latest` verifies them)."""
        names = self._listing()
        return self._complete(names, set(names))


def _skipped_text(skipped: list[tuple[str, str]]) -> str:
    return "skipped damaged checkpoint(s): " + "; ".join(f"{u} ({why})" for u, why in skipped)


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _locked_error(url: str, rec: folder_lock.LockRecord | None) -> CheckpointLockedError:
    who = rec.describe() if rec else "a run whose lock record is being written"
    folder = url.rsplit("/", 1)[0]
    return CheckpointLockedError(
        f"checkpoint folder {folder} is in use by another training run ({who}): two runs "
        "would resume from and delete each other's checkpoints. Wait for it to finish, pass "
        "--wait-for-lock SECONDS to wait, or set another checkpoint.dir; if no such run is "
        f"alive, delete {url} (it is also taken over when not renewed for "
        f"{folder_lock.LEASE_SECONDS:.0f} s).")


def _lost_error(url: str, who: str) -> CheckpointLockedError:
    return CheckpointLockedError(
        f"lost the lock {url} to {who}: another run now writes this checkpoint folder, so "
        "this one stops without saving; rerun when that run has finished")
