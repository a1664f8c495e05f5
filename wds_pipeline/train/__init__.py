"""Training on wds_pipeline shards: a plain PyTorch loop, checkpoints that survive
disconnects, typed configs and a preflight check.

    wds-pipeline train --config configs/demo.yaml
"""

from .checkpoint import CheckpointInfo, CheckpointManager
from .config import TrainConfig, load_config, parse_config
from .trainer import Trainer, TrainSummary

__all__ = ["CheckpointInfo", "CheckpointManager", "TrainConfig", "Trainer", "TrainSummary",
           "load_config", "parse_config"]
