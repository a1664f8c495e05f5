"""Where shard tasks run: in this process, in a local process pool, or on a Ray cluster.

A shard task is a pure function of its :class:`~.plan.ShardTask` (inputs and
settings): it reads its sources, publishes its shard and journal entry itself,
and reports a small :class:`~.staging.ShardOutcome`. An :class:`Executor`
only decides where the tasks run; it yields one :class:`TaskReport` per task as
each finishes, in any order. What to do with a failure (the index of that split
is not written, the build fails naming the shard) is the coordinator's business.

This module knows no other executor: :mod:`.ray_executor` builds on it, and the
coordinator (:func:`~.run.make_executor`) chooses between them.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import ShardTask
from .staging import ShardOutcome
from .worker import process_shard

ShardFn = Callable[[ShardTask], ShardOutcome]


@dataclass
class TaskReport:
    """One task's end: its outcome, or the error that ended it (after any retries)."""

    task: ShardTask
    outcome: ShardOutcome | None = None
    error: BaseException | None = None


class Executor(abc.ABC):
    """Runs shard tasks. ``fn`` is the task function (``process_shard`` unless a test
    wraps it); it must be importable by name where the tasks run."""

    name = "executor"

    def __init__(self, fn: ShardFn = process_shard):
        self.fn = fn

    @abc.abstractmethod
    def run(self, tasks: Sequence[ShardTask]) -> Generator[TaskReport, None, None]:
        """Yield a report per task as it finishes. After a failure an executor may stop
        starting new tasks (those are not reported). On KeyboardInterrupt the running
        tasks are stopped before it propagates."""

    def describe(self) -> str:
        return self.name


class InProcessExecutor(Executor):
    """One task after another in this process (``--workers 1``): no IPC, easy to debug."""

    name = "in-process"

    def run(self, tasks: Sequence[ShardTask]) -> Generator[TaskReport, None, None]:
        with _single_torch_thread():
            for task in tasks:
                try:
                    outcome = self.fn(task)
                except Exception as e:
                    yield TaskReport(task, error=e)
                    return  # as the pool: nothing new starts after a failure
                yield TaskReport(task, outcome)


class LocalPoolExecutor(Executor):
    """A pool of worker processes on this machine, one shard per task (the default).

    After a failure no queued task starts; the running ones finish (and journal) so that
    a rerun loses as little as possible.
    """

    name = "local pool"

    def __init__(self, workers: int, fn: ShardFn = process_shard):
        super().__init__(fn)
        self.workers = workers

    def describe(self) -> str:
        return f"{self.name} of {self.workers} processes"

    def run(self, tasks: Sequence[ShardTask]) -> Generator[TaskReport, None, None]:
        ctx = _mp_context()
        # Each worker reports its pid here at start, so that Ctrl-C can stop the running
        # ones through public APIs (concurrent.futures cannot cancel a running task).
        pids = ctx.SimpleQueue()
        with cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                    initializer=_init_worker,
                                    initargs=(os.getpid(), pids)) as pool:
            futures = {pool.submit(self.fn, t): t for t in tasks}
            try:
                for fut in cf.as_completed(futures):
                    if fut.cancelled():
                        continue
                    task = futures[fut]
                    error = fut.exception()
                    if error is None:
                        yield TaskReport(task, fut.result())
                        continue
                    # Drop the queued tasks; as_completed still reports the running ones.
                    for f in futures:
                        f.cancel()
                    yield TaskReport(task, error=error)
            except (KeyboardInterrupt, GeneratorExit):
                # Ctrl-C, or the coordinator stopped listening (closed this generator).
                _terminate(pool, pids)
                raise
            finally:
                pids.close()


def _terminate(pool: cf.ProcessPoolExecutor, pids: Any) -> None:
    """Ctrl-C: drop queued shards and stop the running ones now (the coordinator then
    removes their temp files; finished shards are journaled and kept)."""
    pool.shutdown(wait=False, cancel_futures=True)
    procs = []
    while not pids.empty():
        procs.append(pids.get())
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in procs:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the fork server) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver where available, else spawn; never a plain fork.

    A fork of this process would copy its threads' locks (tqdm's monitor, fsspec's
    IO loop) in whatever state they are. The fork server is a fresh process that
    imports the worker module once; each worker then starts in milliseconds
    instead of re-importing numpy, soundfile, soxr and fsspec (and torch with
    --fbank) as every spawned worker would.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Process-wide: Python has one fork server per process, so this preload also applies
        # to any other forkserver pool the caller starts later (it only adds an import there).
        ctx.set_forkserver_preload(["wds_pipeline.builder.worker"])
        return ctx
    return multiprocessing.get_context("spawn")


def _watch_coordinator(pid: int) -> None:
    """Exit this worker once the coordinator is gone (kill -9 leaves no one to stop it: the
    fork server, not the coordinator, is its parent, so a parent-death signal is not
    enough). Its temp file is removed by the next run of the build."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _init_worker(coordinator_pid: int, pids: Any) -> None:
    pids.put(os.getpid())
    threading.Thread(target=_watch_coordinator, args=(coordinator_pid,), daemon=True,
                     name="wds-coordinator-watch").start()
    # Ctrl-C is the coordinator's business: a worker killed by SIGINT while idle
    # would make the pool "broken" and SIGTERM the others mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Parallelism comes from processes (one shard each): torch's own thread pool
    # (used by --fbank) would only oversubscribe the cores, and its spinning threads
    # slow fbank builds several-fold on a loaded machine.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    else:
        # torch is imported later, by the first --fbank shard, and sizes its thread
        # pool from this at import (this worker process only).
        os.environ["OMP_NUM_THREADS"] = "1"


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """In-process builds: one torch thread while building (small per-utterance fbank
    ops run ~6x slower with 2 contending threads), restored afterwards."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
