"""The worker side of writing a shard, wherever its task runs (this process, a pool worker,
a Ray node): :func:`staged_shard` gives a temp file in the task's staging folder that is
removed unless :meth:`StagedShard.commit` publishes it, and :func:`journal_shard` records
the published shard; the task reports a :class:`ShardOutcome`. The coordinator's side
(inspect OUT, resume, write the index) is :mod:`.split_writer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .. import storage
from ..index import BuildCounts, ShardInfo, VadCounts
from ..records import Reject
from .journal import STAGING_DIR, JournalEntry, journal_dir, write_journal
from .plan import ShardTask


@dataclass
class ShardOutcome:
    """What a shard task reports back: small metadata, never audio."""

    task_split: str
    task_index: int
    info: ShardInfo | None  # None: every input rejected, no tar written
    rejects: list[Reject] = field(default_factory=list)
    counts: BuildCounts = field(default_factory=BuildCounts)
    reused: bool = False  # skipped thanks to a verified journal entry
    vad: VadCounts | None = None  # None: built without --vad


def staging_dir_for(split_url: str) -> str:
    """Local folder for temp tars: next to the output when it is a local disk (so the
    commit is a rename), else the system temp dir (GCS uploads from it; on a FUSE
    mount a copy-then-rename beats writing a tar through FUSE member by member)."""
    if not storage.is_remote(split_url) and not storage.is_fuse_path(split_url):
        return os.path.join(storage.local_path(journal_dir(split_url)), STAGING_DIR)
    # One folder per output split: cleaning leftovers must never touch the temp
    # files of another build running at the same time.
    tag = hashlib.sha256(split_url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "wds_pipeline-staging", tag)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no other way to read it; set straight back
    os.umask(mask)
    return mask


class StagedShard:
    """An open temp file for one shard; :meth:`commit` publishes it at the task's URL."""

    def __init__(self, task: ShardTask, file: BinaryIO, path: str):
        self.task = task
        self.file = file
        self.path = path

    def commit(self) -> None:
        """Atomically publish the (closed) temp file as ``task.url``."""
        so = self.task.storage_options
        storage.makedirs(self.task.split_url, **so)
        storage.commit_file(self.path, self.task.url, **so)


@contextlib.contextmanager
def staged_shard(task: ShardTask) -> Iterator[StagedShard]:
    """A temp file in the task's staging folder, removed on exit unless committed
    (a commit renames or uploads it; a leftover after kill -9 is removed by the
    coordinator's :meth:`SplitWriter.clean_staging`)."""
    os.makedirs(task.staging_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=task.name + ".", suffix=".partial", dir=task.staging_dir)
    # mkstemp makes the file 0600 and the commit renames it: give it the mode any new file
    # gets, so that other users (a Colab runtime user) can read the shards.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        # Opened by name, unbuffered: every write goes straight to storage.write_all (the
        # shard writer's HashingWriter), which sees short writes and names this file when
        # its disk is full.
        with open(tmp, "wb", buffering=0) as raw:
            yield StagedShard(task, raw, tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def journal_shard(task: ShardTask, outcome: ShardOutcome) -> None:
    """Record a published shard (or an all-rejected one) so that a rerun can reuse it."""
    write_journal(task, JournalEntry(
        fingerprint=task.fingerprint, split=task.split, shard=task.name,
        inputs_sha256=task.inputs_sha256, info=outcome.info, rejects=outcome.rejects,
        counts=outcome.counts, vad=outcome.vad,
    ))
