"""StreamingLoader refuses what it cannot do well and says why: shard URLs that leave
the dataset folder, impossible options, epochs of 0 batches, crops longer than every clip,
and a build's output folder passed instead of one of its splits."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from shardgen import all_keys, make_dataset

from wds_pipeline import StreamingLoader


def _point_shard_at(index: Path, url: str) -> None:
    d = json.loads(index.read_text())
    d["shardlist"][0]["url"] = url
    index.write_text(json.dumps(d))


@pytest.mark.parametrize("url", ["../../x.tar", "../elsewhere/shard-000000.tar", "/etc/passwd",
                                 "gs://other-bucket/x.tar", "file:///tmp/x.tar", "a/../../x.tar"])
def test_shard_urls_outside_the_dataset_folder_are_refused(tmp_path, url):
    idx = Path(make_dataset(str(tmp_path / "ds"), [3, 3]))
    _point_shard_at(idx, url)
    with pytest.raises(ValueError) as e:
        StreamingLoader(str(idx), batch_size=2, num_workers=0)
    msg = str(e.value)
    assert str(idx) in msg and repr(url) in msg
    assert "outside the dataset folder" in msg and "allow_external_shards=True" in msg


def test_external_shards_are_read_when_allowed(tmp_path):
    idx = Path(make_dataset(str(tmp_path / "ds"), [3, 3]))
    want = all_keys(str(idx))
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "ds" / "shard-000000.tar", tmp_path / "elsewhere" / "shard-000000.tar")
    _point_shard_at(idx, "../elsewhere/shard-000000.tar")
    loader = StreamingLoader(str(idx), batch_size=2, num_workers=0, allow_external_shards=True,
                             last_batch="pad")
    keys = [k for b in loader for k, p in zip(b.keys, b.is_padding.tolist()) if not p]
    assert Counter(keys) == Counter(want)


def test_shard_urls_inside_the_folder_are_fine(tmp_path):
    idx = Path(make_dataset(str(tmp_path / "ds"), [3, 3]))
    (tmp_path / "ds" / "sub").mkdir()
    shutil.move(tmp_path / "ds" / "shard-000000.tar", tmp_path / "ds" / "sub" / "s0.tar")
    _point_shard_at(idx, "sub/./s0.tar")
    loader = StreamingLoader(str(idx), batch_size=2, num_workers=0, last_batch="pad")
    assert sum(len(b.keys) for b in loader) == 6


@pytest.mark.parametrize("crop", [0, 0.0, -1.5])
def test_crop_seconds_must_be_positive(tmp_path, crop):
    idx = make_dataset(str(tmp_path), [3])
    with pytest.raises(ValueError, match=rf"crop_seconds must be > 0 seconds \(or None for whole "
                                         rf"clips\), got {crop}"):
        StreamingLoader(idx, batch_size=2, num_workers=0, crop_seconds=crop)


@pytest.mark.parametrize("option,value,choices", [
    ("waveform_dtype", "float64", "('float32', 'int16')"),
    ("on_corrupt_shard", "ignore", "('raise', 'skip')"),
    ("last_batch", "keep", "('drop', 'pad')"),
])
def test_options_outside_their_choices_are_refused(tmp_path, option, value, choices):
    idx = make_dataset(str(tmp_path), [3])
    with pytest.raises(ValueError, match=rf"^{option}={value!r} is not one of "
                                         rf"{choices.replace('(', '[(]').replace(')', '[)]')}$"):
        StreamingLoader(idx, batch_size=2, num_workers=0, **{option: value})


def test_a_batch_larger_than_the_dataset_warns_of_zero_batches(tmp_path):
    idx = make_dataset(str(tmp_path), [3, 2])
    with pytest.warns(UserWarning, match=r"0 batches per epoch: 5 samples .*batch_size=8.*"
                                         r"last_batch='pad'"):
        loader = StreamingLoader(idx, batch_size=8, num_workers=0)
    assert len(loader) == 0 and list(loader) == []


def test_a_crop_longer_than_every_clip_warns(tmp_path):
    idx = make_dataset(str(tmp_path), [4], frames=lambda s, i: 1600 + 160 * i)  # 0.10-0.13 s
    with pytest.warns(UserWarning, match=r"crop_seconds=2.0 is longer than every clip "
                                         r"\(the longest is 0.13 s\)"):
        StreamingLoader(idx, batch_size=2, num_workers=0, crop_seconds=2.0)


def test_no_warning_for_sensible_settings(tmp_path, recwarn):
    idx = make_dataset(str(tmp_path), [4], frames=lambda s, i: 1600 + 160 * i)
    StreamingLoader(idx, batch_size=2, num_workers=0, crop_seconds=0.1)
    assert [str(w.message) for w in recwarn.list if w.category is UserWarning] == []


def test_a_build_output_folder_names_its_split_folders(tmp_path):
    make_dataset(str(tmp_path / "out" / "train-clean-100"), [2])
    make_dataset(str(tmp_path / "out" / "dev-clean"), [2])
    (tmp_path / "out" / "_journal").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        StreamingLoader(str(tmp_path / "out"), batch_size=2, num_workers=0)
    out = tmp_path / "out"
    assert str(e.value) == (
        f"{out}/index.json: no index found, but {out} holds the split folders dev-clean, "
        f"train-clean-100 (each with an index.json): pass one of them, e.g. "
        f"StreamingLoader('{out}/dev-clean'), or a list of them")


def test_a_folder_without_any_index_still_says_build_first(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no index found; build the dataset first"):
        StreamingLoader(str(tmp_path / "empty"), batch_size=2, num_workers=0)



def _labelled(tmp_path: Path, odd: dict[tuple[int, int], int]) -> tuple[str, set[str]]:
    """A 5-class dataset (label map ids 0..4), 2 shards of 4, with the ``cls`` of the
    (shard, sample)s in ``odd`` replaced: (index, those samples' keys)."""
    idx = make_dataset(str(tmp_path), [4, 4], speakers=5, label=lambda s, i: odd.get((s, i), (s + i) % 5))
    return idx, {f"synthetic-s{s}-u{i:04d}" for s, i in odd}


# 999: digits the mapped shards' fast path parses itself; -7: read by the decoder.
@pytest.mark.parametrize("label", [999, 5, -7])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_label_outside_the_label_map_is_refused_naming_shard_and_key(tmp_path, workers, label):
    from wds_pipeline.loader.decode import SampleDecodeError

    idx, _ = _labelled(tmp_path, {(1, 2): label})
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, on_decode_error="raise")
    with pytest.raises(SampleDecodeError,
                       match=rf"shard-000001\.tar: sample 'synthetic-s1-u0002' does not decode: cls {label} "
                             r"is not a class of this dataset \(its label map's ids 0\.\.4\)"):
        list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_label_outside_the_label_map_is_skipped_and_counted(tmp_path, workers):
    idx, bad = _labelled(tmp_path, {(1, 2): 999, (0, 1): -7})
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, last_batch="pad")
    batches = list(loader)
    real = Counter(k for b in batches for k, p in zip(b.keys, b.is_padding.tolist()) if not p)
    assert real == Counter(all_keys(idx) - bad)
    assert sorted(loader.skipped) == sorted(bad) and loader.skipped_count == 2
    assert all(((b.labels >= 0) & (b.labels < loader.num_classes)).all() for b in batches)
