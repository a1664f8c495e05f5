"""Options declared once: the build command's flags, --help and --config keys are generated
from BuildOptions and each source's Options dataclass, and a new field shows up by itself."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
from test_cli import run

from wds_pipeline.builder import BuildConfigError, BuildOptions, build_dataset
from wds_pipeline.cli import build_option_table
from wds_pipeline.option_table import OptionTable, Preset, option
from wds_pipeline.sources import SOURCES, get_source, librispeech, source_options
from wds_pipeline.typedconfig import ConfigError

# The flags `build SOURCE` had when they were written out by hand in cli.py.
BUILD_FLAGS = {
    "--chunk-seconds", "--codec", "--compress", "--fbank", "--max-duration",
    "--max-shard-bytes", "--min-chunk-seconds", "--min-duration", "--no-fbank", "--no-progress",
    "--no-shuffle", "--no-strict", "--no-trim-silence", "--normalize", "--overwrite", "--repair",
    "--sample-rate", "--shard-prefix", "--shard-size", "--shuffle-seed", "--strict",
    "--trim-silence", "--wait-for-lock", "--workers", "--zstd-level",
    "--vad", "--vad-split-pause",
    "--executor", "--ray",  # the Ray executor's fields, hand-written on their branch
}
SOURCE_FLAGS = {"librispeech": {"--parts"}, "voxceleb": {"--kaldi-split"},
                "manifest": {"--split", "--dataset-name"},
                "sessions": {"--mode", "--split", "--dataset-name", "--audio-name",
                             "--transcript-name", "--vocabulary", "--synonyms", "--pad-before",
                             "--pad-after", "--min-score", "--window-seconds", "--hop-seconds",
                             "--untimed", "--length-tolerance"},
                "musan": {"--split"}, "rirs": {"--split", "--rirs-only"},
                "hf": {"--split", "--subset", "--data-files", "--revision", "--audio-column",
                       "--label-column", "--text-column", "--speaker-column", "--id-column"}}


def parser_for(table: OptionTable) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    table.add_to(p)
    return p


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_generated_build_flags_and_config_keys_are_the_hand_written_ones(source):
    table = build_option_table(source)
    assert flags(parser_for(table)) == BUILD_FLAGS | SOURCE_FLAGS[source]
    # YAML keys: the flags' names ('_' for '-'), without the --no-X of a --X/--no-X pair
    expected = {f[2:].replace("-", "_") for f in BUILD_FLAGS | SOURCE_FLAGS[source]}
    expected -= {"no_fbank", "no_strict", "no_trim_silence"}
    assert set(table.keys()) == expected


def test_defaults_yaml_and_flags_in_that_order_of_precedence():
    table = build_option_table("librispeech")
    p = parser_for(table)
    opts, src = table.build(p.parse_args([]))
    assert opts == BuildOptions() and src == librispeech.Options()
    config = {"codec": "flac", "shard-size": 7, "max_shard_bytes": "1MB", "no_progress": True,
              "no_shuffle": True, "parts": "dev-clean", "min_duration": "1e-1"}
    opts, src = table.build(p.parse_args(["--shard-size", "9", "--shuffle-seed", "3"]), config)
    assert (opts.codec, opts.shard_size, opts.max_shard_bytes) == ("flac", 9, 10**6)
    assert (opts.progress, opts.shuffle_seed, opts.min_duration) == (False, 3, 0.1)
    assert src == librispeech.Options(parts="dev-clean")
    opts, _ = table.build(p.parse_args(["--no-shuffle", "--max-shard-bytes", "2KiB"]))
    assert opts.shuffle_seed is None and opts.max_shard_bytes == 2048
    opts, _ = table.build(p.parse_args([]), {"no_shuffle": False, "no_progress": False})
    assert opts.shuffle_seed == 0 and opts.progress is True


def test_bad_config_values_name_the_file_and_key():
    table = build_option_table("voxceleb")
    args = parser_for(table).parse_args([])
    cases = [({"codec": "mp3"}, "x.yaml: codec: expected one of ['npy', 'flac'], got 'mp3'"),
             ({"shard_size": 2.5}, "x.yaml: shard_size: expected an integer, got 2.5"),
             ({"kaldi_split": "yes"}, "x.yaml: kaldi_split: expected true or false"),
             ({"no_progress": 1}, "x.yaml: no_progress: expected true or false, got 1"),
             ({"max_shard_bytes": "12 parsecs"}, "x.yaml: max_shard_bytes: "),
             ({"partz": 1, "kaldi": 2}, "x.yaml: unknown option(s) ['kaldi', 'partz']; valid: [")]
    for config, message in cases:
        with pytest.raises(ConfigError) as e:
            table.build(args, config, where="x.yaml")
        assert str(e.value).startswith(message), str(e.value)


def test_a_new_field_becomes_a_flag_and_a_key_without_cli_code():
    """What adding a run option (say a task order) to BuildOptions gives, with no other edit."""

    @dataclass(frozen=True)
    class Extended(BuildOptions):
        order: Literal["plan", "largest-first"] = option(
            "plan", help="the order shards are started in", group="running",
            presets=[Preset("--largest-first", "largest-first", "same as --order largest-first")])
        undocumented_limit: int | None = None  # no metadata at all: still an option

    table = OptionTable((Extended, None))
    p = parser_for(table)
    assert flags(p) == BUILD_FLAGS | {"--order", "--largest-first", "--undocumented-limit"}
    help_text = p.format_help()
    assert "--order {plan,largest-first}" in help_text and "the order shards are started" in help_text
    assert "(default: plan)" in help_text
    (opts,) = table.build(p.parse_args(["--largest-first", "--undocumented-limit", "4"]))
    assert (opts.order, opts.undocumented_limit) == ("largest-first", 4)
    (opts,) = table.build(p.parse_args([]), {"largest_first": True})
    assert opts.order == "largest-first"
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'random'"):
        p.parse_args(["--order", "random"])


def test_a_flag_declared_twice_is_refused_when_the_table_is_made():
    @dataclass(frozen=True)
    class Clash:
        shard_size: int = option(3, help="a source option named like a build option")

    with pytest.raises(TypeError, match="'shard_size' declared by both BuildOptions and Clash"):
        OptionTable((BuildOptions, None), (Clash, "clash options"))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_registered_source_is_a_source(name):
    source = get_source(name)
    assert source.NAME == name
    assert dataclasses.is_dataclass(source.Options)
    for f in dataclasses.fields(source.Options):
        assert f.default is not dataclasses.MISSING, f"{name}.Options.{f.name} has no default"
        assert f.metadata["option"].help, f"{name}.Options.{f.name} has no help"
    assert source_options(source, None) == source.Options()


def test_source_options_from_a_mapping_are_checked(tmp_path):
    ls = get_source("librispeech")
    assert source_options(ls, {"parts": ["dev-clean"]}) == librispeech.Options(parts=("dev-clean",))
    with pytest.raises(BuildConfigError, match="unknown key 'partz'; valid keys: parts"):
        build_dataset("librispeech", str(tmp_path), str(tmp_path / "o"),
                      source_options={"partz": "dev-clean"})
    with pytest.raises(BuildConfigError, match="kaldi_split: expected true or false"):
        build_dataset("voxceleb", str(tmp_path), str(tmp_path / "o"),
                      source_options={"kaldi_split": "yes"})


def test_source_help_has_its_own_section(capsys):
    code, out, _ = run(capsys, "build", "manifest", "--help")
    assert code == 0
    section = " ".join(out.split("manifest options:")[1].split("examples:")[0].split())
    assert "--split SPLIT split for rows without a 'split' column (default: train)" in section
    assert "--dataset-name NAME" in section


def test_config_value_type_errors_are_usage_errors(capsys, tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("shard_size: many\n")
    code, _, err = run(capsys, "build", "librispeech", tmp_path, tmp_path / "o", "--config", cfg)
    assert code == 2
    assert f"--config {cfg}: shard_size: invalid literal for int()" in err


def test_fingerprint_membership_and_choices_come_from_the_declarations():
    from wds_pipeline.option_table import choices, recorded

    @dataclass(frozen=True)
    class Opts:
        mode: Literal["a", "b"] = option("a", help="mode", group="out")
        level: int = option(3, help="level", group="out", unused_when=lambda o: o.mode == "a")
        extra: float | None = option(None, help="added later", group="out", omit_default=True)
        pick: Literal["x", "y"] | None = option(None, help="pick")
        workers: int = option(1, help="how to run", fingerprint=False)

    assert recorded(Opts()) == {"mode": "a", "level": None, "pick": None}
    assert recorded(Opts(mode="b", extra=1.5)) == {"mode": "b", "level": 3, "extra": 1.5,
                                                   "pick": None}
    assert recorded(Opts(mode="b"), group="out") == {"mode": "b", "level": 3}
    assert choices(Opts, "mode") == ("a", "b")
    assert choices(Opts, "pick") == ("x", "y", None)
    assert choices(Opts, "level") is None
    # BuildOptions: every how-to-run option (the "running" --help section) is left out of
    # the fingerprint, every other one is in it.
    running = {f.name for f in dataclasses.fields(BuildOptions)
               if f.metadata.get("option") is None or f.metadata["option"].group == "running"}
    assert set(BuildOptions().output_dict()) == (
        {f.name for f in dataclasses.fields(BuildOptions)} - running - {"vad", "vad_split_pause"})
    with pytest.raises(BuildConfigError, match="--executor 'slurm': choose one of local, ray"):
        BuildOptions(executor="slurm").validate()  # type: ignore[arg-type]
