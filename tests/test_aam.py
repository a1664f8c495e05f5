"""AAM-softmax and its margin warm-up (train/losses.py, the ``loss`` block): the logits against
the formula written in numpy, the schedule's values, cross-entropy unchanged as the default,
and a trainer run with ECAPA-TDNN + AAM that checkpoints and resumes bit for bit."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shardgen import make_dataset
from test_resume import SAMPLES, trainer_case
from trainer_helpers import small_config

from wds_pipeline.errors import ConfigError, ResumeMismatch
from wds_pipeline.train.config import LossConfig, parse_config
from wds_pipeline.train.losses import CosineClassifier, Criterion, aam_logits, margin_at
from wds_pipeline.train.models import speaker_tdnn
from wds_pipeline.train.trainer import Trainer


def numpy_aam(cosine: np.ndarray, labels: np.ndarray, s: float, m: float, easy: bool) -> np.ndarray:
    """The formula, row by row: cos(theta + m) on the target, with the th / (1 + cos(pi - m))
    fallback (or easy margin), every entry times s."""
    out = cosine.astype(np.float64).copy()
    for row, label in enumerate(labels):
        c = float(cosine[row, label])
        theta = math.acos(c)
        if easy:
            phi = math.cos(theta + m) if c > 0 else c
        else:
            th = math.cos(math.pi - m)
            phi = math.cos(theta + m) if c > th else c - (1.0 + th)
        out[row, label] = phi
    return s * out


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_aam_logits_equal_the_formula(easy, margin):
    rng = np.random.default_rng(7)
    cosine = rng.uniform(-1, 1, size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    # Targets near pi (theta + m past pi: the fallback), near 0, and at the threshold's sides.
    th = math.cos(math.pi - margin)
    near = np.clip([-1.0, -0.9999, th - 1e-3, th + 1e-3, 0.9999, 1.0, -1e-3, 1e-3], -1, 1).astype(np.float32)
    cosine[np.arange(len(near)), labels[:len(near)]] = near
    got = aam_logits(torch.from_numpy(cosine), torch.from_numpy(labels), scale=32.0, margin=margin,
                     easy_margin=easy).numpy()
    np.testing.assert_allclose(got, numpy_aam(cosine, labels, 32.0, margin, easy), rtol=0, atol=5e-5)
    # Off the target column nothing changes but the scale.
    off = np.ones_like(cosine, dtype=bool)
    off[np.arange(64), labels] = False
    assert np.array_equal(got[off], np.float32(32.0) * cosine[off])


def test_fallback_is_continuous_at_the_threshold():
    m = 0.2
    th = math.cos(math.pi - m)
    below, above = (aam_logits(torch.tensor([[c]]), torch.tensor([0]), scale=1.0, margin=m).item()
                    for c in (th - 1e-6, th + 1e-6))
    assert below == pytest.approx(-1.0, abs=1e-4) and above == pytest.approx(-1.0, abs=1e-4)


def test_cosine_classifier_gives_the_cosines():
    torch.manual_seed(0)
    head = CosineClassifier(8, 5)
    x = torch.randn(3, 8)
    want = (x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)) @ (
        head.weight.detach().numpy() / np.linalg.norm(head.weight.detach().numpy(), axis=1, keepdims=True)).T
    np.testing.assert_allclose(head(x).detach().numpy(), want, atol=1e-6)


def test_margin_schedule():
    linear = LossConfig(name="aam", margin=0.2, margin_hold_epochs=2, margin_warmup_epochs=4)
    values = {(e, f): margin_at(linear, e, f) for e, f in [(0, 0.0), (1, 0.99), (2, 0.0), (3, 0.0), (4, 0.5),
                                                            (5, 0.75), (6, 0.0), (20, 0.3)]}
    assert values == pytest.approx({(0, 0.0): 0.0, (1, 0.99): 0.0, (2, 0.0): 0.0, (3, 0.0): 0.05,
                                    (4, 0.5): 0.125, (5, 0.75): 0.1875, (6, 0.0): 0.2, (20, 0.3): 0.2})
    exp = LossConfig(name="aam", margin=0.2, margin_hold_epochs=2, margin_warmup_epochs=4, margin_increase="exp")
    assert margin_at(exp, 4, 0.0) == pytest.approx(0.2 * (1 - 1e-3 ** 0.5))
    assert margin_at(exp, 1, 0.5) == 0.0 and margin_at(exp, 6, 0.0) == 0.2
    assert margin_at(LossConfig(name="aam"), 0, 0.0) == 0.2  # no warm-up configured: m from the start


def test_ce_is_the_default_and_unchanged():
    cfg = parse_config({"data": {"train": ["x/index.json"]}}, "t.yaml")
    assert cfg.loss == LossConfig() and cfg.loss.name == "ce" and cfg.loss.fingerprint() == {}
    criterion = Criterion(cfg.loss)
    model = speaker_tdnn(4, channels=8, embed_dim=4)
    assert criterion.adapt(model, "f") is model and isinstance(model.classifier, torch.nn.Linear)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(criterion(logits, labels, epoch=3, fraction=0.5), F.cross_entropy(logits, labels))
    assert criterion.epoch_metrics(0) == {}


def test_loss_block_errors_name_the_key():
    for block, message in [({"name": "arc"}, "t.yaml: loss.name: expected one of"),
                           ({"scale": 0}, "t.yaml: loss: scale must be > 0"),
                           ({"margin": 2.0}, "margin must be < pi/2"),
                           ({"margn": 0.1}, "t.yaml: loss: unknown key 'margn'")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({"data": {"train": ["x"]}, "loss": block}, "t.yaml")
    with pytest.raises(ConfigError, match="loss.name=aam: the model of m has no linear `classifier`"):
        Criterion(LossConfig(name="aam")).adapt(torch.nn.Linear(2, 2), "m")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("aam-data")), [20, 12, 16], speakers=4)


ECAPA = {"factory": "wds_pipeline.train.ecapa:ecapa_tdnn", "channels": 16, "embedding_dim": 8}
# Half an epoch at margin 0, then up to 0.2 over one epoch: every regime within the run.
AAM = {"name": "aam", "margin_hold_epochs": 0.5, "margin_warmup_epochs": 1.0}


def test_ecapa_with_aam_resumes_exactly_with_the_heads_weights(data, tmp_path):
    per_epoch = SAMPLES // 4
    case = trainer_case(data, tmp_path, model=ECAPA, loss=AAM)
    case.check({"mid-epoch": per_epoch // 2, "next-epoch": per_epoch + per_epoch // 2})
    trainer = case.make()
    assert isinstance(trainer.model.classifier, CosineClassifier)
    state = trainer.state_dict()
    assert "classifier.weight" in state["model"] and "classifier.bias" not in state["model"]
    assert state["fingerprints"]["loss"]["name"] == "aam"


def test_aam_run_logs_the_margin_validates_and_refuses_a_ce_resume(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), data={"valid": [data]}, run={"epochs": 3})
    doc["model"], doc["loss"] = ECAPA, AAM
    summary = Trainer(parse_config(doc, "t")).fit()
    assert 0.0 <= summary.valid["valid_accuracy"] <= 1.0
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    margins = [r["aam_margin"] for r in records if r["kind"] == "epoch"]
    assert margins == pytest.approx([0.1, 0.2, 0.2])
    # The head is in the checkpoint: a fresh trainer resumes it, and its cosines classify.
    again = Trainer(parse_config(doc, "t"))
    again.resume()
    assert torch.equal(again.model.classifier.weight, summary_weights(tmp_path / "run" / "ckpt"))
    doc["loss"] = {"name": "ce"}
    with pytest.raises(ResumeMismatch, match="loss"):
        Trainer(parse_config(doc, "t")).resume()


def summary_weights(ckpt_dir) -> torch.Tensor:
    latest = sorted(p for p in os.listdir(ckpt_dir) if p.endswith(".pt"))[-1]
    state = torch.load(os.path.join(ckpt_dir, latest), map_location="cpu", weights_only=True)
    return state["model"]["classifier.weight"]


def test_default_loss_leaves_the_fingerprint_and_head_alone(data, tmp_path):
    trainer = Trainer(parse_config(small_config(data, str(tmp_path / "run")), "t"))
    assert "loss" not in trainer.fingerprints()
    assert isinstance(trainer.model.classifier, torch.nn.Linear)
