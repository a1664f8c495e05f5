"""A large split's per-sample lists in ``index-samples.npy`` beside ``index.json``
(index_sidecar.py): the same numbers as the inline index, byte and array for array; a
damaged, missing or mismatched sidecar named; old indexes read as before; an older reader
refuses the new index with its version error; the builder writes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from wds_pipeline import StreamingLoader, index_sidecar
from wds_pipeline.index import DatasetIndex, IndexFormatError, load_index
from wds_pipeline.testing import write_synthetic_dataset

LISTS = ("sample_frames", "sample_offsets", "sample_crc32")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Three shards; index.json inline (as small splits are written), index-v3.json the same
    index with its lists in the sidecar (what a split over the threshold gets)."""
    root = tmp_path_factory.mktemp("sidecar")
    write_synthetic_dataset(str(root), [5, 7, 4], frames=lambda s, i: 800 + 37 * s + 13 * i)
    index = load_index(str(root / "index.json"))
    for url, data in index.files(str(root / "index-v3.json"), sidecar_min_samples=0):
        Path(url).write_bytes(data)
    return root


def copy_split(split: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in os.listdir(split):
        (dest / name).write_bytes((split / name).read_bytes())
    return dest


def test_small_index_is_written_inline_byte_for_byte(split):
    index = load_index(str(split / "index.json"))
    assert index.files(str(split / "index.json")) == [
        (str(split / "index.json"), (split / "index.json").read_bytes())]
    assert index.to_json().encode() == (split / "index.json").read_bytes()


def test_sidecar_index_holds_the_same_numbers(split):
    raw = json.loads((split / "index-v3.json").read_text())
    assert raw["wds_pipeline"]["format_version"] == 3
    record = raw["wds_pipeline"]["sample_lists"]
    data = (split / "index-samples.npy").read_bytes()
    assert record == {"file": "index-samples.npy", "bytes": len(data),
                      "sha256": index_sidecar.digest(data)}
    # wids/webdataset/datasets read the shard list as before; no per-sample list inline.
    assert [(s["url"], s["nsamples"]) for s in raw["shardlist"]] == [
        (f"shard-{i:06d}.tar", n) for i, n in enumerate([5, 7, 4])]
    assert not any(k in s for s in raw["shardlist"] for k in LISTS)
    assert np.load(split / "index-samples.npy", allow_pickle=False).shape == (3, 16)
    for arrays in (False, True):
        old = load_index(str(split / "index.json"), arrays=arrays)
        new = load_index(str(split / "index-v3.json"), arrays=arrays)
        assert new.to_json() == old.to_json()  # every key and number, format_version 2 again
        for a, b in zip(old.shards, new.shards):
            for key in LISTS:
                x, y = getattr(a, key), getattr(b, key)
                assert type(x) is type(y)
                if arrays:
                    assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y)
                else:
                    assert x == y and all(type(v) is int for v in y)


def test_loader_reads_the_same_batches(split):
    def epoch(name: str) -> list[tuple[list[str], np.ndarray]]:
        loader = StreamingLoader(str(split / name), batch_size=4, num_workers=0, last_batch="pad",
                                 waveform_dtype="int16")
        return [(b.keys, b.waveform.numpy().copy()) for b in loader]

    old, new = epoch("index.json"), epoch("index-v3.json")
    assert [k for k, _ in old] == [k for k, _ in new]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(old, new))


def test_damaged_sidecar_is_named(split, tmp_path):
    d = copy_split(split, tmp_path / "d")
    data = bytearray((d / "index-samples.npy").read_bytes())
    data[-1] ^= 0xFF
    (d / "index-samples.npy").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"index-samples\.npy \(the per-sample lists of .*index-v3\.json\): "
                       r".*sha256.*damaged or from another build than index\.json; the index is damaged"):
        load_index(str(d / "index-v3.json"), arrays=True)


def test_sidecar_of_another_build_is_named(split, tmp_path):
    d = copy_split(split, tmp_path / "d")
    other = write_synthetic_dataset(str(tmp_path / "other"), [5, 7, 4], frames=lambda s, i: 900 + i)
    for url, data in load_index(other).files(str(tmp_path / "other" / "index-v3.json"), sidecar_min_samples=0):
        if url.endswith(".npy"):
            (d / "index-samples.npy").write_bytes(data)
    with pytest.raises(IndexFormatError, match="from another build"):
        load_index(str(d / "index-v3.json"))


