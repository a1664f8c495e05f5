"""Public entry point of the shard builder (the implementation lives in ``wds_pipeline.build``).

    from wds_pipeline.builder import BuildOptions, build_dataset
    result = build_dataset("librispeech", "corpus/LibriSpeech", "shards",
           options=BuildOptions(codec="npy", shard_size=500, workers=2),
           source_options={"parts": "dev-clean"})
    print(result.summary())
"""

from .build import (
    BuildConfigError,
    BuildError,
    BuildOptions,
    BuildResult,
    OutputConflictError,
    SplitResult,
    build_dataset,
)

__all__ = ["BuildConfigError", "BuildError", "BuildOptions", "BuildResult",
           "OutputConflictError", "SplitResult", "build_dataset"]
