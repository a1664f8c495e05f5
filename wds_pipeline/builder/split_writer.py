"""The coordinator's side of writing one split: :class:`SplitWriter` inspects what OUT
already holds (refuse / overwrite / resume), keeps the outcome each shard reports, and
writes ``index.json`` last, only once every planned shard has reported success. The
shards themselves are staged, committed and journaled by their tasks (:mod:`.staging`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tqdm import tqdm

from .. import format as fmt
from .. import storage
from ..index import INDEX_NAME, BuildCounts, DatasetIndex, VadCounts
from ..storage.urls import join_url
from ..version import __version__
from .journal import SplitState, clear_split, entry_reusable, inspect_split, refuse
from .lock import OutLock
from .options import BuildError, OutputConflictError
from .plan import ShardTask, SplitPlan, WorkerConfig
from .staging import ShardOutcome

Log = Callable[[str], None]


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
        for url, data in index.files(self.index_url):  # a large split's sidecar first, index.json last
            storage.write_bytes_atomic(url, data, **self.so)
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
    if cfg.vad_enabled:
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
