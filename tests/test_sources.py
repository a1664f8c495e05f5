"""Corpus sources on small real layouts: exact records, exact rejects, CLI options."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wds_pipeline.option_table import OptionTable
from wds_pipeline.records import Reject, SourceScan
from wds_pipeline.sources import get_source, librispeech, manifest, voxceleb
from wds_pipeline.synth import write_m4a

SR = 16000


def write_audio(path: Path, fmt: str = "FLAC", seconds: float = 0.05) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.sin(np.arange(int(SR * seconds)) * 0.05) * 3000).astype(np.int16)
    if fmt == "M4A":
        write_m4a(str(path), pcm, SR)
    else:
        sf.write(path, pcm, SR, format=fmt, subtype="PCM_16")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def scan_with_cli_options(module, root: Path, argv: list[str]) -> SourceScan:
    """Exactly what the generic CLI does: flags generated from the module's Options, parsed."""
    table = OptionTable((module.Options, None))
    parser = argparse.ArgumentParser()
    table.add_to(parser)
    (options,) = table.build(parser.parse_args(argv))
    return module.scan(str(root), options)


def summary(scan: SourceScan) -> list[tuple]:
    return [(r.id, r.split, r.speaker, r.text, r.dataset) for r in scan.records]


def scan_as_unprivileged(module, root: str) -> dict:
    """Scan in a forked child that cannot read a chmod-000 folder.

    Root reads it anyway, so the child drops to ``nobody`` first. Forking (not exec)
    keeps the interpreter and imports of the parent: the interpreter lives under root's
    0700 home here, and a fresh one would spend seconds importing torch.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe and never return into pytest
        result: dict | None = None
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                except OSError as e:
                    result = {"skip": str(e)}
            if result is None:
                s = module.scan(root)
                result = {
                    "ids": [r.id for r in s.records],
                    "rejects": [r.to_dict() for r in s.rejects],
                }
        except Exception:  # noqa: BLE001 - any failure must reach the parent, not a forked pytest
            result = {"error": traceback.format_exc()}
        finally:
            os.write(write_fd, json.dumps(result).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        payload = f.read()
    os.waitpid(pid, 0)
    result = json.loads(payload)
    assert "error" not in result, result.get("error")
    if "skip" in result:
        pytest.skip(f"neither non-root nor able to setuid to nobody: {result['skip']}")
    return result


def test_registry_exposes_the_three_sources():
    for name, module in (
        ("librispeech", librispeech),
        ("voxceleb", voxceleb),
        ("manifest", manifest),
    ):
        assert get_source(name) is module
        assert module.NAME == name


# ---------------------------------------------------------------------------
# LibriSpeech


def libri_chapter(
    part_dir: Path, spk: str, chap: str, texts: dict[str, str], audio: list[str]
) -> Path:
    """A chapter folder with ``texts`` as transcript lines and ``audio`` utterance numbers as FLAC."""
    folder = part_dir / spk / chap
    for utt in audio:
        write_audio(folder / f"{spk}-{chap}-{utt}.flac")
    write_text(
        folder / f"{spk}-{chap}.trans.txt",
        "".join(f"{spk}-{chap}-{u} {t}\n" for u, t in texts.items()),
    )
    return folder


@pytest.fixture
def libri(tmp_path: Path) -> Path:
    root = tmp_path / "LibriSpeech"
    libri_chapter(
        root / "train-clean-100",
        "19",
        "198",
        {"0000": "NORTHANGER ABBEY", "0001": "CHAPTER ONE"},
        ["0000", "0001"],
    )
    libri_chapter(root / "train-clean-100", "26", "495", {"0004": "IT IS A TRUTH"}, ["0004"])
    libri_chapter(
        root / "dev-clean",
        "84",
        "121123",
        {"0000": "GO DO YOU HEAR", "0001": "BUT IN LESS THAN"},
        ["0000", "0001"],
    )
    write_text(
        root / "SPEAKERS.TXT", ";ID  |SEX| SUBSET | MINUTES | NAME\n"
    )  # metadata at the top: not an input
    return root


LIBRI_ALL = [
    ("19-198-0000", "train-clean-100", "19", "NORTHANGER ABBEY", "librispeech"),
    ("19-198-0001", "train-clean-100", "19", "CHAPTER ONE", "librispeech"),
    ("26-495-0004", "train-clean-100", "26", "IT IS A TRUTH", "librispeech"),
    ("84-121123-0000", "dev-clean", "84", "GO DO YOU HEAR", "librispeech"),
    ("84-121123-0001", "dev-clean", "84", "BUT IN LESS THAN", "librispeech"),
]


def test_librispeech_scans_every_part(libri: Path):
    scan = librispeech.scan(str(libri))
    assert summary(scan) == LIBRI_ALL
    assert scan.rejects == []
    first = scan.records[0]
    assert first.path == str(libri / "train-clean-100/19/198/19-198-0000.flac")
    assert dict(first.extra) == {"chapter": "198"}


def test_librispeech_parts_option_selects_parts(libri: Path):
    dev = scan_with_cli_options(librispeech, libri, ["--parts", "dev-clean"])
    assert [r.id for r in dev.records] == ["84-121123-0000", "84-121123-0001"]
    both = librispeech.scan(str(libri), librispeech.Options(parts=("dev-clean", "train-clean-100")))
    assert summary(both) == LIBRI_ALL
    assert summary(scan_with_cli_options(librispeech, libri, [])) == LIBRI_ALL
    with pytest.raises(ValueError, match="unknown LibriSpeech part.*train-clean-999"):
        librispeech.scan(str(libri), librispeech.Options(parts="dev-clean,train-clean-999"))
    with pytest.raises(
        ValueError,
        match=r"--parts asks for test-other but .* holds only dev-clean, train-clean-100",
    ):
        librispeech.scan(str(libri), librispeech.Options(parts="test-other"))


def test_librispeech_root_may_be_one_part_or_the_unpack_folder(libri: Path):
    part = librispeech.scan(str(libri / "dev-clean"))
    assert summary(part) == LIBRI_ALL[3:]
    assert summary(librispeech.scan(str(libri.parent))) == LIBRI_ALL  # holds LibriSpeech/
    with pytest.raises(ValueError, match="no LibriSpeech part under"):
        librispeech.scan(str(libri / "dev-clean" / "84"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        librispeech.scan(str(libri / "nowhere"))


def test_librispeech_bad_inputs_become_exact_rejects(tmp_path: Path):
    root = tmp_path / "LibriSpeech"
    part = root / "train-clean-100"
    chap = part / "19" / "198"
    trans = chap / "19-198.trans.txt"
    write_audio(chap / "19-198-0000.flac")
    write_audio(chap / "19-198-0001.flac")  # no transcript line
    write_audio(chap / "19-198-x.flac")  # does not follow <spk>-<chap>-<utt>
    write_text(chap / "notes.md", "scratch")
    write_text(
        trans,
        "19-198-0000 HELLO THERE\n"
        "19-198-0002 NO AUDIO FOR ME\n"
        "19-198-0003\n"
        "20-198-0004 ANOTHER CHAPTER\n"
        "19-198-0000 SAID TWICE\n"
        "\n",
    )
    write_audio(part / "19" / "200" / "19-200-0000.flac")  # chapter without a transcript file
    write_text(part / "19" / "stray.txt", "x")
    (part / "abc").mkdir()
    (root / "extras").mkdir()
    (root / ".hidden").mkdir()
    write_audio(root / "stray.flac")

    scan = librispeech.scan(str(root))

    assert summary(scan) == [("19-198-0000", "train-clean-100", "19", "HELLO THERE", "librispeech")]
    missing = chap / "19-198-0002.flac"
    expected = [
        Reject(str(chap / "19-198-0001.flac"), f"no transcript line in {trans}"),
        Reject(str(missing), f"transcript line for missing audio {missing} ({trans} line 2)"),
        Reject(
            f"{trans}:3",
            f"malformed transcript line 3 in {trans}: expected '19-198-<utt> TEXT', got '19-198-0003'",
        ),
        Reject(
            f"{trans}:4",
            f"malformed transcript line 4 in {trans}: expected '19-198-<utt> TEXT', got '20-198-0004 ANOTHER CHAPTER'",
        ),
        Reject(
            f"{trans}:5",
            f"duplicate transcript line 5 for 19-198-0000 in {trans} (first on line 1)",
        ),
        Reject(
            str(chap / "19-198-x.flac"),
            "file name 19-198-x.flac does not match its folder: expected 19-198-<utt>.flac",
        ),
        Reject(
            str(chap / "notes.md"),
            f"unexpected file {chap / 'notes.md'} in a LibriSpeech chapter folder",
        ),
        Reject(
            str(part / "19/200/19-200-0000.flac"),
            f"no transcript line in {part / '19/200/19-200.trans.txt'} (the transcript file does not exist)",
        ),
        Reject(
            str(part / "19/stray.txt"),
            f"unexpected file {part / '19/stray.txt'}: a LibriSpeech part holds only chapter folders here",
        ),
        Reject(
            str(part / "abc"),
            f"{part / 'abc'} is not a speaker folder (LibriSpeech speaker folders are numbers)",
        ),
        Reject(
            str(root / "stray.flac"),
            f"unexpected audio file {root / 'stray.flac'} outside a part folder: LibriSpeech audio "
            "lives in <part>/<speaker>/<chapter>/",
        ),
        Reject(
            str(root / "extras"),
            f"{root / 'extras'} is not a LibriSpeech part (known: {', '.join(librispeech.KNOWN_PARTS)}); not scanned",
        ),
    ]
    assert scan.rejects == sorted(expected)


def test_librispeech_unreadable_folder_is_rejected_and_the_scan_goes_on():
    tmp = tempfile.mkdtemp()
    locked = Path(tmp, "LibriSpeech", "dev-clean", "84")
    try:
        os.chmod(tmp, 0o755)
        part = Path(tmp, "LibriSpeech", "dev-clean")
        libri_chapter(part, "84", "121123", {"0000": "GO DO YOU HEAR"}, ["0000"])
        libri_chapter(part, "174", "50561", {"0000": "FORGOTTEN TOO"}, ["0000"])
        os.chmod(locked, 0o000)
        result = scan_as_unprivileged(librispeech, os.path.join(tmp, "LibriSpeech"))
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(tmp)
    assert result["ids"] == ["174-50561-0000"]
    assert result["rejects"] == [
        {
            "input": str(locked),
            "reason": f"cannot read directory {locked}: Permission denied; fix its permissions and rescan",
            "stage": "scan",
        }
    ]


# ---------------------------------------------------------------------------
# VoxCeleb

VOX1_META = "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid10001\tA.J._Buckley\tm\tIreland\tdev\nid10270\tEmma\tf\tUK\ttest\n"
VOX2_META = "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,m ,dev \n"


@pytest.fixture
def vox(tmp_path: Path) -> Path:
    root = tmp_path / "vox"
    wav = root / "voxceleb1" / "wav"
    for rel in (
        "id10001/vidA/00001",
        "id10001/vidA/00002",
        "id10001/vidB/00001",
        "id10270/vidC/00001",
        "id10270/vidC/00002",
        "id10002/vidD/00001",
    ):
        write_audio(wav / f"{rel}.wav", "WAV")
    write_text(root / "voxceleb1" / "vox1_meta.csv", VOX1_META)
    write_text(
        root / "voxceleb1" / "veri_test2.txt",
        "1 id10270/vidC/00001.wav id10270/vidC/00002.wav\n"
        "0 id10270/vidC/00001.wav id10001/vidA/00001.wav\n"
        "1 id10309/gone/00001.wav id10309/gone/00002.wav\n",
    )
    write_text(root / "veri_test.txt", "0 id10001/vidB/00001.wav id10270/vidC/00002.wav\n")
    write_audio(root / "voxceleb2" / "dev" / "aac" / "id00012" / "vidE" / "00001.m4a", "M4A")
    write_audio(root / "voxceleb2" / "test" / "aac" / "id00020" / "vidF" / "00001.m4a", "M4A")
    write_text(root / "voxceleb2" / "vox2_meta.csv", VOX2_META)
    return root


VOX_SPLITS = {
    "id00012/vidE/00001": "voxceleb2_dev",
    "id00020/vidF/00001": "voxceleb2_test",  # not in vox2_meta.csv: the test/ folder decides
    "id10001/vidA/00001": "voxceleb1_dev",
    "id10001/vidA/00002": "voxceleb1_dev",
    "id10001/vidB/00001": "voxceleb1_dev",
    "id10002/vidD/00001": "voxceleb1_dev",  # not in vox1_meta.csv and no dev/test folder: dev
    "id10270/vidC/00001": "voxceleb1_test",
    "id10270/vidC/00002": "voxceleb1_test",
}


def test_voxceleb_default_splits_speakers_and_extras(vox: Path):
    scan = voxceleb.scan(str(vox))
    assert {r.id: r.split for r in scan.records} == VOX_SPLITS
    assert [r.id for r in scan.records] == sorted(VOX_SPLITS)
    assert all(r.speaker == r.id.split("/")[0] for r in scan.records)
    assert {r.id: r.dataset for r in scan.records}["id00012/vidE/00001"] == "voxceleb2"
    assert scan.records[0].path == str(vox / "voxceleb2/dev/aac/id00012/vidE/00001.m4a")
    assert dict(scan.records[2].extra) == {"gender": "m"}  # id10001, from the meta file
    assert scan.rejects == []
    assert scan.extras == {
        "trials": {
            "veri_test.txt": [[0, "id10001/vidB/00001.wav", "id10270/vidC/00002.wav"]],
            "veri_test2.txt": [
                [1, "id10270/vidC/00001.wav", "id10270/vidC/00002.wav"],
                [0, "id10270/vidC/00001.wav", "id10001/vidA/00001.wav"],
            ],
        },
        "trials_missing": {"veri_test.txt": 0, "veri_test2.txt": 1},
        "speakers_not_in_meta": {"voxceleb1": ["id10002"], "voxceleb2": ["id00020"]},
    }
    json.dumps(scan.extras)  # carried verbatim into the index
    # Each split gets only the trial lines it can score on its own; the two lines that
    # pair a dev utterance with a test one are counted in both splits, listed in neither.
    assert scan.split_extras == {
        "voxceleb1_dev": {"trials": {"veri_test.txt": [], "veri_test2.txt": []},
                          "trials_in_other_splits": {"veri_test.txt": 1, "veri_test2.txt": 1}},
        "voxceleb1_test": {"trials": {"veri_test.txt": [], "veri_test2.txt": [
                               [1, "id10270/vidC/00001.wav", "id10270/vidC/00002.wav"]]},
                           "trials_in_other_splits": {"veri_test.txt": 1, "veri_test2.txt": 1}},
        "voxceleb2_dev": {"trials": {"veri_test.txt": [], "veri_test2.txt": []},
                          "trials_in_other_splits": {"veri_test.txt": 0, "veri_test2.txt": 0}},
        "voxceleb2_test": {"trials": {"veri_test.txt": [], "veri_test2.txt": []},
                           "trials_in_other_splits": {"veri_test.txt": 0, "veri_test2.txt": 0}},
    }


def test_voxceleb_kaldi_split_holds_out_vox1_test_speakers(vox: Path):
    scan = scan_with_cli_options(voxceleb, vox, ["--kaldi-split"])
    test_ids = {r.id for r in scan.records if r.split == "test"}
    assert test_ids == {"id10270/vidC/00001", "id10270/vidC/00002"}
    assert {r.split for r in scan.records} == {"train", "test"}
    assert len(scan.records) == len(VOX_SPLITS)
    assert scan_with_cli_options(voxceleb, vox, []).records == voxceleb.scan(str(vox)).records


def test_voxceleb_root_may_be_one_corpus(vox: Path):
    vox1 = voxceleb.scan(str(vox / "voxceleb1"))
    assert [r.id for r in vox1.records] == [k for k in sorted(VOX_SPLITS) if k.startswith("id1")]
    assert list(vox1.extras["trials"]) == ["veri_test2.txt"]
    vox2 = voxceleb.scan(str(vox / "voxceleb2"))
    assert {r.id: r.split for r in vox2.records} == {
        "id00012/vidE/00001": "voxceleb2_dev",
        "id00020/vidF/00001": "voxceleb2_test",
    }
    assert vox2.extras["trials"] == {}
    with pytest.raises(ValueError, match="no VoxCeleb corpus under"):
        voxceleb.scan(str(vox / "voxceleb1" / "wav" / "id10001"))


def test_voxceleb_bad_layout_becomes_exact_rejects(vox: Path):
    wav = vox / "voxceleb1" / "wav"
    write_text(wav / "id10001" / "vidA" / "notes.txt", "x")
    write_text(wav / "readme.txt", "x")
    (wav / "speaker1").mkdir()
    write_audio(wav / "id10001" / "stray.wav", "WAV")
    # The same utterance in dev/ and test/: the later copy (test/) is rejected.
    dup = write_audio(vox / "voxceleb2" / "test" / "aac" / "id00012" / "vidE" / "00001.m4a", "M4A")
    scan = voxceleb.scan(str(vox))
    assert {r.id: r.split for r in scan.records} == VOX_SPLITS
    first = vox / "voxceleb2/dev/aac/id00012/vidE/00001.m4a"
    assert scan.rejects == sorted(
        [
            Reject(
                str(wav / "id10001/vidA/notes.txt"),
                f"unexpected file {wav / 'id10001/vidA/notes.txt'}: voxceleb1 video folders hold only *.wav files",
            ),
            Reject(
                str(wav / "readme.txt"),
                f"unexpected file {wav / 'readme.txt'}: expected <speaker>/<video>/<utt> folders above the audio files",
            ),
            Reject(
                str(wav / "speaker1"),
                f"{wav / 'speaker1'} is not a VoxCeleb speaker folder (expected a name like id10270)",
            ),
            Reject(
                str(wav / "id10001/stray.wav"),
                f"unexpected file {wav / 'id10001/stray.wav'}: expected <speaker>/<video>/<utt> folders above the audio files",
            ),
            Reject(
                str(dup), f"duplicate utterance id id00012/vidE/00001: already found at {first}"
            ),
        ]
    )


def test_voxceleb_malformed_trial_line_raises_naming_file_and_line(vox: Path):
    trials = write_text(
        vox / "voxceleb1" / "veri_test2.txt",
        "1 id10270/vidC/00001.wav id10270/vidC/00002.wav\n2 a.wav\n",
    )
    with pytest.raises(
        ValueError,
        match=rf"{trials} line 2: expected 'label enroll_path test_path' with label 0 or 1, got '2 a.wav'",
    ):
        voxceleb.scan(str(vox))
    write_text(vox / "veri_test2.txt", "1 a b\n")
    write_text(vox / "voxceleb1" / "veri_test2.txt", "1 a b\n")
    with pytest.raises(ValueError, match="trial list veri_test2.txt found twice"):
        voxceleb.scan(str(vox))


def test_voxceleb_meta_files_are_checked(vox: Path):
    meta = write_text(vox / "voxceleb1" / "vox1_meta.csv", "Speaker\tSet\nid10001\tdev\n")
    with pytest.raises(
        ValueError, match=rf"{meta}: header .* lacks a 'VoxCeleb1 ID'/'VoxCeleb2 ID' column"
    ):
        voxceleb.scan(str(vox))
    write_text(meta, VOX1_META + "id10003\tX\tm\tY\ttrain\n")
    with pytest.raises(
        ValueError,
        match=rf"{meta} line 4: expected a speaker id like id10270 and a Set of dev or test",
    ):
        voxceleb.scan(str(vox))


def test_voxceleb_unreadable_folder_is_rejected_and_the_scan_goes_on():
    tmp = tempfile.mkdtemp()
    wav = Path(tmp, "voxceleb1", "wav")
    locked = wav / "id10002"
    try:
        os.chmod(tmp, 0o755)
        write_audio(wav / "id10001/vidA/00001.wav", "WAV")
        write_audio(locked / "vidB/00001.wav", "WAV")
        os.chmod(locked, 0o000)
        result = scan_as_unprivileged(voxceleb, tmp)
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(tmp)
    assert result["ids"] == ["id10001/vidA/00001"]
    assert result["rejects"] == [
        {
            "input": str(locked),
            "reason": f"cannot read directory {locked}: Permission denied; fix its permissions and rescan",
            "stage": "scan",
        }
    ]


# ---------------------------------------------------------------------------
# Manifest


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    for name in ("a.wav", "sub/b.flac", "c.wav", "e.wav", "f.wav"):
        write_audio(folder / name, "FLAC" if name.endswith(".flac") else "WAV")
    write_audio(tmp_path / "elsewhere" / "d.wav", "WAV")
    return folder


def records_by_id(scan: SourceScan) -> dict[str, tuple]:
    return {
        r.id: (
            Path(r.path).name,
            r.speaker,
            r.label,
            r.text,
            r.offset,
            r.duration,
            r.split,
            dict(r.extra),
        )
        for r in scan.records
    }


def test_manifest_csv_with_offsets_durations_and_labels(audio_dir: Path):
    outside = audio_dir.parent / "elsewhere" / "d.wav"
    csv_path = write_text(
        audio_dir / "train_list.csv",
        "path,label,text,offset,duration,speaker,id,split,gender\n"
        "a.wav,cat,,,,,,,f\n"
        'sub/b.flac,,"hello, world",,,spk1,,,\n'
        "c.wav,dog,,0,2.5,spk2,,,\n"
        "c.wav,dog,,2.5,2.5,spk2,,,\n"
        f"{outside},,,,,,,,\n"
        "e.wav,,,,,,custom-e,dev,\n",
    )
    scan = manifest.scan(str(csv_path))
    abs_id = str(outside.with_suffix("")).lstrip("/")
    assert records_by_id(scan) == {
        "a": ("a.wav", None, "cat", None, 0.0, None, "train", {"gender": "f"}),
        # An empty label cell is "no label" (NO_LABEL), not the speaker: issue 7.
        "sub/b": ("b.flac", "spk1", "", "hello, world", 0.0, None, "train", {}),
        "c-0000000": ("c.wav", "spk2", "dog", None, 0.0, 2.5, "train", {}),
        "c-0002500": ("c.wav", "spk2", "dog", None, 2.5, 2.5, "train", {}),
        abs_id: ("d.wav", None, "", None, 0.0, None, "train", {}),
        "custom-e": ("e.wav", None, "", None, 0.0, None, "dev", {}),
    }
    assert [r.id for r in scan.records] == sorted(r.id for r in scan.records)
    assert {r.dataset for r in scan.records} == {"train_list"}
    paths = {r.id: r.path for r in scan.records}
    assert paths["a"] == str(audio_dir / "a.wav") and paths[abs_id] == str(outside)
    assert scan.rejects == []
    classes = {r.id: r.class_label for r in scan.records}
    assert classes["c-0000000"] == "dog" and classes["sub/b"] is None


def test_manifest_csv_bad_rows_are_rejected_with_their_line(audio_dir: Path):
    csv_path = write_text(
        audio_dir / "m.csv",
        "path,offset,duration,id,split\n"
        "a.wav,,,,\n"
        ",1,,,\n"
        "a.wav,abc,,x1,\n"
        "a.wav,,0,x2,\n"
        "a.wav,-1,,x3,\n"
        "missing.wav,,,,\n"
        "e.wav,,,a,\n"
        "f.wav,,,x4,Dev Set\n"
        "f.wav,1,2,x5,,surplus\n",
    )
    scan = scan_with_cli_options(
        manifest, csv_path, ["--split", "dev-clean", "--dataset-name", "mine"]
    )
    assert [(r.id, r.split, r.dataset) for r in scan.records] == [("a", "dev-clean", "mine")]
    m = str(csv_path)
    assert scan.rejects == sorted(
        [
            Reject(f"{m}:3", f"{m} line 3: no 'path' value"),
            Reject(f"{m}:4", f"{m} line 4: offset 'abc' is not a number of seconds"),
            Reject(f"{m}:5", f"{m} line 5: duration '0' is not a number of seconds greater than 0"),
            Reject(f"{m}:6", f"{m} line 6: offset '-1' is not a number of seconds 0 or more"),
            Reject(
                str(audio_dir / "missing.wav"),
                f"missing file {audio_dir / 'missing.wav'} ({m} line 7)",
            ),
            Reject(f"{m}:8", f"{m} line 8: duplicate id 'a' (first on line 2)"),
            Reject(
                f"{m}:9",
                f"{m} line 9: split 'Dev Set' is not a valid split name (use only a-z, 0-9, '_' and '-')",
            ),
            Reject(
                f"{m}:10",
                f"{m} line 10: 1 more field(s) than the header has columns (quote values holding commas)",
            ),
        ]
    )


def test_manifest_jsonl_with_offsets_and_bad_lines(audio_dir: Path):
    lines = [
        {"path": "a.wav", "label": 3, "offset": 1.5, "duration": 2, "lang": "en"},
        {"path": "c.wav", "speaker": "s1"},
        {"path": "c.wav", "speaker": "s1", "offset": "2.0", "text": "second half"},
        {"label": "no path"},
        {"path": "e.wav", "offset": True},
        {"path": "f.wav", "text": ["not", "text"]},
        {"path": "nope/missing.wav"},
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n[1, 2]\n\n"
    path = write_text(audio_dir / "set.jsonl", body)
    scan = manifest.scan(str(path), manifest.Options(split="test"))
    assert records_by_id(scan) == {
        "a": ("a.wav", None, "3", None, 1.5, 2.0, "test", {"lang": "en"}),
        # Other lines have labels, so these have none (not their speaker's): issue 7.
        "c-0000000": ("c.wav", "s1", "", None, 0.0, None, "test", {}),
        "c-0002000": ("c.wav", "s1", "", "second half", 2.0, None, "test", {}),
    }
    m = str(path)
    missing = audio_dir / "nope" / "missing.wav"
    assert scan.rejects == sorted(
        [
            Reject(f"{m}:4", f"{m} line 4: no 'path' value"),
            Reject(f"{m}:5", f"{m} line 5: offset True is not a number of seconds"),
            Reject(f"{m}:6", f"{m} line 6: text must be a string or number, got list"),
            Reject(str(missing), f"missing file {missing} ({m} line 7)"),
            Reject(
                f"{m}:8",
                f"{m} line 8: not valid JSON (Expecting property name enclosed in double quotes)",
            ),
            Reject(f"{m}:9", f"{m} line 9: expected a JSON object, got list"),
        ]
    )


def test_manifest_file_level_errors_name_the_fix(audio_dir: Path):
    no_path = write_text(audio_dir / "bad.csv", "file,label\na.wav,x\n")
    with pytest.raises(ValueError, match="has no 'path' column"):
        manifest.scan(str(no_path))
    with pytest.raises(ValueError, match=r"must end in \.csv .* or \.jsonl"):
        manifest.scan(str(write_text(audio_dir / "list.txt", "a.wav\n")))
    with pytest.raises(FileNotFoundError, match="does not exist or is not a file"):
        manifest.scan(str(audio_dir / "absent.csv"))
    with pytest.raises(ValueError, match="--split 'Train' is not a valid split name"):
        manifest.scan(str(no_path), manifest.Options(split="Train"))


QUOTE_FIX = ('close the quote, or write a quote inside a quoted value as two (""), or leave '
             "the value unquoted")


@pytest.mark.parametrize("body,line,what", [
    # never closed, on the last row too (no newline at the end)
    ('a.wav,"hi\nc.wav,x\ne.wav,y\n', 2,
     "is never closed (the file ends inside it, at line 4)"),
    ('a.wav,x\nc.wav,"hi', 3, "is never closed (the file ends inside it, at line 3)"),
    # closed rows later: the rows in between read as rows of their own
    ('a.wav,"hi\nc.wav,x\ne.wav,y"\nf.wav,z\n', 2,
     "runs on to line 4, swallowing line 3 ('c.wav,x'), which reads as a row of its own"),
    # a path naming an existing file counts as a row even without an audio extension
    ('a.wav,"hi\nclip.raw,x"\n', 2,
     "runs on to line 3, swallowing line 3 ('clip.raw,x\"'), which reads as a row of its own"),
])
def test_manifest_csv_stray_quote_is_an_error_naming_its_line(audio_dir: Path, body, line,
                                                             what):
    write_text(audio_dir / "clip.raw", "not audio, but a file")
    m = write_text(audio_dir / "q.csv", "path,text\n" + body)
    with pytest.raises(ValueError) as e:
        manifest.scan(str(m))
    assert str(e.value) == (f"manifest {m} line {line}: a quoted value opened in this row "
                            f"{what}; {QUOTE_FIX}")


def test_manifest_csv_values_spanning_lines_are_kept(audio_dir: Path):
    m = write_text(audio_dir / "q.csv", 'path,text\na.wav,"line one,\nline two"\n'
                   'c.wav,"x\n""quoted"", and c.wav too"\ne.wav,z\n')
    scan = manifest.scan(str(m))
    assert {r.id: r.text for r in scan.records} == {
        "a": "line one,\nline two", "c": 'x\n"quoted", and c.wav too', "e": "z"}
    assert scan.rejects == []


# ---------------------------------------------------------------------------
# Entries that are neither files nor folders


def test_symlink_loops_fifos_and_folders_named_like_audio_are_rejects_not_crashes(tmp_path: Path):
    root = tmp_path / "LibriSpeech"
    chap = libri_chapter(root / "dev-clean", "84", "121123", {"0000": "GO"}, ["0000"])
    (chap / "loop-a").symlink_to("loop-b")
    (chap / "loop-b").symlink_to("loop-a")
    os.mkfifo(chap / "84-121123-0001.flac")
    (chap / "84-121123-0002.flac").mkdir()
    (root / "dev-clean" / "85").symlink_to("85")  # a speaker folder that is a loop
    scan = librispeech.scan(str(root))
    assert [r.id for r in scan.records] == ["84-121123-0000"]
    reasons = {Path(r.input).name: r.reason for r in scan.rejects}
    assert reasons == {
        "loop-a": f"{chap}/loop-a is a symlink loop, not a file or folder; remove or fix the link",
        "loop-b": f"{chap}/loop-b is a symlink loop, not a file or folder; remove or fix the link",
        "84-121123-0001.flac": f"{chap}/84-121123-0001.flac is a FIFO (named pipe), not an audio "
                               "file; remove it",
        "84-121123-0002.flac": f"{chap}/84-121123-0002.flac is a folder named like an audio file; "
                               "rename or remove it",
        "85": f"{root}/dev-clean/85 is a symlink loop, not a file or folder; remove or fix the link",
    }

    vox = tmp_path / "vox" / "voxceleb1"
    write_audio(vox / "wav" / "id10001" / "vidA" / "00001.wav", "WAV")
    os.mkfifo(vox / "wav" / "id10001" / "vidA" / "00002.wav")
    (vox / "wav" / "id10001" / "vidA" / "00003.wav").mkdir()
    (vox / "wav" / "id10001" / "vidB").symlink_to("vidB")
    scan = voxceleb.scan(str(vox.parent))
    assert [r.id for r in scan.records] == ["id10001/vidA/00001"]
    assert {Path(r.input).name: r.reason.split(" is ", 1)[1] for r in scan.rejects} == {
        "00002.wav": "a FIFO (named pipe), not an audio file; remove it",
        "00003.wav": "a folder named like an audio file; rename or remove it",
        "vidB": "a symlink loop, not a file or folder; remove or fix the link",
    }

    clips = tmp_path / "clips"
    write_audio(clips / "ok.wav", "WAV")
    os.mkfifo(clips / "pipe.wav")
    (clips / "dir.wav").mkdir()
    (clips / "loop.wav").symlink_to("loop.wav")
    csv_path = write_text(clips / "m.csv", "path\nok.wav\npipe.wav\ndir.wav\nloop.wav\n")
    scan = manifest.scan(str(csv_path))
    assert [r.id for r in scan.records] == ["ok"]
    assert {Path(r.input).name: r.reason for r in scan.rejects} == {
        "pipe.wav": f"{clips}/pipe.wav is a FIFO (named pipe), not an audio file; remove it "
                    f"({csv_path} line 3)",
        "dir.wav": f"{clips}/dir.wav is a folder named like an audio file; rename or remove it "
                   f"({csv_path} line 4)",
        "loop.wav": f"{clips}/loop.wav is a symlink loop, not a file or folder; remove or fix the "
                    f"link ({csv_path} line 5)",
    }
