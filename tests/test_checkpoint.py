"""CheckpointManager on real storage: local folders, the GCS emulator and the FUSE
stand-in (with faults injected), plus a save killed by SIGKILL in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from wds_pipeline.storage import RetryPolicy, StorageError
from wds_pipeline.train.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    CheckpointManager,
    CheckpointWarning,
)
from wds_pipeline.train.rng import capture_rng_state
from wds_pipeline.train.statediff import state_dict_diff

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_RETRY = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05, timeout=30.0)


def _state(seed: int, extra_floats: int = 0) -> dict:
    """What the trainer stores: model/optimizer/scheduler state, RNG, loader state,
    config and fingerprints."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    sched.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "loader": {"version": 1, "epoch": seed, "consumed": [seed, 2 * seed], "seed": 0},
        "config": {"optim": {"lr": 1e-3, "betas": [0.9, 0.999]}, "run": {"name": "t"}},
        "fingerprints": {"train": f"sha256:{seed:064x}"},
    }
    if extra_floats:
        state["blob"] = torch.randn(extra_floats)
    return state


def _assert_equal(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _assert_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def _files(folder) -> set[str]:
    return set(os.listdir(folder))


def _pair(step: int) -> set[str]:
    return {f"ckpt-{step:09d}.pt", f"ckpt-{step:09d}.json"}


# ----------------------------------------------------------------- local basics


def test_round_trip_and_sidecar(tmp_path):
    folder = tmp_path / "ckpts"
    mgr = CheckpointManager(str(folder))
    assert mgr.load_latest() is None and mgr.list() == []  # folder does not exist yet
    state = _state(1)
    info = mgr.save(state, step=1234, epoch=2, metrics={"val_acc": 0.5})
    assert _files(folder) == _pair(1234)
    pt = folder / "ckpt-000001234.pt"
    data = pt.read_bytes()
    assert info == CheckpointInfo(
        url=f"{folder}/ckpt-000001234.pt",
        step=1234,
        epoch=2,
        metrics={"val_acc": 0.5},
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    side = json.loads((folder / "ckpt-000001234.json").read_text())
    assert side == {
        "format": "wds_pipeline.checkpoint",
        "version": 1,
        "file": "ckpt-000001234.pt",
        "step": 1234,
        "epoch": 2,
        "metrics": {"val_acc": 0.5},
        "sha256": info.sha256,
        "size": info.size,
    }
    loaded, linfo = mgr.load_latest()
    assert linfo == info
    _assert_equal(state, loaded)
    assert mgr.list() == [info]


def test_state_that_weights_only_cannot_load_is_refused_before_writing(tmp_path):
    import numpy as np

    mgr = CheckpointManager(str(tmp_path / "c"))
    state = {"model": {}, "config": {"optim": {"lr": np.float64(0.1)}}}
    with pytest.raises(CheckpointError, match=r"state\['config'\]\['optim'\]\['lr'\].*numpy"):
        mgr.save(state, step=1, epoch=0)
    assert not (tmp_path / "c").exists()


def test_non_transient_error_names_the_url(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    url = str(blocker / "ckpts")
    mgr = CheckpointManager(url, retry=FAST_RETRY)
    with pytest.raises(OSError, match=re.escape(f"{url}/ckpt-000000001.pt")):
        mgr.save(_state(1), step=1, epoch=0)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        CheckpointManager(str(tmp_path), keep_last=0)
    with pytest.raises(ValueError, match="keep_best=1 needs metric= "):
        CheckpointManager(str(tmp_path), keep_best=1)
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        CheckpointManager(str(tmp_path), keep_best=1, metric="acc", mode="best")  # type: ignore
    with pytest.raises(ValueError, match="metric 'acc' is not a number"):
        CheckpointManager(str(tmp_path)).save({}, step=1, epoch=0, metrics={"acc": "high"})


# -------------------------------------------------------------- damaged latest


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "garble_sidecar", "drop_sidecar"])
def test_damaged_latest_falls_back_with_warning_naming_both(tmp_path, damage):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=3)
    first = _state(1)
    mgr.save(first, step=100, epoch=0)
    mgr.save(_state(2), step=200, epoch=1)
    pt, side = folder / "ckpt-000000200.pt", folder / "ckpt-000000200.json"
    data = pt.read_bytes()
    if damage == "truncate":
        pt.write_bytes(data[: len(data) // 2])
        bad, why = pt, "truncated"
    elif damage == "bitflip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        pt.write_bytes(bytes(flipped))
        bad, why = pt, "corrupt"
    elif damage == "garble_sidecar":
        side.write_text('{"format": "wds_pipeline.checkpoint", "vers')
        bad, why = side, "not valid JSON"
    else:
        side.unlink()
        bad, why = pt, "no sidecar"
    with pytest.warns(CheckpointWarning) as rec:
        found = mgr.load_latest()
    assert found is not None
    state, info = found
    assert info.step == 100
    _assert_equal(first, state)
    text = " ".join(str(w.message) for w in rec)
    assert str(bad) in text and why in text
    assert f"resuming from {folder}/ckpt-000000100.pt (step 100)" in text


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder))
    mgr.save(_state(1), step=1, epoch=0)
    pt = folder / "ckpt-000000001.pt"
    pt.write_bytes(pt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"ckpt-000000001\.pt .*truncated.*no usable"):
        mgr.load_latest()


