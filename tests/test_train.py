"""The trainer: exact resume after SIGKILL (mid-epoch and at an epoch boundary, with DataLoader
workers), checkpoints on gs:// and on the Drive-like FUSE mount with faults, one label space
across datasets, config errors, metrics files and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shardgen import make_dataset
from trainer_helpers import HERE, small_config, wait_until_held, write_config

from wds_pipeline.train.checkpoint import CheckpointManager
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import ResumeMismatch, Trainer, lr_factor, resolve_precision
from wds_pipeline.typedconfig import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    # 48 clips of 0.1-0.3 s, 4 speakers; 12 batches of 4 per epoch.
    return make_dataset(str(tmp_path_factory.mktemp("train-data")), [16, 16, 16], speakers=4)


def final_weights(ckpt_dir: str, **so) -> dict[str, torch.Tensor]:
    loaded = CheckpointManager(ckpt_dir, storage_options=so).load_latest()
    assert loaded is not None, f"no checkpoint in {ckpt_dir}"
    return loaded[0]["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def batches_by_position(keys_log: str) -> dict[tuple[int, int], str]:
    """(epoch, batch index) -> keys; a batch logged again after a resume must repeat exactly."""
    seen: dict[tuple[int, int], str] = {}
    with open(keys_log) as f:
        for line in f:
            epoch, index, keys = line.rstrip("\n").split("\t")
            pos = (int(epoch), int(index))
            assert seen.get(pos, keys) == keys, f"batch {pos} was different after the resume"
            seen[pos] = keys
    return seen


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, str(REPO), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wds_pipeline.cli", *args], capture_output=True,
                          text=True, env=cli_env(), cwd=str(REPO), **kw)


def checkpoint_steps(ckpt_dir: str) -> list[int]:
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(n[5:14]) for n in os.listdir(ckpt_dir) if n.startswith("ckpt-") and n.endswith(".json"))


# The SIGKILL tests' training: num_workers=2, the default model slowed so the workers run
# ahead of it, 3 epochs of 12 steps.
KILL_BLOCKS: dict = dict(loader={"num_workers": 2, "persistent_workers": True},
                         model={"factory": "trainer_helpers:slow_tdnn", "delay": 0.03}, run={"epochs": 3})


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[tuple[int, int], str]]:
    """The run never killed, trained once for both SIGKILL cases (a checkpoint's frequency
    changes no weight and no batch): its final weights and its batches' keys by position."""
    out = tmp_path_factory.mktemp("uninterrupted")
    t = Trainer(parse_config(small_config(data, str(out), **{
        **KILL_BLOCKS, "run": {**KILL_BLOCKS["run"], "keys_log": str(out / "ref.keys")}}), "ref"))
    t.fit()
    return final_weights(str(out / "ckpt")), batches_by_position(str(out / "ref.keys"))


@pytest.mark.parametrize("every_steps,kill_after_step", [(5, 5), (1000, 12)],
                         ids=["mid-epoch", "epoch-boundary"])
