"""A plain PyTorch training loop fed by :class:`StreamingLoader`, with exact resume.

One optimizer step = ``optim.grad_accum`` batches. Checkpoints are written every
``checkpoint.every_steps`` optimizer steps and at every epoch end, always at an
accumulation boundary, holding everything the next batch depends on: weights, optimizer,
scheduler, grad scaler, every RNG, the loader position and the step counters. A run
killed at any point and restarted continues from the latest valid checkpoint and ends
with the same weights, bit for bit on CPU, having seen the same sample sequence.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ResumeMismatch
from ..loader import StreamingLoader
from ..transforms.batch import DeviceBatch
from .checkpoint import DEFAULT_SAVE_RETRY, CheckpointManager
from .config import TrainConfig, loader_config
from .distributed import (
    broadcast,
    check_same_weights,
    init_distributed,
    run_on_main,
    sync_buffers,
)
from .doctor import PipelineTimes, diagnose, slow_shards
from .losses import Criterion
from .metrics import MetricsLog, metrics_mirror_url, restore_metrics, timed
from .models import build_model, load_factory
from .schedule import LRSchedule
from .stage import DeviceStage, set_feature_hook
from .summary import TrainSummary, epoch_rates
from .trainer_state import TrainerState
from .validate import VALID_NOISY_SEED, validate

__all__ = ["ResumeMismatch", "TrainSummary", "Trainer", "load_factory", "lr_factor", "resolve_device",
           "resolve_precision"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but no CUDA device is available; use run.device=auto or cpu")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). bf16 only where the GPU does it natively: a T4 reports
    bf16 "supported" through emulation, and cuDNN has no bf16 convolutions there."""
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return torch.bfloat16 if name == "bf16" else torch.float16