def test_orphan_pt_and_leftover_temp_are_ignored_then_cleaned(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=5)
    state = _state(1)
    mgr.save(state, step=10, epoch=0)
    # A save killed after its .pt was committed but before its sidecar, and one
    # killed while staging: both newer than the committed checkpoint.
    orphan = folder / "ckpt-000000050.pt"
    orphan.write_bytes((folder / "ckpt-000000010.pt").read_bytes())
    tmp = folder / f".ckpt-000000060.pt.tmp-{uuid.uuid4().hex}"
    tmp.write_bytes(b"partial")
    assert [i.step for i in mgr.list()] == [10]
    with pytest.warns(CheckpointWarning, match=rf"{orphan} \(no sidecar"):
        loaded, info = mgr.load_latest()
    assert info.step == 10
    _assert_equal(state, loaded)
    # The next successful save removes the leftovers (they hold Drive quota).
    mgr.save(_state(2), step=20, epoch=0)
    assert _files(folder) == _pair(10) | _pair(20)


def test_latest_is_chosen_by_step_not_by_file_time_or_name_order(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=3)
    steps = [5, 999_999_999, 1_000_000_000]  # the last sorts first as text
    for i, step in enumerate(steps):
        mgr.save(_state(i), step=step, epoch=i)
    now = time.time()
    for i, step in enumerate(steps):  # oldest step gets the newest mtime
        for name in _pair(step):
            os.utime(folder / name, (now - 1000 * i, now - 1000 * i))
    assert [i.step for i in mgr.list()] == steps
    state, info = mgr.load_latest()
    assert info.step == 1_000_000_000
    _assert_equal(_state(2), state)


def test_resave_same_step_replaces_it(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder))
    mgr.save(_state(1), step=7, epoch=0)
    mgr.save(_state(2), step=7, epoch=1)
    assert _files(folder) == _pair(7)
    state, info = mgr.load_latest()
    assert info.epoch == 1
    _assert_equal(_state(2), state)


def test_save_of_an_earlier_step_retires_later_checkpoints(tmp_path):
    """After save(step=N), resume must follow this run, not a replaced one."""
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=3)
    for step in (10, 20, 30):
        mgr.save(_state(step), step=step, epoch=0)
    with pytest.warns(CheckpointWarning, match="ckpt-000000030.pt"):
        mgr.save(_state(99), step=25, epoch=0)
    assert _files(folder) == _pair(10) | _pair(20) | _pair(25)
    assert mgr.load_latest()[1].step == 25


