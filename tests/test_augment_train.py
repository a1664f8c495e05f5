"""The trainer's ``augment`` block: parsed into the transforms' own dataclasses (their
defaults, the recipe's), compiled to the seam's specs, its noise and RIR banks read from
shards through the loader (local, gs://, a FUSE mount; bounded by a byte budget), SpecAugment
run on the model's fbank through its feature hook. The bitwise resume with every
augmentation on is in test_resume.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from augment_corpora import MUSAN_CLIPS, RIRS_PER_ROOM, build_noise_corpora
from shardgen import make_dataset
from test_train import (
    REPO,
    assert_same_weights,
    batches_by_position,
    checkpoint_steps,
    cli_env,
    final_weights,
    run_cli,
)
from trainer_helpers import small_config, wait_until_held, write_config

from wds_pipeline.errors import ConfigError
from wds_pipeline.loader import LoaderConfig
from wds_pipeline.sources.musan import SUBSETS
from wds_pipeline.train.augment import AugmentConfig
from wds_pipeline.train.banks import FLOAT32_BYTES, load_banks
from wds_pipeline.train.config import load_config, loader_config, parse_config
from wds_pipeline.train.models import SpeakerTDNN
from wds_pipeline.train.stage import DeviceStage
from wds_pipeline.train.trainer import Trainer
from wds_pipeline.transforms import TransformSpec
from wds_pipeline.transforms.noise import AddNoise
from wds_pipeline.transforms.reverb import Reverb
from wds_pipeline.transforms.specaugment import SpecAugment
from wds_pipeline.transforms.speed import Speed


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    return build_noise_corpora(tmp_path_factory.mktemp("augment-corpora"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("speech")), [12, 12], speakers=3)


def config(speech: str, out: str, augment=None):
    doc = small_config(speech, out)
    if augment is not None:
        doc["augment"] = augment
    return parse_config(doc, "test.yaml")


def test_block_takes_the_transforms_defaults_and_compiles_in_order(speech, tmp_path):
    cfg = config(speech, str(tmp_path), {"noise_index": "n/index.json", "rir_index": "r/index.json",
                                         "speed": {}, "reverb": {}, "noise": {"probability": 0.5},
                                         "spec_augment": {}, "bank_bytes": "64MB"})
    a = cfg.augment
    assert a == AugmentConfig(noise_index="n/index.json", rir_index="r/index.json", speed=Speed(),
                              reverb=Reverb(), noise=AddNoise(probability=0.5), spec_augment=SpecAugment(),
                              bank_bytes=64_000_000)
    assert a.rir_categories == ("smallroom", "mediumroom")  # Kaldi's VoxCeleb recipe
    specs = a.specs()
    assert [s.name for s in specs.sample] == ["speed"]
    assert [s.name for s in specs.batch] == ["reverb", "noise"]  # reverberate the clean signal, then add noise
    assert [s.name for s in specs.feature] == ["spec_augment"]
    assert specs.batch[1].params["probability"] == 0.5 and "bank" not in specs.batch[1].params
    assert specs.batch[1].params["kinds"][2] == {"category": "speech", "min_snr_db": 13.0, "max_snr_db": 20.0,
                                                 "min_clips": 3, "max_clips": 7, "weight": 1.0}
    # speed runs in the loader's workers, before any configured sample transform
    gain = {"name": "gain", "params": {}}
    doc = small_config(speech, str(tmp_path), loader={"sample_transforms": [gain]})
    doc["augment"] = {"speed": {"factors": [0.9, 1.1]}}
    assert [s.name for s in loader_config(parse_config(doc, "t")).sample_transforms] == ["speed", "gain"]
    assert config(speech, str(tmp_path)).augment is None
    assert loader_config(config(speech, str(tmp_path))) == config(speech, str(tmp_path)).loader


@pytest.mark.parametrize("block,message", [
    ({"noise": {}}, "test.yaml: augment: noise needs noise_index"),
    ({"reverb": {}}, "test.yaml: augment: reverb needs rir_index"),
    ({"nosie": {}}, "test.yaml: augment: unknown key 'nosie'"),
    ({"noise_index": "x", "noise": {"probability": 2}}, "test.yaml: augment.noise: probability must be in [0, 1]"),
    ({"bank_bytes": "lots"}, "test.yaml: augment.bank_bytes: expected a size"),
])
def test_bad_blocks_are_config_errors_naming_the_key(speech, tmp_path, block, message):
    with pytest.raises(ConfigError) as e:
        config(speech, str(tmp_path), block)
    assert message in str(e.value)


def test_banks_are_read_from_the_shards_with_their_categories(corpora):
    a = AugmentConfig.recipe(corpora["noise"], corpora["rirs"])
    banks = load_banks(a, LoaderConfig(), sample_rate=16000, device="cpu")
    assert banks.noise is not None and banks.rirs is not None
    per_category = {c: MUSAN_CLIPS * len(s) for c, s in SUBSETS.items()}
    assert dict(zip(banks.noise.categories, banks.noise.count.tolist())) == per_category
    assert banks.noise.lengths.tolist() == [8000] * sum(per_category.values())  # whole 0.5 s clips
    assert len(banks.rirs.lengths) == 2 * RIRS_PER_ROOM  # small and medium rooms only
    assert torch.all(banks.rirs.rirs[:, 0] == 1.0)  # aligned on the direct path
    every_rir = load_banks(AugmentConfig(rir_index=corpora["rirs"], reverb=Reverb(),
                                         rir_categories=("smallroom", "mediumroom", "largeroom", "real")),
                           LoaderConfig(), sample_rate=16000, device="cpu")
    assert every_rir.noise is None and len(every_rir.rirs.lengths) == 3 * RIRS_PER_ROOM + 1
    with pytest.raises(ConfigError, match=r"no clip of categories \['hall'\]; it has isotropic_noise, largeroom, "
                                          "mediumroom, pointsource_noise, real, smallroom"):
        load_banks(AugmentConfig(rir_index=corpora["rirs"], reverb=Reverb(), rir_categories=("hall",)),
                   LoaderConfig(), sample_rate=16000, device="cpu")


def test_the_byte_budget_skips_clips_deterministically(corpora):
    frames, budget = 8000 // 2, 3 * 8000 // 2 * FLOAT32_BYTES  # room for three clips of max_clip_seconds
    a = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(), bank_bytes=budget,
                      max_clip_seconds=frames / 16000)
    one = load_banks(a, LoaderConfig(), sample_rate=16000, device="cpu").noise
    two = load_banks(a, LoaderConfig(), sample_rate=16000, device="cpu").noise
    assert one is not None and two is not None
    assert len(one.lengths) == 3 and one.lengths.tolist() == [frames] * 3
    assert torch.equal(one.clips, two.clips) and one.categories == two.categories
    with pytest.raises(ConfigError, match="no clip fits augment.bank_bytes=8"):
        load_banks(AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(), bank_bytes=8),
                   LoaderConfig(), sample_rate=16000, device="cpu")
    with pytest.raises(ConfigError, match="its clips are at 16000 Hz, the training data at 8000 Hz"):
        load_banks(a, LoaderConfig(), sample_rate=8000, device="cpu")


def test_a_requested_category_missing_from_the_noise_index_is_a_clear_error(corpora):
    noise = AddNoise(kinds=AddNoise().kinds[:1] + (AddNoise().kinds[0].__class__("babble", 0.0, 5.0),))
    a = AugmentConfig(noise_index=corpora["noise"], noise=noise)
    with pytest.raises(ConfigError, match="no clips of category 'babble'; it has music .*noise .*speech"):
        DeviceStage(a, (), loader=LoaderConfig(), sample_rate=16000, seed=0, rank=0, device=torch.device("cpu"))


def test_spec_augment_runs_on_the_models_fbank_while_training_only():
    a = AugmentConfig(spec_augment=SpecAugment(probability=1.0, time_masks=2, freq_masks=2))
    stage = DeviceStage(a, (), loader=LoaderConfig(), sample_rate=16000, seed=5, rank=0,
                        device=torch.device("cpu"))
    model = SpeakerTDNN(3, channels=8, embed_dim=4, dither=0.0)
    wave = torch.randn(2, 4000) * 0.1
    lengths = torch.tensor([4000, 3000])
    plain, frames = model.features(wave, lengths)
    model.feature_hook = stage.feature_hook(epoch=1, index=7)
    masked, _ = model.features(wave, lengths)
    again, _ = model.features(wave, lengths)
    assert torch.equal(masked, again)  # a pure function of (seed, epoch, batch, rank)
    changed = masked != plain
    assert changed.any() and torch.all(masked[changed] == 0.0)
    for row, n in enumerate(frames.tolist()):
        assert not changed[row, n:].any()  # frames past a row's length untouched
    model.feature_hook = stage.feature_hook(epoch=1, index=8)
    assert not torch.equal(model.features(wave, lengths)[0], masked)
    model.eval()
    assert torch.equal(model.features(wave, lengths)[0], plain)


def test_spec_augment_needs_a_model_with_a_feature_hook(speech, tmp_path):
    cfg = config(speech, str(tmp_path), {"spec_augment": {}})
    doc = cfg.to_dict()
    doc["model"] = {"factory": "trainer_helpers:mean_model"}
    doc["augment"] = {"spec_augment": {}}
    with pytest.raises(ConfigError, match="augment.spec_augment: the model of trainer_helpers:mean_model has no "
                                          "feature_hook"):
        Trainer(parse_config(doc, "t"))


def test_the_block_joins_the_checkpoint_fingerprint_only_when_set(speech, corpora, tmp_path):
    plain = Trainer(config(speech, str(tmp_path / "a")))
    assert "augment" not in plain.fingerprints() and "batch_transforms" not in plain.fingerprints()
    block = {"noise_index": corpora["noise"], "noise": {}, "spec_augment": {}}
    augmented = Trainer(config(speech, str(tmp_path / "b"), block))
    fp = augmented.fingerprints()["augment"]
    assert fp["noise"]["probability"] == AddNoise().probability and fp["noise_index"] == corpora["noise"]
    assert [t.name for t in augmented.batch_stage.chain.specs] == ["noise"]
    assert augmented.batch_stage.chain.transforms[0].bank is not None  # bound
    assert TransformSpec("noise", {}).name == "noise"


def test_noise_shards_on_gcs_and_a_fuse_mount_are_read_through_the_cache(
        corpora, gcs_emulator, slowfs_factory, tmp_path):
    local_dir = Path(corpora["noise"]).parent
    a = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise())
    want = load_banks(a, LoaderConfig(), sample_rate=16000, device="cpu").noise
    for p in sorted(q for q in local_dir.iterdir() if q.is_file()):
        gcs_emulator.fs.pipe_file(f"{gcs_emulator.bucket}/noise/{p.name}", p.read_bytes())
    mount = slowfs_factory("drive")
    shutil.copytree(local_dir, os.path.join(mount.source, "noise"))
    for name, index, options in (
            ("gcs", gcs_emulator.gs("noise/index.json"), dict(gcs_emulator.storage_options)),
            ("fuse", os.path.join(mount.mountpoint, "noise", "index.json"), {})):
        cache = tmp_path / f"cache-{name}"
        got = load_banks(AugmentConfig(noise_index=index, noise=AddNoise()),
                         LoaderConfig(cache_dir=str(cache), storage_options=options),
                         sample_rate=16000, device="cpu").noise
        assert got is not None and torch.equal(got.clips, want.clips) and got.categories == want.categories
        shards = sorted(p.name for p in local_dir.iterdir() if p.suffix == ".tar")
        cached = sorted(os.listdir(cache / "data"))  # <url digest>-<shard name>
        assert [c.split("-", 1)[1] for c in cached] == shards, name


def test_augmentation_changes_the_batches_but_not_which_samples(speech, corpora, tmp_path):
    block = {"noise_index": corpora["noise"], "rir_index": corpora["rirs"], "reverb": {"probability": 1.0},
             "noise": {"probability": 1.0}}
    stage = Trainer(config(speech, str(tmp_path), block)).batch_stage
    from wds_pipeline.transforms.batch import DeviceBatch

    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 1600)).astype(np.float32) * 0.1)
    batch = DeviceBatch(wave, torch.tensor([1600, 1600, 800, 1600]), torch.tensor([0, 1, 2, 0]),
                        torch.ones(4, dtype=torch.bool))
    out = stage(batch, epoch=0, index=3)
    assert torch.equal(out.wave, stage(batch, epoch=0, index=3).wave)
    assert not torch.equal(out.wave, wave) and torch.equal(out.labels, batch.labels)
    assert torch.all(out.wave[2, 800:] == 0)
    assert Counter(out.lengths.tolist()) == Counter(batch.lengths.tolist())


def test_the_shipped_augment_config_parses_with_every_augmentation_on():
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "configs" / "augment.yaml"))
    assert cfg.augment == AugmentConfig.recipe("noise/shards/musan/train/index.json",
                                               "noise/shards/rirs/train/index.json", bank_bytes=512 * 10**6)


def test_sigkill_and_resume_of_wds_pipeline_train_with_every_augmentation_on(corpora, tmp_path):
    """The CLI with speed (in 2 DataLoader workers), reverb, noise and SpecAugment on, killed
    with SIGKILL after its first mid-epoch checkpoint and run again: the uninterrupted run's
    weights, bit for bit, and the same batches."""
    augment = {"noise_index": corpora["noise"], "rir_index": corpora["rirs"], "speed": {},
               "reverb": {"probability": 0.7}, "noise": {"probability": 0.7}, "spec_augment": {}}
    kill_and_resume(tmp_path, augment)


def test_sigkill_and_resume_with_banks_refreshed_every_two_batches(corpora, tmp_path):
    """Noise and RIR corpora over augment.bank_bytes (a subset of each per two batches): the
    run killed mid-segment rebuilds the bank the uninterrupted run held at that batch."""
    augment = {"noise_index": corpora["noise"], "rir_index": corpora["rirs"], "reverb": {"probability": 0.7},
               "noise": {"probability": 0.7}, "bank_bytes": 3 * 4000 * FLOAT32_BYTES, "max_clip_seconds": 0.25,
               "bank_refresh_batches": 2}  # 3 of the 9 noise clips, 3 of the 4 RIRs at a time
    kill_and_resume(tmp_path, augment)


def kill_and_resume(tmp_path: Path, augment: dict) -> None:
    """``wds-pipeline train`` with ``augment``, killed with SIGKILL two steps after its first
    mid-epoch checkpoint (held there: exact on any machine) and run again: the weights of the
    same config trained uninterrupted (by the Trainer in this process), bit for bit, and the
    same batches."""
    data = make_dataset(str(tmp_path / "speech"), [16, 16, 16], speakers=4)
    held = str(tmp_path / "held")

    def cfg(name: str) -> str:
        hold = {"hold_after": 7, "hold_file": held} if name == "cut" else {}
        doc = small_config(data, str(tmp_path / name), loader={"num_workers": 2, "persistent_workers": True},
                           model={"factory": "trainer_helpers:slow_tdnn", "delay": 0.03, **hold},
                           checkpoint={"every_steps": 5}, run={"epochs": 3, "keys_log": str(tmp_path / f"{name}.keys")})
        return write_config(str(tmp_path / f"{name}.yaml"), {**doc, "augment": augment})

    ref, cut = cfg("ref"), cfg("cut")
    Trainer(load_config(ref)).fit()  # in this process: one interpreter start less
    killed = subprocess.Popen([sys.executable, "-m", "wds_pipeline.cli", "train", "--config", cut], env=cli_env(),
                              cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:  # held in the forward of step 8, the checkpoint of step 5 written
        wait_until_held(killed, held)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the trainer and its workers
        killed.wait()
    assert checkpoint_steps(str(tmp_path / "cut" / "ckpt")) == [5], "not killed mid-epoch"
    resumed = run_cli("train", "--config", cut, timeout=300)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr + resumed.stdout, resumed.stderr
    assert_same_weights(final_weights(str(tmp_path / "ref" / "ckpt")), final_weights(str(tmp_path / "cut" / "ckpt")))
    assert batches_by_position(str(tmp_path / "cut.keys")) == batches_by_position(str(tmp_path / "ref.keys"))
