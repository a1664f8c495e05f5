"""Collation inside a worker: held samples -> one padded :class:`Batch`, the int16 waveform
written into a recycled shared-memory buffer when one is free, fbank taken from the shards or
computed."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .batch import Batch
from .buffers import BatchBufferPool, RecycledArrays, SampleArena
from .config import ReadConfig
from .decode import Sample
from .plan import PlanConfig
from .rowsplit import SPLITTER

SCALE = np.float32(1.0 / 32768.0)  # int16 -> float32 in [-1, 1): exact (a power of two)


def float_rows(out: np.ndarray, rows: list[Sample], lo: int, hi: int) -> None:
    """Rows ``[lo, hi)`` of the float32 batch ``out``: each converted while it is in cache, a
    casting assignment, then an in-place scale, then its zero padding. numpy, not torch:
    torch's intra-op threads made the same rows 10x slower in a main process with 2 threads
    on 2 busy cores (they spin while waiting); numpy releases the GIL in each of the three."""
    for row in range(lo, hi):
        wave = rows[row].wave
        n = len(wave)
        dst = out[row, :n]
        dst[...] = wave
        dst *= SCALE
        out[row, n:] = 0


class Collator:
    """Assembles a worker's batches. ``buffer_flags`` (one per recycled buffer, shared with the
    main process) enables buffer reuse; without it every batch gets fresh memory.

    The waveform is written in ``read_cfg.waveform_dtype``: int16 as stored, or float32 with
    the scaling fused into the gather from the held samples (the one copy the batch needs
    anyway), so a float32 batch costs the main process nothing more than an int16 one.
    """

    def __init__(self, plan_cfg: PlanConfig, read_cfg: ReadConfig, sample_rate: int,
                 buffer_flags: torch.Tensor | None) -> None:
        self.plan_cfg = plan_cfg
        self.read_cfg = read_cfg
        self.sample_rate = sample_rate
        self.buffer_flags = buffer_flags
        self._buffers: BatchBufferPool | None = None
        self._local: dict[torch.dtype, RecycledArrays] = {}
        self._fbank: Any = None

    def __call__(self, rows: list[Sample], pad_flags: list[bool], index: int, epoch: int,
                 skipped: list[str], arena: SampleArena | None) -> Batch:
        """One batch of ``rows`` (padding rows flagged); ``skipped`` names the samples that
        failed since the last batch."""
        want = self.read_cfg.fields
        lengths = np.fromiter((len(r.wave) for r in rows), dtype=np.int64, count=len(rows))
        width = int(self.plan_cfg.crop_frames or (lengths.max() if len(rows) else 0))
        as_float = self.read_cfg.waveform_dtype == "float32"
        wave_t, slot = self._batch_buffer((len(rows), width),
                                          torch.float32 if as_float else torch.int16)
        uniform = (arena is not None and rows and width == arena.width
                   and all(r.slot >= 0 for r in rows))
        if as_float:
            # Without workers, on several threads (rowsplit.py).
            SPLITTER.run(functools.partial(float_rows, wave_t.numpy(), rows), len(rows), width * 4)
        elif uniform and arena is not None:
            pcm = wave_t.numpy()
            np.take(arena.data, [r.slot for r in rows], axis=0, out=pcm)
            for i in np.flatnonzero(lengths < width):
                pcm[i, lengths[i] :] = 0
        else:
            pcm = wave_t.numpy()
            for row, r in enumerate(rows):
                n = len(r.wave)
                pcm[row, :n] = r.wave
                pcm[row, n:] = 0
        lengths_t = torch.from_numpy(lengths)
        fbank = fbank_lengths = None
        if "fbank" in want:
            fbank, fbank_lengths = self._fbank_batch(rows, wave_t, lengths_t)
        metas = [r.meta or {} for r in rows]
        # Per-row fields stay numpy inside a worker (cheaper to send, see Batch.materialize):
        # Batch's tensor types hold once the main process has materialised it.
        batch = Batch(
            waveform=wave_t if "waveform" in want else None,
            lengths=lengths,  # type: ignore[arg-type]
            labels=np.fromiter((r.label for r in rows), dtype=np.int64, count=len(rows)),  # type: ignore[arg-type]
            keys=[r.key for r in rows],
            is_padding=np.asarray(pad_flags, dtype=bool),  # type: ignore[arg-type]
            dataset_ids=np.fromiter((r.dataset for r in rows), dtype=np.int64, count=len(rows)),  # type: ignore[arg-type]
            sample_ids=np.fromiter((r.gid for r in rows), dtype=np.int64, count=len(rows)),  # type: ignore[arg-type]
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
        if info is None:
            # In-process: this process's own recycled buffers (nothing crosses a process).
            pool = self._local.get(dtype)
            if pool is None:
                pool = self._local[dtype] = RecycledArrays(
                    np.float32 if dtype == torch.float32 else np.int16)
            return pool.take(shape), -1
        if self.buffer_flags is None:
            return torch.empty(shape, dtype=dtype), -1
        if self._buffers is None:
            self._buffers = BatchBufferPool(self.buffer_flags, info.id)
        return self._buffers.take(shape, dtype)

    def _fbank_batch(self, rows: list[Sample], wave_t: torch.Tensor, lengths_t: torch.Tensor):
        feats = [r.feats for r in rows]
        if feats and all(f is not None for f in feats):
            n = np.array([len(f) for f in feats if f is not None], dtype=np.int64)
            bins = next(f.shape[1] for f in feats if f is not None)
            out = np.zeros((len(rows), int(n.max()), bins), dtype=np.float32)
            for i, f in enumerate(feats):
                if f is not None:
                    out[i, : len(f)] = f
            return torch.from_numpy(out), torch.from_numpy(n)
        # No precomputed features in the shards: compute Kaldi fbank here, in the worker, from
        # the int16 scale (a float32 waveform times 32768 is exactly its int16 values).
        if self._fbank is None:
            from ..features import Fbank, FbankConfig

            self._fbank = Fbank(FbankConfig(sample_rate=self.sample_rate))
        pcm = wave_t * 32768.0 if wave_t.dtype == torch.float32 else wave_t.to(torch.float32)
        with torch.no_grad():
            return self._fbank(pcm, lengths_t)
