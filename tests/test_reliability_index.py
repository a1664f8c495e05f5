"""Hostile and damaged indexes (issue 19, points 14, 15, 21 and sample_rate): ``verify`` and
``inspect`` run as a user runs them (the ``wds-pipeline`` console script in a subprocess)
answer with one line naming the file and the key, exit 2, never a traceback; the loader
raises the same error naming the file; shard URLs that leave the dataset are refused by
verify and inspect with the loader's rule; labels outside the label map fail verify."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, cli_many
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.index import REBUILD, ExternalShardsError, IndexFormatError, load_index


def edit(index: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite ``index`` with ``change`` applied to its JSON (a returned value replaces it)."""
    d = json.loads(index.read_text())
    new = change(d)
    index.write_text(json.dumps(d if new is None else new))


def _set(*path: Any, value: Any) -> Callable[[Any], None]:
    def change(d: Any) -> None:
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value
    return change


def _drop(*path: Any) -> Callable[[Any], None]:
    def change(d: Any) -> None:
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]
    return change


W = "wds_pipeline"
# (change, where, what it is, what was expected): the error line names all four.
VARIANTS: dict[str, tuple[Callable[[Any], Any], str, str, str]] = {
    "top-level-list": (lambda d: [d], "the top level", "a list", "an object"),
    "shardlist-string": (_set("shardlist", value="shard-000000.tar"), "key 'shardlist'",
                         'a string ("shard-000000.tar")', "a list"),
    "shard-entry-string": (_set("shardlist", 0, value="shard-000000.tar"),
                           "key 'shardlist[0]'", 'a string ("shard-000000.tar")', "an object"),
    "url-null": (_set("shardlist", 1, "url", value=None), "key 'shardlist[1].url'", "null",
                 "a non-empty string"),
    "url-missing": (_drop("shardlist", 0, "url"), "key 'shardlist[0].url'", "missing",
                    "a non-empty string"),
    "nsamples-string": (_set("shardlist", 0, "nsamples", value="3"),
                        "key 'shardlist[0].nsamples'", 'a string ("3")', "a whole number >= 0"),
    "filesize-negative": (_set("shardlist", 0, "filesize", value=-1),
                          "key 'shardlist[0].filesize'", "a number (-1)", "a whole number >= 0"),
    "digest-number": (_set("shardlist", 0, "xxh3_128", value=5),
                      "key 'shardlist[0].xxh3_128'", "a number (5)", "a string"),
    "sample-frames-string": (_set("shardlist", 1, "sample_frames", value="x"),
                             "key 'shardlist[1].sample_frames'", 'a string ("x")', "a list"),
    "counts-string": (_set(W, "counts", value="5"), f"key '{W}.counts'", 'a string ("5")',
                      "an object"),
    "counts-value-null": (_set(W, "counts", "inputs", value=None), f"key '{W}.counts.inputs'",
                          "null", "a whole number >= 0"),
    "fields-string": (_set(W, "fields", value="audio.npy"), f"key '{W}.fields'",
                      'a string ("audio.npy")', "a list"),
    "label-map-list": (_set(W, "label_map", value=["spk0"]), f"key '{W}.label_map'", "a list",
                       "an object"),
    "label-id-string": (_set(W, "label_map", "spk0000", value="0"),
                        f"key '{W}.label_map['spk0000']'", 'a string ("0")',
                        "a whole number >= 0"),
    "rejected-string": (_set(W, "rejected", value="none"), f"key '{W}.rejected'",
                        'a string ("none")', "a list"),
    "extras-list": (_set(W, "extras", value=[1]), f"key '{W}.extras'", "a list", "an object"),
    "sample-rate-zero": (_set(W, "sample_rate", value=0), f"key '{W}.sample_rate'",
                         "a number (0)", "a whole number >= 1"),
    "sample-rate-negative": (_set(W, "sample_rate", value=-16000), f"key '{W}.sample_rate'",
                             "a number (-16000)", "a whole number >= 1"),
    "sample-rate-float": (_set(W, "sample_rate", value=16000.5), f"key '{W}.sample_rate'",
                          "a number (16000.5)", "a whole number >= 1"),
    "sample-rate-string": (_set(W, "sample_rate", value="16k"), f"key '{W}.sample_rate'",
                           'a string ("16k")', "a whole number >= 1"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    return Path(make_dataset(str(tmp_path_factory.mktemp("good")), [3, 2])).read_bytes()


def damaged_copy(folder: Path, good: bytes, change: Callable[[Any], Any]) -> Path:
    """A dataset in ``folder/ds`` whose index has ``change`` applied."""
    index = Path(make_dataset(str(folder / "ds"), [3, 2]))
    assert index.read_bytes() == good  # deterministic: the module's copy is this one
    edit(index, change)
    return index


# Through the CLI (a subprocess each, seconds of torch import for the train commands'
# parser): these in verify, the four in inspect too; the loader takes every variant.
VERIFY_VARIANTS = ["top-level-list", "shardlist-string", "shard-entry-string", "url-null",
                   "nsamples-string", "digest-number", "counts-string", "fields-string",
                   "label-map-list", "rejected-string", "sample-rate-zero",
                   "sample-rate-negative"]
INSPECT_VARIANTS = ["top-level-list", "shardlist-string", "url-null", "counts-string"]


def test_a_malformed_index_is_one_line_naming_file_and_key_in_verify_and_inspect(
        tmp_path, good):
    argvs, lines = [], []
    for variant in VERIFY_VARIANTS:
        change, where, found, expected = VARIANTS[variant]
        index = damaged_copy(tmp_path / variant, good, change)
        line = (f"wds-pipeline: error: {index}: {where} is {found}, expected {expected}; "
                f"{REBUILD}\n")
        argvs.append(["verify", index.parent, "--no-progress"])
        lines.append(line)
        if variant in INSPECT_VARIANTS:
            argvs.append(["inspect", index.parent])
            lines.append(line)
    for argv, line, run in zip(argvs, lines, cli_many(argvs)):
        assert (run.returncode, run.stderr, run.stdout) == (2, line, ""), argv


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_loader_raises_the_same_error_naming_the_file(tmp_path, good, variant):
    change, where, found, expected = VARIANTS[variant]
    index = damaged_copy(tmp_path, good, change)
    with pytest.raises(IndexFormatError) as e:
        StreamingLoader(str(index), batch_size=2, num_workers=0)
    assert str(e.value) == f"{index}: {where} is {found}, expected {expected}; {REBUILD}"


def test_an_index_that_is_not_json_is_one_line_exit_2(tmp_path, good):
    index = damaged_copy(tmp_path, good, lambda d: None)
    index.write_bytes(good[: len(good) // 2])  # an upload cut short
    run = cli("verify", tmp_path / "ds", "--no-progress")
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"wds-pipeline: error: {index}: index is not valid JSON (")
    assert run.stderr.count("\n") == 1


# ---------------------------------------------------------------------------
# Shard URLs that leave the dataset: the loader's rule, in verify and inspect too


@pytest.mark.parametrize("url", ["/etc/hostname", "file:///etc/hostname",
                                 "http://127.0.0.1:9/shard-000000.tar", "../x/shard-000000.tar"])
def test_the_loader_and_the_shared_rule_refuse_shard_urls_outside_the_dataset(
        tmp_path, good, url):
    index = damaged_copy(tmp_path, good, _set("shardlist", 0, "url", value=url))
    with pytest.raises(ExternalShardsError) as refused:
        load_index(str(index)).refuse_external_shards()
    assert str(refused.value).startswith(
        f"{index}: shard URL(s) {url!r} point outside the dataset folder")
    with pytest.raises(ValueError, match="outside the dataset folder") as loader:
        StreamingLoader(str(index), batch_size=2, num_workers=0)
    assert repr(url) in str(loader.value) and str(index) in str(loader.value)


def test_verify_and_inspect_refuse_shard_urls_outside_the_dataset_as_the_loader_does(
        tmp_path, good):
    # A good copy of the shard outside the dataset: read, verify would call the split OK.
    elsewhere = damaged_copy(tmp_path / "elsewhere", good, lambda d: None).parent
    copy = elsewhere / "shard-000000.tar"
    indexes = [damaged_copy(tmp_path / str(n), good, _set("shardlist", 0, "url", value=url))
               for n, url in enumerate([str(copy), f"file://{copy}",
                                        "http://127.0.0.1:9/shard-000000.tar"])]
    argvs = [argv for index in indexes
             for argv in (["verify", index.parent, "--no-progress"], ["inspect", index.parent])]
    runs = cli_many(argvs)
    for argv, run in zip(argvs, runs):
        assert (run.returncode, run.stdout) == (2, ""), (argv, run.stdout, run.stderr)
    for n, index in enumerate(indexes):
        with pytest.raises(ExternalShardsError) as refused:  # the loader's rule
            load_index(str(index)).refuse_external_shards()
        for run in runs[2 * n: 2 * n + 2]:
            assert run.stderr == f"wds-pipeline: error: {refused.value}\n"


def test_verify_reads_external_shards_only_when_allowed(tmp_path, good):
    index = damaged_copy(tmp_path, good, lambda d: None)
    moved = tmp_path / "elsewhere.tar"
    (tmp_path / "ds" / "shard-000000.tar").rename(moved)
    edit(index, _set("shardlist", 0, "url", value=str(moved)))
    run = cli("verify", tmp_path / "ds", "--no-progress", "--allow-external-shards")
    assert run.returncode == 0, run.stderr
    assert "verify OK: 1 split(s), 5 samples" in run.stdout


# ---------------------------------------------------------------------------
# Labels outside the label map


def test_verify_fails_on_labels_outside_the_label_map_naming_shard_key_and_label(tmp_path):
    bad = {(0, 1): 999, (1, 0): -7}
    make_dataset(str(tmp_path / "ds"), [3, 2], speakers=5,
                 label=lambda s, i: bad.get((s, i), (s + i) % 5))
    run = cli("verify", tmp_path / "ds", "--no-progress")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "synthetic: FAILED (2 problems)" in run.stdout
    assert ("  shard-000000.tar: sample 'synthetic-s0-u0001': label 999 is not a class of the "
            "index's label_map (5 classes, ids 0-4)") in run.stdout.splitlines()
    assert ("  shard-000001.tar: sample 'synthetic-s1-u0000': label -7 is not a class of the "
            "index's label_map (5 classes, ids 0-4)") in run.stdout.splitlines()
    assert "Traceback" not in run.stderr
