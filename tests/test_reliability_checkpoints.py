"""Checkpoints under real failures (issue 19): a trainer SIGKILLed while it saves a step again
with keep_last=1, two trainers on one checkpoint folder (a lock as builds take: holder named,
--wait-for-lock, a dead holder taken over, a lease on gs://), every checkpoint damaged (one
line, exit 2), and torchrun ranks that differ only in a buffer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from shardgen import make_dataset
from test_train import assert_same_weights, checkpoint_steps, cli_env, final_weights, run_cli
from trainer_helpers import small_config, wait_until_held, write_config

from wds_pipeline.train.checkpoint import CheckpointManager
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
LOCK = ".wds-pipeline-train.lock"  # the checkpoint folder's lock file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    # 48 clips, 4 speakers: 12 batches of 4, so 12 optimizer steps per epoch.
    return make_dataset(str(tmp_path_factory.mktemp("ckpt-data")), [16, 16, 16], speakers=4)


def popen_cli(*args: str, env: dict[str, str] | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wds_pipeline.cli", *args], env=env or cli_env(),
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("wds-pipeline train:")]


# ----------------------------------------------------------- 2: a re-save killed


def test_trainer_killed_while_saving_a_step_again_resumes_from_that_step(data, tmp_path):
    """keep_last=1; step 12 is saved by every_steps=4 and again at the epoch's end. The
    trainer is SIGKILLed inside that second save, at the point where the old code had already
    deleted step 12's sidecar. The rerun resumes from step 12 (not step 0) and ends with the
    weights of a run never killed."""
    ref = Trainer(parse_config(small_config(data, str(tmp_path / "ref"), checkpoint={"keep_last": 1}),
                               "ref"))
    ref.fit()
    doc = small_config(data, str(tmp_path / "cut"), checkpoint={"keep_last": 1})
    cfg = write_config(str(tmp_path / "cut.yaml"), doc)
    ckpt = tmp_path / "cut" / "ckpt"
    p = popen_cli("train", "--config", cfg,
                  env={**cli_env(), "WDS_PIPELINE_CHECKPOINT_KILL_AT": "resave-vouches-both"})
    try:
        _, err = p.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    assert {"ckpt-000000012.pt", "ckpt-000000012.json"} <= set(os.listdir(ckpt))

    again = run_cli("train", "--config", cfg, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {ckpt}/ckpt-000000012.pt (epoch 0, step 12" in again.stderr
    assert checkpoint_steps(str(ckpt)) == [24]
    assert_same_weights(ref.model.state_dict(), final_weights(str(ckpt)))


# ------------------------------------------------- 9: one trainer per checkpoint folder


def test_a_second_trainer_is_refused_naming_the_first_and_a_killed_one_is_taken_over(data, tmp_path):
    """Two real `wds-pipeline train` processes on one checkpoint folder: the second exits 2
    with one line naming the first (host, pid); after the first is SIGKILLed its lock is stale
    (its process on this host is gone), and the next run takes it over and resumes."""
    # The first run holds in step 6 (step 4 saved) until it is killed: it outlives the
    # second's start however slow that start is (a run sized in seconds of training need not).
    held = str(tmp_path / "held")
    doc = small_config(data, str(tmp_path / "run"),
                       model={"factory": "trainer_helpers:slow_tdnn", "hold_after": 5, "hold_file": held})
    cfg = write_config(str(tmp_path / "c.yaml"), doc)
    ckpt = tmp_path / "run" / "ckpt"
    first = popen_cli("train", "--config", cfg, stderr=subprocess.DEVNULL)
    try:
        wait_until_held(first, held)
        assert checkpoint_steps(str(ckpt)) == [4]  # the first run trained and saved
        second = run_cli("train", "--config", cfg, timeout=300)
        assert second.returncode == 2, "both trained in one folder:\n" + second.stderr[-2000:]
        assert first.poll() is None, "the first run ended before the second tried: nothing tested"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (line,) = error_lines(second.stderr)
    assert (f"checkpoint folder {ckpt} is in use by another training run (host "
            f"{socket.gethostname()}, pid {first.pid}, since ") in line
    assert "--wait-for-lock SECONDS" in line and f"delete {ckpt}/{LOCK}" in line

    latest = max(checkpoint_steps(str(ckpt)))
    third = run_cli("train", "--config", cfg, "--max-steps", str(latest + 1), timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert (f"{ckpt}/{LOCK}: taking over a stale lock (host {socket.gethostname()}, pid "
            f"{first.pid}") in third.stderr
    assert f"its process {first.pid} on this host is gone" in third.stderr
    assert f"resumed from {ckpt}/ckpt-{latest:09d}.pt" in third.stderr
    assert not (ckpt / LOCK).exists()  # released at the end


def test_wait_for_lock_waits_for_the_holder_then_trains(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), run={"max_steps": 2})
    cfg = write_config(str(tmp_path / "c.yaml"), doc)
    ckpt = str(tmp_path / "run" / "ckpt")
    holder = CheckpointManager(ckpt)
    holder.lock()  # this test process holds the folder, as another trainer would
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        p = popen_cli("train", "--config", cfg, "--wait-for-lock", "300", stderr=err)
    try:
        deadline = time.monotonic() + 120
        while "waiting for the training run that holds it" not in log.read_text():
            assert p.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "never waited for the lock"
            time.sleep(0.05)
        assert p.poll() is None and checkpoint_steps(ckpt) == []  # waiting, not training
        assert f"pid {os.getpid()}" in log.read_text()
    finally:
        holder.unlock()
    assert p.wait(timeout=300) == 0, log.read_text()[-2000:]
    assert checkpoint_steps(ckpt) == [2]
    assert not os.path.exists(os.path.join(ckpt, LOCK))


def test_a_checkpoint_folder_on_gcs_is_held_by_a_lease(data, tmp_path, gcs_emulator):
    from wds_pipeline.train.checkpoint import CheckpointLockedError

    so = gcs_emulator.storage_options
    url = gcs_emulator.gs("leased-run")
    lease = f"{gcs_emulator.bucket}/leased-run/{LOCK}"
    doc = small_config(data, str(tmp_path / "run"), checkpoint={"dir": url, "storage_options": so},
                       run={"max_steps": 2})
    holder = CheckpointManager(url, storage_options=so)
    holder.lock()
    try:
        rec = json.loads(gcs_emulator.fs.cat_file(lease))
        assert (rec["host"], rec["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(CheckpointLockedError, match=rf"in use by another training run \(host "
                                                        rf"{socket.gethostname()}, pid {os.getpid()}, "):
            Trainer(parse_config(doc, "t")).fit()
    finally:
        holder.unlock()
    assert not gcs_emulator.fs.exists(lease)
    # A lease another machine stopped renewing 20 minutes ago is taken over.
    old = time.time() - 1200
    gcs_emulator.fs.pipe_file(lease, json.dumps(
        {"host": "another-runtime", "pid": 1, "pid_start": None, "started": old, "renewed": old,
         "command": "wds-pipeline train", "token": "t"}).encode())
    logs: list[str] = []
    t = Trainer(parse_config(doc, "t"), log=logs.append)
    t.fit()
    assert t.step == 2 and not gcs_emulator.fs.exists(lease)
    assert any("taking over a stale lock (host another-runtime, pid 1" in m
               and "its lease was last renewed 12" in m for m in logs), logs


# ----------------------------------------------------- 18: every checkpoint damaged


def test_every_checkpoint_damaged_is_one_line_and_exit_2(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"))
    cfg = write_config(str(tmp_path / "c.yaml"), doc)
    ckpt = tmp_path / "run" / "ckpt"
    CheckpointManager(str(ckpt)).save({"step": 4}, step=4, epoch=0)
    pt = ckpt / "ckpt-000000004.pt"
    size = pt.stat().st_size
    pt.write_bytes(pt.read_bytes()[:100])
    p = run_cli("train", "--config", cfg, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert error_lines(p.stderr) == [
        f"wds-pipeline train: skipped damaged checkpoint(s): {pt} (100 bytes, its sidecar says "
        f"{size} (truncated)); no usable checkpoint is left in '{ckpt}'. Restore one, or move "
        "these files away to start the run from scratch."]
    assert not (ckpt / LOCK).exists()  # the refused run let go of the folder


# -------------------------------------------- 17: ranks that differ only in a buffer

_RANKS = """
import sys, torch
from wds_pipeline.train.distributed import check_same_weights, init_distributed
info = init_distributed("cpu")
torch.manual_seed(0)  # identical parameters on every rank
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
if sys.argv[1] == "differ":
    model[1].running_mean.fill_(float(info.rank))  # BatchNorm statistics of this rank's batches