def test_sigkill_and_resume_gives_bitwise_equal_weights_and_same_keys(data, uninterrupted, tmp_path,
                                                                       every_steps, kill_after_step):
    """num_workers=2, a checkpoint every ``every_steps`` optimizer steps (1000: only at epoch
    ends, so the resume starts exactly at an epoch boundary); ``wds-pipeline train`` killed with
    SIGKILL two steps after the checkpoint of ``kill_after_step`` (held there: exact on any
    machine) and run again: the uninterrupted run's weights, bit for bit, and the same batches."""
    cut_dir = tmp_path / "cut"
    held = str(tmp_path / "held")
    cut = write_config(str(tmp_path / "cut.yaml"), small_config(
        data, str(cut_dir), **{**KILL_BLOCKS, "checkpoint": {"every_steps": every_steps},
                               "run": {**KILL_BLOCKS["run"], "keys_log": str(tmp_path / "cut.keys")},
                               "model": {**KILL_BLOCKS["model"], "hold_after": kill_after_step + 2,
                                         "hold_file": held}}))

    proc = subprocess.Popen([sys.executable, "-m", "wds_pipeline.cli", "train", "--config", cut],
                            env=cli_env(), cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # held in the forward of step kill_after_step + 3, its checkpoint written
        wait_until_held(proc, held)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its DataLoader workers
        proc.wait()
    steps_at_kill = checkpoint_steps(str(cut_dir / "ckpt"))
    assert steps_at_kill and max(steps_at_kill) == kill_after_step, steps_at_kill

    p = run_cli("train", "--config", cut, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout + p.stderr

    ref_weights, ref_batches = uninterrupted
    assert_same_weights(ref_weights, final_weights(str(cut_dir / "ckpt")))
    cut_batches = batches_by_position(str(tmp_path / "cut.keys"))
    assert len(ref_batches) == 36 and cut_batches == ref_batches


def train_in_process(doc: dict) -> Trainer:
    t = Trainer(parse_config(doc, "test"))
    t.fit()
    return t


def test_checkpoints_on_gcs_resume_exactly(data, tmp_path, gcs_emulator):
    so = gcs_emulator.storage_options
    ref = train_in_process(small_config(data, str(tmp_path / "ref"), run={"max_steps": 16}))
    url = gcs_emulator.gs(f"runs/{tmp_path.name}")
    doc = small_config(data, str(tmp_path / "gs"), checkpoint={"dir": url, "storage_options": so},
                       run={"max_steps": 7})
    first = train_in_process(doc)
    assert first.step == 7
    doc["run"]["max_steps"] = 16
    second = train_in_process(doc)
    assert second.resumed_from and second.resumed_from.startswith("gs://")
    assert_same_weights(ref.model.state_dict(), final_weights(url, **so))
    # metrics.jsonl is mirrored beside checkpoints that live in a bucket
    assert gcs_emulator.fs.exists(f"{url[5:]}/metrics.jsonl")


def test_checkpoints_on_fuse_survive_enotconn_during_saves(data, tmp_path, slowfs_factory):
    ref = train_in_process(small_config(data, str(tmp_path / "ref"), run={"max_steps": 12}))
    # Every 3rd create/write/rename on the mount fails with "Transport endpoint is not
    # connected", 4 times in all (then the link is back, as on Colab after a blip).
    m = slowfs_factory("drive", latency_ms=1, bandwidth_mbps=None, fail_every=3,
                       fail_on="create,write,rename", fail_errno="ENOTCONN", fail_limit=4)
    ckpt = os.path.join(m.mountpoint, "ckpt")
    doc = small_config(data, str(tmp_path / "run"), checkpoint={"dir": ckpt, "every_steps": 2},
                       run={"max_steps": 6})
    train_in_process(doc)
    doc["run"]["max_steps"] = 12
    second = train_in_process(doc)
    assert second.resumed_from is not None and second.resumed_from.endswith("ckpt-000000006.pt")
    assert_same_weights(ref.model.state_dict(), final_weights(ckpt))


def test_corrupt_latest_checkpoint_falls_back_to_previous_with_warning(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), checkpoint={"every_steps": 2, "keep_last": 3},
                       run={"max_steps": 6})
    train_in_process(doc)
    ckpt = tmp_path / "run" / "ckpt"
    latest = ckpt / "ckpt-000000006.pt"
    blob = bytearray(latest.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    latest.write_bytes(bytes(blob))
    doc["run"]["max_steps"] = 8
    with pytest.warns(UserWarning, match="ckpt-000000006.*ckpt-000000004|ckpt-000000004.*ckpt-000000006"):
        t = Trainer(parse_config(doc, "test"))
        t.resume()
    assert t.step == 4 and t.resumed_from.endswith("ckpt-000000004.pt")


def test_resume_against_other_data_names_the_difference(data, tmp_path):
    doc = small_config(data, str(tmp_path / "run"), run={"max_steps": 4})
    train_in_process(doc)
    other = make_dataset(str(tmp_path / "other"), [8, 8], speakers=4, name="other")
    doc["data"]["train"] = [other]
    with pytest.raises(ResumeMismatch, match=r"datasets.*other"):
        train_in_process(doc)
    p = run_cli("train", "--config", write_config(str(tmp_path / "c.yaml"), doc), "--force",
                "--max-steps", "6", timeout=300)
    assert p.returncode == 0, p.stderr
    assert "--force" in p.stderr


def relabel(index_path: str, names: list[str]) -> None:
    with open(index_path) as f:
        doc = json.load(f)
    doc["wds_pipeline"]["label_map"] = {n: i for i, n in enumerate(names)}
    with open(index_path, "w") as f:
        json.dump(doc, f)


def test_two_datasets_share_one_label_space_by_name(tmp_path):
    from wds_pipeline import StreamingLoader

    a = make_dataset(str(tmp_path / "a"), [6], speakers=2, name="a", label=lambda s, i: i % 2)
    b = make_dataset(str(tmp_path / "b"), [6], speakers=2, name="b", label=lambda s, i: i % 2)
    relabel(a, ["alice", "bob"])
    relabel(b, ["bob", "carol"])  # cls 0 is bob here, cls 1 is carol
    loader = StreamingLoader([a, b], batch_size=4, num_workers=0, shuffle=False, last_batch="pad")
    assert loader.label_names == ["alice", "bob", "carol"] and loader.num_classes == 3
    got = {}
    for batch in loader:
        for key, label, pad in zip(batch.keys, batch.labels.tolist(), batch.is_padding.tolist()):
            if not pad:
                got[key] = loader.label_names[label]
    expected = {f"a-s0-u{i:04d}": ["alice", "bob"][i % 2] for i in range(6)}
    expected |= {f"b-s0-u{i:04d}": ["bob", "carol"][i % 2] for i in range(6)}
    assert got == expected


def test_trainer_over_two_datasets_has_union_classes(tmp_path):
    a = make_dataset(str(tmp_path / "a"), [8], speakers=2, name="a")
    b = make_dataset(str(tmp_path / "b"), [8], speakers=2, name="b")
    relabel(a, ["alice", "bob"])
    relabel(b, ["carol", "dave"])
    t = train_in_process(small_config([a, b], str(tmp_path / "run"), run={"max_steps": 2}))
    assert t.model.classifier.out_features == 4
    state = CheckpointManager(str(tmp_path / "run" / "ckpt")).load_latest()[0]
    assert state["label_names"] == ["alice", "bob", "carol", "dave"]


@pytest.mark.parametrize("block,key,value,message", [
    ("optim", "lrr", 0.1, "optim: unknown key 'lrr'"),
    ("optim", "lr", "fast", "optim.lr: expected a number"),
    ("optim", "grad_accum", 0, "grad_accum must be > 0"),
    ("loader", "num_workers", "two", "loader.num_workers: expected an integer"),
    ("run", "precision", "fp8", "run.precision: expected one of"),
    ("checkpoint", "mode", "best", "checkpoint.mode: expected one of"),
])
def test_config_errors_name_the_key_and_the_file(tmp_path, block, key, value, message):
    doc = small_config("x/index.json", str(tmp_path))
    doc[block][key] = value
    path = write_config(str(tmp_path / "bad.yaml"), doc)
    from wds_pipeline.train.config import load_config

    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(path) and message in str(e.value)


def test_cli_config_error_exits_2_naming_key_and_file(tmp_path):
    doc = small_config("x/index.json", str(tmp_path))
    doc["optim"]["lr"] = "fast"
    path = write_config(str(tmp_path / "bad.yaml"), doc)
    for command in ("train", "preflight"):
        p = run_cli(command, "--config", path)
        assert p.returncode == 2 and f"{path}: optim.lr: expected a number" in p.stderr


def test_set_overrides_any_value(tmp_path):
    from wds_pipeline.train.config import load_config

    path = write_config(str(tmp_path / "c.yaml"), small_config("x/index.json", str(tmp_path)))
    cfg = load_config(path, ["optim.lr=0.5", "loader.num_workers=3", "run.max_steps=7", "model.channels=8"])
    assert (cfg.optim.lr, cfg.loader.num_workers, cfg.run.max_steps) == (0.5, 3, 7)
    assert cfg.model.options["channels"] == 8
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["optim.lr"])


def test_shipped_configs_parse():
    from wds_pipeline.demo import demo_config
    from wds_pipeline.train.config import load_config, parse_config

    for name in ("demo", "local", "colab"):
        load_config(str(REPO / "configs" / f"{name}.yaml"))
    import yaml

    with open(REPO / "configs" / "demo.yaml") as f:
        shipped = yaml.safe_load(f)
    assert parse_config(shipped) == parse_config(demo_config("demo")), \
        "configs/demo.yaml drifted from wds_pipeline.demo.demo_config('demo')"


def test_metrics_jsonl_and_tensorboard_events(data, tmp_path):
    pytest.importorskip("tensorboard")
    doc = small_config(data, str(tmp_path / "run"), run={"max_steps": 4, "tensorboard": True},
                       data={"valid": [data]})
    doc["run"]["epochs"] = 1
    t = train_in_process(doc)
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    assert {"loss", "lr", "samples_per_s", "data_wait", "epoch"} <= set(train[0])
    assert all(0.0 <= r["data_wait"] <= 1.0 for r in train)
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert t.step == 4


def test_validation_reports_accuracy_and_eer_from_trials(tmp_path):
    """An index carrying a trial list gets an EER; accuracy counts only known classes."""
    path = make_dataset(str(tmp_path / "v"), [8], speakers=2, name="v", label=lambda s, i: i % 2)
    with open(path) as f:
        doc = json.load(f)
    trials = [[1, "v-s0-u0000.wav", "v-s0-u0002.wav"], [0, "v-s0-u0000.wav", "v-s0-u0001.wav"],
              [1, "v-s0-u0001.wav", "v-s0-u0003.wav"], [0, "v-s0-u0002.wav", "v-s0-u0003.wav"]]
    doc["wds_pipeline"]["extras"] = {"trials": {"list.txt": trials}}
    with open(path, "w") as f:
        json.dump(doc, f)
    t = train_in_process(small_config(path, str(tmp_path / "run"), data={"valid": [path]},
                                      run={"epochs": 1}))
    assert set(t.valid_metrics) == {"valid_accuracy", "valid_eer", "valid_min_dcf_0.01", "valid_min_dcf_0.05",
                                    "valid_trials"}
    assert t.valid_metrics["valid_trials"] == 4.0
    assert 0.0 <= t.valid_metrics["valid_eer"] <= 1.0


def test_dry_run_and_max_steps_from_the_cli(data, tmp_path):
    path = write_config(str(tmp_path / "c.yaml"), small_config(data, str(tmp_path / "run")))
    p = run_cli("train", "--config", path, "--dry-run", timeout=300)
    assert p.returncode == 0, p.stderr
    assert "dry run in" in p.stderr and "2 optimizer steps" in p.stdout
    assert not (tmp_path / "run" / "ckpt").exists()  # a dry run writes to a scratch folder
    p = run_cli("train", "--config", path, "--max-steps", "3", timeout=300)
    assert p.returncode == 0 and "3 optimizer steps" in p.stdout
    assert checkpoint_steps(str(tmp_path / "run" / "ckpt")) == [3]


def test_lr_schedule_and_precision_choice():
    factors = [lr_factor(s, warmup=4, total=20, floor=0.1) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == pytest.approx(1.0)
    assert factors[20] == pytest.approx(0.1) and all(a >= b for a, b in zip(factors[4:], factors[5:]))
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
