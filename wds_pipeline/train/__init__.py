"""Training on wds_pipeline shards: a plain PyTorch loop, checkpoints that survive
disconnects, typed configs and a preflight check.

    wds-pipeline train --config configs/demo.yaml

The names below are imported on first use (PEP 562), so that ``wds-pipeline --help``,
``build`` and ``verify`` do not pay for importing torch: the CLI registers the train
commands through ``train.cli``, which needs only the config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo, CheckpointManager
    from .config import TrainConfig, load_config, parse_config
    from .trainer import Trainer, TrainSummary

_WHERE = {
    "CheckpointInfo": ".checkpoint", "CheckpointManager": ".checkpoint",
    "TrainConfig": ".config", "load_config": ".config", "parse_config": ".config",
    "Trainer": ".trainer", "TrainSummary": ".trainer",
}

__all__ = ["CheckpointInfo", "CheckpointManager", "TrainConfig", "Trainer", "TrainSummary",
           "load_config", "parse_config"]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where, __name__), name)
