"""The IterableDataset that executes an epoch plan inside DataLoader workers.

The work is split by concern: ``shards`` (the shard table), ``blocks`` (block reads),
``streamed`` (a shard run read from a stream), ``mapped`` (a shard run located in a
memory-mapped file), ``decode`` (per-sample decoding), ``finish`` (every sample's crop and
transforms, decoded or mapped), ``collate`` (batches), ``buffers`` (shared-memory batch
buffers and the sample arena); this module runs the plan through them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .. import format as fmt

# Imported here, in the main process, although only workers read shards: forked workers
# then inherit these modules (and fsspec, filelock) instead of importing them again every
# time they start, i.e. every epoch without persistent workers.
from ..index import DatasetIndex
from ..readpath import ShardRef, open_reader
from .batch import Batch
from .blocks import BlockReader, sequential_runs
from .buffers import BUFFERS_PER_WORKER, SampleArena
from .collate import Collator
from .config import ReadConfig
from .decode import Failed, Sample, SampleDecoder
from .mapped import NOT_PARSED, UNMAPPER, MappedShard, TableCache, file_stamp
from .plan import EpochPlan, PlanConfig, WorkerPlan, plan_epoch_after, read_frames, resume_point
from .rowsplit import SPLITTER, usable_cores
from .shards import ShardEntry, shard_table
from .stages import COLLATE, DECODE, StageClock
from .streamed import Opened, read_run
from .verifier import RangeChecks, mapped_problem

# With several workers whose first shards come over one link (Drive, GCS), the others wait
# for the worker of the epoch's first batch to build it, at most this long: sharing the
# link from the start, that batch came at half the speed (the README's settings on the
# Drive-like mount: 2.8 s). The link is busy either way, so the epoch is no longer.
FIRST_BATCH_WAIT_S = 5.0

log = logging.getLogger(__name__)

Stages = tuple[tuple[int, int, int], ...]


@dataclass
class _Run:
    """One worker's pass over its batches of an epoch: what is held and mapped."""

    plan: EpochPlan
    wp: WorkerPlan
    epoch: int
    refs: np.ndarray  # uses left per read position (samples held in the shuffle buffer)
    uses: np.ndarray  # uses left per shard-table entry (mapped shards)
    entry_of_slot: np.ndarray  # shard-table entry of each slot of the epoch's shard sequence
    held: dict[int, Sample | Failed] = field(default_factory=dict)
    mapped: dict[int, MappedShard] = field(default_factory=dict)
    mapped_bytes: int = 0  # size of the shards mapped now: an upper bound of their touched pages
    # Mapped samples of the batch being gathered whose pages go once it is collated.
    release: list[tuple[MappedShard, int, int]] = field(default_factory=list)  # (shard, start, end)
    # Shards whose last sample of this pass is in the batch being gathered: unmapped on
    # another thread once it is collated (mapped.Unmapper).
    retired: list[MappedShard] = field(default_factory=list)