# ------------------------------------------------------------------- retention


def test_keep_last_and_keep_best_exact_file_sets(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=2, keep_best=1, metric="val_acc", mode="max")
    small = {"w": torch.zeros(2)}
    mgr.save(small, step=1, epoch=0, metrics={"val_acc": 0.3})
    mgr.save(small, step=2, epoch=0, metrics={"val_acc": 0.9})
    mgr.save(small, step=3, epoch=1)  # a mid-epoch save without validation metrics
    assert _files(folder) == _pair(2) | _pair(3)  # 1 is neither recent nor best
    mgr.save(small, step=4, epoch=1, metrics={"val_acc": 0.5})
    assert _files(folder) == _pair(2) | _pair(3) | _pair(4)  # 2 stays as the best
    mgr.save(small, step=5, epoch=2, metrics={"val_acc": 0.95})
    assert _files(folder) == _pair(4) | _pair(5)  # 5 is both recent and best
    mgr.save(small, step=6, epoch=2, metrics={"val_acc": 0.1})
    assert _files(folder) == _pair(5) | _pair(6)


def test_keep_best_min_mode_and_keep_last_only(tmp_path):
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=1, keep_best=2, metric="loss", mode="min")
    for step, loss in [(1, 2.0), (2, 0.5), (3, 1.0), (4, 0.7), (5, 3.0)]:
        mgr.save({"s": torch.tensor(step)}, step=step, epoch=0, metrics={"loss": loss})
    assert _files(folder) == _pair(2) | _pair(4) | _pair(5)
    plain = CheckpointManager(str(tmp_path / "p"), keep_last=2)
    for step in range(1, 6):
        plain.save({"s": torch.tensor(step)}, step=step, epoch=0)
    assert _files(tmp_path / "p") == _pair(4) | _pair(5)


# ------------------------------------------------------------------------- gcs


def test_gcs_round_trip_retention_and_fallback(gcs_emulator, fault_proxy):
    url = gcs_emulator.gs(f"run-{uuid.uuid4().hex}/ckpts")
    so = gcs_emulator.storage_options_via(fault_proxy)
    mgr = CheckpointManager(url, keep_last=2, storage_options=so, retry=FAST_RETRY)
    assert mgr.load_latest() is None
    states = {step: _state(step) for step in (1, 2, 3)}
    mgr.save(states[1], step=1, epoch=0)
    # Connections reset before the response reaches the client: the upload is retried.
    fault_proxy.drop_next(2, after_bytes=0)
    mgr.save(states[2], step=2, epoch=0)
    assert fault_proxy.stats().drops == 2
    mgr.save(states[3], step=3, epoch=1)
    prefix = url[len("gs://") :]
    names = {p.rsplit("/", 1)[-1] for p in gcs_emulator.fs.ls(prefix, refresh=True)}
    assert names == _pair(2) | _pair(3)
    # A fresh manager (a new VM) resumes from the newest.
    state, info = CheckpointManager(url, storage_options=so).load_latest()
    assert info.step == 3 and info.url == f"{url}/ckpt-000000003.pt"
    _assert_equal(states[3], state)
    # Bit-flip the newest object: resume falls back to step 2 and says so.
    raw = bytearray(gcs_emulator.fs.cat_file(f"{prefix}/ckpt-000000003.pt"))
    raw[-10] ^= 1
    gcs_emulator.fs.pipe_file(f"{prefix}/ckpt-000000003.pt", bytes(raw))
    with pytest.warns(CheckpointWarning, match=r"ckpt-000000003\.pt \(sha256.*ckpt-000000002"):
        state, info = CheckpointManager(url, storage_options=so).load_latest()
    assert info.step == 2
    _assert_equal(states[2], state)


# ------------------------------------------------------------------------ fuse


