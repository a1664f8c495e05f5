"""Corpus sources: one small module per corpus, each a :class:`Source`.

A source module declares what :class:`Source` lists: ``NAME`` (``wds-pipeline build
NAME ...``), a frozen dataclass ``Options`` (its options, fields declared with
wds_pipeline.option_table.option(help=...)) and ``scan(root, options)``; and, where it has
them, the optional capabilities ``KEEP_RECORDINGS_TOGETHER``, ``read_inputs`` and
``BUILD_DEFAULTS``, which :func:`get_source` gives their defaults when a module leaves them
out (so the builder reads them, never probes for them).

The build command's flags, ``--help`` and ``--config`` keys for the source are generated
from ``Options`` (see :mod:`wds_pipeline.option_table`); nothing else is written per source.
Adding a corpus means adding one module and one line in ``SOURCES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, cast

from ..records import SourceScan
from ..typedconfig import from_mapping

SOURCES: dict[str, str] = {
    "librispeech": "wds_pipeline.sources.librispeech",
    "voxceleb": "wds_pipeline.sources.voxceleb",
    "manifest": "wds_pipeline.sources.manifest",
    "sessions": "wds_pipeline.sources.sessions",
    "hf": "wds_pipeline.sources.hf",
    "musan": "wds_pipeline.sources.musan",
    "rirs": "wds_pipeline.sources.rirs",
}


# read_inputs(root, inputs, options, storage_options): each planned input's audio bytes, or
# the error rejecting it, in plan order (see builder.recordings).
ReadInputs = Callable[[str, Sequence[Any], Any, Mapping[str, Any]], Iterator[bytes | Exception]]


class Source(Protocol):
    """What a source module provides (the module itself is the source). The members with a
    value are optional capabilities: that value is their default (:data:`OPTIONAL`)."""

    NAME: str
    Options: type[Any]  # a frozen dataclass; every field has a default

    def scan(self, root: str, options: Any = None, /) -> SourceScan: ...

    # True when many segments share a recording: the planner keeps them consecutive so a
    # worker decodes the recording once, not once per shard.
    KEEP_RECORDINGS_TOGETHER: bool = False
    # Set when the inputs are not files (dataset rows): the worker asks the source for
    # their bytes instead of opening PlannedInput.src.
    read_inputs: ReadInputs | None = None
    # Build options whose default differs for this corpus ({BuildOptions field: default}),
    # e.g. RIRs far shorter than the build-wide --min-duration; a flag or --config key given
    # still wins, and --help shows these defaults under `build SOURCE`.
    BUILD_DEFAULTS: Mapping[str, Any] = MappingProxyType({})


REQUIRED = ("NAME", "Options", "scan")
OPTIONAL: dict[str, Any] = {name: vars(Source)[name] for name in Source.__annotations__
                            if name in vars(Source)}


def get_source(name: str) -> Source:
    """The source module ``name``, checked, with its optional capabilities' defaults set."""
    try:
        module_name = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}") from None
    module = importlib.import_module(module_name)
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing or not dataclasses.is_dataclass(module.Options) or module.NAME != name:
        raise TypeError(f"{module.__file__}: a source module declares NAME = {name!r}, an "
                        f"Options dataclass and scan(root, options); missing {missing}")
    for attr, default in OPTIONAL.items():
        if not hasattr(module, attr):
            setattr(module, attr, default)
    return cast(Source, module)


def source_options(source: Source, given: Any) -> Any:
    """``given`` (None, a mapping of option names, or the source's ``Options``) as ``Options``;
    a :class:`wds_pipeline.typedconfig.ConfigError` names a bad key or value."""
    if isinstance(given, source.Options):
        return given
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise TypeError(f"{source.NAME} options: expected a mapping or "
                        f"{source.NAME}.Options, got {type(given).__name__}")
    return from_mapping(source.Options, dict(given), where=f"{source.NAME} options")