class ShardStreamDataset(IterableDataset):
    """Yields ready-made :class:`Batch` objects; use with ``DataLoader(batch_size=None)``.

    Which epoch to run and how many batches to skip (resume) are read from a small
    shared-memory tensor that the loader sets before each ``iter()``: it reaches
    persistent workers too, without re-creating them.
    """

    def __init__(
        self,
        indexes: Sequence[DatasetIndex],
        plan_cfg: PlanConfig,
        read_cfg: ReadConfig,
        *,
        rank: int,
        world_size: int,
        num_workers: int,
        prior_stages: Stages = (),
        stages_epoch: int = -1,
    ):
        super().__init__()
        self.indexes = list(indexes)
        self.table = shard_table(self.indexes)
        self.metas = [e.meta for e in self.table]
        self.plan_cfg = plan_cfg
        self.read_cfg = read_cfg
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.num_logical_workers = max(1, num_workers)
        self.sample_rate = self.indexes[0].sample_rate if self.indexes else 16000
        # [epoch, batches already consumed in that epoch, first batch built]; see start().
        self.control = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._plan_cache: tuple[tuple, EpochPlan] | None = None
        # Elastic resume: (world_size, num_workers, batches) stages already run in
        # epoch ``stages_epoch`` under other layouts; that epoch plans only the rest.
        self.prior_stages: Stages = prior_stages
        self.stages_epoch = stages_epoch
        self._reader: Any = None
        self._blocks: BlockReader | None = None
        # Where this process's loading time goes, handed to each batch (the input doctor's).
        self._clock = StageClock()
        self._arena: SampleArena | None = None
        # One flag per recycled batch buffer, shared with the main process; see
        # new_buffer_generation(). None without worker processes.
        self.buffer_flags: torch.Tensor | None = None
        self._decoder = SampleDecoder(plan_cfg, read_cfg, self.sample_rate)
        self._decoder.finisher.clock = self._clock  # times the sample transforms, when there are any
        self._finish = self._decoder.finisher.finish  # the mapped fast path finishes as it does
        self._collator: Collator | None = None
        self._tables = TableCache()  # where samples lie in mapped shards, kept across epochs
        self._checks = RangeChecks(self.table)  # their crc32s, queued as a run is mapped
        # Checks the verifier thread did not pass (a damaged chunk, a worker over its byte
        # budget, no crc32_combine) run as a batch is listed, split across the gather's threads
        # (_check_rows). Only where finishing reads no sample byte (no sample transforms): see
        # SampleFinisher.views_only; otherwise each sample is checked before it is finished.
        self._defer_checks = self._decoder.finisher.views_only
        # The verifier thread's range checks (verifier.RangeChecks) in-process, where the gather
        # is split across threads and Python leaves a core idle part of the time, and beside
        # workers only with a core to spare: with as many workers as cores, the thread slowed a
        # fresh 2-worker epoch of 1-15 s utterances by 4-12% (peers.py --baseline).
        self._range_checks = num_workers == 0 or usable_cores() > self.num_workers + 1
        # Mapped bytes a worker may keep touched: its share of the shuffle buffer's bytes.
        self._mapped_budget = plan_cfg.shuffle_buffer_bytes // self.num_logical_workers
        # Waveform and label only: mapped samples with plain int16 .npy audio skip the decoder.
        self._plain = set(read_cfg.fields) <= {"waveform", "label"}
        self._want_label = "label" in read_cfg.fields
        self._leads = True  # this process yields the first batch (physical worker 0, or no workers)

    def set_prior_stages(self, epoch: int, stages: Stages) -> None:
        """Elastic resume: ``epoch`` already ran ``stages`` under other layouts."""
        self.prior_stages = stages
        self.stages_epoch = epoch

    def start(self, epoch: int, consumed: int) -> None:
        """Which epoch the next ``iter()`` runs and how many of its batches to skip: written
        into shared memory, so persistent workers see it too without being re-created."""
        self.control.copy_(torch.tensor([epoch, consumed, 0], dtype=torch.int64))

    def new_buffer_generation(self) -> torch.Tensor | None:
        """Fresh flags for the recycled batch buffers of the workers started next (workers of
        an abandoned iteration may still be alive with their own buffers and flags, which must
        never be freed on their behalf). Returns the flags; the main process clears a flag
        once nothing references that buffer any more."""
        self.buffer_flags = None
        if self.num_workers > 0:
            self.buffer_flags = torch.zeros(
                self.num_workers * BUFFERS_PER_WORKER, dtype=torch.int32
            ).share_memory_()
        self._collator = None
        return self.buffer_flags

    # -- planning -----------------------------------------------------------
    def plan(self, epoch: int) -> EpochPlan:
        stages = self.prior_stages if epoch == self.stages_epoch else ()
        key = (epoch, stages)
        if self._plan_cache is None or self._plan_cache[0] != key:
            self._plan_cache = (
                key,
                plan_epoch_after(
                    self.metas,
                    self.plan_cfg,
                    epoch=epoch,
                    world_size=self.world_size,
                    num_workers=self.num_logical_workers,
                    stages=stages,
                ),
            )
        return self._plan_cache[1]

    # -- iteration ------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        epoch, consumed, _ = (int(v) for v in self.control.tolist())
        plan = self.plan(epoch)
        rp = plan.ranks[self.rank]
        done, nxt = resume_point(rp.order, self.num_logical_workers, consumed)
        logical = (nxt + physical) % self.num_logical_workers
        positions = [i for i, w in enumerate(rp.order) if w == logical]
        start = done[logical]
        wp = rp.workers[logical]
        # Physical worker 0 yields the epoch's (or the resumed pass's) first batch.
        self._leads = physical == 0
        try:
            yield from self._execute(plan, wp, start, positions, epoch)
        finally:
            if self._leads:
                self.control[2] = 1  # no first batch coming from here: nobody waits longer

    def _wait_for_first_batch(self) -> float:
        """Seconds waited for the leading worker's first batch (see FIRST_BATCH_WAIT_S)."""
        t0 = time.perf_counter()
        while not int(self.control[2]) and time.perf_counter() - t0 < FIRST_BATCH_WAIT_S:
            time.sleep(0.005)
        return time.perf_counter() - t0

    def _execute(
        self, plan: EpochPlan, wp: WorkerPlan, start: int, positions: list[int], epoch: int
    ) -> Iterator[Batch]:
        batches = wp.batches[start:]
        if not batches:
            return
        n_reads = len(wp.read_slots)
        refs = np.bincount(np.concatenate([pb.items for pb in batches]), minlength=n_reads).astype(np.int64)
        needed = np.flatnonzero(refs)
        first, last = int(needed[0]), int(needed[-1])
        # Uses left per shard-table entry, to unmap a mapped shard after its last batch.
        entry_of_slot = np.asarray(plan.slots, dtype=np.int64)
        uses = np.bincount(entry_of_slot[wp.read_slots[needed]], weights=refs[needed],
                           minlength=len(self.table)).astype(np.int64)
        run = _Run(plan, wp, epoch, refs, uses, entry_of_slot)
        skipped: list[str] = []
        next_batch = 0
        self._arena = self._make_arena(plan, wp, needed)
        arena = self._arena
        if arena is not None:
            arena.in_use = True
        collate = self._get_collator()

        clock = self._clock
        clock.resume()

        def emit(i: int) -> Batch:
            t0 = clock.gathered()
            UNMAPPER.retire(run.retired)  # last read by the batch before, collated since
            rows, pads = self._rows(run, batches[i], skipped)
            t1 = time.perf_counter()
            batch = collate(rows, pads, positions[start + i], epoch, skipped, arena)
            if i == 0 and self._leads:
                self.control[2] = 1  # built: the workers waiting for the link may start (once an epoch)
            t2 = time.perf_counter()
            clock.add(DECODE, t1 - t0)  # mapped samples are decoded (their pages read) as gathered
            clock.add(COLLATE, t2 - t1)
            if self._reader is not None:
                clock.reader_stats(self._reader.stats())
            batch.stage_seconds = clock.take()
            for m, lo, hi in run.release:
                m.release(lo, hi)
            run.release.clear()
            for r in rows:  # free the arena slots of samples no later batch needs
                if r.slot >= 0 and arena is not None and r.released:
                    arena.free.append(r.slot)
            skipped.clear()
            return batch

        try:
            reader = self._get_reader()
            runs = sequential_runs(wp, first, last)
            refs_ = [self._ref_of(self.table[plan.slots[slot]]) for slot, _, _, _ in runs]
            if not self._leads and self.num_workers > 1 and refs_ and reader.over_link(refs_[0]):
                clock.add_read(self._wait_for_first_batch())  # waiting on the link, in effect
            reader.schedule(refs_)
            for slot, a, b, pos0 in runs:
                e = plan.slots[slot]
                t_open = time.perf_counter()
                f = self._map_run(reader, run, e, a, b)
                clock.add_read(time.perf_counter() - t_open)  # the shard's open: a FUSE open, a download's start
                if f is None:  # mapped: the batches it completes are gathered from the file
                    while next_batch < len(batches) and batches[next_batch].ready_at < pos0 + (b - a):
                        yield emit(next_batch)
                        clock.resume()
                        next_batch += 1
                    continue
                for pos, sample in self._read_run(f, self.table[e], a, b, pos0, refs, epoch):
                    run.held[pos] = sample
                    while next_batch < len(batches) and batches[next_batch].ready_at <= pos:
                        yield emit(next_batch)
                        clock.resume()
                        next_batch += 1
            while next_batch < len(batches):
                yield emit(next_batch)
                clock.resume()
                next_batch += 1
        finally:
            UNMAPPER.retire(run.retired)
            if arena is not None:
                arena.in_use = False

    def _rows(self, run: _Run, pb: Any, skipped: list[str]) -> tuple[list[Sample], list[bool]]:
        """The samples of one planned batch, in order; failed ones named in ``skipped``.

        A sample read through the shuffle buffer is taken from ``held`` (and dropped there
        after its last use); one of a mapped shard is decoded now, from the mapped file."""
        rows: list[Sample] = []
        pads: list[bool] = []
        held, refs, uses, mapped, release = run.held, run.refs, run.uses, run.mapped, run.release
        slots, index = run.wp.read_slots, run.wp.read_index
        entries = run.plan.slots
        # Each mapped shard's size now, taken once per batch before any of its pages is
        # touched: a file truncated since it was mapped is a named error, not a SIGBUS.
        now: dict[int, int] = {}
        # Mapped samples whose crc32 is still to check, with their rows (see _check_rows).
        pending: list[tuple[MappedShard, ShardEntry, int]] = []
        pending_rows: list[int] = []
        for item, is_pad in zip(pb.items.tolist(), pb.padding.tolist()):
            s = held.get(item)
            if s is not None:
                refs[item] -= 1
                if refs[item] == 0:
                    del held[item]
                    if isinstance(s, Sample):
                        s.released = True
            else:
                e = entries[slots[item]]
                m = mapped[e]
                size = now.get(e)
                if size is None:
                    size = now[e] = m.file_size()
                checks = len(pending)
                s = self._mapped_sample(m, self.table[e], int(index[item]), run.epoch, size,
                                        pending if self._defer_checks else None)
                if len(pending) > checks:
                    pending_rows.append(len(rows))
                refs[item] -= 1
                if refs[item] == 0 and run.mapped_bytes > self._mapped_budget:
                    # Over the worker's share of shuffle_buffer_bytes, mapped pages count
                    # as held bytes: this sample's leave this process's RSS once the batch
                    # holds it. Per sample (a syscall each, ~15% of a fast epoch), since
                    # the shuffle buffer keeps a few samples of every range for long.
                    offsets, i = self.table[e].offsets, int(index[item])
                    release.append((m, offsets[i], offsets[i + 1] if i + 1 < len(offsets) else 1 << 62))
                uses[e] -= 1
                if uses[e] == 0:
                    del mapped[e]
                    run.mapped_bytes -= len(m.view)
                    run.retired.append(m)
            if isinstance(s, Failed):
                if not is_pad:
                    skipped.append(s.key)
                continue
            rows.append(s)
            pads.append(is_pad)
        if pending:
            rows, pads = self._check_rows(rows, pads, pending, pending_rows, skipped)
        return rows, pads

    def _check_rows(self, rows: list[Sample], pads: list[bool], pending: list[tuple[MappedShard, ShardEntry, int]],
                    pending_rows: list[int], skipped: list[str]) -> tuple[list[Sample], list[bool]]:
        """The crc32 checks of a batch's mapped samples gathered without one (rows
        ``pending_rows``), split across the gather's threads (rowsplit.py: without workers,
        the process's cores; in a worker, its one thread). Inline, one after the other,
        they were a third of a fresh ``num_workers=0`` epoch on 3 s clips. A damaged sample
        is then raised or skipped as an inline check would (``_damaged_sample``)."""
        problems: list[str | None] = [None] * len(pending)

        def check(lo: int, hi: int) -> None:
            for k in range(lo, hi):
                m, entry, idx = pending[k]
                if not m.table.verified[idx]:  # the verifier thread may have passed it since
                    problems[k] = m.crc_problem(entry.offsets, entry.crc32, idx)

        span = sum(len(rows[r].wave) for r in pending_rows) * 2 // len(pending)  # ~ bytes per check
        SPLITTER.run(check, len(pending), span)
        bad = [k for k, p in enumerate(problems) if p is not None]
        if not bad:
            return rows, pads
        drop = set()
        for k in bad:
            m, entry, idx = pending[k]
            failed = self._damaged_sample(entry, idx, problems[k] or "")  # raises with on_corrupt_shard='raise'
            row = pending_rows[k]
            drop.add(row)
            if not pads[row]:
                skipped.append(failed.key)
        keep = [r for r in range(len(rows)) if r not in drop]
        return [rows[r] for r in keep], [pads[r] for r in keep]

    def _mapped_sample(self, m: MappedShard, entry: ShardEntry, idx: int, epoch: int,
                       size: int, pending: list[tuple[MappedShard, ShardEntry, int]] | None = None,
                       ) -> Sample | Failed:
        """Sample ``idx`` of a mapped shard whose file is ``size`` bytes now. With
        ``pending``, a sample taken as a slice of the mapped PCM whose crc32 is still to
        check is listed there, for the caller to check with the rest of its batch (before
        anything reads the slice), instead of here."""
        t = m.table
        reason = t.errors.get(idx)
        if reason is not None:
            return Failed(f"{entry.url}#{idx}", reason)
        fast = False
        label = -1
        if self._plain and entry.audio_field == fmt.AUDIO_NPY and t.pcm_off[idx] >= 0:
            label = int(t.label[idx]) if self._want_label else -1
            # A class id outside the label map goes through the decoder, which names it.
            fast = label != NOT_PARSED and (entry.num_classes is None or label < entry.num_classes)
        if t.pending[idx]:
            self._checks.wait(m, idx)
        if size < m.size or not t.verified[idx]:
            if fast and pending is not None and size >= m.size and len(entry.crc32):
                pending.append((m, entry, idx))  # the file holds its bytes: only the crc32 is left
            else:
                problem = mapped_problem(m, entry, idx, size)
                if problem is not None:
                    return self._damaged_sample(entry, idx, problem)
        if fast:
            # The decoder's result without decoding: a slice of the mapped PCM, finished
            # as the decoder finishes it (the table checked the .npy header as strictly).
            wave, _ = self._finish(m.pcm, int(t.pcm_off[idx]) // 2, int(t.pcm_frames[idx]), epoch,
                                   entry.first_gid + idx)
            return Sample(m.key(idx), wave, label, None, None, entry.meta.dataset, gid=entry.first_gid + idx)
        return self._decoder(m.key(idx), m.fields(idx), entry, idx, epoch, None, copy=False)

    def _damaged_sample(self, entry: ShardEntry, idx: int, problem: str) -> Failed:
        """One damaged sample of a mapped shard: raise, or log it and skip only it (the
        shard's other samples are checked on their own)."""
        if self.read_cfg.on_corrupt_shard == "raise":
            raise fmt.ShardFormatError(f"{problem} (pass on_corrupt_shard='skip' to skip damaged samples)")
        log.warning("skipping sample %d of %s: %s", idx, entry.url, problem)
        return Failed(f"{entry.url}#{idx}", problem)

    def _map_run(self, reader, run: _Run, e: int, a: int, b: int) -> Opened | None:
        """Map shard ``e`` and locate its samples [a, b) when it is a whole file on this
        machine (None); else the opened stream to read them from (or why it did not open)."""
        entry = self.table[e]
        m = run.mapped.get(e)
        if m is None:
            try:
                f = reader.open(self._ref_of(entry), int(entry.offsets[a]))
            except OSError as exc:
                return exc  # raised (or skipped) where the run is read
            try:
                fd = f.fileno()  # a shard still downloading has none
            except (AttributeError, OSError, ValueError):
                return f
            with f:
                m = MappedShard(fd, entry.url, self._tables.get(entry.url, file_stamp(fd), entry.meta.nsamples))
            run.mapped[e] = m
            run.mapped_bytes += len(m.view)
        # Over the budget, no page is touched before it is gathered.
        checks = self._range_checks and run.mapped_bytes <= self._mapped_budget
        if checks:
            # Queued before the locate: the thread hashes (and faults in) the run's pages on
            # the other core while this one parses its headers, instead of beside the gather.
            self._checks.submit(m, e, a, b)
        try:
            m.locate(entry.offsets, a, b, entry.size)
        except (fmt.ShardFormatError, OSError) as exc:
            self._corrupt(entry, exc)
            m.fail(a, b, str(exc))
        if checks:
            self._checks.submit(m, e, a, b)  # what is left: the shard's last sample, now located
        return None

    def _corrupt(self, entry: ShardEntry, e: Exception) -> None:
        """A damaged shard: raise, or log and go on (its unread samples are then skipped)."""
        if self.read_cfg.on_corrupt_shard == "raise":
            raise fmt.ShardFormatError(
                f"{e} (pass on_corrupt_shard='skip' to skip the rest of this shard)"
            ) from e
        log.warning("skipping rest of shard %s: %s", entry.url, e)

    def _make_arena(self, plan: EpochPlan, wp: WorkerPlan, needed: np.ndarray) -> SampleArena | None:
        """A preallocated slab for the samples this worker holds, when slots can be uniform.

        With random crops (or clips of one length) every held sample fits one fixed-size
        slot, so the shuffle buffer reuses one allocation instead of a fresh array per
        sample, and batches are gathered with one vectorised copy.
        """
        cfg = self.plan_cfg
        if cfg.batch_size is None or len(needed) == 0:
            return None
        frames = read_frames(self.metas, plan.slots, wp.read_slots[needed], wp.read_index[needed])
        if cfg.crop_frames:
            width = min(int(cfg.crop_frames), int(frames.max()))
        elif frames.min() == frames.max():
            width = int(frames[0])
        else:
            return None
        held_max = -(-cfg.shuffle_buffer // self.num_logical_workers) + 2 * cfg.batch_size + 1
        slots = min(held_max, len(needed))
        if slots * width * 2 > 2 * cfg.shuffle_buffer_bytes / self.num_logical_workers + (64 << 20):
            return None
        old = self._arena
        if old is not None and not old.in_use and old.width == width and old.slots >= slots:
            old.reset()  # persistent workers / in-process loading: reuse the touched pages
            return old
        return SampleArena(slots, width)

    def _get_collator(self) -> Collator:
        # Built inside the worker, after the loader chose this generation's buffer flags.
        if self._collator is None:
            self._collator = Collator(self.plan_cfg, self.read_cfg, self.sample_rate,
                                      self.buffer_flags)
        return self._collator

    def _get_reader(self):
        # Built lazily inside each worker process: threads and file handles must not
        # cross a fork.
        if self._reader is None:
            cfg = self.read_cfg  # the read path decides whether and where to cache
            self._reader = open_reader(self.table[0].url if self.table else None,
                                       cache_dir=cfg.cache_dir, cache_limit=cfg.cache_limit,
                                       prefetch=cfg.shard_prefetch,
                                       storage_options=cfg.storage_options)
        return self._reader

    def _read_run(self, opened: Opened, entry: ShardEntry, a: int, b: int, pos0: int, refs: np.ndarray,
                  epoch: int) -> Iterator[tuple[int, Sample | Failed]]:
        if self._blocks is None:
            self._blocks = BlockReader(self._clock)
        return read_run(opened, entry, a, b, pos0, refs, epoch, block=self._blocks, decode=self._decoder,
                        arena=self._arena, corrupt=self._corrupt)

    @staticmethod
    def _ref_of(entry: ShardEntry) -> ShardRef:
        return ShardRef(url=entry.url, digest=entry.digest, size=entry.size,
                        partial_ok=len(entry.crc32) > 0)
