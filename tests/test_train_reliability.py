"""The trainer when storage misbehaves and when the user errs (issue 19): metrics history kept
beside the checkpoints across a lost VM, metrics and TensorBoard writes through Drive's
``Errno 107`` (a real FUSE mount injecting it), a checkpoint before the first metrics line,
a changed learning rate and an elastic world size on resume (real torchrun), and one-line
errors with exit 2 for configs and checkpoints that cannot be used."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shardgen import make_dataset
from test_train import REPO, checkpoint_steps, cli_env, run_cli, train_in_process
from trainer_helpers import small_config, write_config

from wds_pipeline.storage import RetryPolicy
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import Trainer, lr_factor


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    # 48 clips, 4 speakers: 12 batches of 4 per epoch.
    return make_dataset(str(tmp_path_factory.mktemp("rel-data")), [16, 16, 16], speakers=4)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def kinds(recs: list[dict]) -> list[tuple[str, int]]:
    return [(r["kind"], r["step"]) for r in recs]


def train_steps(first: int, last: int) -> list[tuple[str, int]]:
    return [("train", s) for s in range(first, last + 1)]


# -- metrics history beside the checkpoints (points 3 and 8) ---------------------------


def test_resume_on_a_new_vm_restores_the_metrics_history_from_beside_the_checkpoints(data, tmp_path):
    """out_dir on the VM's disk, checkpoints (and the metrics mirror) elsewhere: the VM is reset
    (out_dir lost) and the run resumed. The mirror keeps every record; the local file is
    restored from it before the new records are appended."""
    vm, drive = tmp_path / "vm", tmp_path / "drive" / "ckpt"
    doc = small_config(data, str(vm / "run"), checkpoint={"dir": str(drive), "every_steps": 3},
                       run={"max_steps": 6, "log_every": 1})
    train_in_process(doc)
    first = records(drive / "metrics.jsonl")
    assert kinds(first) == train_steps(1, 6) + [("epoch", 6)]

    shutil.rmtree(vm)  # the VM reset: the local out_dir is gone
    doc["run"]["max_steps"] = 9
    t = train_in_process(doc)
    assert t.resumed_from is not None and t.resumed_from.endswith("ckpt-000000006.pt")
    mirror = records(drive / "metrics.jsonl")
    assert kinds(mirror) == train_steps(1, 6) + [("epoch", 6)] + train_steps(7, 9) + [("epoch", 9)]
    assert mirror[:7] == first  # the earlier records themselves, not rewritten
    assert (vm / "run" / "metrics.jsonl").read_bytes() == (drive / "metrics.jsonl").read_bytes()


def test_checkpoint_before_the_first_metrics_line_with_checkpoints_elsewhere(data, tmp_path):
    """checkpoint.dir outside run.out_dir and a checkpoint at step 1, before the first log
    line at step 2: the save must not fail on a metrics.jsonl that does not exist yet."""
    drive = tmp_path / "drive" / "ckpt"
    doc = small_config(data, str(tmp_path / "run"), checkpoint={"dir": str(drive), "every_steps": 1},
                       run={"max_steps": 3, "log_every": 2})
    t = train_in_process(doc)
    assert t.step == 3 and checkpoint_steps(str(drive))[-1] == 3
    assert kinds(records(drive / "metrics.jsonl")) == [("train", 2), ("epoch", 3)]
    assert (drive / "metrics.jsonl").read_bytes() == (tmp_path / "run" / "metrics.jsonl").read_bytes()


# -- Errno 107 on metrics writes (point 7) -----------------------------------------------


def tensorboard_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_transient_enotconn_on_metrics_writes_is_retried_and_nothing_is_lost(data, tmp_path, slowfs_factory):
    """The Colab layout (out_dir on Drive, checkpoints under it) on a FUSE mount where every
    second write under out_dir fails with ENOTCONN, 3 times: the first TensorBoard event, the
    second metrics.jsonl record, the second event. The trainer retries, exits 0, and both files
    hold every record exactly once."""
    pytest.importorskip("tensorboard")
    m = slowfs_factory("drive", latency_ms=1, bandwidth_mbps=None, fail_every=2, fail_on="write",
                       fail_errno="ENOTCONN", fail_limit=3, fail_path="run/")
    out = Path(m.mountpoint) / "run"
    doc = small_config(data, str(out), run={"max_steps": 6, "log_every": 1, "tensorboard": True})
    del doc["checkpoint"]["dir"]  # <out_dir>/checkpoints, on the mount too
    cfg = write_config(str(tmp_path / "c.yaml"), doc)
    p = run_cli("train", "--config", cfg, timeout=300)
    assert p.returncode == 0, p.stderr
    recs = records(out / "metrics.jsonl")
    assert kinds(recs) == train_steps(1, 6) + [("epoch", 6)]
    assert "warning" not in p.stderr and "not written" not in p.stdout
    assert checkpoint_steps(str(out / "checkpoints")) == [4, 6]
    losses = [(r["step"], r["loss"]) for r in recs if r["kind"] == "train"]
    assert tensorboard_scalars(out / "tensorboard", "train/loss") == [
        (step, pytest.approx(loss, rel=1e-6)) for step, loss in losses]


FAST_RETRY = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.01, timeout=10.0)


def test_a_dead_link_for_metrics_and_tensorboard_never_stops_training(data, tmp_path, slowfs_factory):
    """Every open and write under out_dir fails with ENOTCONN for good: training still ends
    with the same checkpoints; each sink is warned about once and every lost record counted."""
    pytest.importorskip("tensorboard")
    m = slowfs_factory("drive", latency_ms=1, bandwidth_mbps=None, fail_every=1,
                       fail_on="open,create,write", fail_errno="ENOTCONN", fail_path="run/")
    doc = small_config(data, str(Path(m.mountpoint) / "run"),
                       checkpoint={"dir": str(tmp_path / "ckpt"), "every_steps": 3},
                       run={"max_steps": 6, "log_every": 1, "tensorboard": True})
    logs: list[str] = []
    t = Trainer(parse_config(doc, "test"), log=logs.append)
    t.metrics_retry = FAST_RETRY  # the default backs off for minutes, as checkpoint saves do
    summary = t.fit()
    assert t.step == 6 and checkpoint_steps(str(tmp_path / "ckpt")) == [3, 6]
    assert summary.metrics_failures == {"metrics.jsonl": 7, "TensorBoard": 7}  # 6 train + 1 epoch
    warnings = [line for line in logs if line.startswith("warning:")]
    assert len(warnings) == 2 and all("Transport endpoint is not connected" in w for w in warnings)
    assert "metrics not written (storage errors; training went on): 7 TensorBoard, 7 metrics.jsonl" \
        in summary.to_text()


def test_a_dead_link_for_the_metrics_mirror_never_stops_training(data, tmp_path, slowfs_factory):
    """Checkpoints on the mount, whose copy of metrics.jsonl can never be written: every
    checkpoint is still saved, the mirror failure is warned about once and counted."""
    m = slowfs_factory("drive", latency_ms=1, bandwidth_mbps=None, fail_every=1,
                       fail_on="create,write,rename", fail_errno="ENOTCONN", fail_path="metrics.jsonl")
    ckpt = Path(m.mountpoint) / "ckpt"
    doc = small_config(data, str(tmp_path / "run"), checkpoint={"dir": str(ckpt), "every_steps": 2},
                       run={"max_steps": 6, "log_every": 1})
    logs: list[str] = []
    t = Trainer(parse_config(doc, "test"), log=logs.append)
    t.metrics_retry = FAST_RETRY
    summary = t.fit()
    assert checkpoint_steps(str(ckpt)) == [4, 6] and t.step == 6  # keep_last=2 of 2, 4, 6
    assert summary.metrics_failures == {"metrics mirror": 3}
    assert len([line for line in logs if line.startswith("warning:")]) == 1
    assert not (ckpt / "metrics.jsonl").exists()
    assert not [n for n in os.listdir(ckpt) if ".tmp-" in n]  # no temp file left behind
    assert kinds(records(tmp_path / "run" / "metrics.jsonl")) == train_steps(1, 6) + [("epoch", 6)]


# -- the learning rate on resume (points 12 and 13) --------------------------------------------


def test_resume_applies_a_changed_learning_rate_with_a_warning(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), optim={"lr": 0.002}, run={"max_steps": 5})
    train_in_process(doc)
    doc["optim"]["lr"] = 0.02
    logs: list[str] = []
    t = Trainer(parse_config(doc, "test"), log=logs.append)
    t.resume()
    assert t.step == 5
    expected = 0.02 * lr_factor(5, warmup=2, total=24, floor=0.05)
    assert [g["lr"] for g in t.optimizer.param_groups] == [pytest.approx(expected, rel=1e-12)]
    assert t.scheduler.base_lrs == [0.02] and t.scheduler.get_last_lr() == [pytest.approx(expected)]
    where = str(tmp_path / "run" / "ckpt" / "ckpt-000000005.pt")
    assert [line for line in logs if line.startswith("warning:")] == [
        f"warning: optim.lr changed from 0.002 ({where}) to 0.02 (the config): applying 0.02; the "
        f"schedule goes on from step 5, learning rate now {expected:.4g}"]
    t._optimizer_step()  # the next step follows the new schedule
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * lr_factor(6, warmup=2, total=24, floor=0.05))


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]


def test_elastic_resume_keeps_the_lr_schedule_over_run_epochs(tmp_path):
    """2 ranks stop at step 5 (max_steps), 3 ranks resume to the end of run.epochs=3: the
    learning rate keeps falling without a jump and reaches the floor exactly at the last step,
    not before (the schedule was recomputed from the new world size: 18 -> 12 steps)."""
    data = make_dataset(str(tmp_path / "data"), [24, 24], speakers=4)  # 48 samples
    run = tmp_path / "run"
    doc = small_config(data, str(run), loader={"last_batch": "pad"}, optim={"lr": 0.01, "warmup_steps": 2},
                       checkpoint={"every_steps": 100}, run={"epochs": 3, "log_every": 1})
    cfg = write_config(str(tmp_path / "c.yaml"), doc)

    def torchrun(ranks: int, *sets: str) -> subprocess.CompletedProcess:
        cmd = [*TORCHRUN, "--nproc-per-node", str(ranks), "-m", "wds_pipeline.cli", "train", "--config", cfg]
        for s in sets:
            cmd += ["--set", s]
        return subprocess.run(cmd, env=cli_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)

    p = torchrun(2, "run.max_steps=5")  # 6 steps per epoch on 2 ranks: stops mid-epoch 0
    assert p.returncode == 0, p.stderr[-3000:]
    p = torchrun(3)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from" in p.stderr and "3 ranks with identical weights" in p.stdout
    # Epoch 0's last 8 samples on 3 ranks: 1 step; then 4 steps per epoch: 5 + 1 + 4 + 4.
    lrs = {r["step"]: r["lr"] for r in records(run / "metrics.jsonl") if r["kind"] == "train"}
    assert sorted(lrs) == list(range(1, 15))
    floor = 0.01 * 0.05
    assert lrs[14] == pytest.approx(floor, rel=1e-12)
    assert all(lrs[s] > floor * 1.01 for s in range(1, 14)), lrs
    falling = [lrs[s] for s in range(2, 15)]  # after warm-up, never rising, also across the resume
    assert all(a > b for a, b in zip(falling, falling[1:])), lrs


# -- one-line errors, exit 2 (points 19, 20 and the smaller ones) -----------------------------


def assert_one_line_error(p: subprocess.CompletedProcess, *parts: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_force_onto_data_with_another_number_of_classes_is_one_line(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), run={"max_steps": 2})
    assert train_in_process(doc).step == 2  # the checkpoint of 4 classes
    other = make_dataset(str(tmp_path / "three"), [12], speakers=3, name="three")
    doc["data"]["train"] = [other]
    cfg = write_config(str(tmp_path / "c3.yaml"), doc)
    p = run_cli("train", "--config", cfg, "--force", timeout=300)
    assert_one_line_error(p, str(tmp_path / "run" / "ckpt" / "ckpt-000000002.pt"), "4 classes",
                          "has 3", "--force")


@pytest.mark.parametrize("command", ["train", "preflight"])
@pytest.mark.parametrize("sets,key", [
    (["model.chanels=16"], "model.chanels"),
    (["model.factory=trainer_helpers:slow_tdnn", "model.dealy=0.1"], "model.dealy"),
    (["loader.batch_size=0"], "loader.batch_size"),
    (["loader.num_workers=-1"], "loader.num_workers"),
], ids=["typo", "typo-kwargs-factory", "batch-size-0", "workers-negative"])
def test_config_value_errors_are_one_line_naming_key_and_file(data, tmp_path, command, sets, key):
    cfg = write_config(str(tmp_path / "c.yaml"), small_config(data, str(tmp_path / "run")))
    args = [a for s in sets for a in ("--set", s)]
    p = run_cli(command, "--config", cfg, *args, timeout=300)
    assert_one_line_error(p, key, cfg)


@pytest.mark.parametrize("command", ["train", "preflight"])
def test_unusable_config_files_are_one_line_naming_the_file(tmp_path, command):
    folder = tmp_path / "configs"
    folder.mkdir()
    assert_one_line_error(run_cli(command, "--config", str(folder), timeout=120), str(folder), "folder")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("data:\n  train: [/données/index.json]\n".encode("latin-1"))
    assert_one_line_error(run_cli(command, "--config", str(latin1), timeout=120), str(latin1), "UTF-8")


def test_ctrl_c_in_train_names_the_kept_checkpoint_and_how_to_resume(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), model={"factory": "trainer_helpers:slow_tdnn", "delay": 0.05},
                       checkpoint={"every_steps": 2}, run={"epochs": 50})
    cfg = write_config(str(tmp_path / "c.yaml"), doc)
    proc = subprocess.Popen([sys.executable, "-m", "wds_pipeline.cli", "train", "--config", cfg],
                            env=cli_env(), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    try:
        while not checkpoint_steps(str(tmp_path / "run" / "ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "shards" not in err and "Traceback" not in err
    steps = checkpoint_steps(str(tmp_path / "run" / "ckpt"))
    latest = str(tmp_path / "run" / "ckpt" / f"ckpt-{steps[-1]:09d}.pt")
    assert last == (f"wds-pipeline train: interrupted; the last checkpoint is kept ({latest}); "
                    "rerun the same command to resume from it")
