"""Task functions that executors' workers run in tests (test_ray_build.py, test_builder.py).

A separate module (not a test file) so that a worker process imports only this and
the builder: the Ray test cluster puts tests/ on its workers' PYTHONPATH, pool
workers get the test process's sys.path. The fault wrappers end in the real
``process_shard``; they only add a fault first.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from wds_pipeline.builder.plan import ShardTask
from wds_pipeline.builder.staging import ShardOutcome
from wds_pipeline.builder.worker import process_shard


class Killing:
    """SIGKILL this worker process mid-task on a shard's first attempt (a marker file,
    written before the kill, tells the next attempt apart); later attempts build it."""

    def __init__(self, marker_dir: str, shards: set[str]):
        self.marker_dir = marker_dir
        self.shards = shards

    def __call__(self, task: ShardTask) -> ShardOutcome:
        marker = Path(self.marker_dir) / f"{task.split}-{task.name}.killed"
        if task.name in self.shards and not marker.exists():
            marker.write_text(str(os.getpid()))
            # A worker killed while writing leaves its temp tar behind.
            os.makedirs(task.staging_dir, exist_ok=True)
            fd, _ = tempfile.mkstemp(prefix=task.name + ".", suffix=".partial",
                                     dir=task.staging_dir)
            os.write(fd, b"half a tar")
            os.kill(os.getpid(), signal.SIGKILL)
        outcome = process_shard(task)
        (Path(self.marker_dir) / f"{task.split}-{task.name}.built").write_text(str(os.getpid()))
        return outcome


class Failing:
    """Raise for the named shards (a bug, not a bad input: Ray must not retry it)."""

    def __init__(self, shards: set[str]):
        self.shards = shards

    def __call__(self, task: ShardTask) -> ShardOutcome:
        if task.name in self.shards:
            raise RuntimeError(f"injected failure in {task.name}")
        return process_shard(task)


def torch_threads(task: object) -> int:
    """Import torch inside the worker (as --fbank does on its first shard) and report
    how many threads its ops will use."""
    import torch

    return torch.get_num_threads()
