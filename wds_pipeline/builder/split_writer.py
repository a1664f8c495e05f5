"""Everything a build writes for one split: staged shards, their commit and journal, the index.

Two halves. Worker side (runs wherever a shard task runs: this process, a pool
worker, a Ray node): :func:`staged_shard` gives a temp file in the task's staging
folder that is removed unless :meth:`StagedShard.commit` publishes it, and
:func:`journal_shard` records the published shard. Coordinator side:
:class:`SplitWriter` inspects what OUT already holds (refuse / overwrite /
resume), keeps the outcome each shard reports, and writes ``index.json`` last,
only once every planned shard has reported success.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tqdm import tqdm

from .. import format as fmt
from .. import storage
from ..index import INDEX_NAME, BuildCounts, DatasetIndex, ShardInfo, VadCounts
from ..records import Reject
from ..storage.urls import join_url
from ..version import __version__
from .journal import (
    STAGING_DIR,
    JournalEntry,
    SplitState,
    clear_split,
    entry_reusable,
    inspect_split,
    journal_dir,
    refuse,
    write_journal,
)
from .lock import OutLock
from .options import BuildError, OutputConflictError
from .plan import ShardTask, SplitPlan, WorkerConfig

Log = Callable[[str], None]


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


# ---------------------------------------------------------------------------
# Worker side


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


# ---------------------------------------------------------------------------
# Coordinator side


class SplitWriter:
    """One output split: its state on storage, its shards' outcomes and its index."""

    def __init__(self, plan: SplitPlan, storage_options: Mapping[str, Any], log: Log):
        self.plan = plan
        self.so = dict(storage_options)
        self.log = log
        self.state = SplitState()
        self.outcomes: dict[int, ShardOutcome] = {}

    @property
    def index_url(self) -> str:
        return join_url(self.plan.split_url, INDEX_NAME)

    def inspect(self) -> list[str]:
        """Read what OUT holds for this split; returns the conflicts (a different dataset)."""
        plan = self.plan
        self.state, conflicts, notes = inspect_split(
            plan.split_url, plan.fingerprint, {t.name for t in plan.shards}, self.so)
        for note in notes:
            self.log(f"{plan.split}: {note}")
        return conflicts

    def refusal(self, conflicts: list[str]) -> OutputConflictError:
        return refuse(self.plan.split_url, conflicts)

    def clear(self) -> None:
        """--overwrite: remove the split's old index, shards and journal."""
        n = clear_split(self.plan.split_url, self.so)
        if n:
            self.log(f"{self.plan.split}: --overwrite removed {n} old files under "
                     f"{self.plan.split_url}")
        self.state = SplitState()

    @property
    def complete(self) -> DatasetIndex | None:
        """The finished index of this very dataset, when OUT already holds it."""
        return self.state.complete

    def resume(self, progress: bool) -> list[ShardTask]:
        """Keep journaled shards whose files re-hash correctly; returns the shards to build."""
        plan = self.plan
        to_check = [t for t in plan.shards if t.name in self.state.entries]
        for task in tqdm(to_check, desc=f"verify {plan.split} journal", unit="shard",
                         disable=not progress or not to_check, file=sys.stderr):
            entry = self.state.entries[task.name]
            if entry_reusable(entry, task):
                self.outcomes[task.index] = ShardOutcome(plan.split, task.index, entry.info,
                                                         entry.rejects, entry.counts,
                                                         reused=True, vad=entry.vad)
            else:
                self.log(f"{plan.split}: {task.name} does not match its journal entry "
                         "(changed or truncated); rebuilding it")
        todo = [t for t in plan.shards if t.index not in self.outcomes]
        self.clean_staging()
        self.log(f"{plan.split}: {len(plan.shards)} shards planned, {len(self.outcomes)} reused "
                 f"from the journal, {len(todo)} to build")
        return todo

    def record(self, outcome: ShardOutcome) -> None:
        """A shard reported success (its file is published and journaled)."""
        self.outcomes[outcome.task_index] = outcome

    def missing(self) -> list[ShardTask]:
        return [t for t in self.plan.shards if t.index not in self.outcomes]

    def write_index(self, cfg: WorkerConfig, preprocessing: dict[str, Any],
                    lock: OutLock) -> DatasetIndex:
        """Write ``index.json``: last, atomically, and only when every shard reported."""
        missing = self.missing()
        if missing:
            raise BuildError(f"{self.plan.split}: not writing {self.index_url}: "
                             f"{len(missing)} shards have not reported success "
                             f"(first: {missing[0].name})")
        index = assemble_index(self.plan, self.outcomes, preprocessing, cfg)
        lock.check()  # another build took OUT over: its shards may be mixed with ours
        storage.makedirs(self.plan.split_url, **self.so)
        storage.write_bytes_atomic(self.index_url, index.to_json().encode("utf-8"), **self.so)
        self.clean_staging()
        return index

    def clean_staging(self) -> None:
        """Remove this split's leftover temp tars (a killed worker's) from the local
        staging folder."""
        if not self.plan.shards:
            return
        stage = self.plan.shards[0].staging_dir
        if not os.path.isdir(stage):
            return
        names = {t.name for t in self.plan.shards}
        for n in os.listdir(stage):
            # Only leftovers of this split's shards: the shared system temp folder may
            # hold other splits' (or other builds') files.
            if n.endswith(".partial") and n.split(".tar.", 1)[0] + ".tar" in names:
                os.unlink(os.path.join(stage, n))
        try:
            os.rmdir(stage)  # only when empty
        except OSError:
            pass


def assemble_index(plan: SplitPlan, outcomes: Mapping[int, ShardOutcome],
                   preprocessing: dict[str, Any], cfg: WorkerConfig) -> DatasetIndex:
    counts = BuildCounts(inputs=plan.num_inputs, rejected=len(plan.rejects))
    rejects = list(plan.rejects)
    vad = VadCounts()
    shards = []
    for task in plan.shards:  # plan order, whatever order the workers finished in
        o = outcomes[task.index]
        if o.info is not None:
            shards.append(o.info)
        rejects.extend(o.rejects)
        counts.written += o.counts.written
        counts.rejected += o.counts.rejected
        counts.samples += o.counts.samples
        if o.vad is not None:
            vad.add(o.vad)
    counts.check()
    extras = dict(plan.extras)
    if cfg.vad != "none":
        extras["vad"] = vad.extras(cfg.vad, cfg.sample_rate, cfg.vad_split_pause)
    fields = {cfg.audio_field, fmt.JSON}
    if plan.label_map:
        fields.add(fmt.CLS)
    if cfg.fbank is not None:
        fields.add(cfg.fbank_field)
    return DatasetIndex(
        name=f"{plan.dataset}-{plan.split}", shards=shards, sample_rate=cfg.sample_rate,
        fields=sorted(fields), audio_field=cfg.audio_field, dataset=plan.dataset,
        split=plan.split, label_map=plan.label_map, preprocessing=preprocessing,
        counts=counts, rejected=sorted(rejects), extras=extras,
        build_fingerprint=plan.fingerprint, tool_version=__version__,
    )
