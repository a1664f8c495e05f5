"""The ``wds-pipeline`` command line: help, build options and --config, exit codes,
inspect, verify (and what it detects), synth and the demo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_builder import (
    CLI,
    REPO,
    make_clip_corpus,
    synth_libri,
    tree_bytes,
    write_audio,
    write_manifest,
)

from wds_pipeline.cli import main
from wds_pipeline.index import load_index


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors and --help
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def libri(tmp_path_factory) -> Path:
    return synth_libri(tmp_path_factory.mktemp("corpus") / "LibriSpeech")


@pytest.fixture(scope="module")
def built(libri, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    code = main(["build", "librispeech", str(libri), str(out), "--shard-size", "2",
                 "--workers", "1", "--no-progress"])
    assert code == 0
    return out


# ---------------------------------------------------------------------------
# help


@pytest.mark.parametrize("argv", [
    [], ["build"], ["build", "librispeech"], ["build", "voxceleb"], ["build", "manifest"],
    ["inspect"], ["verify"], ["synth"], ["synth", "librispeech"], ["synth", "voxceleb"],
    ["demo"],
])
def test_every_command_has_help_with_examples(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert "examples:" in out and "wds-pipeline " in out.split("examples:")[1]


def test_console_script_runs():
    exe = Path(sys.executable).parent / "wds-pipeline"
    cmd = [str(exe)] if exe.exists() else CLI
    p = subprocess.run(cmd + ["--version"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and p.stdout.startswith("wds-pipeline ")


# ---------------------------------------------------------------------------
# build


def test_build_prints_summary_and_source_options_work(capsys, libri, tmp_path):
    code, out, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--parts",
                         "dev-clean", "--shard-size", "4", "--workers", "1", "--no-progress")
    assert code == 0, err
    assert "6 inputs, 6 written, 0 rejected; 6 samples" in out
    assert "2 shards (2 built, 0 reused)" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["dev-clean"]
    code, out, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--parts",
                         "dev-clean", "--shard-size", "4", "--workers", "1", "--no-progress")
    assert code == 0 and "already complete" in out


def test_config_yaml_gives_options_and_flags_win(capsys, libri, tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("source: librispeech\ncodec: flac\nshard_size: 2\nparts: dev-clean\n"
                   "min-duration: 0.2\nworkers: 1\nno_progress: true\n")
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--config", cfg,
                       "--shard-size", "3")
    assert code == 0, err
    idx = load_index(str(tmp_path / "o" / "dev-clean"))
    assert idx.audio_field == "audio.flac"
    assert idx.preprocessing["min_duration"] == 0.2
    assert [s.nsamples for s in idx.shards] == [3, 3]  # --shard-size 3 beat the YAML's 2
    assert not (tmp_path / "o" / "train-clean-100").exists()


def test_config_yaml_errors_are_usage_errors(capsys, libri, tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("shard_sise: 2\n")
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--config", cfg)
    assert code == 2 and "unknown option(s) ['shard_sise']" in err
    cfg.write_text("source: voxceleb\n")
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--config", cfg)
    assert code == 2 and "is for source 'voxceleb'" in err
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--config",
                       tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in err


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two good clips, one zero-byte file."""
    write_audio(tmp_path / "m" / "a.wav", 1.0)
    write_audio(tmp_path / "m" / "b.wav", 1.0, seed=1)
    (tmp_path / "m" / "c.wav").write_bytes(b"")
    return write_manifest(tmp_path / "m", [{"path": n} for n in ("a.wav", "b.wav", "c.wav")])


def test_exit_codes_default_strict_and_nothing_written(capsys, mixed, tmp_path):
    base = ["build", "manifest", mixed, "--workers", "1", "--no-progress"]
    code, out, _ = run(capsys, *base[:3], tmp_path / "o1", *base[3:])
    assert code == 0
    assert "3 inputs, 2 written, 1 rejected" in out and "wds-pipeline inspect" in out
    code, out, err = run(capsys, *base[:3], tmp_path / "o2", *base[3:], "--strict")
    assert code == 1 and "--strict: 1 inputs rejected" in err
    assert (tmp_path / "o2" / "train" / "index.json").exists()  # still written, then exit 1
    empty = write_manifest(tmp_path / "m", [{"path": "c.wav"}], name="empty.csv")
    code, out, err = run(capsys, "build", "manifest", empty, tmp_path / "o3", "--workers", "1",
                         "--no-progress")
    assert code == 1 and "1 inputs, 0 written, 1 rejected" in out
    assert "nothing was written" in err


