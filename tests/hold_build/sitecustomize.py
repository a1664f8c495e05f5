"""Imported at start-up by every Python process of a build that a test runs with this folder
on PYTHONPATH (a folder of its own: no other process sees it) and WDS_TEST_HOLD_BUILD=MARKER
set: a process that has journaled a shard holds in the first sample write of its next shard
(its temp tar open), after creating MARKER, until it is killed. A SIGKILL or Ctrl-C sent once
MARKER exists lands mid-build and mid-shard on any machine, where one sent after the first
journal entry only raced the rest of the build."""

from __future__ import annotations

import os

_MARKER = os.environ.get("WDS_TEST_HOLD_BUILD")

if _MARKER:
    import time
    from typing import Any

    from wds_pipeline.builder import worker

    _journal_shard = worker.journal_shard
    _write_sample = worker.ShardWriter.write_sample
    _journaled = False

    def _journal_then_arm(task: Any, outcome: Any) -> None:
        global _journaled
        _journal_shard(task, outcome)
        _journaled = True

    def _write_or_hold(self: Any, *args: Any, **kwargs: Any) -> Any:
        written = _write_sample(self, *args, **kwargs)
        if _journaled:
            with open(_MARKER, "a"):  # an empty marker file
                pass
            while True:
                time.sleep(60)
        return written

    worker.journal_shard = _journal_then_arm
    worker.ShardWriter.write_sample = _write_or_hold  # type: ignore[method-assign]