def test_sidecar_with_the_wrong_counts_is_named(split, tmp_path):
    """The digest matches (index.json edited to it), the shape does not."""
    d = copy_split(split, tmp_path / "d")
    data = index_sidecar.pack([3], [([1, 2, 3], [0, 512, 1024], [7, 8, 9])])
    assert data is not None
    (d / "index-samples.npy").write_bytes(data)
    raw = json.loads((d / "index-v3.json").read_text())
    raw["wds_pipeline"]["sample_lists"] = index_sidecar.describe(data)
    (d / "index-v3.json").write_text(json.dumps(raw))
    with pytest.raises(IndexFormatError, match=r"shape \(3, 3\).*expected \(2 or 3, 16\)"):
        load_index(str(d / "index-v3.json"))


def test_missing_sidecar_is_named(split, tmp_path):
    d = copy_split(split, tmp_path / "d")
    (d / "index-samples.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"per-sample lists are in .*index-samples\.npy, which is "
                       r"missing: copy it along with index\.json"):
        load_index(str(d / "index-v3.json"))


def test_version_3_without_its_record_is_refused(split, tmp_path):
    raw = json.loads((split / "index-v3.json").read_text())
    del raw["wds_pipeline"]["sample_lists"]
    with pytest.raises(IndexFormatError, match="sample_lists' is missing, expected a sidecar record"):
        DatasetIndex.from_json(json.dumps(raw))


def test_older_reader_refuses_with_its_version_error(split, monkeypatch):
    """What a wds_pipeline that reads formats 1 and 2 says about the new index."""
    import wds_pipeline.index as index_module

    monkeypatch.setattr(index_module, "READABLE_FORMAT_VERSIONS", (1, 2))
    with pytest.raises(IndexFormatError, match="shard format version 3 is not supported by this "
                       r"wds_pipeline \(reads 1, 2\); upgrade wds-pipeline"):
        load_index(str(split / "index-v3.json"))
    assert load_index(str(split / "index.json")).num_samples == 16  # an inline index still reads


def test_shard_list_alone_without_the_sidecar(split):
    """The build journal reads an old index for its fingerprint and shard names only."""
    index = DatasetIndex.from_json((split / "index-v3.json").read_bytes())
    assert [s.nsamples for s in index.shards] == [5, 7, 4]
    assert all(len(s.sample_frames) == 0 for s in index.shards)


def test_pack_keeps_lists_inline_when_mixed():
    assert index_sidecar.pack([2, 1], [([1, 2], [0, 512], [5, 6]), ([3], [0], [])]) is None
    assert index_sidecar.pack([2], [([1, 2], [0], [])]) is None  # a count that differs
    two_rows = index_sidecar.pack([2], [([1, 2], [0, 512], [])])
    assert two_rows is not None
    import io

    assert np.load(io.BytesIO(two_rows), allow_pickle=False).shape == (2, 2)


def test_builder_writes_the_sidecar(tmp_path, monkeypatch):
    from wds_pipeline.builder import BuildOptions, build_dataset
    from wds_pipeline.synth import synth_librispeech

    monkeypatch.setattr(index_sidecar, "SIDECAR_MIN_SAMPLES", 1)
    synth_librispeech(str(tmp_path / "src"), speakers=2, chapters_per_speaker=1, utterances_per_chapter=3,
                      min_seconds=1.0, max_seconds=2.0, seed=3)
    build_dataset("librispeech", str(tmp_path / "src"), str(tmp_path / "out"),
                  options=BuildOptions(workers=1, progress=False, shard_size=4))
    split = next(p.parent for p in (tmp_path / "out").rglob("index.json"))
    assert (split / "index-samples.npy").exists()
    raw = json.loads((split / "index.json").read_text())
    assert raw["wds_pipeline"]["format_version"] == 3
    index = load_index(str(split), arrays=True)
    assert sum(len(s.sample_frames) for s in index.shards) == index.num_samples == 3
    loader = StreamingLoader(str(split), batch_size=2, num_workers=0, last_batch="pad")
    keys = [k for b in loader for k, pad in zip(b.keys, b.is_padding.tolist()) if not pad]
    assert len(keys) == len(set(keys)) == 3
