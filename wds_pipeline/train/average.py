"""``wds-pipeline average``: the mean of the weights of a run's last N checkpoints (as
WeSpeaker's ``average_model.py`` and NeMo do before evaluation), written as one checkpoint
that ``wds-pipeline embed`` (:func:`.saved_model.load_saved_model`) reads.

Floating-point tensors of the model are averaged (in float64, stored in their own dtype);
integer buffers (BatchNorm's ``num_batches_tracked``) are taken from the newest checkpoint,
as are the config, the class list and the sample rate. Only checkpoints that pass the
resume checks (sidecar, size, sha256, ``weights_only``) count; a damaged one is skipped and
named. The output is committed by rename and holds only tensors and plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import storage
from ..errors import ConfigError
from .checkpoint import CheckpointManager
from .checkpoint_io import CheckpointError, serialize
from .models import state_dict_mismatch

__all__ = ["AverageResult", "average_checkpoints", "average_states"]

# Kept from the newest checkpoint: what embed needs to rebuild the model, and its provenance.
KEPT = ("format", "config", "label_names", "sample_rate", "fingerprints", "step", "epoch")


@dataclass(frozen=True)
class AverageResult:
    out: str
    steps: list[int]  # of the checkpoints averaged, oldest first
    skipped: list[str]  # damaged checkpoints passed over, with why

    def summary(self) -> str:
        return f"averaged {len(self.steps)} checkpoints (steps {', '.join(map(str, self.steps))}) -> {self.out}"


def average_states(models: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of the floating-point tensors of ``models`` (state dicts of one model,
    oldest first); every other tensor from the last."""
    if not models:
        raise ValueError("average_states: no state dicts given")
    last = models[-1]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in last.items():
        if tensor.is_floating_point():
            total = torch.stack([m[name].to(torch.float64) for m in models]).mean(0)
            out[name] = total.to(tensor.dtype)
        else:
            out[name] = tensor.clone()
    return out


def average_checkpoints(folder: str, last: int, out: str, *, log: Callable[[str], None] = lambda _m: None,
                        **storage_options: Any) -> AverageResult:
    """Average the newest ``last`` valid checkpoints of the checkpoint folder ``folder``
    into the file ``out``."""
    if last < 1:
        raise ConfigError(f"--last must be >= 1, got {last}")
    mgr = CheckpointManager(folder, storage_options=storage_options)
    states: list[tuple[int, dict[str, Any]]] = []
    skipped: list[str] = []
    for info in reversed(mgr.list()):
        if len(states) == last:
            break
        try:
            state, _ = mgr.load(info.step)
        except CheckpointError as e:
            skipped.append(str(e))
            log(f"skipped: {e}")
            continue
        states.append((info.step, state))
    if len(states) < last:
        raise CheckpointError(f"{folder}: {len(states)} valid checkpoints, --last asks for {last}"
                              + (f" ({len(skipped)} damaged skipped)" if skipped else "")
                              + "; average fewer, or keep more with checkpoint.keep_last")
    states.reverse()  # oldest first
    newest = states[-1][1]
    for step, state in states[:-1]:
        problem = state_dict_mismatch(state["model"], newest["model"])
        if problem is not None or state.get("config", {}).get("model") != newest.get("config", {}).get("model"):
            raise CheckpointError(f"{folder}: the checkpoint of step {step} holds another model than the newest "
                                  f"({problem or 'model config differs'}); average checkpoints of one run")
    averaged = {k: newest[k] for k in KEPT if k in newest}
    averaged["model"] = average_states([s["model"] for _, s in states])
    averaged["averaged"] = {"folder": folder, "steps": [s for s, _ in states]}
    storage.write_bytes_atomic(out, serialize(averaged), **storage_options)
    return AverageResult(out=out, steps=[s for s, _ in states], skipped=skipped)
