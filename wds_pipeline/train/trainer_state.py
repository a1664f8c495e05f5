"""What a :class:`~.trainer.Trainer`'s checkpoint holds and how a resume restores it: the
state (weights, optimizer, schedules, grad scaler, every rank's RNG, the loader position,
the step counters), the fingerprints a checkpoint must match to be resumed, the schedule
re-anchored when the steps left change, and the save every rank joins. A mixin of
:class:`~.trainer.Trainer` (the attributes below are set by its ``__init__``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ResumeMismatch
from ..loader import StreamingLoader
from .checkpoint import CheckpointManager
from .config import TrainConfig
from .distributed import DistInfo, gather
from .models import unloadable_weights
from .rng import capture_rng_state, restore_rng_state
from .schedule import LRSchedule, apply_configured_optim, rescale_reason
from .statediff import state_dict_diff

CHECKPOINT_FORMAT = 1


class TrainerState:
    """The checkpoint half of :class:`~.trainer.Trainer`: save, resume and their checks."""

    cfg: TrainConfig
    force: bool  # --force: resume the weights onto other data or settings
    log: Callable[[str], None]
    dist: DistInfo
    loader: StreamingLoader
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None
    checkpoints: CheckpointManager
    per_epoch: int  # optimizer steps of a whole epoch
    step: int
    best: dict[str, float]
    valid_metrics: dict[str, float]
    resumed_from: str | None
    last_checkpoint: str | None
    metrics_mirror: Callable[[], object] | None

    def fingerprints(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the datasets and the epoch plan."""
        return {
            "datasets": [[i.name, i.build_fingerprint, i.num_samples] for i in self.loader.indexes],
            "loader_plan": self.loader.state().plan,
            "model": {"factory": self.cfg.model.factory, "options": dict(self.cfg.model.options)},
            # Only when set: checkpoints written before batch transforms or augment existed still resume.
            **({"batch_transforms": [s.to_dict() for s in self.cfg.batch_transforms]}
               if self.cfg.batch_transforms else {}),
            **({"augment": self.cfg.augment.fingerprint()} if self.cfg.augment is not None else {}),
            **self.cfg.loss.fingerprint(),  # nothing for the default (ce)
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "lr_schedule": self.schedule.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": capture_rng_state(),  # rank 0's; every rank's in rng_per_rank
            "rng_per_rank": gather(self.dist, capture_rng_state()),
            "loader": self.loader.state_dict(),
            "epoch": self.loader.epoch,
            "step": self.step,
            "best": dict(self.best),
            "valid": dict(self.valid_metrics),
            "label_names": list(self.loader.label_names),
            "sample_rate": self.loader.sample_rate,  # the model's input rate (embed checks the data's)
            "config": self.cfg.to_dict(),
            "fingerprints": self.fingerprints(),
        }

    def load_state_dict(self, state: dict[str, Any], *, where: str = "the given state") -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ResumeMismatch(f"{where}: checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        diffs = state_dict_diff(state.get("fingerprints", {}), self.fingerprints())
        if state.get("label_names") != list(self.loader.label_names):
            diffs.append("label_names: the class list differs")
        if diffs and not self.force:
            raise ResumeMismatch(
                f"{where} was written for another dataset or configuration:\n  " + "\n  ".join(diffs)
                + "\nresume with the same data and loader settings, point checkpoint.dir elsewhere "
                "for a new run, or pass --force to load the weights anyway"
            )
        self._check_model_shapes(state, where)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if diffs:  # --force: weights and optimizer only; the data position cannot carry over
            self.log(f"warning: --force: resuming weights from {where} although: " + "; ".join(diffs))
            self.loader.set_epoch(int(state["epoch"]))
        else:
            self.loader.load_state_dict(state["loader"])
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) == self.dist.world_size:
            restore_rng_state(per_rank[self.dist.rank])
        else:  # another world size (elastic): no stream to continue; derive a fresh one
            torch.manual_seed(self.cfg.run.seed + 1_000_003 * self.dist.rank + 7919 * int(state["step"]))
        self.step = int(state["step"])
        self.best = {k: float(v) for k, v in state.get("best", {}).items()}
        self.valid_metrics = {k: float(v) for k, v in state.get("valid", {}).items()}
        self._resume_schedule(state, where, forced=bool(diffs))

    def save_checkpoint(self, metrics: dict[str, float] | None = None) -> None:
        """Every rank calls this at the same step (the state gathers each rank's RNG); rank 0
        writes. The loader position is the same on every rank: ranks move in lockstep."""
        state = self.state_dict()
        if self.dist.is_main:
            info = self.checkpoints.save(state, step=self.step, epoch=self.loader.epoch,
                                         metrics=metrics or {})
            self.last_checkpoint = info.url
            if self.metrics_mirror is not None:
                self.metrics_mirror()

    def resume(self) -> None:
        loaded = self.checkpoints.load_latest(map_location="cpu")
        if loaded is None:
            return
        state, info = loaded
        self.load_state_dict(state, where=info.url)
        self.resumed_from = info.url
        self.last_checkpoint = info.url
        self.log(f"resumed from {info.url} (epoch {self.loader.epoch}, step {self.step}, "
                 f"batch {state['loader']['batches_yielded']} of the epoch)")

    # -- resume details ------------------------------------------------------------
    def _check_model_shapes(self, state: dict[str, Any], where: str) -> None:
        """Refuse, in one line, weights that cannot be loaded into this model (--force onto
        data with another number of classes), before anything is loaded."""
        problem = unloadable_weights(state["model"], self.model.state_dict(), where=where,
                                     classes=(len(state.get("label_names") or []), self.loader.num_classes))
        if problem is not None:
            raise ResumeMismatch(problem)

    def _steps_left(self) -> int:
        """Optimizer steps from the loader's position to the end of run.epochs, in this layout."""
        epoch, epochs = self.loader.epoch, self.cfg.run.epochs
        if epoch >= epochs:
            return 0
        return math.ceil(len(self.loader) / self.cfg.optim.grad_accum) + self.per_epoch * (epochs - 1 - epoch)

    def _resume_schedule(self, state: dict[str, Any], where: str, *, forced: bool) -> None:
        """Continue the checkpoint's LR schedule, re-anchored when the steps left changed (see
        schedule.py); a changed optim.lr / weight_decay is applied with a warning."""
        o, epochs = self.cfg.optim, self.cfg.run.epochs
        if state.get("lr_schedule"):
            self.schedule = LRSchedule.from_dict(state["lr_schedule"], warmup=o.warmup_steps, floor=o.min_lr_ratio)
        reason = "--force onto other data" if forced else rescale_reason(state, self.loader.state(), epochs)
        if reason:
            left = self._steps_left()
            self.schedule = self.schedule.continued(self.step, left)
            self.log(f"learning-rate schedule: {reason}: the rest of it spans the {left} optimizer steps "
                     f"left in run.epochs={epochs} (floor at step {self.schedule.end_step})")
        for warning in apply_configured_optim(self.optimizer, self.scheduler, lr=o.lr, weight_decay=o.weight_decay,
                                              factor=self.schedule.factor(self.step), where=where, step=self.step):
            self.log(f"warning: {warning}")
