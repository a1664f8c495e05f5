"""The streaming loader: its options (``config``), epoch planning (``plan``, ``batching``), the
worker-side executor (``dataset`` with ``shards``, ``blocks``, ``decode``, ``collate``,
``buffers``) and the DataLoader wrapper (``loader``). Only the public names are exported here; internals are imported from their
modules."""

from .batch import Batch
from .config import LoaderConfig, load_yaml_config
from .loader import StreamingLoader
from .state import LoaderState

__all__ = ["Batch", "LoaderConfig", "LoaderState", "StreamingLoader", "load_yaml_config"]
