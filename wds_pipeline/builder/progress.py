"""The build's progress bar: shards done, audio hours per second, failed shards, rejects."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .staging import ShardOutcome


class BuildProgress:
    def __init__(self, total_shards: int, *, enabled: bool, desc: str = "build"):
        self.bar = tqdm(total=total_shards, desc=desc, unit="shard", disable=not enabled,
                        file=sys.stderr)
        self.start = time.monotonic()
        self.audio_seconds = 0.0
        self.failed = 0
        self.rejected = 0

    def done(self, outcome: ShardOutcome) -> None:
        if outcome.info is not None:
            self.audio_seconds += outcome.info.duration
        self.rejected += outcome.counts.rejected
        self._advance()

    def fail(self) -> None:
        self.failed += 1
        self._advance()

    def hours_per_second(self) -> float:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return self.audio_seconds / 3600.0 / elapsed

    def _advance(self) -> None:
        self.bar.set_postfix_str(f"audio {self.hours_per_second():.3g} h/s, failed "
                                 f"{self.failed}, rejected {self.rejected}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
