"""The hf source on a local dataset saved as parquet files (an Audio column as a {bytes, path}
struct, a ClassLabel, a text column, the ``huggingface`` features metadata in the schema),
loaded through the real streaming path: ``load_dataset("parquet", data_files=...,
streaming=True)``. The parquet is written with pyarrow: encoding an Audio column through
``datasets`` needs TorchCodec, which this project does not need and does not install."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from peak_rss import build_peak_rss
from shard_tasks import Failing
from test_builder import build, read_split, tree_bytes

from wds_pipeline import audio
from wds_pipeline import format as fmt
from wds_pipeline.builder import BuildConfigError, BuildError, BuildOptions, build_dataset
from wds_pipeline.builder.executor import InProcessExecutor
from wds_pipeline.index import load_index
from wds_pipeline.synth.voices import synth_voice

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAMES = ["yes", "no", "up", "down", "left"]  # not in sorted order; "left" is never used
SR = 16000


def _encode(x: np.ndarray, sr: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _features():
    return datasets.Features({"audio": datasets.Audio(), "label": datasets.ClassLabel(names=NAMES),
                              "text": datasets.Value("string"), "utt": datasets.Value("string")})


def _write(folder: Path, files: Iterable[dict[str, list]], row_group_size: int | None = None
           ) -> list[str]:
    """One parquet file (one dataset shard) per dict of columns."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = _features().arrow_schema  # carries the `huggingface` features metadata
    paths = []
    for i, columns in enumerate(files):
        path = folder / f"part-{i:03d}.parquet"
        pq.write_table(pa.table(columns, schema=schema), path, row_group_size=row_group_size)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[list[str], dict[tuple[int, int], dict]]:
    """3 parquet files; rows hold 8 kHz WAV (a chirp in noise) and 44.1 kHz FLAC (synthetic
    voices), plus a
    null audio, a corrupt payload, a label out of range and a row with no label (-1)."""
    rng = np.random.default_rng(7)
    rows: dict[tuple[int, int], dict] = {}
    files = []
    for s in range(3):
        cols: dict[str, list] = {"audio": [], "label": [], "text": [], "utt": []}
        for r in range(4):
            sr, fmt = ((8000, "WAV"), (44100, "FLAC"))[(s + r) % 2]
            n = round((0.6 + 0.1 * r) * sr)
            if sr == 8000:  # synth_voice gives NaN at 8 kHz for some voices: a numpy signal
                t = np.arange(n) / sr
                x = (0.3 * np.sin(2 * np.pi * (150 + 40 * r) * t * (1 + t))
                     + 0.05 * rng.standard_normal(n)).astype(np.float32)
            else:
                x = 0.5 * synth_voice(s * 10 + r, n / sr, sr, rng)
            row = {"audio": {"bytes": _encode(x, sr, fmt), "path": f"clip{s}{r}.wav"},
                   "label": (s + r) % 4, "text": f"words {s} {r}", "utt": f"u{s}{r}"}
            rows[(s, r)] = row
        if s == 1:
            rows[(1, 1)]["audio"] = None  # no audio
            rows[(1, 2)]["audio"] = {"bytes": b"RIFF not really a wave file", "path": "x.wav"}
            rows[(1, 3)]["label"] = 9  # not a class
        if s == 2:
            rows[(2, 0)]["label"] = -1  # ClassLabel's "no label"
        for r in range(4):
            for k in cols:
                cols[k].append(rows[(s, r)][k])
        files.append(cols)
    return _write(tmp_path_factory.mktemp("hf") / "data", files), rows


OPTS = {"data_files": None, "label_column": "label", "text_column": "text", "id_column": "utt"}


def _build(paths: list[str], out: Path, split: str = "train", **options):
    return build("hf", "parquet", out,
                 source_options={**OPTS, "data_files": tuple(paths), "split": split}, **options)


