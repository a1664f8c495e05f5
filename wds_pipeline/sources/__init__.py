"""Corpus sources: one small module per corpus, each a :class:`Source`.

A source module declares

    NAME: str                                   # `wds-pipeline build NAME ...`
    @dataclass(frozen=True) class Options        # its options, fields declared with
                                                 # wds_pipeline.option_table.option(help=...)
    scan(root: str, options: Options | None = None) -> wds_pipeline.records.SourceScan
    KEEP_RECORDINGS_TOGETHER: bool = False       # optional: True when many segments share
                                                 # a recording (plan them consecutively so
                                                 # it is decoded once, not once per shard)
    read_inputs(root, inputs, options, storage_options)  # optional: the inputs are not files
                                                 # (dataset rows); yields each planned input's
                                                 # audio bytes, or the error rejecting it, in
                                                 # plan order (see builder.recordings)

The build command's flags, ``--help`` and ``--config`` keys for the source are generated
from ``Options`` (see :mod:`wds_pipeline.option_table`); nothing else is written per source.
Adding a corpus means adding one module and one line in ``SOURCES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, Protocol, cast

from ..records import SourceScan
from ..typedconfig import from_mapping

SOURCES: dict[str, str] = {
    "librispeech": "wds_pipeline.sources.librispeech",
    "voxceleb": "wds_pipeline.sources.voxceleb",
    "manifest": "wds_pipeline.sources.manifest",
    "sessions": "wds_pipeline.sources.sessions",
    "hf": "wds_pipeline.sources.hf",
}


class Source(Protocol):
    """What a source module provides (the module itself is the source)."""

    NAME: str
    Options: type[Any]  # a frozen dataclass; every field has a default

    def scan(self, root: str, options: Any = None, /) -> SourceScan: ...


def get_source(name: str) -> Source:
    try:
        module_name = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}") from None
    module = importlib.import_module(module_name)
    missing = [a for a in ("NAME", "Options", "scan") if not hasattr(module, a)]
    if missing or not dataclasses.is_dataclass(module.Options) or module.NAME != name:
        raise TypeError(f"{module.__file__}: a source module declares NAME = {name!r}, an "
                        f"Options dataclass and scan(root, options); missing {missing}")
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
