"""Class labels from a manifest: empty cells, integer order, one class per value.

The rule (docs/format.md, "Class labels"): a manifest with a ``label`` column takes
classes from that column only; an empty cell means "no label" (no ``cls`` member, -1
in ``Batch.labels``), never the speaker. Integer labels are numbered in numeric order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_builder import build, read_split, write_audio, write_manifest

from wds_pipeline import StreamingLoader
from wds_pipeline.index import load_index
from wds_pipeline.records import label_order


def _labelled_build(tmp_path: Path, rows: list[dict], name: str = "clips.csv"):
    for i, r in enumerate(rows):
        write_audio(tmp_path / r["path"], 0.6, seed=i)
    if name.endswith(".jsonl"):
        manifest = tmp_path / name
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        manifest = write_manifest(tmp_path, rows, name)
    res = build("manifest", manifest, tmp_path / "out")
    split = tmp_path / "out" / "train"
    return res, load_index(str(split)), read_split(split)


def test_empty_label_cell_means_no_label_not_the_speaker(tmp_path):
    rows = [{"path": "a.wav", "speaker": "spkA", "label": "cat"},
            {"path": "b.wav", "speaker": "spkB", "label": ""},
            {"path": "c.wav", "speaker": "spkC", "label": "dog"}]
    res, idx, samples = _labelled_build(tmp_path, rows)
    assert res.counts.written == 3 and res.counts.rejected == 0
    assert idx.label_map == {"cat": 0, "dog": 1}
    assert idx.fields == ["audio.npy", "cls", "json"]
    assert set(samples["b"]) == {"audio.npy", "json"}  # no cls member
    assert "label" not in samples["b"]["json"] and samples["b"]["json"]["speaker"] == "spkB"
    assert (samples["a"]["cls"], samples["c"]["cls"]) == (0, 1)
    batches = list(StreamingLoader(str(tmp_path / "out" / "train"), batch_size=3, num_workers=0,
                                   shuffle=False))
    (b,) = batches
    assert dict(zip(b.keys, b.labels.tolist())) == {"a": 0, "b": -1, "c": 1}


def test_jsonl_rows_without_a_label_have_none_when_others_do(tmp_path):
    rows = [{"path": "a.wav", "speaker": "s1", "label": "cat"},
            {"path": "b.wav", "speaker": "s2"},
            {"path": "c.wav", "speaker": "s3", "label": None}]
    _, idx, samples = _labelled_build(tmp_path, rows, "clips.jsonl")
    assert idx.label_map == {"cat": 0}
    assert [k for k, s in sorted(samples.items()) if "cls" in s] == ["a"]


def test_without_a_label_column_the_speaker_is_the_class(tmp_path):
    rows = [{"path": "a.wav", "speaker": "s2"}, {"path": "b.wav", "speaker": "s1"}]
    _, idx, samples = _labelled_build(tmp_path, rows)
    assert idx.label_map == {"s1": 0, "s2": 1}
    assert (samples["a"]["cls"], samples["b"]["cls"]) == (1, 0)


def test_integer_labels_are_numbered_in_numeric_order(tmp_path):
    rows = [{"path": f"f{v}.wav", "label": v} for v in ("10", "2", "1", "-3", "2.0")]
    _, idx, samples = _labelled_build(tmp_path, rows)
    assert idx.label_map == {"-3": 0, "1": 1, "2": 2, "10": 3}  # "2.0" is the class "2"
    assert {k: s["cls"] for k, s in samples.items()} == {"f10": 3, "f2": 2, "f1": 1, "f-3": 0,
                                                         "f2_0": 2}
    assert samples["f2_0"]["json"]["label"] == "2"


def test_json_numbers_are_one_class_per_value_and_booleans_are_rejected(tmp_path):
    rows = [{"path": "a.wav", "label": 1}, {"path": "b.wav", "label": 1.0},
            {"path": "c.wav", "label": "1"}, {"path": "d.wav", "label": 2.5},
            {"path": "e.wav", "label": True}]
    res, idx, samples = _labelled_build(tmp_path, rows, "clips.jsonl")
    assert idx.label_map == {"1": 0, "2.5": 1}
    assert {k: s["cls"] for k, s in samples.items()} == {"a": 0, "b": 0, "c": 0, "d": 1}
    (rj,) = idx.rejected
    assert res.counts.inputs == res.counts.written + res.counts.rejected == 5
    assert rj.reason.endswith("line 5: label true is a JSON boolean; write the class as a "
                              "string (\"true\") or a number")


def test_label_order_rule():
    assert label_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert label_order(["10", "2", "x"]) == ["10", "2", "x"]  # not all integers: text order
    assert label_order(["02", "1"]) == ["02", "1"]  # leading zeros are names, not numbers
    assert label_order([]) == []
    np.testing.assert_array_equal(label_order(["-1", "0", "-10"]), ["-10", "-1", "0"])