def lr_factor(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total``
    (a fresh run's :class:`LRSchedule`)."""
    return LRSchedule.fresh(warmup=warmup, total=total, floor=floor).factor(step)


class Trainer(TrainerState):
    """``Trainer(cfg).fit()`` trains, validating and checkpointing as configured."""

    def __init__(self, cfg: TrainConfig, *, force: bool = False, log: Callable[[str], None] | None = None,
                 wait_for_lock: float = 0.0):
        self.cfg = cfg
        self.force = force
        self.wait_for_lock = wait_for_lock  # seconds to wait for another run holding checkpoint.dir
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        run = cfg.run
        if run.num_threads:
            torch.set_num_threads(run.num_threads)
        self.dist = init_distributed(run.device)
        self.device = resolve_device(run.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = resolve_precision(run.precision, self.device)
        # Seed before building anything random (weight init); a resume overwrites it.
        torch.manual_seed(run.seed)
        np.random.seed(run.seed % 2**32)
        import random

        random.seed(run.seed)

        self.loader = StreamingLoader(list(cfg.data.train), loader_config(cfg))
        if self.loader.num_classes == 0:
            raise ValueError(
                f"{cfg.data.train[0]}: the training data has no class labels (empty label_map); "
                "build it with speaker or label columns"
            )
        # The device stage: augmentation on the device (the augment block's banks read from their
        # shards), its numbers a pure function of (run.seed, epoch, batch, rank), so a resumed
        # run draws what the uninterrupted one drew.
        self.batch_stage = (DeviceStage(cfg.augment, cfg.batch_transforms, loader=cfg.loader,
                                        sample_rate=self.loader.sample_rate, seed=run.seed, rank=self.dist.rank,
                                        device=self.device)
                            if cfg.batch_transforms or cfg.augment is not None else None)
        self.criterion = Criterion(cfg.loss)  # for AAM-softmax, the model gets a cosine classifier
        self.model = self.criterion.adapt(build_model(
            cfg.model.factory, dict(cfg.model.options), num_classes=self.loader.num_classes,
            sample_rate=self.loader.sample_rate, where=cfg.source), cfg.model.factory).to(self.device)
        if self.batch_stage is not None:
            self.batch_stage.check_model(self.model, cfg.model.factory)
        # Same initial weights on every rank (seeded above); then each rank its own random
        # stream (dither, dropout), so ranks do not draw identical noise.
        torch.manual_seed(run.seed + 1_000_003 * self.dist.rank)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        # Optimizer steps of a whole epoch in this layout (planned before any resume).
        self.per_epoch = max(1, math.ceil(self.loader.plan(0).num_batches / o.grad_accum))
        # The schedule spans the configured epochs; max_steps only stops early, so a run
        # stopped at max_steps and continued later follows the same trajectory.
        self.total_steps = self.per_epoch * run.epochs
        self.schedule = LRSchedule.fresh(warmup=o.warmup_steps, total=self.total_steps, floor=o.min_lr_ratio)
        # Reads self.schedule at every step: a resume may re-anchor it (see schedule.py).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self.schedule.factor(s))
        self.scaler = (torch.amp.GradScaler("cuda")
                       if self.amp_dtype is torch.float16 and self.device.type == "cuda" else None)
        c = cfg.checkpoint
        self.checkpoints = CheckpointManager(cfg.checkpoint_dir, keep_last=c.keep_last, keep_best=c.keep_best,
                                             metric=c.metric, mode=c.mode, storage_options=c.storage_options)
        self.step = 0
        self.best: dict[str, float] = {}
        self.valid_metrics: dict[str, float] = {}
        self.valid_noisy_stage: DeviceStage | None = None  # data.valid_noisy's, on the main rank
        self.window_times = PipelineTimes()  # the input doctor's figures of the current log window
        self.to_device_s = 0.0  # the last batch's host-to-device copy
        self.resumed_from: str | None = None
        self.last_checkpoint: str | None = None
        self.metrics_mirror: Callable[[], object] | None = None
        # Metrics files are retried as checkpoints are (a Drive blip lasts seconds to a minute).
        self.metrics_retry = DEFAULT_SAVE_RETRY
        self.weights_digest = ""
        # Per epoch of this process: samples, seconds, samples_per_s, data_wait.
        self.epoch_stats: dict[int, dict[str, float]] = {}

    def close(self) -> None:
        """Leave the process group this trainer joined (torchrun runs)."""
        if self.dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank tears the group down under another's collective
            # DDP's reducer holds the process group: release it now, so that gloo's threads
            # stop here and not during interpreter shutdown (which aborts with SIGABRT).
            self.net = self.model
            gc.collect()
            torch.distributed.destroy_process_group()

    # -- the loop ---------------------------------------------------------------
    def fit(self) -> TrainSummary:
        """Train while holding checkpoint.dir (rank 0 takes its lock; every rank fails alike
        when another run holds it): two runs in one folder delete each other's checkpoints."""
        run_on_main(self.dist, lambda: self.checkpoints.lock(wait_seconds=self.wait_for_lock, log=self.log))
        try:
            return self._fit()
        finally:
            # Workers stop now, on success or error: left to the garbage collector, torch's
            # shutdown waits 5 s per worker, at some later moment (loader.close()).
            self.loader.close()
            self.checkpoints.unlock()

    def _fit(self) -> TrainSummary:
        cfg, run = self.cfg, self.cfg.run
        metrics = MetricsLog(run.out_dir if self.dist.is_main else None, tensorboard=run.tensorboard,
                             retry=self.metrics_retry, log=self.log)
        mirror = metrics_mirror_url(cfg.checkpoint_dir, run.out_dir) if self.dist.is_main else None
        if run.resume:
            self.resume()
        so = cfg.checkpoint.storage_options
        if mirror is not None and self.resumed_from is not None and not restore_metrics(
                metrics, mirror, upto_step=self.step, log=self.log, **so):
            mirror = None  # its history could not be read: never overwrite it with less
        self.metrics_mirror = (lambda: metrics.mirror(mirror, **so)) if mirror is not None else None
        keys_log = None
        if run.keys_log:
            path = f"{run.keys_log}.rank{self.dist.rank}" if self.dist.enabled else run.keys_log
            keys_log = open(path, "a", encoding="utf-8")
        t_start = time.perf_counter()
        totals = {"samples": 0, "wait": 0.0, "time": 0.0}
        window = {"samples": 0, "wait": 0.0, "time": 0.0, "loss": 0.0, "batches": 0}
        accum = cfg.optim.grad_accum
        stop = bool(run.max_steps and self.step >= run.max_steps)
        try:
            while not stop and self.loader.epoch < run.epochs:
                epoch = self.loader.epoch
                self.model.train()
                micro = 0
                bar = self._progress(epoch)
                this_epoch = {"samples": 0, "wait": 0.0, "time": 0.0, "first_wait": -1.0}
                epoch_times = PipelineTimes()  # the input doctor's
                for batch, wait in timed(self.loader):
                    t1 = time.perf_counter()
                    if this_epoch["first_wait"] < 0:  # epoch start-up: workers, buffer warm-up
                        this_epoch["first_wait"] = wait
                    if keys_log is not None:
                        real = [k for k, p in zip(batch.keys, batch.is_padding.tolist()) if not p]
                        keys_log.write(f"{epoch}\t{batch.index}\t{','.join(real)}\n")
                        keys_log.flush()
                    loss, n = self._forward_backward(batch, accum, sync=micro + 1 == accum)
                    micro += 1
                    if micro == accum:
                        self._optimizer_step()
                        micro = 0
                    dt = wait + time.perf_counter() - t1
                    for acc in (totals, window, this_epoch):
                        acc["samples"] += n
                        acc["wait"] += wait
                        acc["time"] += dt
                    for times in (epoch_times, self.window_times):
                        times.add(batch.stage_seconds, wait=wait, seconds=dt, to_device=self.to_device_s,
                                  first=this_epoch["time"] == dt)
                    window["loss"] += loss
                    window["batches"] += 1
                    if bar is not None:
                        bar.update(1)
                    if micro == 0:
                        if self.step % run.log_every == 0:
                            self._log_window(epoch, window, metrics, bar)
                        if run.max_steps and self.step >= run.max_steps:
                            stop = True
                            break
                        if self.step % cfg.checkpoint.every_steps == 0:
                            self.save_checkpoint()
                if bar is not None:
                    bar.close()
                self.epoch_stats[epoch] = epoch_rates(this_epoch)
                doctor = self._doctor(epoch, epoch_times) if epoch_times.batches and self.dist.is_main else {}
                metrics.write("epoch", self.step, {"epoch": epoch, **self.epoch_stats[epoch], **doctor,
                                                   **self.criterion.epoch_metrics(epoch)})
                if micro:  # an epoch that ends inside an accumulation still steps on it
                    self._optimizer_step()
                if stop and self.loader.epoch == epoch:
                    self.save_checkpoint()  # mid-epoch stop (max_steps): resumable later
                    break
                self.valid_metrics = broadcast(self.dist, self.validate() if self.dist.is_main else None)
                if self.valid_metrics and self.dist.is_main:
                    metrics.write("valid", self.step, {"epoch": epoch, **self.valid_metrics})
                    self.log(f"epoch {epoch} validation: " + ", ".join(
                        f"{k} {v:.4f}" for k, v in sorted(self.valid_metrics.items())))
                self._update_best(self.valid_metrics)
                self.save_checkpoint(self.valid_metrics)
        finally:
            if keys_log is not None:
                keys_log.close()
            metrics.close()
        seconds = time.perf_counter() - t_start
        sync_buffers(self.dist, self.model)
        self.weights_digest = check_same_weights(self.dist, self.model)
        return TrainSummary(
            epochs=self.loader.epoch, steps=self.step, samples=int(totals["samples"]), seconds=seconds,
            samples_per_s=totals["samples"] / totals["time"] if totals["time"] else 0.0,
            data_wait_fraction=totals["wait"] / totals["time"] if totals["time"] else 0.0,
            valid=dict(self.valid_metrics), best=dict(self.best), resumed_from=self.resumed_from,
            checkpoint_dir=self.cfg.checkpoint_dir, last_checkpoint=self.last_checkpoint,
            metrics_file=metrics.path, tensorboard_dir=metrics.tensorboard_dir,
            num_classes=self.loader.num_classes, ranks=self.dist.world_size,
            weights_digest=self.weights_digest, metrics_failures=dict(metrics.failed),
        )

    def _forward_backward(self, batch, accum: int, *, sync: bool = True) -> tuple[float, int]:
        keep = (~batch.is_padding) & (batch.labels >= 0)
        n = int(keep.sum())
        t0 = time.perf_counter()
        wave = batch.waveform.to(self.device, non_blocking=True)
        lengths = batch.lengths.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True)
        keep = keep.to(self.device, non_blocking=True)
        self.to_device_s = time.perf_counter() - t0  # the copies as queued (non-blocking on a GPU)
        hook = None
        if self.batch_stage is not None:
            self.batch_stage.refresh(self.loader.epoch, batch.index)  # the banks of this batch's segment
            d = self.batch_stage(DeviceBatch(wave, lengths, labels, keep, batch.sample_ids), epoch=self.loader.epoch,
                                 index=batch.index)
            wave, lengths, labels, keep = d.wave, d.lengths, d.labels, d.keep
            hook = self.batch_stage.feature_hook(self.loader.epoch, batch.index, d.ids)
        # Gradients are all-reduced only on the last batch of an accumulation.
        no_sync = (self.net.no_sync() if isinstance(self.net, nn.parallel.DistributedDataParallel) and not sync
                   else contextlib.nullcontext())
        with no_sync, torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                     enabled=self.amp_dtype is not None):
            set_feature_hook(self.model, hook)  # this batch's SpecAugment, on the fbank of this forward only
            try:
                logits = self.net(wave, lengths)
            finally:
                set_feature_hook(self.model, None)
            # A batch of padding only still runs backward (zero loss): under DDP every rank
            # must join every gradient all-reduce.
            fraction = batch.index / max(1, self.loader.plan().num_batches)  # the AAM margin's position
            loss = (self.criterion(logits[keep], labels[keep], epoch=self.loader.epoch, fraction=fraction) if n
                    else logits.sum() * 0.0)
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return float(loss.detach()), n

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    def validate(self) -> dict[str, float]:
        if not self.cfg.data.valid:
            return {}
        noisy = self.cfg.data.valid_noisy
        if noisy is not None and self.valid_noisy_stage is None:  # built at the first validation, kept
            # A fixed seed, not run.seed: every run and every epoch scores the same noisy copy.
            self.valid_noisy_stage = DeviceStage(noisy, (), loader=self.cfg.loader, sample_rate=self.loader.sample_rate,
                                                 seed=VALID_NOISY_SEED, rank=0, device=self.device)
        return validate(self.model, self.cfg, self.loader.label_names, self.device, self.amp_dtype,
                        noisy=self.valid_noisy_stage)

    def _update_best(self, values: dict[str, float]) -> None:
        name, mode = self.cfg.checkpoint.metric, self.cfg.checkpoint.mode
        if name in values:
            old = self.best.get(name)
            new = values[name]
            if old is None or (new > old if mode == "max" else new < old):
                self.best[name] = new

    def _log_window(self, epoch: int, w: dict[str, float], metrics: MetricsLog, bar) -> None:
        values = {
            "epoch": epoch,
            "loss": w["loss"] / max(1, w["batches"]),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": w["samples"] / w["time"] if w["time"] else 0.0,
            "data_wait": w["wait"] / w["time"] if w["time"] else 0.0,
            # Where the input pipeline's time went over the window (the doctor's figures).
            **{f"input/{k}": v for k, v in self.window_times.figures().items() if k != "data_wait"},
        }
        w.update(samples=0, wait=0.0, time=0.0, loss=0.0, batches=0)
        self.window_times = PipelineTimes()
        if not self.dist.is_main:  # rank 0 logs for everyone
            return
        metrics.write("train", self.step, values)
        line = (f"epoch {epoch} step {self.step} loss {values['loss']:.4f} lr {values['lr']:.2e} "
                f"{values['samples_per_s']:.1f} samples/s data-wait {100 * values['data_wait']:.1f}%")
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            self.log(line)

    def _doctor(self, epoch: int, times: PipelineTimes) -> dict[str, Any]:
        """The epoch's input-pipeline verdict: one line in the log; its figures and bottleneck
        returned for the epoch's metrics record (as ``input/...``)."""
        d = diagnose(times, self.cfg.loader, slow_storage=bool(slow_shards(self.cfg)),
                     audio_fields=[i.audio_field for i in self.loader.indexes])
        self.log(d.line(epoch))
        figures = {k: v for k, v in times.figures().items() if k != "data_wait"}  # the record has data_wait
        return {**{f"input/{k}": v for k, v in figures.items()}, "input/bottleneck": d.bottleneck}

    def _progress(self, epoch: int):
        if not self.cfg.run.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=len(self.loader), desc=f"epoch {epoch}", unit="batch", leave=False,
                    file=sys.stderr, dynamic_ncols=True)
