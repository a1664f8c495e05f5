"""The loader's options: ``LoaderConfig`` and the settings derived from it."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..sizes import parse_size
from ..transforms import TransformSpec
from ..transforms.sample import check_sample_transforms

# What a batch can carry; LoaderConfig.fields picks from these.
Field = Literal["waveform", "fbank", "label", "text", "meta"]
ALL_FIELDS: tuple[Field, ...] = typing.get_args(Field)

# Where fetched shards are cached: a folder, None for automatic (remote/FUSE sources are
# cached in the default folder, local ones are not), or False for never.
CacheDir = str | Literal[False] | None


@dataclass(frozen=True)
class ReadConfig:
    """The loader options that the workers read with (same names as in LoaderConfig).

    Workers always produce int16 waveforms; ``waveform_dtype`` is applied in the main process."""

    fields: tuple[Field, ...] = ("waveform", "label")
    on_decode_error: Literal["skip", "raise"] = "skip"
    on_corrupt_shard: Literal["raise", "skip"] = "raise"
    cache_dir: CacheDir = None
    cache_limit: int | None = None
    shard_prefetch: int = 2
    storage_options: dict[str, Any] = field(default_factory=dict)
    sample_transforms: tuple[TransformSpec, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(ALL_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; choose from {ALL_FIELDS}")


@dataclass(frozen=True)
class LoaderConfig:
    """Everything that shapes an epoch. Keyword-only; YAML configs map onto it 1:1."""

    batch_size: int | None = 32
    max_batch_seconds: float | None = None  # duration bucketing instead of a fixed batch size
    num_buckets: int = 8
    max_batch_size: int | None = None
    crop_seconds: float | None = None
    shuffle: bool = True
    seed: int = 0
    shuffle_buffer: int = 5000  # samples, total over workers
    shuffle_buffer_bytes: int = 1 << 30  # decoded bytes, total over workers
    last_batch: Literal["drop", "pad"] = "drop"
    weights: tuple[float, ...] = ()
    fields: tuple[Field, ...] = ("waveform", "label")
    waveform_dtype: Literal["float32", "int16"] = "float32"
    on_decode_error: Literal["skip", "raise"] = "skip"
    on_corrupt_shard: Literal["raise", "skip"] = "raise"
    num_workers: int = 2
    prefetch_factor: int | None = 2
    pin_memory: bool = False
    persistent_workers: bool = True  # workers (and their warm buffers) live across epochs
    multiprocessing_context: str | None = None
    cache_dir: CacheDir = None  # None: automatic for remote/FUSE sources; False: no cache
    cache_limit: int | None = None
    shard_prefetch: int = 2
    storage_options: dict[str, Any] = field(default_factory=dict)
    worker_sharing_strategy: Literal["file_system", "file_descriptor"] | None = None
    # Shard URLs in an index that leave its folder (../x.tar, /abs, gs://other) are
    # refused unless this is set: an index from elsewhere could point at any file.
    allow_external_shards: bool = False
    # Per-sample transforms after the crop, in order: [{name, params}] (wds_pipeline.transforms).
    sample_transforms: tuple[TransformSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_transforms", check_sample_transforms(self.sample_transforms))
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            choices = _literal_choices(hints[f.name])
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name}={value!r} is not one of {choices}")
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            raise ValueError(
                f"crop_seconds must be > 0 seconds (or None for whole clips), got {self.crop_seconds}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown loader options {sorted(unknown)}; valid: {sorted(known)}")
        d = dict(d)
        for k in ("weights", "fields"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        if isinstance(d.get("cache_limit"), str):
            d["cache_limit"] = parse_size(d["cache_limit"])
        return cls(**d)


def _literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) option, else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    args = typing.get_args(hint)
    literals = [a for a in args if typing.get_origin(a) is Literal]
    if len(literals) == 1 and all(a is type(None) or a in literals for a in args):
        return typing.get_args(literals[0]) + (None,)
    return None  # e.g. cache_dir: str | Literal[False] | None takes any path
