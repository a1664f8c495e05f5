"""Shard tasks as Ray tasks (``--ray``): one task per shard, one CPU each.

A task carries its planned input paths and settings out and a small outcome
back; it reads the sources and publishes its shard and journal entry on OUT
itself, so the driver never moves audio bytes. A task whose worker process or
node dies is re-run by Ray (``max_retries``); one that raises is not (an input
error is already a recorded reject, anything else would fail again), and a
rerun of the build resumes from the journal. Unlike the local pool, the other
shards keep running after a failure: on a cluster a rerun is expensive, so the
build fails at the end naming every failed shard.

Ray is optional (``pip install 'wds-pipeline[ray]'``) and imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from typing import Any

from .executor import Executor, ShardFn, TaskReport
from .options import BuildConfigError, check_ray_address
from .plan import ShardTask
from .staging import ShardOutcome
from .worker import process_shard

# Retries of a task whose worker process or node died (Ray's default is 3 as well).
MAX_RETRIES = 3
INSTALL_HINT = "pip install 'wds-pipeline[ray]'  (or: pip install ray)"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise BuildConfigError(f"--ray needs the ray package, which is not installed ({e}); "
                               f"install it with: {INSTALL_HINT}") from None
    return ray


class RayExecutor(Executor):
    """Runs shard tasks on Ray. ``address``: ``auto``, ``ray://HOST:PORT``, ``HOST:PORT``
    or ``local:N``. A Ray connection this process already holds (``ray.init`` called by
    the caller, e.g. with a ``runtime_env``) is used as is and left open."""

    name = "ray"

    def __init__(self, address: str, fn: ShardFn = process_shard,
                 max_retries: int = MAX_RETRIES):
        super().__init__(fn)
        check_ray_address(address)
        self.address = address
        self.max_retries = max_retries
        self._ray = import_ray()  # fail before any work with the install hint

    def describe(self) -> str:
        return f"Ray ({self.address})"

    def _connect(self) -> bool:
        """Connect (or start a local instance); True when this call did, so must shut down."""
        ray = self._ray
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if self.address.startswith("local:"):
            # address="local": a fresh instance whatever RAY_ADDRESS or a `ray start`
            # address file says (with no address, ray.init would connect to that cluster
            # and refuse num_cpus).
            kwargs.update(address="local", num_cpus=int(self.address.removeprefix("local:")),
                          include_dashboard=False)
        else:
            kwargs["address"] = self.address
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise BuildConfigError(
                f"--ray {self.address}: cannot reach a Ray cluster ({e}). Start one "
                "(ray start --head) or use --ray local:N for a Ray instance on this machine."
            ) from None
        return True

    def run(self, tasks: Sequence[ShardTask]) -> Generator[TaskReport, None, None]:
        ray = self._ray
        started = self._connect()
        try:
            remote = ray.remote(_run_shard).options(num_cpus=1, max_retries=self.max_retries,
                                                    retry_exceptions=False)
            fn = ray.put(self.fn)  # shipped once, not with every task
            refs = {remote.remote(fn, t): t for t in tasks}
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        yield _report(ray, refs[ref], ref)
            except (KeyboardInterrupt, GeneratorExit):
                for ref in pending:  # stop the running tasks, drop the queued ones
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()


def _run_shard(fn: ShardFn, task: ShardTask) -> ShardOutcome:
    """The Ray task: any callable ``fn`` (a function, or a test's wrapper object)."""
    return fn(task)


def _report(ray: Any, task: ShardTask, ref: Any) -> TaskReport:
    try:
        return TaskReport(task, ray.get(ref))
    except ray.exceptions.RayTaskError as e:
        # The task raised: report the task's own exception, not Ray's wrapper.
        cause = getattr(e, "cause", None)
        return TaskReport(task, error=cause if isinstance(cause, BaseException) else e)
    except ray.exceptions.RayError as e:  # worker or node lost after every retry, cancelled
        return TaskReport(task, error=e)
