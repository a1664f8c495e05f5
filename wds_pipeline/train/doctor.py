"""The input-pipeline doctor: while training, where the time of the input pipeline goes
and, at each epoch end, one line naming the bottleneck and the change that would move it.

What it reads, per batch: the seconds the training loop waited for it (``data-wait``), the
host-to-device copy, and the worker's own clock (``Batch.stage_seconds``, see
``loader/stages.py``: blocked on storage, decoding, sample transforms, collating, bytes from
the link, shard opens served by the cache or the link). Nothing is timed per sample.

The rules (:func:`diagnose`), in order:

1. data-wait under ``WAIT_OK`` of the step time: the input keeps up; the **model** (the
   step on the device) is the bottleneck.
2. ``num_workers`` 0: every sample is made in the training process between steps: too few
   **workers**.
3. More than half of the workers' busy time blocked on storage: the **link** (remote or
   FUSE storage, or a slow disk).
4. A core left idle (usable cores > workers + the training process) while the workers are
   busy: too few **workers**.
5. Otherwise the workers' largest stage: **decoding**, sample **transforms** or
   **collating**.

The fixes are the ones preflight gives for a slow loader (:func:`loader_fixes`), chosen from
what was measured instead of guessed from the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..format import AUDIO_FLAC
from ..loader.rowsplit import usable_cores
from ..loader.stages import (
    CACHED_OPENS,
    COLLATE,
    DECODE,
    LINK_BYTES,
    LINK_OPENS,
    READ,
    STAGE_FIELDS,
    TRANSFORM,
)

if TYPE_CHECKING:
    from ..loader import LoaderConfig
    from .config import TrainConfig

WAIT_OK = 0.10  # data-wait under 10% of the step time: the input keeps up
LINK_SHARE = 0.5  # over half of the workers' busy time blocked on storage: the link

Bottleneck = Literal["model", "link", "workers", "decoding", "transforms", "collating"]


def slow_shards(cfg: TrainConfig) -> list[str]:
    """The training indexes on remote/FUSE storage: where the loader caches by default."""
    from ..readpath import default_cache_policy

    return [u for u in cfg.data.train if default_cache_policy(u)]


@dataclass
class PipelineTimes:
    """The input pipeline's time over some batches (a log window, an epoch)."""

    batches: int = 0
    seconds: float = 0.0  # wall time of the training loop over these batches
    wait: float = 0.0  # of which waiting for the next batch
    startup: float = 0.0  # of that wait, an epoch's wait for its first batch (worker start, first opens)
    to_device: float = 0.0  # host-to-device copies
    worker: list[float] = field(default_factory=lambda: [0.0] * len(STAGE_FIELDS))

    def add(self, stage_seconds: Sequence[float] | None, *, wait: float, seconds: float, to_device: float,
            first: bool = False) -> None:
        """One batch; ``first`` of its epoch: its wait is start-up too (reported apart)."""
        self.batches += 1
        self.wait += wait
        if first:
            self.startup += wait
        self.seconds += seconds
        self.to_device += to_device
        if stage_seconds:
            for i, v in enumerate(stage_seconds):
                self.worker[i] += v

    def figures(self) -> dict[str, float]:
        """Per batch, in milliseconds, plus the data-wait fraction, the start-up wait (of
        it), link MB/s and the cache's hit rate (for metrics.jsonl and TensorBoard)."""
        n = max(1, self.batches)
        w = self.worker
        out = {
            "data_wait": self.wait / self.seconds if self.seconds else 0.0,
            "startup_s": self.startup,
            "wait_ms": 1e3 * self.wait / n,
            "to_device_ms": 1e3 * self.to_device / n,
            "read_ms": 1e3 * w[READ] / n,
            "decode_ms": 1e3 * (w[DECODE] - w[TRANSFORM]) / n,
            "transform_ms": 1e3 * w[TRANSFORM] / n,
            "collate_ms": 1e3 * w[COLLATE] / n,
            "link_mb_s": w[LINK_BYTES] / self.seconds / 1e6 if self.seconds else 0.0,
        }
        opens = w[CACHED_OPENS] + w[LINK_OPENS]
        if opens:
            out["cache_hit_rate"] = w[CACHED_OPENS] / opens
        return out


