"""Noise and RIR corpora as shards: the musan and rirs sources on synthetic corpora in the
real MUSAN / RIRS_NOISES layouts (`wds-pipeline synth musan|rirs`), built, read back from
the shards: exact counts per category, each sample's category, damaged files as rejects
with their reason, and the manifest's category column."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wds_pipeline import format as fmt
from wds_pipeline import synth
from wds_pipeline.builder import BuildOptions, build_dataset
from wds_pipeline.cli import main
from wds_pipeline.index import load_index
from wds_pipeline.sources import get_source, manifest, musan, rirs
from wds_pipeline.synth.noise import RT60_RANGE, SAMPLE_RATE

CLIPS = 2  # per MUSAN subset
MUSAN_COUNTS = {c: CLIPS * len(musan.SUBSETS[c]) for c in musan.CATEGORIES}
RIR_COUNTS = {"smallroom": 2, "mediumroom": 2, "largeroom": 2, "real": 2,
              "isotropic_noise": 1, "pointsource_noise": 2}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("noise")
    m = synth.synth_musan(str(root / "musan"), clips_per_subset=CLIPS, seconds=1.0, seed=4)
    r = synth.synth_rirs(str(root / "RIRS_NOISES"), rooms_per_size=1, rirs_per_room=2,
                         real_rirs=2, isotropic_noises=1, pointsource_noises=2, seed=4)
    return root, m, r


def build(name: str, src: Path, out: Path, **source_options):
    return build_dataset(name, str(src), str(out),
                         options=BuildOptions(workers=1, progress=False, shard_size=7),
                         source_options=source_options, log=lambda _: None)


def read_split(split_dir: Path) -> tuple[dict[str, dict], object]:
    """({key: {field: decoded}}, index) of one built split, read from its shards."""
    idx = load_index(str(split_dir))
    out: dict[str, dict] = {}
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for key, fields in fmt.iter_samples(f, source=idx.shard_url(i)):
                out[key] = {name: fmt.decode_field(name, data) for name, data in fields.items()}
    return out, idx


def test_synth_writes_the_real_layouts_deterministically(corpora, tmp_path: Path):
    root, m, r = corpora
    assert m["categories"] == MUSAN_COUNTS and m["files"] == sum(MUSAN_COUNTS.values())
    assert r["categories"] == RIR_COUNTS and r["files"] == sum(RIR_COUNTS.values())
    for category, subsets in musan.SUBSETS.items():
        for subset in subsets:
            folder = root / "musan" / category / subset
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                [f"{category}-{subset}-{k:04d}.wav" for k in range(CLIPS)]
                + ["ANNOTATIONS", "LICENSE"])
            lines = (folder / "ANNOTATIONS").read_text().splitlines()
            assert [ln.split()[0] for ln in lines] == [f"{category}-{subset}-{k:04d}"
                                                       for k in range(CLIPS)]
    rirs_root = root / "RIRS_NOISES"
    assert (rirs_root / "simulated_rirs/smallroom/rir_list").read_text().splitlines()[0] == (
        f"--rir-id small-Room001-00001 --room-id small-Room001 --rt-60 "
        f"{r['rirs']['simulated_rirs/smallroom/Room001/Room001-00001']['rt60']} "
        "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav")
    again = synth.synth_rirs(str(tmp_path / "again"), seed=4)
    assert again["rirs"] == r["rirs"]
    for rel in ("simulated_rirs/largeroom/Room001/Room001-00002.wav", "real_rirs_isotropic_noises/rir_list"):
        assert (tmp_path / "again" / rel).read_bytes() == (rirs_root / rel).read_bytes()


def test_synthetic_rirs_have_their_direct_path_and_rt60(corpora):
    root, _, r = corpora
    assert len(r["rirs"]) == 8
    for rid, truth in r["rirs"].items():
        h, sr = sf.read(root / "RIRS_NOISES" / f"{rid}.wav")
        assert sr == SAMPLE_RATE
        assert int(np.argmax(np.abs(h))) == truth["direct"]
        category = rid.split("/")[1] if rid.startswith("simulated") else "real"
        low, high = RT60_RANGE[category]
        assert low <= truth["rt60"] <= high
        # Schroeder backward integration: the energy decay falls 60 dB in about RT60.
        tail = h[truth["direct"] + 1:] ** 2
        edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum() + 1e-12)
        t5, t35 = (int(np.argmax(edc <= -level)) for level in (5, 35))
        measured = 2 * (t35 - t5) / sr  # T30 extrapolated to 60 dB
        assert measured == pytest.approx(truth["rt60"], rel=0.15)


def test_build_musan_gives_exact_counts_and_each_clips_category(corpora, tmp_path: Path):
    root, _, _ = corpora
    result = build("musan", root, tmp_path / "out")  # the folder above musan/
    samples, idx = read_split(tmp_path / "out" / "train")
    assert result.counts.inputs == result.counts.written == sum(MUSAN_COUNTS.values())
    assert result.counts.rejected == 0 and idx.rejected == []
    metas = [s[fmt.JSON] for s in samples.values()]
    assert Counter(m["category"] for m in metas) == MUSAN_COUNTS
    assert idx.label_map == {"music": 0, "noise": 1, "speech": 2}
    for s in samples.values():
        meta = s[fmt.JSON]
        assert meta["id"] == musan.clip_name(meta["category"], meta["subset"],
                                             int(meta["id"][-4:]))
        assert s[fmt.CLS] == idx.label_map[meta["category"]]
        assert meta["label"] == meta["category"] and meta["duration"] == 1.0
        if meta["category"] == "music":
            assert meta["vocals"] is False and meta["genres"] == ["synthetic", "tones"]
        else:
            assert meta["annotation"].startswith("synthetic")


def test_build_rirs_gives_exact_counts_and_each_files_category(corpora, tmp_path: Path):
    root, _, r = corpora
    result = build("rirs", root / "RIRS_NOISES", tmp_path / "out")
    samples, idx = read_split(tmp_path / "out" / "train")
    assert result.counts.inputs == result.counts.written == sum(RIR_COUNTS.values())
    metas = {m["id"]: m for m in (s[fmt.JSON] for s in samples.values())}
    assert Counter(m["category"] for m in metas.values()) == RIR_COUNTS
    assert {i for i, m in metas.items() if m["kind"] == "rir"} == set(r["rirs"])
    for rid, truth in r["rirs"].items():
        assert metas[rid]["rt60"] == truth["rt60"]
        audio = next(s for s in samples.values() if s[fmt.JSON]["id"] == rid)
        pcm = audio[fmt.AUDIO_NPY]
        assert int(np.argmax(np.abs(pcm))) == truth["direct"]  # whole, not trimmed
    assert metas["simulated_rirs/mediumroom/Room001/Room001-00002"]["room_id"] == "medium-Room001"
    only = build("rirs", root / "RIRS_NOISES", tmp_path / "only", rirs_only=True)
    assert only.counts.written == 8


def test_short_rirs_are_kept_unless_a_min_duration_is_given(tmp_path: Path, capsys):
    # 0.25 s RIRs, under the build-wide --min-duration 0.5 s, which `build rirs` does not
    # apply unless given (rirs.BUILD_DEFAULTS): on the command line, through a --config
    # key, and through the API without options. A value given still filters.
    synth.synth_rirs(str(tmp_path / "short"), rooms_per_size=1, rirs_per_room=1, real_rirs=0,
                     isotropic_noises=0, pointsource_noises=0, rir_seconds=0.25)
    quiet = ["--workers", "1", "--no-progress"]
    assert main(["build", "rirs", str(tmp_path / "short"), str(tmp_path / "cli"), *quiet]) == 0
    kept = load_index(str(tmp_path / "cli" / "train"))
    assert kept.counts.written == 3 and kept.rejected == []
    assert kept.preprocessing["min_duration"] == 0.0
    api = build_dataset("rirs", str(tmp_path / "short"), str(tmp_path / "api"), log=lambda _: None)
    assert api.counts.written == 3 and api.counts.rejected == 0
    (tmp_path / "given.yaml").write_text("min-duration: 0.5\n")
    capsys.readouterr()
    for name, given in (("flag", ["--min-duration", "0.5"]), ("yaml", ["--config", str(tmp_path / "given.yaml")])):
        assert main(["build", "rirs", str(tmp_path / "short"), str(tmp_path / name), *given, *quiet]) != 0
        err = capsys.readouterr().err
        assert "nothing was written: every input was rejected: 3 of 3 shorter than --min-duration 0.5 s" in err
    with pytest.raises(SystemExit):
        main(["build", "rirs", "--help"])
    usage = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    line = "--min-duration SECONDS reject inputs shorter than this after preprocessing (default: {})"
    assert line.format("0.0") in usage
    with pytest.raises(SystemExit):
        main(["build", "musan", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert line.format("0.5") in usage


def damage(folder: Path) -> dict[str, str]:
    """A garbage .wav and a truncated one (header cut): {file: what the reject must say}."""
    (folder / "garbage.wav").write_bytes(b"this is not a RIFF file at all" * 10)
    good = next(p for p in sorted(folder.glob("*.wav")) if p.name != "garbage.wav")
    (folder / "truncated.wav").write_bytes(good.read_bytes()[:30])
    return {"garbage.wav": "cannot decode", "truncated.wav": "cannot decode"}


def test_damaged_musan_and_rir_files_are_recorded_rejects(corpora, tmp_path: Path):
    root, _, _ = corpora
    copy = tmp_path / "corpora"
    shutil.copytree(root, copy)
    bad = {"musan": damage(copy / "musan/noise/free-sound"),
           "rirs": damage(copy / "RIRS_NOISES/simulated_rirs/smallroom/Room001")}
    (copy / "musan/noise/free-sound/notes.txt").write_text("x")  # a stray file: a scan reject
    (copy / "RIRS_NOISES/real_rirs_isotropic_noises/unlisted.wav").write_bytes(
        (copy / "RIRS_NOISES/real_rirs_isotropic_noises/synthetic_air_rir_0.wav").read_bytes())
    expected = {"musan": sum(MUSAN_COUNTS.values()), "rirs": sum(RIR_COUNTS.values())}
    for name, src in (("musan", copy), ("rirs", copy / "RIRS_NOISES")):
        result = build(name, src, tmp_path / name)
        idx = load_index(str(tmp_path / name / "train"))
        reasons = {Path(r.input).name: (r.stage, r.reason) for r in idx.rejected}
        for file, why in bad[name].items():
            assert reasons[file][0] == "decode" and why in reasons[file][1]
        assert result.counts.written == expected[name]
        assert result.counts.rejected == len(idx.rejected) == 3
        assert result.counts.inputs == result.counts.written + result.counts.rejected
    scan_only = {Path(r.input).name: r.reason for r in musan.scan(str(copy)).rejects}
    assert "unexpected file" in scan_only["notes.txt"]
    rir_rejects = {Path(r.input).name: r.reason for r in rirs.scan(str(copy)).rejects}
    assert "in neither real_rirs_isotropic_noises/rir_list nor" in rir_rejects["unlisted.wav"]


def test_list_and_annotation_lines_without_files_are_rejects(corpora, tmp_path: Path):
    root, _, _ = corpora
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    (copy / "musan/music/rfm/music-rfm-0001.wav").unlink()
    (copy / "RIRS_NOISES/pointsource_noises/noise-free-sound-0001.wav").unlink()
    with open(copy / "musan/music/fma/ANNOTATIONS", "a") as f:
        f.write("music-fma-0099 rock\n")  # malformed: no vocals, no musician
    m = {Path(r.input).name: r.reason for r in musan.scan(str(copy)).rejects}
    assert set(m) == {"music-rfm-0001.wav", "ANNOTATIONS:3"}
    assert "annotation line for missing audio" in m["music-rfm-0001.wav"]
    assert "expected 'clip genres Y|N musician'" in m["ANNOTATIONS:3"]
    r = rirs.scan(str(copy)).rejects
    assert [(Path(x.input).name, x.reason.split(" is listed")[0]) for x in r] == [
        ("noise-free-sound-0001.wav", "noise noise-free-sound-0001")]


def test_the_list_line_format_parses_back(tmp_path: Path):
    line = rirs.list_line("rir", "small-Room001-00001", "simulated_rirs/smallroom/R/x.wav",
                          room_id="small-Room001", rt_60=0.25)
    item, wav = rirs.parse_list_line(line, "rir")
    assert item is not None and item.fields == {"rir_id": "small-Room001-00001",
                                                "room_id": "small-Room001", "rt60": 0.25}
    assert wav == "RIRS_NOISES/simulated_rirs/smallroom/R/x.wav"
    # A real list's channel pick: the file is the input of a sox pipe.
    item, wav = rirs.parse_list_line(
        "--rir-id a_1 --room-id a sox RIRS_NOISES/real_rirs_isotropic_noises/a.wav -t wav - "
        "remix 2 |", "rir")
    assert item is not None and wav == "RIRS_NOISES/real_rirs_isotropic_noises/a.wav"
    assert rirs.parse_list_line("RIRS_NOISES/x.wav", "rir") == (None, None)


def test_manifest_category_column_round_trips(corpora, tmp_path: Path):
    root, _, _ = corpora
    clips = [Path(shutil.copy(p, tmp_path)) for p in sorted((root / "musan").rglob("*.wav"))[:3]]
    rows = [{"path": str(clips[0]), "category": "noise"},
            {"path": str(clips[1]), "category": " babble "},
            {"path": str(clips[2])}]
    jsonl = tmp_path / "noises.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scan = get_source("manifest").scan(str(jsonl), manifest.Options())
    assert {r.path: dict(r.extra).get("category") for r in scan.records} == {
        str(clips[0]): "noise", str(clips[1]): "babble", str(clips[2]): None}
    build("manifest", jsonl, tmp_path / "out")
    samples, _ = read_split(tmp_path / "out" / "train")
    by_id = {s[fmt.JSON]["id"]: s[fmt.JSON].get("category") for s in samples.values()}
    assert by_id == {r.id: dict(r.extra).get("category") for r in scan.records}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"path": str(clips[0]), "category": ["a"]}) + "\n")
    (reject,) = manifest.scan(str(bad)).rejects
    assert "category must be a string or number, got list" in reject.reason


def test_cli_synth_writes_musan_and_rirs(tmp_path: Path, capsys):
    assert main(["synth", "musan", str(tmp_path / "m"), "--clips", "1", "--seconds", "0.6",
                 "--seed", "2"]) == 0
    assert "wrote 9 files" in capsys.readouterr().out
    assert main(["synth", "rirs", str(tmp_path / "r"), "--rooms", "1", "--rirs-per-room", "1",
                 "--real-rirs", "0", "--isotropic-noises", "0", "--pointsource-noises", "1"]) == 0
    assert "wrote 4 files" in capsys.readouterr().out
    assert len(rirs.scan(str(tmp_path / "r")).records) == 4
