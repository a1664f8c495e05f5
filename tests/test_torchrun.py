"""The trainer under torchrun: two processes as two nodes (c10d rendezvous on localhost, gloo,
CPU), killed with SIGKILL and resumed as one node with three processes (another world size).
Every epoch covers every sample exactly once, ranks run equal batch counts, and all ranks
end with identical weights."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from shardgen import all_keys, make_dataset
from test_train import checkpoint_steps, cli_env
from trainer_helpers import small_config, write_config

from wds_pipeline.train.checkpoint import CheckpointManager

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
EPOCHS = 4  # 6 steps per epoch per rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(path: Path) -> list[tuple[int, int, list[str]]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            epoch, index, keys = line.split("\t")
            out.append((int(epoch), int(index), [k for k in keys.split(",") if k]))
    return out


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL a torchrun agent and every process under it: its ranks run in sessions of
    their own, so killing the agent's process group would leave them training."""
    import psutil

    procs = [psutil.Process(p.pid)]
    try:
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    p.communicate()


def launch(args: list[str], cfg: str, *sets: str) -> subprocess.Popen:
    cmd = [*TORCHRUN, *args, "-m", "wds_pipeline.cli", "train", "--config", cfg]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, env=cli_env(), cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_two_nodes_killed_and_resumed_as_three_ranks(tmp_path):
    data = make_dataset(str(tmp_path / "data"), [20, 16, 12], speakers=4)  # 48 samples
    everything = all_keys(data)
    run = tmp_path / "run"
    # A rank holds in step 6 (the other waits for it in the gradients' all-reduce), step 4
    # saved, until both are killed: a kill at a known step whatever the machine's speed.
    held = str(tmp_path / "held")
    doc = small_config(data, str(run), loader={"last_batch": "pad"},
                       model={"factory": "trainer_helpers:slow_tdnn", "hold_after": 5, "hold_file": held},
                       checkpoint={"every_steps": 2, "keep_last": 100}, run={"epochs": EPOCHS})
    cfg = write_config(str(tmp_path / "c.yaml"), doc)

    # Two nodes of one process each, rendezvous through c10d on localhost.
    port = free_port()
    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "wds-test"]
    nodes = [launch(rdzv, cfg, f"run.keys_log={tmp_path / 'first'}") for _ in range(2)]
    deadline = time.monotonic() + 240
    try:
        while not os.path.exists(held):
            assert all(p.poll() is None for p in nodes), [p.communicate() for p in nodes]
            assert time.monotonic() < deadline, "no rank held within the time limit"
            time.sleep(0.05)
    finally:
        for p in nodes:
            kill_tree(p)
    assert checkpoint_steps(str(run / "ckpt")) == [2, 4]

    loaded = CheckpointManager(str(run / "ckpt")).load_latest()
    assert loaded is not None
    saved = loaded[0]["loader"]
    cut_epoch, cut_batches = saved["epoch"], saved["batches_yielded"]
    assert saved["world_size"] == 2 and cut_epoch < EPOCHS, (saved, checkpoint_steps(str(run / "ckpt")))

    # Resume on one node with three processes: elastic, the epoch is finished exactly once.
    p = launch(["--standalone", "--nnodes", "1", "--nproc-per-node", "3"], cfg,
               f"run.keys_log={tmp_path / 'second'}")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "3 ranks with identical weights" in out
    assert "resumed from" in err

    first = [e for r in range(2) for e in read_log(Path(f"{tmp_path / 'first'}.rank{r}"))]
    second = {r: read_log(Path(f"{tmp_path / 'second'}.rank{r}")) for r in range(3)}
    for epoch in range(EPOCHS):
        keys: list[str] = []
        for e, index, ks in first:  # what the first run consumed up to its checkpoint
            if e < cut_epoch or (e == cut_epoch and index < cut_batches):
                if e == epoch:
                    keys += ks
        counts = {r: 0 for r in second}
        for r, lines in second.items():
            for e, _, ks in lines:
                if e == epoch:
                    keys += ks
                    counts[r] += 1
        assert Counter(keys) == Counter(everything), f"epoch {epoch}: not every sample exactly once"
        if epoch >= cut_epoch:
            assert len(set(counts.values())) == 1, f"epoch {epoch}: unequal batches per rank {counts}"


@pytest.mark.parametrize("world", [2])
def test_checkpoint_is_written_by_rank_zero_only_and_resumed_by_all(tmp_path, world):
    data = make_dataset(str(tmp_path / "data"), [16, 16], speakers=4)
    run = tmp_path / "run"
    cfg = write_config(str(tmp_path / "c.yaml"), small_config(
        data, str(run), checkpoint={"every_steps": 2, "keep_last": 100}, run={"epochs": 1, "max_steps": 3}))
    args = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(world)]
    p = launch(args, cfg)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert checkpoint_steps(str(run / "ckpt")) == [2, 3]
    assert out.count("trained") == 1  # the summary comes from rank 0 alone
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert records and not (run / "metrics.jsonl.rank1").exists()
    state = CheckpointManager(str(run / "ckpt")).load_latest()[0]
    assert len(state["rng_per_rank"]) == world
    p = launch(args, cfg, "run.max_steps=4")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert err.count("resumed from") == world  # every rank loads the checkpoint
    assert checkpoint_steps(str(run / "ckpt"))[-1] == 4
