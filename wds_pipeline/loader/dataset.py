"""The IterableDataset that executes an epoch plan inside DataLoader workers."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .. import format as fmt
from ..index import DatasetIndex
from .batch import Batch
from .plan import (
    EpochPlan,
    PlanConfig,
    ShardMeta,
    WorkerPlan,
    crop_start,
    plan_epoch_after,
    resume_point,
)

log = logging.getLogger(__name__)

READ_BLOCK = 8 << 20  # bytes per read call: large sequential reads for FUSE/GCS

ALL_FIELDS = ("waveform", "fbank", "label", "text", "meta")


@dataclass(frozen=True)
class ReadConfig:
    fields: tuple[str, ...] = ("waveform", "label")
    waveform_dtype: Literal["float32", "int16"] = "float32"
    on_decode_error: Literal["skip", "raise"] = "skip"
    on_corrupt_shard: Literal["raise", "skip"] = "raise"
    cache_dir: str | Literal[False] | None = None  # None: automatic for remote/FUSE; False: never
    cache_limit: int | None = None
    shard_prefetch: int = 2
    storage_options: dict[str, Any] = field(default_factory=dict)
    worker_sharing_strategy: Literal["file_system", "file_descriptor"] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(ALL_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; choose from {ALL_FIELDS}")


@dataclass(frozen=True)
class ShardEntry:
    """A shard as the workers see it: where it is, how to check it, where its samples start."""

    meta: ShardMeta
    url: str
    sha256: str | None
    size: int | None
    offsets: tuple[int, ...]
    first_gid: int  # global id of its first sample (seeds crops independently of order)
    audio_field: str
    has_fbank: str | None  # the fbank field name when precomputed


class SampleDecodeError(ValueError):
    pass


def shard_table(indexes: Sequence[DatasetIndex]) -> list[ShardEntry]:
    table: list[ShardEntry] = []
    gid = 0
    for d, index in enumerate(indexes):
        fb = next((f for f in index.fields if f in fmt.FBANK_FIELDS), None)
        for i, s in enumerate(index.shards):
            if len(s.sample_frames) != s.nsamples or len(s.sample_offsets) != s.nsamples:
                raise ValueError(
                    f"{index.shard_url(i)}: index lists {s.nsamples} samples but "
                    f"{len(s.sample_frames)} frame counts / {len(s.sample_offsets)} offsets; "
                    "rebuild the index with `wds-pipeline build`"
                )
            table.append(
                ShardEntry(
                    meta=ShardMeta(dataset=d, shard=i, nsamples=s.nsamples, frames=tuple(s.sample_frames)),
                    url=index.shard_url(i),
                    sha256=s.sha256 or None,
                    size=s.filesize or None,
                    offsets=tuple(s.sample_offsets),
                    first_gid=gid,
                    audio_field=index.audio_field,
                    has_fbank=fb,
                )
            )
            gid += s.nsamples
    return table


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
    ):
        super().__init__()
        self.indexes = list(indexes)
        self.table = shard_table(self.indexes)
        self.metas = [e.meta for e in self.table]
        self.plan_cfg = plan_cfg
        self.read_cfg = read_cfg
        self.rank = rank
        self.world_size = world_size
        self.num_logical_workers = max(1, num_workers)
        self.sample_rate = self.indexes[0].sample_rate if self.indexes else 16000
        # [epoch, batches already consumed in that epoch]
        self.control = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._plan_cache: tuple[tuple, EpochPlan] | None = None
        # Elastic resume: (world_size, num_workers, batches) stages already run in
        # epoch ``stages_epoch`` under other layouts; that epoch plans only the rest.
        self.prior_stages: tuple[tuple[int, int, int], ...] = ()
        self.stages_epoch = -1
        self._reader = None
        self._blocks: BlockReader | None = None
        self._arena: SampleArena | None = None
        # Set by the loader before workers start: one flag per recycled batch buffer.
        self.buffer_flags: torch.Tensor | None = None
        self._buffers: BatchBufferPool | None = None
        self._fbank = None

    def set_prior_stages(self, epoch: int, stages: tuple[tuple[int, int, int], ...]) -> None:
        """Elastic resume: ``epoch`` already ran ``stages`` under other layouts."""
        self.prior_stages = stages
        self.stages_epoch = epoch

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
        if info is not None and self.read_cfg.worker_sharing_strategy:
            # Only inside our own worker process: how *this* process ships tensors.
            # "file_system" names the shared segment instead of passing a file
            # descriptor through a socket per tensor (faster for multi-MB batches in
            # a zero-work microbenchmark). The main process is unaffected.
            torch.multiprocessing.set_sharing_strategy(self.read_cfg.worker_sharing_strategy)
        epoch, consumed = (int(v) for v in self.control.tolist())
        plan = self.plan(epoch)
        rp = plan.ranks[self.rank]
        done, nxt = resume_point(rp.order, self.num_logical_workers, consumed)
        logical = (nxt + physical) % self.num_logical_workers
        positions = [i for i, w in enumerate(rp.order) if w == logical]
        start = done[logical]
        wp = rp.workers[logical]
        yield from self._execute(plan, wp, start, positions, epoch)

    def _execute(
        self, plan: EpochPlan, wp: WorkerPlan, start: int, positions: list[int], epoch: int
    ) -> Iterator[Batch]:
        batches = wp.batches[start:]
        if not batches:
            return
        n_reads = len(wp.read_slots)
        refs = np.zeros(n_reads, dtype=np.int64)
        for b in batches:
            np.add.at(refs, b.items, 1)
        needed = np.flatnonzero(refs)
        first, last = int(needed[0]), int(needed[-1])
        held: dict[int, Any] = {}
        skipped: list[str] = []
        next_batch = 0
        self._arena = self._make_arena(plan, wp, needed)
        arena = self._arena
        if arena is not None:
            arena.in_use = True
        try:
            reader = self._get_reader()
            runs = _runs(wp, first, last)
            reader.schedule([self._ref_of(self.table[plan.slots[slot]]) for slot, _, _, _ in runs])
            for slot, a, b, pos0 in runs:
                entry = self.table[plan.slots[slot]]
                for pos, sample in self._read_run(reader, entry, a, b, pos0, refs, epoch, skipped):
                    held[pos] = sample
                    while next_batch < len(batches) and batches[next_batch].ready_at <= pos:
                        yield self._collate(batches[next_batch], held, refs, positions[start + next_batch], epoch, skipped)
                        skipped = []
                        next_batch += 1
            while next_batch < len(batches):
                yield self._collate(batches[next_batch], held, refs, positions[start + next_batch], epoch, skipped)
                skipped = []
                next_batch += 1
        finally:
            if arena is not None:
                arena.in_use = False

    def _make_arena(self, plan: EpochPlan, wp: WorkerPlan, needed: np.ndarray) -> SampleArena | None:
        """A preallocated slab for the samples this worker holds, when slots can be uniform.

        With random crops (or clips of one length) every held sample fits one fixed-size
        slot, so the shuffle buffer reuses one allocation instead of a fresh array per
        sample, and batches are gathered with one vectorised copy.
        """
        cfg = self.plan_cfg
        if cfg.batch_size is None or len(needed) == 0:
            return None
        frames = np.fromiter(
            (self.metas[plan.slots[s]].frames[i] for s, i in zip(wp.read_slots[needed], wp.read_index[needed])),
            dtype=np.int64,
            count=len(needed),
        )
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

    def _get_reader(self):
        # Built lazily inside each worker process: threads and file handles must not
        # cross a fork.
        if self._reader is None:
            from ..fetch import ShardReader, default_cache_policy

            cache = None
            cache_dir = self.read_cfg.cache_dir
            if cache_dir is False:
                cache_dir = None
            elif cache_dir is None and self.table and default_cache_policy(self.table[0].url):
                from ..cache import default_cache_dir

                cache_dir = default_cache_dir()
                log.info("shards are on remote/FUSE storage (%s): caching them in %s", self.table[0].url, cache_dir)
            if cache_dir is not None:
                from ..cache import ShardCache

                cache = ShardCache(cache_dir, limit_bytes=self.read_cfg.cache_limit)
            self._reader = ShardReader(
                cache=cache,
                prefetch=self.read_cfg.shard_prefetch,
                storage_options=dict(self.read_cfg.storage_options),
            )
        return self._reader

    def _read_run(
        self,
        reader,
        entry: ShardEntry,
        a: int,
        b: int,
        pos0: int,
        refs: np.ndarray,
        epoch: int,
        skipped: list[str],
    ) -> Iterator[tuple[int, Any]]:
        """Read samples [a, b) of one shard sequentially; decode only those still needed.

        Whole samples are read in blocks of up to READ_BLOCK bytes (the index gives
        every sample's byte offset), then parsed in memory: one read call per block
        instead of two per tar member.
        """
        pos = pos0
        block = self._block_reader()
        ends = np.asarray(entry.offsets[1:] + (entry.size if entry.size else -1,), dtype=np.int64)
        try:
            with reader.open(self._ref_of(entry), entry.offsets[a]) as f:
                j = a
                while j < b:
                    start = entry.offsets[j]
                    k = int(np.searchsorted(ends, start + READ_BLOCK, side="right"))
                    k = min(max(k, j + 1), b)  # samples [j, k) in this block
                    want = int(ends[k - 1]) - start if ends[k - 1] >= 0 else -1
                    with block.read(f, start, want, entry.url) as buf:
                        samples = fmt.group_samples(fmt.iter_buffer_members(buf, base=start, source=entry.url))
                        got = 0
                        fields = None  # a block of zeros yields no sample at all
                        for idx, (key, fields) in enumerate(samples, start=j):
                            if idx >= k:
                                break
                            # Decoding copies what it keeps: the block is reused/unmapped next.
                            if refs[pos] > 0:
                                yield pos, self._decode(key, fields, entry, idx, epoch)
                            pos += 1
                            got += 1
                        del samples, fields
                    if got != k - j:
                        raise fmt.ShardFormatError(
                            f"{entry.url}: found {got} samples at byte {start} where the "
                            f"index lists {k - j}; the shard does not match its index"
                        )
                    j = k
        except (fmt.ShardFormatError, OSError) as e:
            if self.read_cfg.on_corrupt_shard == "raise":
                raise fmt.ShardFormatError(
                    f"{e} (pass on_corrupt_shard='skip' to skip the rest of this shard)"
                ) from e
            log.warning("skipping rest of shard %s: %s", entry.url, e)
            while pos < pos0 + (b - a):
                if refs[pos] > 0:
                    yield pos, _Failed(f"{entry.url}#{a + pos - pos0}", str(e))
                pos += 1

    def _block_reader(self) -> BlockReader:
        if self._blocks is None:
            self._blocks = BlockReader()
        return self._blocks

    @staticmethod
    def _ref_of(entry: ShardEntry):
        from ..fetch import ShardRef

        return ShardRef(url=entry.url, sha256=entry.sha256, size=entry.size)

    def _decode(self, key: str, fields: dict, entry: ShardEntry, idx: int, epoch: int):
        try:
            return self._decode_sample(key, fields, entry, idx, epoch)
        except Exception as e:  # any decoder failure is per-sample data damage
            if self.read_cfg.on_decode_error == "raise":
                raise SampleDecodeError(f"{entry.url}: sample {key!r} does not decode: {e}") from e
            return _Failed(key, f"{type(e).__name__}: {e}")

    def _decode_sample(self, key: str, fields: dict, entry: ShardEntry, idx: int, epoch: int):
        want = self.read_cfg.fields
        payload = fields.get(entry.audio_field)
        if payload is None:
            raise SampleDecodeError(f"missing {entry.audio_field}")
        wave = fmt.decode_field(entry.audio_field, payload)
        if wave.dtype != np.int16 or wave.ndim != 1:
            raise SampleDecodeError(f"audio must be 1-D int16, got {wave.dtype} {wave.shape}")
        crop = self.plan_cfg.crop_frames
        start = 0
        use_feats = "fbank" in want and entry.has_fbank is not None
        hop = int(round(self.sample_rate * 0.010))
        if crop and len(wave) > crop:
            start = crop_start(self.plan_cfg.seed, epoch, entry.first_gid + idx, len(wave) - crop)
            if use_feats:
                start -= start % hop  # the crop must start on a feature frame boundary
            wave = wave[start : start + crop]
        slot = -1
        arena = self._arena
        if arena is not None and len(wave) <= arena.width and arena.free:
            slot = arena.put(wave)
            wave = arena.data[slot, : len(wave)]
        elif not wave.flags.owndata:
            wave = wave.copy()  # do not pin the whole read block in the shuffle buffer
        label = -1
        if "label" in want and fmt.CLS in fields:
            label = int(bytes(fields[fmt.CLS]))
        meta = None
        if ("text" in want or "meta" in want) and fmt.JSON in fields:
            meta = fmt.decode_field(fmt.JSON, fields[fmt.JSON])
        feats = None
        if use_feats and entry.has_fbank in fields:
            feats = fmt.decode_field(entry.has_fbank, fields[entry.has_fbank])
            if crop and start:
                feats = feats[start // hop :]
            if crop:
                from ..features import FbankConfig, num_frames

                feats = feats[: num_frames(crop, FbankConfig(sample_rate=self.sample_rate))]
            feats = feats.copy()
        return _Sample(key, wave, label, meta, feats, entry.meta.dataset, slot)

    def _collate(
        self, pb, held: dict[int, Any], refs: np.ndarray, index: int, epoch: int, skipped: list[str]
    ) -> Batch:
        rows: list[_Sample] = []
        pad_flags: list[bool] = []
        release: list[Any] = []  # arena slots to free once this batch is assembled
        for item, is_pad in zip(pb.items.tolist(), pb.padding.tolist()):
            s = held[item]
            refs[item] -= 1
            if refs[item] == 0:
                del held[item]
                release.append(s)
            if isinstance(s, _Failed):
                if not is_pad:
                    skipped.append(s.key)
                continue
            rows.append(s)
            pad_flags.append(is_pad)
        want = self.read_cfg.fields
        lengths = np.fromiter((len(r.wave) for r in rows), dtype=np.int64, count=len(rows))
        width = int(self.plan_cfg.crop_frames or (lengths.max() if len(rows) else 0))
        as_float = self.read_cfg.waveform_dtype == "float32"
        slot = -1
        if as_float:
            wave_t = torch.empty((len(rows), width), dtype=torch.int16)
        else:
            wave_t, slot = self._batch_buffer((len(rows), width), torch.int16)
        pcm = wave_t.numpy()
        arena = self._arena
        if arena is not None and rows and width == arena.width and all(r.slot >= 0 for r in rows):
            np.take(arena.data, [r.slot for r in rows], axis=0, out=pcm)
            for i in np.flatnonzero(lengths < width):
                pcm[i, lengths[i] :] = 0
        else:
            for i, r in enumerate(rows):
                n = len(r.wave)
                pcm[i, :n] = r.wave
                pcm[i, n:] = 0
        for s in release:
            if isinstance(s, _Sample) and s.slot >= 0 and arena is not None:
                arena.free.append(s.slot)
        lengths_t = torch.from_numpy(lengths)
        fbank = fbank_lengths = None
        if "fbank" in want:
            fbank, fbank_lengths = self._fbank_batch(rows, wave_t, lengths_t)
        if as_float:
            out, slot = self._batch_buffer(tuple(wave_t.shape), torch.float32)
            wave_t = torch.mul(wave_t, 1.0 / 32768.0, out=out)
        metas = [r.meta or {} for r in rows]
        batch = Batch(
            waveform=wave_t if "waveform" in want else None,
            lengths=lengths,  # type: ignore[arg-type]  # numpy until materialize()
            labels=np.fromiter((r.label for r in rows), dtype=np.int64, count=len(rows)),  # type: ignore[arg-type]
            keys=[r.key for r in rows],
            is_padding=np.asarray(pad_flags, dtype=bool),  # type: ignore[arg-type]
            dataset_ids=np.fromiter((r.dataset for r in rows), dtype=np.int64, count=len(rows)),  # type: ignore[arg-type]
            texts=[m.get("text") or "" for m in metas] if "text" in want else None,
            fbank=fbank,
            fbank_lengths=fbank_lengths,
            meta=metas if "meta" in want else None,
            epoch=epoch,
            index=index,
            skipped=list(skipped),
            buffer_slot=slot,
        )
        # In a worker, small fields travel as numpy (see Batch.materialize).
        return batch if get_worker_info() is not None else batch.materialize()

    def _batch_buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        """Where this batch's waveform is written: a recycled shared buffer when one is free."""
        info = get_worker_info()
        if info is None or self.buffer_flags is None:
            return torch.empty(shape, dtype=dtype), -1
        if self._buffers is None:
            self._buffers = BatchBufferPool(self.buffer_flags, info.id)
        return self._buffers.take(shape, dtype)

    def _fbank_batch(self, rows, wave_t: torch.Tensor, lengths_t: torch.Tensor):
        if rows and all(r.feats is not None for r in rows):
            n = np.array([len(r.feats) for r in rows], dtype=np.int64)
            out = np.zeros((len(rows), int(n.max()), rows[0].feats.shape[1]), dtype=np.float32)
            for i, r in enumerate(rows):
                out[i, : len(r.feats)] = r.feats
            return torch.from_numpy(out), torch.from_numpy(n)
        # No precomputed features in the shards: compute Kaldi fbank here, in the worker.
        if self._fbank is None:
            from ..features import Fbank, FbankConfig

            self._fbank = Fbank(FbankConfig(sample_rate=self.sample_rate))
        with torch.no_grad():
            return self._fbank(wave_t.to(torch.float32), lengths_t)


class BlockReader:
    """Reads a span of whole samples as one buffer, with as few copies as possible.

    Real files (local shards, cached shards) are memory-mapped for the span and
    unmapped afterwards: the sample bytes are copied once, out of the page cache,
    like the raw-tar ceiling does. Streams (remote, FUSE) are read into one reused
    buffer, avoiding a fresh multi-megabyte allocation (and its page faults) per block.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @contextlib.contextmanager
    def read(self, f: BinaryIO, start: int, want: int, source: str) -> Iterator[memoryview]:
        fd = _fileno(f)
        if fd is not None:
            size = os.fstat(fd).st_size
            end = size if want < 0 else start + want
            if end > size:
                raise fmt.ShardFormatError(
                    f"{source}: truncated: {size} bytes on disk, the index needs {end}; "
                    "the shard is incomplete or does not match its index"
                )
            aligned = start - start % mmap.ALLOCATIONGRANULARITY
            m = mmap.mmap(fd, end - aligned, offset=aligned, prot=mmap.PROT_READ,
                          flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
            view = memoryview(m)[start - aligned :]
            try:
                yield view
            finally:
                view.release()
                try:
                    m.close()
                except BufferError:
                    pass  # a view escaped; the mapping is freed when it is collected
            return
        if want < 0:
            data = f.read()
            yield memoryview(data)
            return
        if len(self._buf) < want:
            self._buf = bytearray(want)
        view = memoryview(self._buf)[:want]
        got = 0
        while got < want:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        if got < want:
            raise fmt.ShardFormatError(
                f"{source}: truncated: expected {want} bytes at byte {start}, got {got}; "
                "the shard is incomplete or does not match its index"
            )
        try:
            yield view
        finally:
            view.release()


def _fileno(f) -> int | None:
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError):
        return None


BUFFERS_PER_WORKER = 8


def _new_shared(numel: int, dtype: torch.dtype) -> torch.Tensor:
    # Allocated in shared memory directly: the DataLoader then sends a handle instead of
    # copying the batch into shared memory (the trick torch's default_collate uses).
    elem = torch.empty(0, dtype=dtype)
    return elem.new(elem._typed_storage()._new_shared(numel, device="cpu"))


class BatchBufferPool:
    """Recycled shared-memory batch buffers of one DataLoader worker.

    Sending each batch through a fresh shared-memory segment (torch's default) costs a
    segment, a mapping and a page fault per 4 KB on both sides: on 2 cores that capped
    a zero-work pipeline at ~16k clips/s of 3 s; recycled buffers move 60k+. A buffer is
    reused only once the main process has seen that no tensor references it any more
    (``flags[slot]`` back to 0, set by ``StreamingLoader`` from a storage weak reference),
    so a batch the training loop keeps is never overwritten. When every buffer is still
    in use the worker allocates a fresh one, as torch would: it never waits.
    """

    def __init__(self, flags: torch.Tensor, worker_id: int):
        self.flags = flags.numpy()
        self.base = worker_id * BUFFERS_PER_WORKER
        self.buffers: list[torch.Tensor | None] = [None] * BUFFERS_PER_WORKER

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        numel = 1
        for d in shape:
            numel *= d
        for k in range(BUFFERS_PER_WORKER):
            slot = self.base + k
            if self.flags[slot] != 0:
                continue
            buf = self.buffers[k]
            if buf is None or buf.dtype != dtype or buf.numel() < numel:
                buf = self.buffers[k] = _new_shared(numel + numel // 4, dtype)  # headroom for bucketing
            self.flags[slot] = 1
            return buf[:numel].view(shape), slot
        return _new_shared(numel, dtype).view(shape), -1


@dataclass
class _Sample:
    key: str
    wave: np.ndarray
    label: int
    meta: dict | None
    feats: np.ndarray | None
    dataset: int
    slot: int = -1  # arena slot holding ``wave``, or -1 for a standalone array


class SampleArena:
    """Fixed-size int16 slots for held samples; a free list instead of malloc per sample.

    Backed by an anonymous mapping with huge pages disabled: with transparent huge pages
    set to "always", first-touch faults of a few hundred MB in 2 MB pages (compaction,
    zeroing) cost over a second per epoch on the benchmark VM; 4 KB pages cost ~50 ms.
    """

    def __init__(self, slots: int, width: int):
        self.width = width
        self.slots = slots
        self._map = mmap.mmap(-1, max(1, slots * width * 2))
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            self._map.madvise(mmap.MADV_NOHUGEPAGE)
        self.data = np.frombuffer(self._map, dtype=np.int16, count=slots * width).reshape(slots, width)
        self.free = list(range(slots - 1, -1, -1))
        self.in_use = False  # an iteration holds samples in it (two live passes must not share it)

    def reset(self) -> None:
        self.free = list(range(self.slots - 1, -1, -1))

    def put(self, wave: np.ndarray) -> int:
        slot = self.free.pop()
        self.data[slot, : len(wave)] = wave
        return slot


@dataclass
class _Failed:
    key: str
    reason: str


def _runs(wp: WorkerPlan, first: int, last: int) -> list[tuple[int, int, int, int]]:
    """Group read positions [first, last] into (slot, start, stop, first_pos) sequential runs."""
    runs: list[tuple[int, int, int, int]] = []
    slots, index = wp.read_slots, wp.read_index
    pos = first
    while pos <= last:
        slot = int(slots[pos])
        a = int(index[pos])
        end = pos + 1
        while end <= last and slots[end] == slot and index[end] == index[end - 1] + 1:
            end += 1
        runs.append((slot, a, a + (end - pos), pos))
        pos = end
    return runs
