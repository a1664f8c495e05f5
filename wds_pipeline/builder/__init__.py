"""Shard builder: source scan -> deterministic plan -> worker processes -> index.

    from wds_pipeline.builder import BuildOptions, build_dataset
    result = build_dataset("librispeech", "corpus/LibriSpeech", "shards",
           options=BuildOptions(codec="npy", shard_size=500, workers=2),
           source_options={"parts": "dev-clean"})
    print(result.summary())

Modules: ``options`` (typed options/results/errors), ``plan`` (pure planning, the
fingerprint and the worker's settings), ``worker`` (one shard per task), ``staging``
(the task's staged shard, its commit and journal entry), ``executor`` (where tasks run:
in-process, local pool; ``ray_executor``: Ray), ``split_writer`` (the coordinator's side
of a split: resume and index), ``journal`` (resume/refuse), ``run``
(:func:`build_dataset`, the coordinator).
"""

from .options import (
    BuildConfigError,
    BuildError,
    BuildOptions,
    BuildResult,
    OutputConflictError,
    SplitResult,
)
from .run import build_dataset

__all__ = ["BuildConfigError", "BuildError", "BuildOptions", "BuildResult",
           "OutputConflictError", "SplitResult", "build_dataset"]
