"""wds_pipeline: preprocessed WebDataset shards for speech, streamed fast from slow storage.

    import wds_pipeline
    loader = wds_pipeline.StreamingLoader("shards/train/index.json", batch_size=64)
    for batch in loader:
        ...

The loader (and so torch) is imported on first use, so the command-line tools and
corpus scanning start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .index import DatasetIndex, load_index
from .version import __version__

if TYPE_CHECKING:
    from .loader import Batch, LoaderConfig, StreamingLoader

_LAZY = {"Batch", "LoaderConfig", "StreamingLoader"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'wds_pipeline' has no attribute {name!r}")


def make_loader(indexes, **options) -> StreamingLoader:
    """Shorthand for ``StreamingLoader(indexes, **options)``."""
    from .loader import StreamingLoader

    return StreamingLoader(indexes, **options)


__all__ = ["Batch", "DatasetIndex", "LoaderConfig", "StreamingLoader", "__version__", "load_index", "make_loader"]
