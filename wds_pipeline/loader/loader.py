"""``StreamingLoader``: a torch DataLoader over wds_pipeline shards with exact resume."""

from __future__ import annotations

import functools
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader

from ..errors import ResumeMismatch
from ..index import DatasetIndex, load_index
from ..transforms import as_specs
from .batch import Batch
from .config import LoaderConfig
from .dataset import ShardStreamDataset
from .labels import label_union, remap_labels, speed_classes
from .plan import PLANNER_VERSION, EpochPlan
from .state import MAX_SKIPPED_KEYS, LoaderState


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Rank and world size: explicit values, else torch.distributed, else torchrun's env."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    r = int(os.environ.get("RANK", "0"))
    w = int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= r < w:
        raise ValueError(f"RANK={r} is not within WORLD_SIZE={w}")
    return r, w


class StreamingLoader:
    """Batches from wds_pipeline shards, ready for a plain training loop.

    >>> loader = StreamingLoader("shards/train/index.json", batch_size=64, crop_seconds=3.0)
    >>> for epoch in range(10):
    ...     for batch in loader:             # each full pass is one epoch
    ...         loss = model(batch.waveform, batch.lengths)
    ...         state = loader.state_dict()  # save with the model checkpoint

    ``len(loader)`` is the exact number of batches this rank yields in the next epoch,
    equal on every rank. Each pass is one epoch: iterating again after a complete pass,
    or after breaking out of one, runs the next epoch (``set_epoch`` chooses it
    explicitly). ``load_state_dict`` resumes mid-epoch at the batch after the checkpoint.

    Options: a :class:`LoaderConfig`, and any of its fields as keywords (``batch_size=64``),
    which override the config's; an unknown keyword is a ``ConfigError``.
    """

    def __init__(
        self,
        indexes: str | DatasetIndex | Sequence[str | DatasetIndex],
        config: LoaderConfig | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        **options: Any,
    ):
        cfg = config or LoaderConfig()
        if options:
            cfg = cfg.replace(**options)  # LoaderConfig fields by name; any other name is refused
        self.config = cfg
        if isinstance(indexes, (str, DatasetIndex)):
            indexes = [indexes]
        self.indexes = [
            i if isinstance(i, DatasetIndex) else load_index(i, arrays=True, **cfg.storage_options) for i in indexes
        ]
        if not self.indexes:
            raise ValueError("no dataset given: pass at least one index.json URL")
        if not cfg.allow_external_shards:
            for ix in self.indexes:
                ix.refuse_external_shards()  # the one rule and message of every reader
        rates = {i.sample_rate for i in self.indexes}
        if len(rates) > 1:
            raise ValueError(f"datasets have different sample rates {sorted(rates)}; rebuild them at one rate")
        self.sample_rate = rates.pop()
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.plan_config = cfg.plan_config(self.sample_rate, self.indexes)
        self.dataset = ShardStreamDataset(
            self.indexes,
            self.plan_config,
            cfg.read_config(),
            rank=self.rank,
            world_size=self.world_size,
            num_workers=cfg.num_workers,
        )
        self._in_use: list[tuple[int, StorageWeakRef]] = []  # recycled buffers held downstream
        self.dataloader = self._make_dataloader()
        self.epoch = 0
        self._resume_at = 0  # batches of `epoch` already consumed (set by load_state_dict)
        self._yielded = 0  # batches yielded so far in the current epoch
        self._abandoned = False  # the last pass stopped before the end of its epoch
        # Bounded, however long the run: a count plus the most recent keys by name.
        self._skipped: deque[str] = deque(maxlen=MAX_SKIPPED_KEYS)
        self._skipped_count = 0
        self.label_names, self._label_remap = label_union(self.indexes)
        self._speed_classes = speed_classes(cfg.sample_transforms, self.plan_config.seed, self.label_names)
        if self._speed_classes is not None:  # speed copies as classes: the model's size follows
            self.label_names = self._speed_classes.names
        self._warn_about_waste()

    def _warn_about_waste(self) -> None:
        """Settings that run but cannot be what was meant: say so once, at construction."""
        cfg = self.config
        if self.plan(0).num_batches == 0:
            warnings.warn(
                f"the loader yields 0 batches per epoch: {self.num_samples} samples over "
                f"{self.world_size} rank(s) x {self._logical_workers} worker(s) with "
                f"batch_size={cfg.batch_size}, last_batch={cfg.last_batch!r}; lower batch_size "
                "or pass last_batch='pad'",
                UserWarning,
                stacklevel=3,
            )
        crop = self.plan_config.crop_frames
        longest = max((int(np.max(s.sample_frames)) for i in self.indexes for s in i.shards
                       if len(s.sample_frames)), default=0)
        if crop and longest and crop > longest:
            warnings.warn(
                f"crop_seconds={cfg.crop_seconds} is longer than every clip (the longest is "
                f"{longest / self.sample_rate:.2f} s): nothing is cropped and every batch is "
                f"zero-padded to {cfg.crop_seconds} s; lower crop_seconds",
                UserWarning,
                stacklevel=3,
            )

    def _make_dataloader(self) -> DataLoader:
        cfg = self.config
        self._new_buffer_generation()
        dl_kwargs: dict[str, Any] = {
            "batch_size": None, "num_workers": cfg.num_workers, "pin_memory": cfg.pin_memory,
            # DataLoader draws a worker base seed from this generator each time an iterator
            # starts; without one it draws from the global torch RNG, so starting an epoch
            # would shift the training loop's random numbers and break bitwise resume.
            "generator": torch.Generator().manual_seed(cfg.seed),
        }
        if cfg.num_workers > 0:
            dl_kwargs.update(
                prefetch_factor=cfg.prefetch_factor,
                persistent_workers=cfg.persistent_workers,
                multiprocessing_context=cfg.multiprocessing_context,
            )
            if cfg.worker_sharing_strategy:
                # Process-wide, so set here, visibly, and only in our own worker processes:
                # how *they* ship tensors. "file_system" names the shared segment instead of
                # passing a file descriptor through a socket per tensor (faster for multi-MB
                # batches in a zero-work microbenchmark). The main process is unaffected.
                dl_kwargs["worker_init_fn"] = functools.partial(
                    _set_worker_sharing_strategy, cfg.worker_sharing_strategy)
        return DataLoader(self.dataset, **dl_kwargs)

    # -- epoch structure ------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration runs (the DistributedSampler idiom)."""
        if epoch != self.epoch:
            self._resume_at = 0
        self.epoch = epoch
        self._abandoned = False

    def plan(self, epoch: int | None = None) -> EpochPlan:
        return self.dataset.plan(self.epoch if epoch is None else epoch)

    def __len__(self) -> int:
        return max(0, self.plan().num_batches - self._resume_at)

    @property
    def num_samples(self) -> int:
        return sum(i.num_samples for i in self.indexes)

    def dropped_samples(self, epoch: int | None = None) -> int:
        """Samples of this rank's share that the drop policy leaves out of ``epoch``."""
        return self.plan(epoch).ranks[self.rank].dropped

    @property
    def skipped(self) -> list[str]:
        """Keys of samples that failed to decode and were skipped (the most recent
        ``MAX_SKIPPED_KEYS``; ``skipped_count`` counts them all)."""
        return list(self._skipped)

    @property
    def skipped_count(self) -> int:
        return self._skipped_count

    @property
    def num_classes(self) -> int:
        """Classes in the loader's label space (the union of its datasets' label maps)."""
        return len(self.label_names)

    def __iter__(self) -> Iterator[Batch]:
        if self._abandoned:
            # The previous pass stopped early (a `break`): a new pass is the next epoch, so a
            # loop that caps its steps per epoch does not see the same batches every time.
            self.epoch, self._resume_at, self._abandoned = self.epoch + 1, 0, False
        epoch, start = self.epoch, self._resume_at
        total = self.plan(epoch).num_batches
        self.dataset.start(epoch, start)
        self._yielded = start
        self._resume_at = 0
        if not self.config.persistent_workers:
            self._new_buffer_generation()  # iter() starts new workers
        finished = False
        try:
            if start < total:
                expected = start
                for batch in self.dataloader:
                    if batch.index != expected:
                        raise RuntimeError(
                            f"batch order diverged from the epoch plan (got batch {batch.index}, "
                            f"expected {expected}); please report this with your torch version"
                        )
                    batch = batch.materialize()
                    self._track_buffer(batch)
                    if self._label_remap is not None:
                        batch.labels = remap_labels(self._label_remap, batch.dataset_ids, batch.labels)
                    if self._speed_classes is not None:
                        batch.labels = self._speed_classes(batch.labels, epoch, batch.sample_ids)
                    expected += 1
                    self._yielded = expected
                    self._skipped.extend(batch.skipped)
                    self._skipped_count += len(batch.skipped)
                    yield batch
                if expected != total:
                    raise RuntimeError(f"epoch {epoch} ended after {expected} of {total} planned batches")
            finished = True
        except GeneratorExit:  # a `break`: persistent workers stay for the next pass
            raise
        except BaseException:
            # An error out of the epoch (a damaged shard raised in a worker, Ctrl-C): the
            # workers stop now. Kept, they would be stopped by the garbage collector at some
            # later moment, waiting torch's 5 s join per worker there (see close()).
            self.close()
            raise
        finally:
            if finished:
                self.epoch, self._yielded = epoch + 1, 0
            else:
                # state_dict() keeps the exact stop position until the next pass starts.
                self._abandoned = True

    def _new_buffer_generation(self) -> None:
        """New workers get new flags: workers of an abandoned iteration may still be alive
        with their own buffers and flags, which must never be freed on their behalf."""
        self.dataset.new_buffer_generation()
        self._in_use = []

    def _track_buffer(self, batch: Batch) -> None:
        """Hand recycled worker buffers back once nothing references them any more."""
        flags = self.dataset.buffer_flags
        if flags is None:
            return
        if batch.buffer_slot >= 0 and batch.waveform is not None:
            self._in_use.append((batch.buffer_slot, StorageWeakRef(batch.waveform.untyped_storage())))
        still = []
        for slot, ref in self._in_use:
            if ref.expired():
                flags[slot] = 0
            else:
                still.append((slot, ref))
        self._in_use = still

    # -- worker processes -------------------------------------------------------
    def close(self) -> None:
        """Stop this loader's DataLoader worker processes now (persistent ones included).

        Iterating again starts new ones. Without this, workers end when the garbage
        collector finds the loader, and torch's shutdown then waits its 5 s join per worker
        (workers idle on their queues); ``close()`` takes milliseconds. Also ``with
        StreamingLoader(...) as loader:``."""
        iterator = getattr(self.dataloader, "_iterator", None)
        if iterator is not None:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()  # torch's own shutdown, as the iterator's __del__ runs it
            self.dataloader._iterator = None

    def __enter__(self) -> StreamingLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkpointing ----------------------------------------------------------
    def state(self) -> LoaderState:
        """Position to resume from: the epoch and how many of its batches were consumed.

        Same on every rank (ranks move in lockstep), so saving rank 0's is enough.
        """
        ds = self.dataset
        return LoaderState(
            epoch=self.epoch,
            batches_yielded=self._yielded,
            plan=self._fingerprint(),
            world_size=self.world_size,
            num_workers=self._logical_workers,
            prior_stages=ds.prior_stages if ds.stages_epoch == self.epoch else (),
            skipped_count=self._skipped_count,
            skipped_recent=tuple(self._skipped),
        )

    def state_dict(self) -> dict[str, Any]:
        """``state().to_dict()``: plain values, for a checkpoint."""
        return self.state().to_dict()

    def load_state_dict(self, state: dict[str, Any] | LoaderState) -> None:
        """Resume mid-epoch. Same layout: the batches that follow are exactly those of an
        uninterrupted run. Different world size or worker count (elastic): the rest of
        the epoch covers every sample not yet consumed, once, in a new order."""
        st = state if isinstance(state, LoaderState) else LoaderState.from_dict(state)
        if st.plan != self._fingerprint():
            raise ResumeMismatch(
                "the loader state was saved with a different dataset or loader configuration "
                "(batching, shuffling, crops or datasets differ); resume with the same settings"
            )
        stages = list(st.prior_stages)
        done = st.batches_yielded
        saved_layout = (st.world_size, max(1, st.num_workers))
        if saved_layout != (self.world_size, self._logical_workers):
            stages.append((*saved_layout, done))
            done = 0
        self.epoch = st.epoch
        self._resume_at = done
        self._yielded = done
        self._abandoned = False
        self._skipped = deque(st.skipped_recent, maxlen=MAX_SKIPPED_KEYS)
        self._skipped_count = st.skipped_count
        self.dataset.set_prior_stages(st.epoch, tuple(stages))
        # Fresh workers, so that persistent ones do not keep the old dataset state.
        self.close()
        self.dataloader = self._make_dataloader()

    @property
    def _logical_workers(self) -> int:
        return max(1, self.config.num_workers)

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "planner": PLANNER_VERSION,
            "plan_config": _jsonable(self.plan_config.to_dict()),
            "datasets": [[i.name, i.build_fingerprint, i.num_samples] for i in self.indexes],
            # Only when set: states saved before transforms existed still resume.
            **({"sample_transforms": [t.to_dict() for t in as_specs(self.config.sample_transforms)]}
               if self.config.sample_transforms else {}),
        }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _set_worker_sharing_strategy(strategy: str, worker_id: int) -> None:
    torch.multiprocessing.set_sharing_strategy(strategy)
