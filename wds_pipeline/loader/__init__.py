"""The streaming loader: epoch planning, the worker-side executor and the DataLoader wrapper."""

from .batch import Batch
from .dataset import ReadConfig, ShardStreamDataset
from .loader import LoaderConfig, StreamingLoader, load_yaml_config, parse_size, resolve_rank
from .plan import PlanConfig, plan_epoch
from .state import LoaderState

__all__ = [
    "Batch",
    "LoaderConfig",
    "LoaderState",
    "PlanConfig",
    "ReadConfig",
    "ShardStreamDataset",
    "StreamingLoader",
    "load_yaml_config",
    "parse_size",
    "plan_epoch",
    "resolve_rank",
]