@dataclass(frozen=True)
class Diagnosis:
    bottleneck: Bottleneck
    detail: str  # what was measured
    fix: str  # the change that would move it

    def line(self, epoch: int) -> str:
        return f"epoch {epoch} input doctor: bottleneck: {self.bottleneck} ({self.detail}); fix: {self.fix}"


def loader_fixes(cfg: LoaderConfig, *, slow_storage: bool, audio_fields: Sequence[str]) -> dict[Bottleneck, str]:
    """The change that moves each bottleneck, for this loader config (preflight's fixes)."""
    decode = ("the shards hold FLAC, decoded on every read: rebuild with --codec npy"
              if AUDIO_FLAC in audio_fields else
              "fbank is computed in the loader workers: compute it on the GPU (the default model does)"
              if "fbank" in cfg.fields else
              "raise loader.num_workers on a machine with more cores, or drop per-sample work")
    if slow_storage and cfg.cache_dir is False:
        link = "shards are read from Drive/GCS without a cache: set loader.cache_dir to local disk"
    elif slow_storage:
        link = ("the first epoch is bound by the Drive/GCS link; epoch 2+ reads the local cache "
                "(FLAC shards, --codec flac, halve the bytes; loader.shard_prefetch reads further ahead)")
    else:
        link = "the shards' disk is slow: copy them to local SSD"
    return {
        "model": "none on the input side: the step itself is the limit (mixed precision, a smaller model)",
        "workers": ("loader.num_workers is 0: use 2 on Colab (more on a larger VM)" if cfg.num_workers == 0 else
                    f"raise loader.num_workers from {cfg.num_workers} to {max(cfg.num_workers + 1, usable_cores() - 1)}"),
        "link": link,
        "decoding": decode,
        "transforms": "the sample transforms are the cost: move them to the device (batch transforms, augment block)",
        "collating": "collating is the cost: loader.waveform_dtype int16 halves the bytes each batch moves",
    }


def diagnose(t: PipelineTimes, cfg: LoaderConfig, *, slow_storage: bool, audio_fields: Sequence[str],
             cores: int | None = None) -> Diagnosis:
    """The bottleneck of ``t`` by the module's rules, and its fix."""
    cores = usable_cores() if cores is None else cores
    fixes = loader_fixes(cfg, slow_storage=slow_storage, audio_fields=audio_fields)
    f = t.figures()
    wait = f["data_wait"]
    step_ms = 1e3 * (t.seconds - t.wait) / max(1, t.batches)

    def verdict(name: Bottleneck, detail: str) -> Diagnosis:
        return Diagnosis(name, f"data-wait {100 * wait:.0f}%, {detail}", fixes[name])

    if wait < WAIT_OK:
        return verdict("model", f"step {step_ms:.0f} ms per batch")
    stages = {"read": f["read_ms"], "decoding": f["decode_ms"], "transforms": f["transform_ms"],
              "collating": f["collate_ms"]}
    busy = sum(stages.values())
    where = ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items()) + " per batch"
    if cfg.num_workers == 0:
        return verdict("workers", f"samples made in the training process: {where}")
    if busy and stages["read"] > LINK_SHARE * busy:
        return verdict("link", f"{where}; link {f['link_mb_s']:.1f} MB/s")
    if cores > cfg.num_workers + 1:
        return verdict("workers", f"{where}; {cores} cores for {cfg.num_workers} workers")
    name = max(("decoding", "transforms", "collating"), key=stages.__getitem__)
    return verdict(name, where)  # type: ignore[arg-type]
