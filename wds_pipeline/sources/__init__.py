"""Corpus sources: one small module per corpus, each exposing

    NAME: str
    add_arguments(parser: argparse.ArgumentParser) -> None   # its own CLI options
    scan(root: str, **options) -> wds_pipeline.records.SourceScan

Adding a corpus means adding one module and one line in ``SOURCES``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SOURCES: dict[str, str] = {
    "librispeech": "wds_pipeline.sources.librispeech",
    "voxceleb": "wds_pipeline.sources.voxceleb",
    "manifest": "wds_pipeline.sources.manifest",
}


def get_source(name: str) -> ModuleType:
    try:
        module_name = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}") from None
    return importlib.import_module(module_name)
