"""Preflight: each check fails where it should, with its fix, on real files and a real FUSE mount."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from shardgen import make_dataset
from trainer_helpers import small_config, write_config

from wds_pipeline.train.config import parse_config
from wds_pipeline.train.preflight import run_preflight


def checks(report) -> dict[str, tuple[str, str, str]]:
    return {c.name: (c.status, c.detail, c.fix) for c in report.checks}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("pf-data")), [16, 16], speakers=4)


def test_passes_on_local_shards_with_the_default_model(data, tmp_path):
    r = run_preflight(parse_config(small_config(data, str(tmp_path)), "t"))
    got = checks(r)
    assert r.ok, r.to_text()
    assert {k: v[0] for k, v in got.items()} == {
        "audio backends": "pass", "train data": "pass", "sample decodes": "pass", "shard cache": "pass",
        "checkpoint dir": "pass", "GPU": "warn", "embedding": "pass", "loader vs model": "pass"}
    assert r.figures["loader_batches_per_s"] > 0 and r.figures["model_batches_per_s"] > 0


def test_per_file_audio_on_a_fuse_mount_fails_with_the_build_command(tmp_path, slowfs_factory):
    m = slowfs_factory("drive", latency_ms=1, bandwidth_mbps=None)
    os.makedirs(os.path.join(m.source, "clips", "spk1"))
    sf.write(os.path.join(m.source, "clips", "spk1", "a.wav"), np.zeros(1600, np.int16), 16000)
    folder = os.path.join(m.mountpoint, "clips")
    r = run_preflight(parse_config(small_config(folder, str(tmp_path)), "t"))
    status, detail, fix = checks(r)["train data"]
    assert not r.ok and status == "fail"
    assert "a folder of audio files on a FUSE mount" in detail
    assert fix.startswith("convert it to shards once: wds-pipeline build") and folder in fix


def test_a_loader_slower_than_the_model_fails_naming_the_cause(tmp_path, slowfs_factory):
    # Shards on a 0.2 MB/s Drive stand-in, read without a cache, against a model that does
    # next to nothing: the loader cannot keep up.
    # One batch per shard, so every timed batch waits for the link.
    m = slowfs_factory("slow", latency_ms=20, bandwidth_mbps=0.2)
    make_dataset(os.path.join(m.source, "ds"), [4] * 8, speakers=4)
    index = os.path.join(m.mountpoint, "ds", "index.json")
    doc = small_config(index, str(tmp_path), loader={"cache_dir": False},
                       model={"factory": "trainer_helpers:mean_model"}, run={"preflight_batches": 3})
    del doc["model"]["channels"], doc["model"]["embed_dim"]
    r = run_preflight(parse_config(doc, "t"))
    got = checks(r)
    assert got["shard cache"][0] == "warn" and "cache_dir is false" in got["shard cache"][1]
    status, detail, fix = got["loader vs model"]
    assert status == "fail" and not r.ok
    assert "below the 1.2x margin" in detail
    assert fix == "shards are read from Drive/GCS without a cache: set loader.cache_dir to local disk"


def test_missing_shard_and_unwritable_checkpoint_dir_fail(tmp_path):
    index = make_dataset(str(tmp_path / "ds"), [4, 4], speakers=2)
    os.remove(tmp_path / "ds" / "shard-000001.tar")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    doc = small_config(index, str(tmp_path / "run"), checkpoint={"dir": str(blocker / "ckpt")})
    r = run_preflight(parse_config(doc, "t"))
    got = checks(r)
    assert got["train data"][0] == "fail" and "shard-000001.tar is missing" in got["train data"][1]
    assert got["checkpoint dir"][0] == "fail" and str(blocker / "ckpt") in got["checkpoint dir"][1]
    assert "loader vs model" not in got  # not measured on data that is known broken


def test_cli_json_and_exit_status(data, tmp_path):
    from test_train import run_cli

    ok = write_config(str(tmp_path / "ok.yaml"), small_config(data, str(tmp_path / "run")))
    p = run_cli("preflight", "--config", ok, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is True and {c["name"] for c in doc["checks"]} >= {"train data", "loader vs model"}
    broken = tmp_path / "broken"
    shutil.copytree(os.path.dirname(data), broken)
    with open(broken / "shard-000000.tar", "r+b") as f:
        f.truncate(100)
    bad = write_config(str(tmp_path / "bad.yaml"), small_config(str(broken / "index.json"), str(tmp_path / "r2")))
    p = run_cli("preflight", "--config", bad)
    assert p.returncode == 1 and "FAIL  train data" in p.stdout and "has 100 bytes" in p.stdout
    p = run_cli("train", "--config", bad, "--set", "run.preflight=true")  # stops on a fail
    assert p.returncode == 1 and "preflight failed" in p.stderr


def test_loader_rate_is_measured_across_short_epochs_not_only_at_start_up():
    # On an H200 the demo's own preflight failed: its epoch is 4 batches, so the old
    # measurement timed 3 batches right after worker start-up. A real loader that slow at
    # start cannot be arranged on this CPU machine, hence a stand-in iterable: what is
    # checked is how many batches and epochs the measurement consumes.
    from wds_pipeline.train.preflight import _loader_rate

    class Epochs:
        def __init__(self, per_epoch: int) -> None:
            self.per_epoch, self.epochs, self.pulled = per_epoch, 0, 0

        def __iter__(self):
            self.epochs += 1
            for i in range(self.per_epoch):
                self.pulled += 1
                yield i

    loader = Epochs(4)
    assert _loader_rate(loader, batches=10, min_seconds=0.0) > 0
    assert loader.pulled == 11 and loader.epochs == 3  # the first batch, then 10 timed
    assert _loader_rate(Epochs(0), batches=10, min_seconds=0.0) == float("inf")


@pytest.fixture(scope="module")
def noise_corpora(tmp_path_factory) -> dict[str, str]:
    from augment_corpora import build_noise_corpora

    return build_noise_corpora(tmp_path_factory.mktemp("pf-noise"))


def augmented(data: str, out: str, corpora: dict[str, str], **block):
    doc = small_config(data, out)
    doc["augment"] = {"noise_index": corpora["noise"], "rir_index": corpora["rirs"], "noise": {}, "reverb": {},
                      **block}
    return parse_config(doc, "t.yaml")


def bank_checks(report) -> list[tuple[str, str, str, str]]:
    return [(c.name, c.status, c.detail, c.fix) for c in report.checks if c.name in ("noise index", "RIR index")]


def test_the_augment_blocks_noise_and_rir_indexes_pass_with_what_the_bank_holds(data, noise_corpora, tmp_path):
    from wds_pipeline.train.preflight import PreflightReport
    from wds_pipeline.train.preflight_banks import check_bank_indexes

    r = run_preflight(augmented(data, str(tmp_path), noise_corpora))
    assert r.ok, r.to_text()
    noise, rirs = noise_corpora["noise"], noise_corpora["rirs"]
    assert bank_checks(r) == [
        ("noise index", "pass", f"augment.noise_index {noise}: 9 clips, with the categories music, noise, speech; "
                                "the whole corpus fits "
                                "augment.bank_bytes: read once", ""),
        ("RIR index", "pass", f"augment.rir_index {rirs}: 9 clips, with the categories mediumroom, smallroom; "
                              "the whole corpus fits "
                              "augment.bank_bytes: read once", "")]
    small = PreflightReport()
    check_bank_indexes(small, augmented(data, str(tmp_path), noise_corpora, bank_bytes=4 * 8000 * 4,
                                        bank_refresh_batches=4), [])
    assert [c.detail.split("; ")[1] for c in small.checks] == [
        "larger than augment.bank_bytes: a subset at a time, a new one every 4 batches"] * 2


def test_augment_index_problems_fail_one_line_each_naming_the_key_and_the_fix(data, noise_corpora, tmp_path):
    noise, rirs = noise_corpora["noise"], noise_corpora["rirs"]
    missing = str(tmp_path / "nowhere" / "index.json")
    r = run_preflight(augmented(data, str(tmp_path), {"noise": missing, "rirs": rirs}))
    assert not r.ok and "loader vs model" not in checks(r)
    [(name, status, detail, fix), rir] = bank_checks(r)
    assert (name, status, rir[1]) == ("noise index", "fail", "pass")
    assert detail.startswith(f"augment.noise_index {missing}: cannot read it (") and missing in detail
    assert fix == "check the URL, or build the corpus: wds-pipeline build musan <musan folder> <out>"

    kinds = [{"category": "noise", "min_snr_db": 0, "max_snr_db": 15},
             {"category": "babble", "min_snr_db": 13, "max_snr_db": 20}]
    r = run_preflight(augmented(data, str(tmp_path), noise_corpora, noise={"kinds": kinds},
                                rir_categories=["smallroom", "hall"], bank_bytes=8))
    assert bank_checks(r) == [
        ("noise index", "fail", f"augment.noise_index {noise}: no clips of categories ['babble']; it has music, noise, "
                                "speech", "drop them from augment.noise.kinds, or build a corpus that has them"),
        ("noise index", "fail", f"augment.noise_index {noise}: augment.bank_bytes=8 holds no clip of each of its 2 "
                                "categories: the shortest clip has 8000 frames after max_clip_seconds (one of each, "
                                "float32: 64000 bytes)",
         "raise augment.bank_bytes to at least 64000 or lower augment.max_clip_seconds"),
        ("RIR index", "fail", f"augment.rir_index {rirs}: no clips of categories ['hall']; it has isotropic_noise, "
                              "largeroom, mediumroom, pointsource_noise, real, smallroom",
         "set augment.rir_categories to some of the corpus's categories"),
        ("RIR index", "fail", f"augment.rir_index {rirs}: augment.bank_bytes=8 holds no clip of each of its 2 "
                              "categories: the shortest clip has 4000 frames after max_clip_seconds (one of each, "
                              "float32: 32000 bytes)",
         "raise augment.bank_bytes to at least 32000 or lower augment.max_clip_seconds")]

    narrow = make_dataset(str(tmp_path / "8k"), [4, 4], speakers=2, sample_rate=8000)
    r = run_preflight(augmented(narrow, str(tmp_path / "8k-run"), noise_corpora))
    assert [c[1:] for c in bank_checks(r)] == [
        ("fail", f"augment.noise_index {noise}: its clips are at 16000 Hz, the training data at 8000 Hz",
         "rebuild the corpus with --sample-rate 8000: wds-pipeline build musan <musan folder> <out> --sample-rate 8000"),
        ("fail", f"augment.rir_index {rirs}: its clips are at 16000 Hz, the training data at 8000 Hz",
         "rebuild the corpus with --sample-rate 8000: wds-pipeline build rirs <RIRS_NOISES folder> <out> "
         "--sample-rate 8000")]
