"""Transforms: the seam where augmentation plugs into the loader and the trainer.

Two stages, each a list of ``{name, params}`` in the config, each name looked up in a
registry (one small module per transform, like the corpus sources):

- **sample transforms** (``LoaderConfig.sample_transforms``, :mod:`.sample`): numpy, in the
  loader's workers, on every sample after its crop (``speed`` alone runs before it, where
  lengths are still free), whether it was decoded from a streamed shard or sliced from a
  memory-mapped one (``loader/finish.py`` is the one place that finishes a sample). Each gets a counter-based RNG that is a pure function of
  (loader seed, epoch, sample id, position in the list): results do not depend on the worker
  count, the read order or a resume.
- **batch transforms** (``TrainConfig.batch_transforms``, :mod:`.batch`): torch, in the
  trainer, on the batch once it is on the device, with counter-based draws keyed per row by
  (run seed, epoch, position in the list, the row's global sample id) (:mod:`.keyed`): the
  same augmentation for a sample whatever batch, worker count, resume or rank.

Adding a transform: one module holding a frozen dataclass (its fields are the ``params``,
with defaults) with a ``__call__``, and one line in ``SAMPLE_TRANSFORMS`` or
``BATCH_TRANSFORMS``. Nothing else is written per transform.
"""

from __future__ import annotations

from .registry import TransformSpec, as_specs

__all__ = ["TransformSpec", "as_specs"]