def test_hf_rows_become_samples_with_classlabel_numbering_text_and_equal_audio(small, tmp_path):
    paths, rows = small
    result = _build(paths, tmp_path / "out", shard_size=3)
    got = read_split(tmp_path / "out" / "train")
    rejected = {(1, 1), (1, 2), (1, 3)}
    assert set(got) == {f"train-{s:05d}-{r:08d}" for (s, r) in rows if (s, r) not in rejected}
    idx = load_index(str(tmp_path / "out" / "train"))
    assert idx.label_map == {name: i for i, name in enumerate(NAMES)}  # numbering kept
    cfg = audio.PreprocessConfig(sample_rate=SR)
    for (s, r), row in rows.items():
        key = f"train-{s:05d}-{r:08d}"
        if key not in got:
            continue
        sample = got[key]
        meta = sample["json"]
        assert (meta["text"], meta["hf_id"], meta["hf_shard"], meta["hf_row"]) == \
               (row["text"], row["utt"], s, r)
        if row["label"] == -1:
            assert "cls" not in sample and "label" not in meta
        else:
            assert sample["cls"] == row["label"] and meta["label"] == NAMES[row["label"]]
        expected = audio.load_and_preprocess(row["audio"]["bytes"], cfg)
        np.testing.assert_array_equal(sample["audio.npy"], expected)
        # And the resampler's output is the source signal: within tolerance of the
        # source decoded and resampled in float (not only equal to our own path).
        x, sr = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        ref = audio.resample(x, sr, SR) * 32768
        n = min(len(ref), len(expected))
        assert np.max(np.abs(ref[:n] - expected[:n])) <= 2.0
    reasons = {rj.input: rj.reason for rj in idx.rejected}
    prefix = "hf-shard-00001-of-00003#train-00001-"
    assert set(reasons) == {prefix + "00000001", prefix + "00000002", prefix + "00000003"}
    assert reasons[prefix + "00000001"] == "cannot decode: no audio (the 'audio' value is null)"
    assert "cannot decode" in reasons[prefix + "00000002"]
    assert "label 9 is not a class of the ClassLabel column 'label'" in reasons[prefix + "00000003"]
    counts = result.splits["train"].counts
    assert (counts.inputs, counts.written, counts.rejected) == (12, 9, 3)


def test_two_workers_identical_shards_and_interrupted_or_damaged_builds_resume(small, tmp_path):
    paths, _ = small
    one, two = tmp_path / "one", tmp_path / "two"
    _build(paths, two, shard_size=2, workers=2)
    shards = {k: v for k, v in tree_bytes(two).items() if k.endswith(".tar")}
    # 11 rows after the scan's reject: 6 planned shards, one of which (the null audio and
    # the corrupt payload) holds no sample and has no tar; it is journaled all the same.
    assert len(shards) == 5
    # One worker, stopped by a failure in the 4th shard, then rerun: the 3 shards built
    # before it are reused, and the result is what 2 workers built in one go.
    with pytest.raises(BuildError, match="injected failure in shard-000003.tar"):
        build_dataset("hf", "parquet", str(one), options=BuildOptions(shard_size=2,
                      progress=False), source_options={**OPTS, "data_files": tuple(paths)},
                      log=lambda _: None, executor=InProcessExecutor(Failing({"shard-000003.tar"})))
    again = _build(paths, one, shard_size=2, workers=1).splits["train"]
    # The planned shard with no sample writes no file: it is counted as empty, not built
    # (issue 19: "32 shards (33 built)" counted such shards as built).
    assert (again.shards_built, again.shards_reused, again.shards_empty) == (2, 3, 1)
    assert {k: v for k, v in tree_bytes(one).items() if k.endswith(".tar")} == shards
    assert (one / "train" / "index.json").read_bytes() == (two / "train" / "index.json").read_bytes()
    # Lose the index and a shard that starts in the middle of a dataset shard: the rerun
    # rebuilds it from its dataset rows (skipping to the first) and reuses the others.
    (one / "train" / "index.json").unlink()
    lost = next(name for name, data in sorted(shards.items())
                if _first_key(data).split("-")[2] != "00000000")
    (one / lost).unlink()
    again = _build(paths, one, shard_size=2, workers=1).splits["train"]
    assert (again.shards_built, again.shards_reused, again.shards_empty) == (1, 4, 1)
    assert {k: v for k, v in tree_bytes(one).items() if k.endswith(".tar")} == shards