def _settled_files(folder) -> set[str]:
    """``_files`` once FUSE has processed its releases: a file unlinked right after close()
    shows as ``.fuse_hidden*`` until the kernel's asynchronous RELEASE reaches the daemon
    (seen once in CI), then vanishes."""
    deadline = time.monotonic() + 10
    while any(n.startswith(".fuse_hidden") for n in _files(folder)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return _files(folder)


@pytest.mark.parametrize("op", ["write", "create", "rename", "fsync"])
def test_fuse_enotconn_during_save_is_retried(slowfs_factory, op):
    m = slowfs_factory(
        f"enotconn-{op}",
        latency_ms=0,
        bandwidth_mbps=0,
        fail_every=1,
        fail_on=op,
        fail_errno="ENOTCONN",
        fail_limit=2,
    )
    url = os.path.join(m.mountpoint, "ckpts")
    state = _state(3, extra_floats=300_000)  # > 1 MiB: several FUSE writes
    # Without retries the first injected fault fails the save: the fault is real...
    with pytest.raises(StorageError, match="Transport endpoint is not connected"):
        CheckpointManager(url, retry=RetryPolicy(attempts=1)).save(state, step=42, epoch=1)
    assert _settled_files(os.path.join(m.source, "ckpts")) == set()
    # ...and with them the second one is absorbed.
    info = CheckpointManager(url, retry=FAST_RETRY).save(state, step=42, epoch=1)
    assert _settled_files(os.path.join(m.source, "ckpts")) == _pair(42), "no temp file left behind"
    loaded, linfo = CheckpointManager(url).load_latest()
    assert linfo == info
    _assert_equal(state, loaded)


def test_fuse_link_that_stays_down_raises_naming_the_url(slowfs_factory):
    m = slowfs_factory(
        "dead", latency_ms=0, bandwidth_mbps=0, fail_every=1, fail_on="write", fail_errno="ENOTCONN"
    )
    url = os.path.join(m.mountpoint, "ckpts")
    with pytest.raises(StorageError, match=re.escape(f"{url}/ckpt-000000001.pt")):
        CheckpointManager(url, retry=FAST_RETRY).save(_state(1), step=1, epoch=0)
    assert _files(os.path.join(m.source, "ckpts")) == set()
    # The policy's timeout (seconds since the first failure) also ends the retries:
    # with 0 s, the second failure is the last one despite 50 attempts allowed.
    give_up = RetryPolicy(attempts=50, initial_backoff=0.01, max_backoff=0.01, timeout=0.0)
    with pytest.raises(StorageError, match="failed 2 times with transient errors"):
        CheckpointManager(url, retry=give_up).save(_state(1), step=1, epoch=0)


def _kill_mid_save(code: str, url: str, backing: str, *, step: int) -> tuple[str | None, str]:
    """Run ``code`` (a child saving a 40 MB checkpoint of ``step`` into ``url``) and SIGKILL
    it once more than 1 MiB of its .pt has been staged in ``backing``: (the staged temp
    file's name, or None if it was never seen; what the child printed)."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", code, url, str(10_000_000)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prefix = f".ckpt-{step:09d}.pt.tmp-"
    staged = None
    deadline = time.monotonic() + 120
    try:
        while staged is None and time.monotonic() < deadline and child.poll() is None:
            for name in os.listdir(backing):
                if name.startswith(prefix):
                    if os.path.getsize(os.path.join(backing, name)) > (1 << 20):
                        staged = name
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        out = child.communicate(timeout=60)[0].decode(errors="replace")
    return staged, out


_CHILD = """
import sys, torch
from wds_pipeline.train.checkpoint import CheckpointManager
state = {"blob": torch.randn(int(sys.argv[2])), "step": 2}
CheckpointManager(sys.argv[1]).save(state, step=2, epoch=0)
print("finished", flush=True)
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint(slowfs_factory):
    # 10 MB/s: the child's 40 MB checkpoint takes ~4 s to stream in, a wide window.
    m = slowfs_factory("kill", latency_ms=0, bandwidth_mbps=10)
    url = os.path.join(m.mountpoint, "ckpts")
    backing = os.path.join(m.source, "ckpts")
    first = _state(1)
    CheckpointManager(url).save(first, step=1, epoch=0)
    staged, out = _kill_mid_save(_CHILD, url, backing, step=2)
    assert staged is not None, f"never saw the save in progress; child said: {out}"
    assert "finished" not in out
    assert staged in _files(backing)  # the kill really hit mid-save
    state, info = CheckpointManager(url).load_latest()
    assert info.step == 1
    _assert_equal(first, state)
    # The next save (a resumed run) cleans the dead temp file away.
    CheckpointManager(url).save(_state(2), step=2, epoch=0)
    assert _files(backing) == _pair(1) | _pair(2)


# ------------------------------------------------------------------------ diff


def test_state_dict_diff_names_each_difference():
    saved = {
        "fingerprints": {"train": "sha256:aa", "val": "sha256:bb"},
        "loader": {"batch_size": 32, "shuffle": True, "crop": [3.0, 16000], "w": torch.ones(2)},
        "dropped": 1,
    }
    now = {
        "fingerprints": {"train": "sha256:cc", "val": "sha256:bb"},
        "loader": {"batch_size": 32.0, "shuffle": 1, "crop": (3.0, 16000), "w": torch.zeros(2)},
        "added": {"x": "y"},
    }
    assert state_dict_diff(saved, now) == [
        "added.x: saved <absent>, now 'y'",
        "dropped: saved 1, now <absent>",
        "fingerprints.train: saved 'sha256:aa', now 'sha256:cc'",
        "loader.shuffle: saved True, now 1",
        "loader.w: saved tensor(shape=(2,), dtype=torch.float32), "
        "now tensor(shape=(2,), dtype=torch.float32)",
    ]
    assert state_dict_diff(saved, saved) == []


# ------------------------------------------- kills at every point of a save (issue 19.2)

_RESAVE_CHILD = """
import sys, torch
from wds_pipeline.train.checkpoint import CheckpointManager
state = {"blob": torch.randn(int(sys.argv[2])), "tag": "new"}
CheckpointManager(sys.argv[1], keep_last=1).save(state, step=6, epoch=1)
print("finished", flush=True)
"""


def test_sigkill_during_a_resave_of_the_same_step_keeps_it_loadable(slowfs_factory):
    """The issue's repro: keep_last=1, step 6 saved again (the epoch-end save after a
    step-6 save), killed while the new .pt streams onto a slow mount. The run must resume
    from step 6, not start over (the old code had deleted the sidecar first)."""
    m = slowfs_factory("resave", latency_ms=0, bandwidth_mbps=10)
    url = os.path.join(m.mountpoint, "ckpts")
    backing = os.path.join(m.source, "ckpts")
    first = _state(6)
    CheckpointManager(url, keep_last=1).save(first, step=6, epoch=0)
    staged, out = _kill_mid_save(_RESAVE_CHILD, url, backing, step=6)
    assert staged is not None, f"never saw the re-save in progress; child said: {out}"
    assert "finished" not in out
    assert _pair(6) <= _files(backing)  # the committed checkpoint was not deleted
    found = CheckpointManager(url, keep_last=1).load_latest()
    assert found is not None, "the only checkpoint was lost: a rerun would start from step 0"
    state, info = found
    assert (info.step, info.epoch) == (6, 0)
    _assert_equal(first, state)
    # The rerun's next save cleans the dead temp file away and keeps only its own.
    CheckpointManager(url, keep_last=1).save(_state(7), step=7, epoch=1)
    assert _files(backing) == _pair(7)


_KILL_CHILD = """
import sys, torch
from wds_pipeline.train.checkpoint import CheckpointManager
step, tag = int(sys.argv[2]), sys.argv[3]
CheckpointManager(sys.argv[1], keep_last=1).save({"w": torch.full((4,), float(step)), "tag": tag},
                                                 step=step, epoch=step)
print("finished", flush=True)
"""

# (step saved by the killed child, point of its save, (step, tag) a rerun resumes from)
_KILL_POINTS = [
    (7, "before-pt", (6, "old6")),
    (7, "pt-committed", (6, "old6")),
    (7, "sidecar-committed", (7, "new7")),
    (7, "pruned-sidecar", (7, "new7")),
    (6, "resave-vouches-both", (6, "old6")),
    (6, "before-pt", (6, "old6")),
    (6, "pt-committed", (6, "new6")),
    (6, "sidecar-committed", (6, "new6")),
]


@pytest.mark.parametrize("step,point,expected", _KILL_POINTS,
                         ids=[f"{'resave' if s == 6 else 'new'}-{p}" for s, p, _ in _KILL_POINTS])
def test_sigkill_at_each_point_of_a_save_leaves_a_loadable_checkpoint(tmp_path, step, point, expected):
    """keep_last=1 with step 6 committed; a child saves step 7 (a new step) or step 6 again
    and SIGKILLs itself at one point of the save (the hook makes the point exact; the kill is
    real). The rerun resumes from the latest intact step and no intact checkpoint is gone."""
    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder), keep_last=1)
    mgr.save({"w": torch.full((4,), 5.0), "tag": "old5"}, step=5, epoch=5)
    mgr.save({"w": torch.full((4,), 6.0), "tag": "old6"}, step=6, epoch=6)
    assert _files(folder) == _pair(6)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               WDS_PIPELINE_CHECKPOINT_KILL_AT=point)
    child = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(folder), str(step),
                            f"new{step}"], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)
    if expected == (6, "old6"):
        assert _pair(6) <= _files(folder)  # nothing committed was deleted
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)  # an orphan .pt is reported
        found = CheckpointManager(str(folder), keep_last=1).load_latest()
    assert found is not None, f"no checkpoint left after a kill at {point}: {_files(folder)}"
    state, info = found
    assert (info.step, state["tag"], info.epoch) == (*expected, int(expected[1][3:]))
    assert torch.equal(state["w"], torch.full((4,), float(expected[0])))
    # The rerun goes on from there: its next save leaves exactly its own checkpoint.
    CheckpointManager(str(folder), keep_last=1).save({"tag": "next"}, step=info.step + 1, epoch=0)
    assert _files(folder) == _pair(info.step + 1)


