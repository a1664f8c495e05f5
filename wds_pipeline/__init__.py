"""wds_pipeline: preprocessed WebDataset shards for speech, streamed fast from slow storage.

    import wds_pipeline
    loader = wds_pipeline.StreamingLoader("shards/train/index.json", batch_size=64)
    for batch in loader:
        ...
"""

from .index import DatasetIndex, load_index
from .loader import Batch, LoaderConfig, StreamingLoader
from .version import __version__


def make_loader(indexes, **options) -> StreamingLoader:
    """Shorthand for ``StreamingLoader(indexes, **options)``."""
    return StreamingLoader(indexes, **options)


__all__ = ["Batch", "DatasetIndex", "LoaderConfig", "StreamingLoader", "__version__", "load_index", "make_loader"]