def test_usage_errors_exit_2(capsys, libri, built, tmp_path):
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--codec", "mp3")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "build", "librispeech", tmp_path / "missing", tmp_path / "o")
    assert code == 2 and "is not a directory" in err
    code, _, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--codec", "flac",
                       "--compress", "zstd")
    assert code == 2 and "FLAC is already compressed" in err
    # OUT holds a different dataset (other shard size): refused, then replaced
    work = tmp_path / "w"
    shutil.copytree(built, work)
    before = tree_bytes(work)
    code, _, err = run(capsys, "build", "librispeech", libri, work, "--shard-size", "5",
                       "--workers", "1", "--no-progress")
    assert code == 2 and "already holds a different dataset" in err and "--overwrite" in err
    assert tree_bytes(work) == before
    code, out, err = run(capsys, "build", "librispeech", libri, work, "--shard-size", "5",
                         "--workers", "1", "--no-progress", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (work / "dev-clean").glob("*.tar")) == \
        ["shard-000000.tar", "shard-000001.tar"]


# ---------------------------------------------------------------------------
# inspect / verify


def test_inspect_shows_counts_shards_fields_and_examples(capsys, built):
    code, out, _ = run(capsys, "inspect", built, "--examples", "2")
    assert code == 0
    assert out.count("== ") == 2
    assert "== dev-clean" in out and "== train-clean-100" in out
    assert "samples 6, hours" in out and "(inputs 6, written 6, rejected 0)" in out
    assert "speakers/classes 2" in out and "shards 3, size min/median/max" in out
    assert "fields audio.npy, cls, json" in out
    first_keys = [line.split()[0] for line in out.split("examples (first shard):")[1]
                  .split("==")[0].strip().splitlines()]
    assert len(first_keys) == 2 and all(k.count("-") == 2 for k in first_keys)
    code, out1, _ = run(capsys, "inspect", built / "dev-clean")
    assert code == 0 and out1.count("== ") == 1
    code, out2, _ = run(capsys, "inspect", built / "dev-clean" / "index.json")
    assert out2 == out1


