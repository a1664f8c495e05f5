"""The Source contract, checked for every registered source (wds_pipeline.sources.SOURCES):
what the builder and the CLI rely on without naming a source."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from wds_pipeline.builder import BuildConfigError, BuildOptions, build_dataset
from wds_pipeline.cli import build_option_table, make_parser
from wds_pipeline.records import SourceScan
from wds_pipeline.sources import OPTIONAL, REQUIRED, SOURCES, Source, get_source, source_options

ALL = sorted(SOURCES)


def test_the_contract_lists_every_protocol_member_once():
    members = set(Source.__annotations__) | {"scan"}
    assert set(REQUIRED) | set(OPTIONAL) == members
    assert not set(REQUIRED) & set(OPTIONAL)
    assert OPTIONAL == {"KEEP_RECORDINGS_TOGETHER": False, "read_inputs": None, "BUILD_DEFAULTS": {}}


@pytest.mark.parametrize("name", ALL)
def test_every_source_declares_the_contract(name):
    source = get_source(name)
    assert source.NAME == name
    assert get_source(name) is source  # one module, looked up again: the same
    assert callable(source.scan)
    assert dataclasses.is_dataclass(source.Options)
    assert source.Options.__dataclass_params__.frozen  # type: ignore[attr-defined]
    # Every option has a default: a build without source options is a build.
    assert source_options(source, None) == source.Options()
    assert source_options(source, {}) == source.Options()
    assert source_options(source, source.Options()) == source.Options()
    # The optional capabilities are there, as declared or with their defaults.
    assert isinstance(source.KEEP_RECORDINGS_TOGETHER, bool)
    assert source.read_inputs is None or callable(source.read_inputs)
    # Its own build defaults name build options and make valid ones.
    BuildOptions(**source.BUILD_DEFAULTS).validate()
    hints = typing.get_type_hints(source.Options)
    assert set(hints) == {f.name for f in dataclasses.fields(source.Options)}


@pytest.mark.parametrize("name", ALL)
def test_every_source_is_a_build_command_with_its_options(name):
    table = build_option_table(name)  # raises on a flag declared twice
    source = get_source(name)
    keys = set(table.keys())
    # The build's own options and every option of the source, side by side.
    assert keys >= {"codec", "shard_size", "workers"}
    assert {f.name for f in dataclasses.fields(source.Options)} <= {
        o.field for o in table._options}
    args = make_parser().parse_args(["build", name, "SRC", "OUT"])
    options, resolved = table.build(args)
    assert options == BuildOptions(**source.BUILD_DEFAULTS) and resolved == source.Options()
    assert (source.__doc__ or "").strip().splitlines()[0]  # the `build --help` line


@pytest.mark.parametrize("name", ALL)
def test_every_source_turns_an_empty_folder_into_a_usage_error(name, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        scan = get_source(name).scan(str(empty), None)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        pass  # what build_dataset reports as a usage error naming SRC
    else:
        assert isinstance(scan, SourceScan) and not scan.records and not scan.rejects
    with pytest.raises(BuildConfigError, match=str(empty)):
        build_dataset(name, str(empty), str(tmp_path / "out"),
                      options=BuildOptions(workers=1, progress=False), log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_an_unknown_source_is_a_usage_error_naming_the_choices(tmp_path: Path):
    with pytest.raises(BuildConfigError, match="unknown source 'nope'; choose one of "
                                               + str(ALL).replace("[", r"\[")):
        build_dataset("nope", str(tmp_path), str(tmp_path / "out"))
