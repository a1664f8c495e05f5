"""The learning-rate schedule: linear warm-up over ``optim.warmup_steps`` optimizer steps,
then cosine decay that reaches ``optim.min_lr_ratio * optim.lr`` exactly at the last
optimizer step of ``run.epochs``.

The cosine runs over *progress* (0 after warm-up, 1 at the end of the last epoch), mapped
linearly from the optimizer step between an anchor and the end step. A fresh run anchors at
the end of warm-up and ends at ``steps per epoch * run.epochs``: the plain step schedule.
When a resume changes how many steps are left (another world size or worker count, an
elastic resume; or another ``run.epochs``), the step counter carries on and the schedule is
re-anchored at the resumed step with the progress reached there, ending at the step the
new layout will actually finish on: no jump in the learning rate, and the floor is reached
at the end of ``run.epochs``, not before. The mapping is stored in every checkpoint, so a
later resume continues it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class LRSchedule:
    warmup: int  # optimizer steps of linear warm-up
    floor: float  # the factor at the end (min_lr_ratio)
    anchor_step: int  # the cosine's progress is anchor_progress at this step ...
    anchor_progress: float
    end_step: int  # ... and 1 (the floor) at this one

    @classmethod
    def fresh(cls, *, warmup: int, total: int, floor: float) -> LRSchedule:
        return cls(warmup=warmup, floor=floor, anchor_step=warmup, anchor_progress=0.0, end_step=total)

    def progress(self, step: int) -> float:
        """Where the cosine stands after ``step`` optimizer steps: 0 .. 1."""
        if step >= self.end_step:
            return 1.0
        span = max(1, self.end_step - self.anchor_step)
        p = self.anchor_progress + (1 - self.anchor_progress) * (step - self.anchor_step) / span
        return min(1.0, max(0.0, p))

    def factor(self, step: int) -> float:
        """The learning rate after ``step`` optimizer steps, as a fraction of ``optim.lr``."""
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * self.progress(step)))

    def continued(self, step: int, steps_left: int) -> LRSchedule:
        """This schedule from ``step`` on, ending (at the floor) ``steps_left`` steps later."""
        end = step + steps_left
        if step < self.warmup:  # warm-up is counted in steps; the cosine starts after it
            return replace(self, anchor_step=self.warmup, anchor_progress=0.0, end_step=end)
        return replace(self, anchor_step=step, anchor_progress=self.progress(step), end_step=end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, warmup: int, floor: float) -> LRSchedule:
        """The stored mapping, with the configured warm-up and floor (those are config)."""
        return cls(warmup=warmup, floor=floor, anchor_step=int(d["anchor_step"]),
                   anchor_progress=float(d["anchor_progress"]), end_step=int(d["end_step"]))


def rescale_reason(state: dict[str, Any], now: Any, epochs: int) -> str:
    """Why the checkpoint ``state``'s schedule no longer ends where this run will: another
    (ranks, workers) layout than the loader position ``now`` (a LoaderState), or another
    ``run.epochs``; "" when it still does."""
    then = state.get("loader") or {}
    layout_then = (then.get("world_size"), max(1, int(then.get("num_workers") or 1)))
    layout_now = (now.world_size, max(1, now.num_workers))
    if layout_then != layout_now:
        return f"{layout_then[0]} ranks x {layout_then[1]} workers -> {layout_now[0]} x {layout_now[1]}"
    epochs_then = ((state.get("config") or {}).get("run") or {}).get("epochs", epochs)
    return f"run.epochs {epochs_then} -> {epochs}" if epochs_then != epochs else ""


def apply_configured_optim(optimizer: Any, scheduler: Any, *, lr: float, weight_decay: float,
                           factor: float, where: str, step: int) -> list[str]:
    """After loading a checkpoint's optimizer and scheduler (which bring back the learning
    rate and weight decay it was trained with): apply the configured ones. AdamW's moments do
    not depend on either, so this is safe. ``factor``: the schedule's at ``step``; ``where``:
    the checkpoint, for the warnings returned."""
    groups = optimizer.param_groups
    warnings = []
    old_lr = float(scheduler.base_lrs[0])
    if old_lr != lr:
        scheduler.base_lrs = [lr for _ in groups]
        for g in groups:
            g["initial_lr"] = lr
            g["lr"] = lr * factor
        scheduler._last_lr = [g["lr"] for g in groups]  # what get_last_lr() reports
        warnings.append(f"optim.lr changed from {old_lr:g} ({where}) to {lr:g} (the config): applying {lr:g}; "
                        f"the schedule goes on from step {step}, learning rate now {groups[0]['lr']:.4g}")
    old_wd = float(groups[0].get("weight_decay", weight_decay))
    if old_wd != weight_decay:
        for g in groups:
            g["weight_decay"] = weight_decay
        warnings.append(f"optim.weight_decay changed from {old_wd:g} ({where}) to {weight_decay:g} "
                        f"(the config): applying {weight_decay:g}")
    return warnings
