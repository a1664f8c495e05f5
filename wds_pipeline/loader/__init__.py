"""The streaming loader: epoch planning, the worker-side executor and the DataLoader wrapper."""

from .batch import Batch
from .dataset import ReadConfig, ShardStreamDataset
from .loader import LoaderConfig, StreamingLoader, resolve_rank
from .plan import PlanConfig, plan_epoch

__all__ = [
    "Batch",
    "LoaderConfig",
    "PlanConfig",
    "ReadConfig",
    "ShardStreamDataset",
    "StreamingLoader",
    "plan_epoch",
    "resolve_rank",
]