# ------------------------------------------ a hostile checkpoint (issue 19, smaller point)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran code",))


def test_a_checkpoint_that_would_run_code_is_refused_without_advising_weights_only_false(tmp_path):
    import io

    folder = tmp_path / "c"
    mgr = CheckpointManager(str(folder))
    mgr.save(_state(1), step=1, epoch=0)
    buf = io.BytesIO()
    torch.save({"model": _RunsCode()}, buf)
    data = buf.getvalue()
    (folder / "ckpt-000000002.pt").write_bytes(data)
    info = CheckpointInfo(url=f"{folder}/ckpt-000000002.pt", step=2, epoch=0,
                          sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (folder / "ckpt-000000002.json").write_bytes(info.to_sidecar())
    with pytest.warns(CheckpointWarning) as rec:
        _, used = mgr.load_latest()
    assert used.step == 1
    (text,) = [str(w.message) for w in rec]
    expected = (f"{folder}/ckpt-000000002.pt (refused by the safe loader: Trying to load "
                "unsupported GLOBAL posix.system whose module posix is blocked.; checkpoints "
                "this code writes hold only tensors and plain values, so this file was not "
                "written by it and may run code when unpickled: delete it, do not load it)")
    assert expected in text and "\n" not in text
    assert "False" not in text  # torch's "retry with weights_only set to False" is not repeated
    (folder / "ckpt-000000001.pt").unlink()  # the hostile one alone: an error, same wording
    with pytest.raises(CheckpointError) as err:
        mgr.load_latest()
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "False" not in str(err.value)
