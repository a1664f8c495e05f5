"""wds_pipeline: preprocessed WebDataset shards for speech, streamed fast from slow storage.

    import wds_pipeline
    result = wds_pipeline.build_dataset("librispeech", "corpus/LibriSpeech", "shards",
                                        options=wds_pipeline.BuildOptions(workers=2))
    loader = wds_pipeline.StreamingLoader("shards/train-clean-100/index.json", batch_size=64)
    for batch in loader:
        ...

The loader (and so torch) and the builder are imported on first use, so the command-line
tools and corpus scanning start quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .index import DatasetIndex, load_index
from .version import __version__

if TYPE_CHECKING:
    from .builder import BuildOptions, build_dataset
    from .loader import Batch, LoaderConfig, LoaderState, StreamingLoader

# Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "Batch": ".loader",
    "LoaderConfig": ".loader",
    "LoaderState": ".loader",
    "StreamingLoader": ".loader",
    "BuildOptions": ".builder",
    "build_dataset": ".builder",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wds_pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = ["Batch", "BuildOptions", "DatasetIndex", "LoaderConfig", "LoaderState",
           "StreamingLoader", "__version__", "build_dataset", "load_index"]