try:
    result = f"rank {info.rank} same {check_same_weights(info, model)}"
except RuntimeError as e:
    result = f"rank {info.rank} error {e}"
with open(f"{sys.argv[2]}.rank{info.rank}", "w") as f:  # not stdout: ranks share that pipe
    f.write(result)
torch.distributed.destroy_process_group()
"""


def test_torchrun_ranks_that_differ_only_in_a_buffer_are_detected(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS)
    out = {}
    for case in ("differ", "same"):
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc-per-node", "2", str(script), case, str(tmp_path / case)],
                           env=cli_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        out[case] = [(tmp_path / f"{case}.rank{r}").read_text() for r in range(2)]
    expected = ("error ranks ended with different weights: 1.running_mean (buffer) differ between "
                "the 2 ranks; gradients or buffers were not synchronised")
    assert [ln.split(" ", 2)[2].split(" (is every")[0] for ln in out["differ"]] == [expected] * 2
    assert [ln.split(" ")[:3] for ln in out["same"]] == [["rank", "0", "same"], ["rank", "1", "same"]]
    assert len({ln.split(" ")[3] for ln in out["same"]}) == 1
    # The digest covers buffers: the same parameters with other statistics hash differently.
    from wds_pipeline.train.distributed import weights_digest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    before = weights_digest(model)
    model[1].running_var.add_(1.0)
    assert weights_digest(model) != before
