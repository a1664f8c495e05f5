"""Our shards read by other people's readers: plain webdataset, wids, HF datasets.

The snippets here are the ones quoted in docs/format.md.
"""

from __future__ import annotations

import glob
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from test_builder import build, read_split, write_audio, write_manifest

IDS = ["spk_1-utt-01", "spk_1-utt-02", "spk.2/utt 3", "spk-2_utt_4", "x", "y-z", "w_v"]
KEYS = {"spk_1-utt-01", "spk_1-utt-02", "spk_2_utt_3", "spk-2_utt_4", "x", "y-z", "w_v"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("compat")
    rows = []
    for i, rid in enumerate(IDS):
        write_audio(d / "c" / f"f{i}.wav", 0.6 + 0.1 * i, seed=i)
        rows.append({"path": f"f{i}.wav", "id": rid, "speaker": f"s{i % 2}"})
    manifest = write_manifest(d / "c", rows)
    res = build("manifest", manifest, d / "out", shard_size=3)
    assert res.counts.samples == len(IDS)
    return d / "out" / "train"


@pytest.fixture(scope="module")
def ours(dataset) -> dict[str, dict]:
    samples = read_split(dataset)
    assert set(samples) == KEYS  # underscores/hyphens kept, the dot and space replaced
    return samples


def test_plain_webdataset_reads_every_sample(dataset, ours):
    import webdataset as wds

    urls = sorted(glob.glob(f"{dataset}/*.tar"))
    ds = wds.WebDataset(urls, shardshuffle=False).decode()
    seen = {}
    for sample in ds:
        seen[sample["__key__"]] = sample
    assert set(seen) == KEYS
    for key, sample in seen.items():
        audio = sample["audio.npy"]
        assert audio.dtype == np.int16
        np.testing.assert_array_equal(audio, ours[key]["audio.npy"])
        assert sample["cls"] == ours[key]["cls"]
        assert sample["json"]["key"] == key


def test_wids_reads_the_index_as_a_shard_list(dataset, ours, tmp_path):
    import wids
    from wids.wids_decode import default_decoder

    ds = wids.ShardListDataset(f"{dataset}/index.json", cache_dir=str(tmp_path / "wids"),
                               transformations=[partial(default_decoder, format="numpy")])
    assert len(ds) == len(IDS)
    keys = set()
    for i in range(len(ds)):
        sample = ds[i]
        key = sample["__key__"]
        keys.add(key)
        np.testing.assert_array_equal(sample[".audio.npy"], ours[key]["audio.npy"])
        assert sample[".json"]["id"] == ours[key]["json"]["id"]
    assert keys == KEYS


def test_hf_datasets_streams_the_shards(dataset, ours):
    datasets = pytest.importorskip("datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = datasets.load_dataset("webdataset", data_files={"train": f"{dataset}/*.tar"},
                                   split="train", streaming=True)
        rows = list(ds)
    assert len(rows) == len(IDS)
    assert {r["__key__"] for r in rows} == KEYS
    for r in rows:
        key = r["__key__"]
        audio = np.asarray(r["audio.npy"], dtype=np.int16)
        np.testing.assert_array_equal(audio, ours[key]["audio.npy"])
        assert r["cls"] == ours[key]["cls"]
        assert r["json"]["num_samples"] == len(audio)
