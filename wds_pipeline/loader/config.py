"""The loader's options, each declared once, and the settings derived from them.

:class:`LoaderConfig` is assembled from the option groups that each stage reads:
:class:`~.plan.PlanOptions` (the epoch plan), :class:`ReadConfig` (the workers) and its
own fields (the DataLoader and duration bucketing). A new option is one field in the
group that reads it; ``StreamingLoader``'s keywords, YAML ``loader:`` blocks (one parser,
:meth:`LoaderConfig.from_dict`, for :func:`load_yaml_config` and the trainer), the checks
(``Literal`` choices, :func:`~wds_pipeline.typedconfig.at_least` bounds) and, for a plan
option, the resume fingerprint all follow from it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from ..features import fbank_bytes_per_audio_frame
from ..index import DatasetIndex
from ..transforms import TransformSpec
from ..typedconfig import at_least, check_options, from_mapping, from_text, type_hints
from .batching import bucket_boundaries
from .plan import ByteSize, PlanConfig, PlanOptions

# What a batch can carry; LoaderConfig.fields picks from these.
Field = Literal["waveform", "fbank", "label", "text", "meta"]
ALL_FIELDS: tuple[Field, ...] = typing.get_args(Field)

# Where fetched shards are cached: a folder, None for automatic (remote/FUSE sources are
# cached in the default folder, local ones are not), or False for never.
CacheDir = str | Literal[False] | None


@dataclass(frozen=True, kw_only=True)
class ReadConfig:
    """The loader options that the workers read and collate with (a part of LoaderConfig)."""

    fields: tuple[Field, ...] = ("waveform", "label")
    # The dtype the workers write the waveform in, and so the dtype of ``batch.waveform``:
    # float32 in [-1, 1) (int16 / 32768, exactly; the scaling is fused into the workers'
    # gather, so the main process does no per-batch pass), or int16 (half the bytes through
    # shared memory and to a device: scale it there, as the trainer does).
    waveform_dtype: Literal["float32", "int16"] = "float32"
    on_decode_error: Literal["skip", "raise"] = "skip"
    on_corrupt_shard: Literal["raise", "skip"] = "raise"
    cache_dir: CacheDir = None  # None: automatic for remote/FUSE sources; False: no cache
    cache_limit: ByteSize | None = at_least(1, None)
    shard_prefetch: int = at_least(0, 2)
    storage_options: dict[str, Any] = field(default_factory=dict)
    # Per-sample transforms after the crop, in order: {name, params} each (wds_pipeline.transforms).
    sample_transforms: tuple[TransformSpec, ...] = ()

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True, kw_only=True)
class LoaderConfig(PlanOptions, ReadConfig):
    """Everything that shapes an epoch: the plan's options (``batch_size``, ``shuffle``,
    ``seed``, ``shuffle_buffer``, ``shuffle_buffer_bytes``, ``max_batch_size``,
    ``last_batch``, ``weights``: :class:`~.plan.PlanOptions`), the workers' options
    (``fields``, ``waveform_dtype``, ``on_decode_error``, ``on_corrupt_shard``,
    ``cache_dir``, ``cache_limit``, ``shard_prefetch``, ``storage_options``:
    :class:`ReadConfig`), and the fields below. Keyword-only; YAML ``loader:`` blocks map
    onto it 1:1 (:meth:`from_dict`)."""

    max_batch_seconds: float | None = None  # duration bucketing instead of a fixed batch size
    num_buckets: int = at_least(1, 8)
    crop_seconds: float | None = None
    num_workers: int = at_least(0, 2)
    prefetch_factor: int | None = at_least(1, 2)
    pin_memory: bool = False
    persistent_workers: bool = True  # workers (and their warm buffers) live across epochs
    multiprocessing_context: str | None = None
    worker_sharing_strategy: Literal["file_system", "file_descriptor"] | None = None
    # Shard URLs in an index that leave its folder (../x.tar, /abs, gs://other) are
    # refused unless this is set: an index from elsewhere could point at any file.
    allow_external_shards: bool = False

    def __post_init__(self) -> None:
        check_options(self)
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            raise ValueError(
                f"crop_seconds must be > 0 seconds (or None for whole clips), got {self.crop_seconds}"
            )
        seconds = self.max_batch_seconds
        if seconds is not None and not seconds > 0:
            raise ValueError(f"max_batch_seconds must be > 0 seconds, got {seconds}")
        if self.batch_size is None and seconds is None:
            raise ValueError("batch_size is None and max_batch_seconds is not set; give one of them")

    @classmethod
    def from_dict(cls, options: Any, where: str = "loader") -> LoaderConfig:
        """A ``loader:`` block (a mapping, as read from YAML) -> LoaderConfig, with every value
        type-checked; the one parser of loader blocks (:func:`load_yaml_config` and the
        trainer). A :class:`ConfigError` names ``where`` and the key."""
        return from_mapping(cls, options, where)

    def replace(self, **options: Any) -> LoaderConfig:
        """This config with ``options`` changed (``StreamingLoader``'s keywords): each is the
        field of that name; a ``ByteSize`` may be text such as "20GB", as in YAML."""
        hints = type_hints(LoaderConfig)
        unknown = sorted(set(options) - set(hints))
        if unknown:
            raise ConfigError(f"unknown loader options {unknown}; valid: {sorted(hints)}")
        return dataclasses.replace(self, **{k: from_text(hints[k], v) for k, v in options.items()})

    def read_config(self) -> ReadConfig:
        """The options the workers read with."""
        return ReadConfig(**_values(self, ReadConfig))

    def plan_config(self, sample_rate: int, indexes: Sequence[DatasetIndex]) -> PlanConfig:
        """The plan's options, and what they come to for these datasets: frames per crop and
        per bucketed batch, bucket boundaries at their duration quantiles, bytes held per frame."""
        options = _values(self, PlanOptions)
        bytes_per_frame = 2.0
        if "fbank" in self.fields:
            bytes_per_frame += fbank_bytes_per_audio_frame(sample_rate)
        max_frames = boundaries = None
        if self.max_batch_seconds is not None:
            max_frames = int(self.max_batch_seconds * sample_rate)
            boundaries = bucket_boundaries(indexes, self.num_buckets, self.crop_seconds, sample_rate)
            options["batch_size"] = None  # bucketed: max_batch_seconds wins over batch_size
        return PlanConfig(
            **options,
            bytes_per_frame=bytes_per_frame,
            max_batch_frames=max_frames,
            bucket_boundaries=tuple(boundaries or ()),
            crop_frames=int(round(self.crop_seconds * sample_rate)) if self.crop_seconds else None,
        )


def load_yaml_config(path: str) -> tuple[dict[str, Any], LoaderConfig]:
    """Read a YAML config: its ``data`` block (index URLs) and its ``loader`` block, parsed as
    the trainer parses it (:meth:`LoaderConfig.from_dict`).

    ``configs/local.yaml`` and ``configs/colab.yaml`` are examples. Unknown loader
    keys are an error, not silently ignored.
    """
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with 'data' and 'loader' blocks")
    return dict(doc.get("data") or {}), LoaderConfig.from_dict(doc.get("loader") or {}, f"{path}: loader")


def _values(cfg: LoaderConfig, group: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(group)}
