"""``wds-pipeline average``: the mean of a run's last N valid checkpoints' float weights (integer
buffers from the newest), a checkpoint that loads with weights_only=True and that ``embed`` uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from embed_helpers import trained_checkpoints
from shardgen import make_dataset

from wds_pipeline.train.average import average_checkpoints
from wds_pipeline.train.checkpoint import CheckpointManager
from wds_pipeline.train.checkpoint_io import CheckpointError
from wds_pipeline.train.embed import EmbedOptions, embed_index
from wds_pipeline.train.saved_model import load_saved_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("avg-data")), [12, 12], speakers=3)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> str:
    """A checkpoint at every one of 4 optimizer steps, the newest 3 kept (steps 2, 3, 4)."""
    return trained_checkpoints(data, str(tmp_path_factory.mktemp("avg-run")), steps=4,
                               checkpoint={"every_steps": 1, "keep_last": 3, "keep_best": 0})


def models(folder: str, steps: list[int]) -> list[dict[str, torch.Tensor]]:
    mgr = CheckpointManager(folder)
    return [mgr.load(s)[0]["model"] for s in steps]


def test_average_of_three_equals_the_numpy_mean_and_embed_reads_it(data, run, tmp_path):
    out = tmp_path / "avg3.pt"
    p = subprocess.run([sys.executable, "-m", "wds_pipeline.cli", "average", "--checkpoints", run, "--last", "3",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"averaged 3 checkpoints (steps 2, 3, 4) -> {out}"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # committed by rename
    avg = torch.load(out, map_location="cpu", weights_only=True)
    three = models(run, [2, 3, 4])
    assert avg["model"].keys() == three[-1].keys() and avg["averaged"]["steps"] == [2, 3, 4]
    floats = 0
    for name, tensor in avg["model"].items():
        if tensor.is_floating_point():
            floats += 1
            mean = np.mean([m[name].numpy().astype(np.float64) for m in three], axis=0)
            np.testing.assert_allclose(tensor.numpy(), mean.astype(np.float32), rtol=1e-6, atol=1e-8, err_msg=name)
        else:  # num_batches_tracked: the newest's
            assert torch.equal(tensor, three[-1][name]), name
    assert floats > 10 and any(not torch.equal(avg["model"][k], three[-1][k]) for k in avg["model"])
    saved = load_saved_model(str(out))
    assert saved.identity()["averaged"]["steps"] == [2, 3, 4]
    r = embed_index(str(out), data, str(tmp_path / "emb"), EmbedOptions(num_workers=0, progress=False))
    assert r.written == 24


def test_damaged_checkpoints_are_skipped_and_too_few_refused(run, tmp_path):
    folder = str(tmp_path / "ckpt")
    shutil.copytree(run, folder)
    pt = Path(folder) / "ckpt-000000003.pt"
    raw = bytearray(pt.read_bytes())
    raw[-100] ^= 0xFF
    pt.write_bytes(bytes(raw))
    result = average_checkpoints(folder, 2, str(tmp_path / "avg2.pt"))
    assert result.steps == [2, 4] and len(result.skipped) == 1 and "ckpt-000000003.pt" in result.skipped[0]
    avg = torch.load(tmp_path / "avg2.pt", weights_only=True)["model"]
    two = models(folder, [2, 4])
    name = next(k for k, v in avg.items() if v.is_floating_point())
    np.testing.assert_allclose(avg[name].numpy(), ((two[0][name].double() + two[1][name].double()) / 2).float().numpy(),
                               rtol=1e-6, atol=1e-8)
    with pytest.raises(CheckpointError, match=r"2 valid checkpoints, --last asks for 3 \(1 damaged skipped\); "
                                              "average fewer, or keep more with checkpoint.keep_last"):
        average_checkpoints(folder, 3, str(tmp_path / "avg3.pt"))
