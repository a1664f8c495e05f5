"""Loader options declared once: one typed parser for every YAML ``loader:`` block, settings
derived from LoaderConfig, keyword-only construction, and the dtype the workers ship."""

import dataclasses

import pytest
import torch
import yaml
from shardgen import make_dataset

from wds_pipeline import LoaderConfig, StreamingLoader
from wds_pipeline.errors import ConfigError
from wds_pipeline.loader import load_yaml_config
from wds_pipeline.loader.config import ReadConfig
from wds_pipeline.loader.plan import PlanOptions
from wds_pipeline.train.config import load_config

LOADER_BLOCK = {
    "batch_size": 16, "crop_seconds": 2, "shuffle_buffer": 64, "cache_limit": "20GB",
    "fields": ["waveform", "label", "text"], "weights": [1, 0.5], "waveform_dtype": "int16",
    "on_decode_error": "raise", "cache_dir": False, "num_workers": 1, "prefetch_factor": None,
    "storage_options": {"token": "anon"}, "shuffle_buffer_bytes": "1MiB",
}


def write(tmp_path, loader: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": ["x/index.json"]}, "loader": loader}))
    return str(path)


def both_ways(path: str) -> tuple[LoaderConfig, LoaderConfig]:
    return load_yaml_config(path)[1], load_config(path).loader


def test_a_loader_block_gives_the_same_config_through_both_entry_points(tmp_path):
    own, trainer = both_ways(write(tmp_path, LOADER_BLOCK))
    assert own == trainer
    assert own.cache_limit == 20 * 10**9 and own.shuffle_buffer_bytes == 1 << 20
    assert own.crop_seconds == 2.0 and isinstance(own.crop_seconds, float)
    assert own.fields == ("waveform", "label", "text") and own.weights == (1.0, 0.5)
    assert own.cache_dir is False and own.prefetch_factor is None


def test_an_empty_block_gives_the_loader_defaults_both_ways(tmp_path):
    own, trainer = both_ways(write(tmp_path, {}))
    assert own == trainer == LoaderConfig()


@pytest.mark.parametrize("key,value,message", [
    ("batch_sise", 3, "loader: unknown key 'batch_sise'; valid keys: "),
    ("num_workers", "two", "loader.num_workers: expected an integer, got 'two' (str)"),
    ("waveform_dtype", "float64", "loader.waveform_dtype: expected one of ['float32', 'int16']"),
    ("cache_limit", "lots", "loader.cache_limit: expected a size such as 60GB, got 'lots' (str)"),
    ("fields", ["waveform", "pitch"], "loader.fields[1]: expected one of"),
    ("batch_size", 0, "loader.batch_size must be >= 1, got 0"),
    ("crop_seconds", -1, "loader: crop_seconds must be > 0 seconds"),
])
def test_a_bad_loader_block_gives_the_same_config_error_both_ways(tmp_path, key, value, message):
    path = write(tmp_path, {key: value})
    errors = []
    for parse in (load_yaml_config, load_config):
        with pytest.raises(ConfigError) as e:
            parse(path)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"{path}: {message}"), errors[0]


def test_loader_config_is_keyword_only():
    with pytest.raises(TypeError):
        LoaderConfig(32)  # type: ignore[misc]
    assert LoaderConfig(batch_size=8).batch_size == 8


def test_every_option_is_one_field_read_by_every_entry_point():
    names = [f.name for f in dataclasses.fields(LoaderConfig)]
    assert len(names) == len(set(names))
    groups = {f.name for f in dataclasses.fields(ReadConfig)} | {f.name for f in dataclasses.fields(PlanOptions)}
    assert groups <= set(names)
    default = LoaderConfig()
    # StreamingLoader's keywords: every field, by name (LoaderConfig.replace), and nothing else.
    assert default.replace(**{n: getattr(default, n) for n in names}) == default
    with pytest.raises(ConfigError, match=r"unknown loader options \['batchsize'\]"):
        default.replace(batchsize=4)
    # YAML: every field, by name.
    assert LoaderConfig.from_dict({n: getattr(default, n) for n in names}) == default


def test_read_and_plan_settings_are_derived_from_the_loader_config(tmp_path):
    idx = make_dataset(str(tmp_path), [6])
    cfg = LoaderConfig(batch_size=3, seed=7, shuffle_buffer=11, crop_seconds=0.1, waveform_dtype="int16",
                       on_corrupt_shard="skip", cache_limit=10**9, num_workers=0)
    loader = StreamingLoader(idx, cfg)
    read = cfg.read_config()
    assert read == loader.dataset.read_cfg
    assert {f.name: getattr(read, f.name) for f in dataclasses.fields(ReadConfig)} == \
        {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ReadConfig)}
    plan = loader.plan_config
    assert {f.name: getattr(plan, f.name) for f in dataclasses.fields(PlanOptions)} == \
        {f.name: getattr(cfg, f.name) for f in dataclasses.fields(PlanOptions)}
    assert plan.crop_frames == round(0.1 * loader.sample_rate)


def test_keywords_take_text_sizes_and_lists_as_yaml_does(tmp_path):
    idx = make_dataset(str(tmp_path), [4])
    loader = StreamingLoader(idx, batch_size=2, num_workers=0, cache_limit="2GB", weights=[1.0])
    assert loader.config.cache_limit == 2 * 10**9 and loader.config.weights == (1.0,)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
@pytest.mark.parametrize("fields", [("waveform", "label"), ("waveform", "fbank")])
def test_batches_carry_the_waveform_dtype_from_real_workers(tmp_path, dtype, fields):
    idx = make_dataset(str(tmp_path), [6, 6])
    opts = dict(batch_size=4, num_workers=2, last_batch="pad", seed=2, fields=fields)
    ints = list(StreamingLoader(idx, waveform_dtype="int16", **opts))
    got = list(StreamingLoader(idx, waveform_dtype=dtype, **opts))
    assert [b.keys for b in got] == [b.keys for b in ints]
    for b, i in zip(got, ints):
        assert b.waveform.dtype == getattr(torch, dtype)
        scale = 32768 if dtype == "float32" else 1
        assert torch.equal(b.waveform.to(torch.float32) * scale, i.waveform.to(torch.float32))
        if "fbank" in fields:  # computed from the same int16-scale samples either way
            assert torch.equal(b.fbank, i.fbank)