def _first_key(tar: bytes) -> str:
    return next(fmt.iter_samples(io.BytesIO(tar), source="shard"))[0]


def test_seeded_shuffle_moves_whole_dataset_shards(small, tmp_path):
    paths, _ = small
    _build(paths, tmp_path / "out", shard_size=100, shuffle_seed=3)
    keys = list(read_split(tmp_path / "out" / "train"))
    shards = [k.split("-")[1] for k in keys]
    runs = [s for i, s in enumerate(shards) if i == 0 or shards[i - 1] != s]
    assert sorted(runs) == sorted(set(shards))  # each dataset shard one consecutive run
    for s in set(shards):
        rows = [k for k in keys if k.split("-")[1] == s]
        assert rows == sorted(rows)


def test_split_option_names_the_output_split(small, tmp_path):
    paths, _ = small
    _build(paths[:1], tmp_path / "out", split="dev")
    assert set(read_split(tmp_path / "out" / "dev")) == {f"dev-00000-{r:08d}" for r in range(4)}


def test_an_audio_value_with_only_a_path_is_read_from_that_path(tmp_path):
    x = (0.2 * np.sin(np.arange(12000) / 7)).astype(np.float32)
    wav = tmp_path / "clip.wav"
    sf.write(wav, x, 24000, subtype="PCM_16")
    paths = _write(tmp_path / "data", [{
        "audio": [{"bytes": None, "path": str(wav)},
                  {"bytes": None, "path": str(tmp_path / "gone.wav")},
                  {"bytes": b"", "path": None}],
        "label": [0, 1, 2], "text": ["a", "b", "c"], "utt": ["x", "y", "z"]}])
    result = _build(paths, tmp_path / "out")
    got = read_split(tmp_path / "out" / "train")
    assert set(got) == {"train-00000-00000000"}
    np.testing.assert_array_equal(got["train-00000-00000000"]["audio.npy"],
                                  audio.load_and_preprocess(str(wav),
                                                            audio.PreprocessConfig()))
    reasons = sorted(rj.reason for rj in load_index(str(tmp_path / "out" / "train")).rejected)
    assert reasons[0].startswith(f"cannot decode: OSError: audio path '{tmp_path / 'gone.wav'}' "
                                 "of this row cannot be read")
    assert reasons[1] == "cannot decode: no audio (the 'audio' value has no bytes and no path)"
    assert result.splits["train"].counts.rejected == 2