def test_inspect_lists_reject_reasons(capsys, mixed, tmp_path):
    assert main(["build", "manifest", str(mixed), str(tmp_path / "o"), "--workers", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "inspect", tmp_path / "o")
    assert "rejected 1 (decode 1):" in out
    assert "[decode] c.wav: cannot decode:" in out and "zero-byte" in out


def test_inspect_and_verify_missing_dataset(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", tmp_path)
    assert code == 1 and "no index.json" in err
    code, _, err = run(capsys, "verify", tmp_path / "nothing")
    assert code == 1 and "no such dataset folder" in err


def test_verify_passes_on_a_good_dataset(capsys, built):
    code, out, _ = run(capsys, "verify", built, "--no-progress")
    assert code == 0
    assert "dev-clean: OK - 3 shards, 6 samples checked" in out
    assert "verify OK: 2 split(s), 12 samples" in out


@pytest.fixture
def damaged(built, tmp_path) -> Path:
    work = tmp_path / "d"
    shutil.copytree(built, work)
    return work


def test_verify_detects_a_flipped_byte(capsys, damaged):
    tar = damaged / "dev-clean" / "shard-000001.tar"
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0x01  # inside the first sample's audio payload
    tar.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", damaged, "--no-progress")
    assert code == 1
    assert "dev-clean: FAILED (1 problems)" in out
    assert "shard-000001.tar: digest mismatch" in out
    assert "train-clean-100: OK" in out and "verify FAILED for dev-clean" in out


def test_verify_names_repair_and_build_repair_rebuilds_a_damaged_shard(capsys, libri, built,
                                                                      damaged):
    tar = damaged / "dev-clean" / "shard-000001.tar"
    good = tar.read_bytes()
    data = bytearray(good)
    data[2000] ^= 0x01  # same size: a plain rerun would call the split complete
    tar.write_bytes(bytes(data))
    build_argv = ["build", "librispeech", libri, damaged, "--shard-size", "2", "--workers", "1",
                  "--no-progress"]
    code, out, _ = run(capsys, "verify", damaged, "--no-progress")
    assert code == 1 and "with --repair" in out
    code, _, err = run(capsys, *build_argv, "--repair")
    assert code == 0
    assert "dev-clean: shard-000001.tar does not match its journal entry" in err
    assert tar.read_bytes() == good
    assert (damaged / "dev-clean" / "index.json").read_bytes() == \
        (built / "dev-clean" / "index.json").read_bytes()
    code, out, _ = run(capsys, "verify", damaged, "--no-progress")
    assert code == 0


def test_verify_detects_a_corrupt_header(capsys, damaged):
    tar = damaged / "dev-clean" / "shard-000000.tar"
    data = bytearray(tar.read_bytes())
    data[10] ^= 0x20  # first member's name: tar checksum no longer matches
    tar.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", damaged / "dev-clean", "--no-progress")
    assert code == 1
    assert "shard-000000.tar: digest mismatch" in out
    assert "shard-000000.tar: unreadable after 0 samples" in out and "checksum" in out


def test_verify_detects_a_truncated_shard(capsys, damaged):
    tar = damaged / "train-clean-100" / "shard-000002.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2 + 100])
    code, out, _ = run(capsys, "verify", damaged, "--no-progress")
    assert code == 1
    assert "shard-000002.tar: size" in out and "(truncated)" in out
    assert "shard-000002.tar: unreadable after" in out and "truncated" in out


def test_verify_detects_a_missing_shard(capsys, damaged):
    (damaged / "dev-clean" / "shard-000002.tar").unlink()
    code, out, _ = run(capsys, "verify", damaged, "--no-progress")
    assert code == 1 and "shard-000002.tar: missing" in out


def test_verify_detects_sample_count_mismatch(capsys, damaged):
    import json

    ix_path = damaged / "dev-clean" / "index.json"
    ix = json.loads(ix_path.read_text())
    ix["shardlist"][0]["nsamples"] = 3
    ix_path.write_text(json.dumps(ix))
    code, out, _ = run(capsys, "verify", damaged / "dev-clean", "--no-progress")
    assert code == 1 and "shard-000000.tar: 2 samples, index says 3" in out


# ---------------------------------------------------------------------------
# synth / demo


def test_synth_writes_corpora_the_sources_read(capsys, tmp_path):
    code, out, _ = run(capsys, "synth", "librispeech", tmp_path / "ls", "--speakers", "2",
                       "--chapters", "1", "--utterances", "2", "--max-seconds", "2")
    assert code == 0 and "wrote 4 files" in out
    assert len(list((tmp_path / "ls").rglob("*.flac"))) == 4
    code, out, _ = run(capsys, "synth", "voxceleb", tmp_path / "vc", "--vox1-speakers", "2",
                       "--vox2-speakers", "1", "--vox1-test-speakers", "1", "--videos", "1",
                       "--utterances", "2", "--max-seconds", "2")
    assert code == 0 and "wrote 6 files" in out
    code, out, _ = run(capsys, "build", "voxceleb", tmp_path / "vc", tmp_path / "o",
                       "--config", REPO / "configs" / "build_voxceleb.yaml", "--min-duration",
                       "0.5", "--workers", "1", "--no-progress")
    assert code == 0 and "6 inputs, 6 written, 0 rejected" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["test", "train"]
    idx = load_index(str(tmp_path / "o" / "train"))
    assert idx.fields == ["audio.npy.zst", "cls", "fbank.npy.zst", "json"]
    # The trial list is about VoxCeleb1's test speakers: the test split's index carries
    # its lines, and every listed utterance is a key of that split; train's list is empty.
    test = load_index(str(tmp_path / "o" / "test"))
    assert idx.extras["trials"] == {"veri_test2.txt": []}
    lines = test.extras["trials"]["veri_test2.txt"]
    assert lines and test.extras["trials_in_other_splits"] == {"veri_test2.txt": 0}
    ids = set()
    for i in range(len(test.shards)):
        with tarfile.open(test.shard_url(i)) as tar:
            ids |= {json.load(tar.extractfile(m))["id"] for m in tar if m.name.endswith(".json")}
    assert {p.rsplit(".", 1)[0] for _, a, b in lines for p in (a, b)} <= ids


def test_shipped_librispeech_config_builds(capsys, libri, tmp_path):
    code, out, err = run(capsys, "build", "librispeech", libri, tmp_path / "o", "--config",
                         REPO / "configs" / "build_librispeech.yaml", "--parts", "dev-clean",
                         "--workers", "1", "--no-progress")
    assert code == 0, err
    assert "6 inputs, 6 written, 0 rejected" in out


def test_demo_runs_end_to_end_and_reruns_complete(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--workdir", tmp_path / "demo", "--workers", "2",
                         "--epochs", "2")
    assert code == 0, err
    # Six datasets verified: librispeech, voxceleb, speakers, sessions, and the noise (musan)
    # and RIR (rirs) corpora the demo's augmentation draws from.
    assert "demo OK" in out and out.count("verify OK") == 6
    assert "one epoch of" in out
    assert "FAIL" not in out and "PASS  loader vs model" in out  # preflight passes on the demo
    assert "trained 2 epoch(s)" in out
    # Trained with augmentation; scored clean and on the noisy copy (the voxceleb trials: an EER).
    assert re.search(r"summary \(augmented training\): validation accuracy [\d.]+% .*EER [\d.]+%; "
                     r"on the noisy copy: accuracy [\d.]+%, EER [\d.]+%", out), out[-800:]
    steps = int(re.search(r"trained 2 epoch\(s\), (\d+) optimizer steps", out).group(1))
    last = f"ckpt-{steps:09d}.pt"
    assert (tmp_path / "demo" / "run" / "checkpoints" / last).exists()
    code, out, err = run(capsys, "demo", "--workdir", tmp_path / "demo", "--workers", "1",
                         "--epochs", "2")
    assert code == 0 and out.count("already complete") == 6
    assert f"resumed from {tmp_path / 'demo' / 'run' / 'checkpoints' / last}" in out  # nothing left


def test_make_clip_corpus_helper_builds(tmp_path, capsys):
    manifest = make_clip_corpus(tmp_path, n=2)
    code, out, _ = run(capsys, "build", "manifest", manifest, tmp_path / "o", "--workers", "1",
                       "--no-progress", "--no-shuffle")
    assert code == 0 and "2 inputs, 2 written" in out
