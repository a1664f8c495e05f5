"""Our shards read by other people's readers: plain webdataset, wids, HF datasets.

The snippets here are the ones quoted in docs/format.md.
"""

from __future__ import annotations

import glob
import inspect
import io
import json
import pickle
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_builder import build, read_split, write_audio, write_manifest

REPO = Path(__file__).resolve().parent.parent


# The decoder docs/format.md shows (a test below checks the text is the same). webdataset's
# `.decode()` and wids' default decoder unpickle `.pkl`/`.pyd` members (and webdataset
# loads `.pth` with weights_only=False): a hostile shard would run code.
def decode_sample(sample):
    """Decode our fields only: other members stay as they are; nothing is unpickled."""
    out = dict(sample)
    for name, value in sample.items():
        field = name.lstrip(".")  # wids names fields ".audio.npy"
        if field not in ("audio.npy", "json", "cls"):
            continue
        data = value.read() if hasattr(value, "read") else value  # wids: a stream
        if field == "audio.npy":
            out[name] = np.load(io.BytesIO(data), allow_pickle=False)
        elif field == "json":
            out[name] = json.loads(data)
        else:
            out[name] = int(data)
    return out

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
    ds = wds.WebDataset(urls, shardshuffle=False).map(decode_sample)
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

    ds = wids.ShardListDataset(f"{dataset}/index.json", cache_dir=str(tmp_path / "wids"),
                               transformations=[decode_sample])
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


class _Touch:
    """Unpickling this creates a file: proof that a reader ran code from a shard."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _hostile_shard(dataset: Path, tmp_path: Path) -> Path:
    """Our first shard with a `.pkl` and a `.pth` member added to its first sample."""
    first = sorted(dataset.glob("*.tar"))[0]
    out = tmp_path / "hostile-000000.tar"
    payload = pickle.dumps(_Touch(str(tmp_path / "pwned")))
    with tarfile.open(first) as src, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        members = src.getmembers()
        key = members[0].name.split(".", 1)[0]
        last = max(i for i, m in enumerate(members) if m.name.startswith(key + "."))
        for i, m in enumerate(members):
            dst.addfile(m, src.extractfile(m))
            if i == last:  # a sample's members are consecutive: add to the first sample
                for ext in ("pkl", "pth"):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    dst.addfile(info, io.BytesIO(payload))
    return out


def test_the_documented_decoders_run_no_code_from_a_hostile_shard(dataset, ours, tmp_path):
    import webdataset as wds
    import wids

    shard = _hostile_shard(dataset, tmp_path)
    samples = list(wds.WebDataset([str(shard)], shardshuffle=False).map(decode_sample))
    first = samples[0]
    assert isinstance(first["pkl"], bytes) and isinstance(first["pth"], bytes)  # left alone
    np.testing.assert_array_equal(first["audio.npy"], ours[first["__key__"]]["audio.npy"])
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": "hostile",
             "shardlist": [{"url": shard.name, "nsamples": len(samples)}]}
    (tmp_path / "hostile.json").write_text(json.dumps(index))
    ds = wids.ShardListDataset(str(tmp_path / "hostile.json"), cache_dir=str(tmp_path / "c"),
                               transformations=[decode_sample])
    assert ds[0][".audio.npy"].dtype == np.int16
    assert not (tmp_path / "pwned").exists()


def test_the_docs_show_the_decoder_these_tests_run():
    docs = (REPO / "docs" / "format.md").read_text()
    assert inspect.getsource(decode_sample) in docs
    for doc in (docs, (REPO / "README.md").read_text()):
        code = "".join(re.findall(r"```(?:python|bash)\n(.*?)```", doc, re.S))
        assert ".decode(" not in code and "default_decoder" not in code