def test_a_classlabel_speaker_column_gives_speaker_names(tmp_path):
    feats = datasets.Features({"audio": datasets.Audio(),
                               "spk": datasets.ClassLabel(names=["zoe", "adam"])})
    x = (0.2 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "part.parquet"
    pq.write_table(pa.table({"audio": [{"bytes": _encode(x, SR, "WAV"), "path": None}] * 2,
                             "spk": [0, 1]}, schema=feats.arrow_schema), path)
    build("hf", "parquet", tmp_path / "out", source_options={
        "data_files": (str(path),), "speaker_column": "spk"}, shuffle_seed=None)
    got = read_split(tmp_path / "out" / "train")
    assert [(s["json"]["speaker"], s["cls"]) for s in got.values()] == [("zoe", 1), ("adam", 0)]
    assert load_index(str(tmp_path / "out" / "train")).label_map == {"adam": 0, "zoe": 1}


def test_data_files_from_the_command_line_and_from_yaml():
    from wds_pipeline.cli import build_option_table

    table = build_option_table("hf")
    parser = argparse.ArgumentParser()
    table.add_to(parser)
    _, src = table.build(parser.parse_args(["--data-files", "a/*.parquet,b.parquet"]))
    assert src.data_files == ("a/*.parquet", "b.parquet")
    _, src = table.build(parser.parse_args([]), {"data_files": ["a.parquet"], "split": "dev",
                                                 "label_column": "intent"})
    assert (src.data_files, src.split, src.label_column) == (("a.parquet",), "dev", "intent")


def test_bad_options_are_clear_errors(small, tmp_path):
    paths, _ = small
    with pytest.raises(BuildConfigError, match="--max-shard-bytes .* --shard-size"):
        _build(paths, tmp_path / "a", max_shard_bytes=10**6)
    with pytest.raises(BuildConfigError, match="--label-column 'lab' is not a column"):
        build("hf", "parquet", tmp_path / "b",
              source_options={"data_files": tuple(paths), "label_column": "lab"})
    with pytest.raises(BuildConfigError, match="--audio-column 'text' is .*not an Audio column"):
        build("hf", "parquet", tmp_path / "c",
              source_options={"data_files": tuple(paths), "audio_column": "text"})


def test_cli_help_lists_the_hf_options():
    exe = shutil.which("wds-pipeline", path=os.path.dirname(sys.executable))
    assert exe is not None
    text = subprocess.run([exe, "build", "hf", "--help"], check=True, capture_output=True,
                          text=True).stdout
    for flag in ("--split", "--subset", "--data-files", "--revision", "--audio-column",
                 "--label-column", "--text-column", "--speaker-column", "--id-column"):
        assert flag in text


def test_cli_builds_from_parquet_files(small, tmp_path):
    paths, _ = small
    exe = shutil.which("wds-pipeline", path=os.path.dirname(sys.executable))
    assert exe is not None
    run = subprocess.run([exe, "build", "hf", "parquet", str(tmp_path / "out"), "--data-files",
                          ",".join(paths), "--label-column", "label", "--no-progress"],
                         capture_output=True, text=True, env={**os.environ})
    assert run.returncode == 0, run.stderr
    idx = load_index(str(tmp_path / "out" / "train"))
    # Rejected: the null audio, the corrupt payload, the label out of range.
    assert (idx.counts.inputs, idx.counts.written, idx.counts.rejected) == (12, 9, 3)
    assert idx.label_map == {name: i for i, name in enumerate(NAMES)}


def test_a_dataset_larger_than_memory_streams_through(tmp_path):
    """~160 MB of rows in 8 parquet files (row groups of 16 rows, as the Hub writes small
    ones): peak memory of the build grows by a row group or so, not by the dataset."""
    rng = np.random.default_rng(0)
    rows_per_file = 64

    def files():  # one file's rows in memory at a time; noise, so parquet cannot shrink it
        for _ in range(8):
            clips = [_encode(rng.integers(-3000, 3000, 10 * SR, dtype=np.int16), SR, "WAV")
                     for _ in range(rows_per_file)]
            yield {"audio": [{"bytes": c, "path": None} for c in clips],
                   "label": [i % 4 for i in range(rows_per_file)],
                   "text": [None] * rows_per_file, "utt": [None] * rows_per_file}

    paths = _write(tmp_path / "big", files(), row_group_size=16)
    size = sum(os.path.getsize(p) for p in paths)
    # The build of one file first: what the first load_dataset costs (lazy imports, pools)
    # is paid on any dataset; the difference is what the dataset's size adds.
    peaks = {n: _peak_rss(paths[:n], tmp_path / f"out{n}") for n in (1, len(paths))}
    grown = peaks[len(paths)] - peaks[1]
    print(f"dataset {size / 2**20:.0f} MiB in {len(paths)} files; peak RSS growth of the "
          f"build: {peaks[1] / 2**20:.0f} MiB for 1 file, {peaks[len(paths)] / 2**20:.0f} MiB "
          f"for all, difference {grown / 2**20:.0f} MiB")
    assert size > 150 * 2**20
    assert grown < size / 4
    counts = load_index(str(tmp_path / f"out{len(paths)}" / "train")).counts
    assert (counts.inputs, counts.written) == (8 * rows_per_file, 8 * rows_per_file)


def _peak_rss(paths: list[str], out: Path) -> int:
    return build_peak_rss(
        # torch: load_dataset imports it (~200 MiB) when it is installed
        "import datasets, torch, wds_pipeline.audio, wds_pipeline.builder.worker\n"
        "import wds_pipeline.sources.hf\n"
        "from wds_pipeline.builder import BuildOptions, build_dataset",
        "build_dataset('hf', 'parquet', sys.argv[1], source_options={'data_files': "
        "tuple(sys.argv[2:]), 'label_column': 'label'}, options=BuildOptions(workers=1, "
        "progress=False, shard_size=200))",
        [str(out), *paths])
