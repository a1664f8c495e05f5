"""Public entry point of the shard builder (the implementation lives in ``wds_pipeline.build``).

    from wds_pipeline.builder import BuildOptions, build_dataset
    result = build_dataset("librispeech", "corpus/LibriSpeech", "shards",
           options=BuildOptions(codec="npy", shard_size=500, workers=2),
           source_options={"parts": "dev-clean"})
    print(result.summary())
"""

from . import build as _build
from .build import *  # noqa: F403  (the same public names, re-exported)

__all__ = list(_build.__all__)
