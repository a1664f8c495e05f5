"""The speaker-verification recipe end to end on a small synthetic VoxCeleb-layout corpus:
``configs/voxceleb_ecapa.yaml`` parses as the published recipe and, scaled down with
``--set``, trains; ``wds-pipeline embed`` + ``wds-pipeline score`` reproduce the EER the
trainer reported for the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from augment_corpora import build_noise_corpora
from cli_run import cli

from wds_pipeline import synth
from wds_pipeline.builder import BuildOptions, build_dataset
from wds_pipeline.train.config import load_config
from wds_pipeline.train.losses import CosineClassifier
from wds_pipeline.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "voxceleb_ecapa.yaml")
TRAIN_SPEAKERS, TEST_SPEAKERS = 4, 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """VoxCeleb1 layout, 4 training and 3 test speakers (2 videos x 3 utterances of 1-2 s
    each), built with ``--kaldi-split`` (the test index carries veri_test2.txt's 36 trials),
    and tiny MUSAN and RIRS_NOISES shards for the config's augment block."""
    root = tmp_path_factory.mktemp("sv-recipe")
    synth.synth_voxceleb(str(root / "vox"), vox1_speakers=TRAIN_SPEAKERS + TEST_SPEAKERS, vox2_speakers=0,
                         videos_per_speaker=2, utterances_per_video=3, vox1_test_speakers=TEST_SPEAKERS,
                         min_seconds=1.0, max_seconds=2.0, seed=5)
    build_dataset("voxceleb", str(root / "vox"), str(root / "shards"), source_options={"kaldi_split": True},
                  options=BuildOptions(workers=1, progress=False, shard_size=8), log=lambda _: None)
    noise = build_noise_corpora(root)
    return {"root": str(root), "train": str(root / "shards" / "train" / "index.json"),
            "test": str(root / "shards" / "test" / "index.json"), **noise}


def scaled_down(corpus: dict[str, str], out: Path, *extra: str) -> list[str]:
    """``--set`` overrides that point the recipe at the tiny corpus, with tiny sizes."""
    return [f"data.train=[{corpus['train']}]", f"data.valid=[{corpus['test']}]",
            f"augment.noise_index={corpus['noise']}", f"augment.rir_index={corpus['rirs']}",
            "model.channels=16", "loader.batch_size=4", "loader.num_workers=0", "loader.crop_seconds=0.5",
            "loader.prefetch_factor=null", "loader.pin_memory=false", "loader.persistent_workers=false",
            "optim.warmup_steps=2", "checkpoint.every_steps=4", f"checkpoint.dir={out / 'ckpt'}",
            f"run.out_dir={out}", "run.device=cpu", "run.precision=fp32", "run.num_threads=1",
            "run.progress=false", "run.preflight=false", "run.tensorboard=false", *extra]


def test_voxceleb_ecapa_config_is_the_published_recipe():
    cfg = load_config(CONFIG)
    assert cfg.model.factory == "wds_pipeline.train.ecapa:ecapa_tdnn"
    assert cfg.model.options == {"channels": 512, "embedding_dim": 192}
    assert (cfg.loss.name, cfg.loss.scale, cfg.loss.margin) == ("aam", 32.0, 0.2)
    assert (cfg.loss.margin_hold_epochs, cfg.loss.margin_warmup_epochs, cfg.loss.margin_increase) == (20, 20, "exp")
    assert (cfg.loader.batch_size, cfg.loader.last_batch) == (128, "drop")
    assert round(cfg.loader.crop_seconds * 16000) == 32240  # 200 frames of 25 ms every 10 ms
    assert cfg.run.epochs == 150 and cfg.data.valid_max_seconds is None
    assert (cfg.checkpoint.metric, cfg.checkpoint.mode, cfg.checkpoint.keep_last) == ("valid_eer", "min", 10)
    assert cfg.augment is not None and cfg.augment.speed is not None and cfg.augment.speed.as_classes
    assert cfg.augment.reverb is not None and cfg.augment.noise is not None
    assert cfg.augment.reverb.probability + cfg.augment.noise.probability == pytest.approx(0.6)
    assert cfg.augment.spec_augment is None


def test_voxceleb_ecapa_scaled_down_with_set_trains(corpus, tmp_path):
    """The recipe's every block (ECAPA, AAM with its margin schedule, speed copies as
    classes, reverb and noise from the banks) runs a few steps on the tiny corpus."""
    cfg = load_config(CONFIG, scaled_down(corpus, tmp_path / "run", "run.max_steps=3", "run.epochs=2",
                                          "run.log_every=1"))
    trainer = Trainer(cfg, log=lambda _: None)
    summary = trainer.fit()
    assert summary.steps == 3
    # Speed copies as classes: each training speaker at 0.9, 1.0 and 1.1.
    assert summary.num_classes == 3 * TRAIN_SPEAKERS
    assert summary.last_checkpoint is not None and summary.last_checkpoint.endswith("ckpt-000000003.pt")
    assert isinstance(trainer.model.classifier, CosineClassifier)  # AAM-softmax's head
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


# (model, loss, extra overrides, extra embed flags). ECAPA masks every sum and convolution
# input past a row's length, so its embeddings do not depend on the batch they are padded
# into: validation (16 a batch, index order) and embed (by duration) batch as they do by
# default. The default TDNN's convolutions see the padded frames, so its embedding of an
# utterance moves a little with its batch's padding (on benchmarks/speaker_recipe.py's corpus:
# EER 10.67% from embed, 10.58% from validation): both sides embed one utterance at a time.
MODELS = {
    "ecapa_aam": ("{factory: wds_pipeline.train.ecapa:ecapa_tdnn, channels: 16}", "{name: aam}", (), ()),
    "tdnn_ce": ("{factory: wds_pipeline.train.models:speaker_tdnn, channels: 16, embed_dim: 16}", "{name: ce}",
                ("data.valid_batch_size=1",), ("--batch-seconds", "0.1")),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_embed_and_score_reproduce_the_trainers_eer(corpus, tmp_path, name):
    """The trainer validates its last checkpoint on the test index's trials; ``wds-pipeline
    embed`` of that index with that checkpoint, then ``wds-pipeline score`` of the index's
    trial list, give the same EER and minDCF. Both embed whole utterances: validation crops
    only utterances longer than data.valid_max_seconds (20 s; these are 1-2 s) and embed runs
    without --chunk-seconds."""
    model, loss, overrides, embed_flags = MODELS[name]
    out = tmp_path / "run"
    cfg = load_config(CONFIG, scaled_down(corpus, out, f"model={model}", f"loss={loss}", "augment=null",
                                          "run.epochs=3", "optim.lr=0.01", *overrides))
    Trainer(cfg, log=lambda _: None).fit()
    trainer = [r for r in map(json.loads, open(out / "metrics.jsonl")) if r["kind"] == "valid"][-1]
    p = cli("embed", "--checkpoint", out / "ckpt", corpus["test"], tmp_path / "emb", "--device", "cpu",
            "--no-progress", *embed_flags)
    assert p.returncode == 0, p.stderr
    p = cli("score", tmp_path / "emb", "--trials", corpus["test"], "--out", tmp_path / "scores")
    assert p.returncode == 0, p.stderr
    scored = json.loads((tmp_path / "scores" / "report.json").read_text())["lists"]["veri_test2"]
    assert (scored["trials"], scored["scored"], scored["missing"]) == (36, 36, 0)
    figures = scored["results"]["cosine"]
    # One trial list: the trainer reports its figures without a /<list> suffix.
    assert trainer["valid_trials"] == 36
    assert figures["eer"] == pytest.approx(trainer["valid_eer"], abs=1e-9)
    for p_target in ("0.01", "0.05"):
        assert figures[f"min_dcf_{p_target}"] == pytest.approx(trainer[f"valid_min_dcf_{p_target}"], abs=1e-9)
