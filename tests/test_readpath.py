"""The read path (wds_pipeline/readpath/): what it imports, and the reader it gives the loader.

The docs say the read path builds on storage alone: it imports nothing from the loader,
the builder, the trainer, audio, the sources or the shard format's decoders. Checked on
the source (ast), over everything the read path's modules import inside the package.
"""

from __future__ import annotations

import ast
import logging
import os
import tempfile
from pathlib import Path

import pytest

from wds_pipeline import readpath
from wds_pipeline.readpath import ShardCache, ShardReader, open_reader

PKG = Path(readpath.__file__).resolve().parent.parent  # wds_pipeline/
# Subpackages of wds_pipeline the read path must not reach (format: the decoding code).
FORBIDDEN = ("loader", "builder", "train", "audio", "sources", "format")


def _module_file(name: str) -> Path | None:
    """The source of ``wds_pipeline.x.y`` (a module or a package's __init__)."""
    if name == "wds_pipeline":
        return PKG / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for p in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, name: str) -> set[str]:
    """The wds_pipeline modules ``path`` (module ``name``) imports, at any level of its code."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wds_pipeline")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("wds_pipeline"):
                continue
            found.add(mod)
            # `from . import storage` names a module; `from .x import f` names a function.
            found |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}")}
    return found


def _closure(start: set[str]) -> set[str]:
    """``start`` and every wds_pipeline module it imports, transitively. The root package's
    __init__ is not followed: importing any submodule runs it, it is not the read path's."""
    seen: set[str] = set()
    todo = set(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None or name == "wds_pipeline":
            continue
        parts = name.split(".")
        todo |= {".".join(parts[:i]) for i in range(2, len(parts))}  # parent packages run too
        todo |= _imports(path, name)
    return seen


def _readpath_modules() -> set[str]:
    return {"wds_pipeline.readpath" + ("" if p.stem == "__init__" else f".{p.stem}")
            for p in (PKG / "readpath").glob("*.py")}


def test_read_path_imports_nothing_above_storage():
    modules = _readpath_modules()
    assert {"wds_pipeline.readpath.cache", "wds_pipeline.readpath.reader",
            "wds_pipeline.readpath.partial", "wds_pipeline.readpath.policy"} <= modules
    reached = _closure(modules)
    assert "wds_pipeline.storage" in reached  # the walk does follow imports
    bad = sorted(m for m in reached if m.split(".")[1:2] and m.split(".")[1] in FORBIDDEN)
    assert bad == []


def test_read_path_modules_are_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PKG / "readpath").glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > 500} == {}


def test_the_loader_leaves_the_cache_decision_to_the_read_path():
    # The loader asks open_reader for its reader: it names neither the cache nor the policy.
    names: set[str] = set()
    for p in (PKG / "loader").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.name)
    assert "open_reader" in names
    assert names & {"ShardCache", "ShardReader", "default_cache_policy", "default_cache_dir"} == set()


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch):
    """The default cache folder (under the temp dir) inside this test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    return tmp_path / "tmp" / "wds_pipeline_cache"


def _cache_dir(reader: ShardReader) -> str | None:
    assert isinstance(reader, ShardReader)
    return None if reader.cache is None else reader.cache.cache_dir


def test_open_reader_reads_a_local_folder_uncached(tmp_path, own_tempdir):
    (tmp_path / "ds").mkdir()
    url = str(tmp_path / "ds" / "train-000000.tar")
    assert _cache_dir(open_reader(url)) is None
    assert _cache_dir(open_reader(None)) is None  # no shards: nothing to cache
    assert not own_tempdir.exists()


def test_open_reader_caches_remote_shards_in_the_default_folder(own_tempdir, caplog):
    with caplog.at_level(logging.INFO, logger="wds_pipeline"):
        reader = open_reader("gs://bucket/ds/train-000000.tar", cache_limit=10**9, prefetch=3,
                             storage_options={"token": "anon"})
    assert _cache_dir(reader) == str(own_tempdir) == readpath.default_cache_dir()
    assert isinstance(reader.cache, ShardCache) and reader.cache.limit_bytes == 10**9
    assert (reader.prefetch, reader.storage_options) == (3, {"token": "anon"})
    assert [r.getMessage() for r in caplog.records] == [
        "shards are on remote/FUSE storage (gs://bucket/ds/train-000000.tar): "
        f"caching them in {own_tempdir}"
    ]


def test_open_reader_caches_fuse_shards_in_the_default_folder(slow_fuse_mount, own_tempdir):
    url = os.path.join(slow_fuse_mount.mountpoint, "train-000000.tar")
    assert readpath.default_cache_policy(url)
    assert _cache_dir(open_reader(url)) == str(own_tempdir)


def test_open_reader_never_caches_with_cache_dir_false(own_tempdir, tmp_path):
    assert _cache_dir(open_reader("gs://bucket/ds/train-000000.tar", cache_dir=False)) is None
    assert not own_tempdir.exists()
    # A folder given: cached there, wherever the shards are.
    local = str(tmp_path / "train-000000.tar")
    assert _cache_dir(open_reader(local, cache_dir=str(tmp_path / "c"))) == str(tmp_path / "c")
