"""Typed build options, results and errors (no I/O here)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ..index import BuildCounts

Normalize = Literal["none", "peak", "loudness"]

CODECS = ("npy", "flac")
COMPRESSIONS = ("none", "zstd")
NORMALIZES = ("none", "peak", "loudness")


class BuildConfigError(ValueError):
    """The build cannot start as asked: bad options, bad source, or an OUT conflict.

    The CLI maps it to exit status 2 (usage error): the fix is to change the command.
    """


class OutputConflictError(BuildConfigError):
    """OUT already holds a different dataset; ``--overwrite`` replaces it."""


class BuildError(RuntimeError):
    """The build started but failed (a worker crashed, output could not be written)."""


@dataclass(frozen=True)
class BuildOptions:
    """Everything that shapes the output, plus how to run (workers, strict, progress).

    Only the fields listed in :meth:`output_dict` enter the plan fingerprint: the
    number of workers or ``strict`` never change the bytes written.
    """

    sample_rate: int = 16000
    codec: Literal["npy", "flac"] = "npy"
    compress: Literal["none", "zstd"] = "none"
    zstd_level: int = 3
    normalize: Normalize = "none"
    trim_silence: bool = False
    chunk_seconds: float | None = None
    min_chunk_seconds: float = 0.5
    min_duration: float = 0.5
    max_duration: float | None = None
    fbank: bool = False
    shard_size: int = 1000
    max_shard_bytes: int | None = None
    # Seeded shuffle of the id-sorted inputs so that every shard mixes speakers (a
    # streaming reader only shuffles within a buffer); None keeps the sorted order.
    shuffle_seed: int | None = 0
    shard_prefix: str = "shard"
    # -- how to run (not part of the fingerprint) --
    workers: int | None = None  # None: os.cpu_count()
    strict: bool = False
    overwrite: bool = False
    # Re-hash every shard of a split that looks complete and rebuild those that no longer
    # match their journal entry (what ``verify`` advises after finding damage).
    repair: bool = False
    # Seconds to wait for another build that holds OUT (0: fail at once, naming it).
    wait_for_lock: float = 0.0
    progress: bool = True
    executor: Literal["local", "ray"] | None = field(default=None, metadata={
        "help": "where shards are built: local (worker processes on this machine, the "
                "default) or ray (tasks on a Ray cluster; see --ray)"})
    ray: str | None = field(default=None, metadata={
        "help": "build on Ray: auto (the cluster this machine belongs to), ray://HOST:PORT "
                "(Ray Client), HOST:PORT (a cluster's GCS address) or local:N (a Ray "
                "instance started here with N CPUs). Tasks read SRC and write OUT "
                "themselves: use storage every node reaches (gs://...). Needs "
                "pip install 'wds-pipeline[ray]'"})
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def resolved_workers(self) -> int:
        return max(1, self.workers if self.workers is not None else (os.cpu_count() or 1))

    def uses_ray(self) -> bool:
        return self.executor == "ray" or (self.executor is None and self.ray is not None)

    def validate(self) -> None:
        def bad(msg: str) -> BuildConfigError:
            return BuildConfigError(msg)

        if self.codec not in CODECS:
            raise bad(f"--codec {self.codec!r}: choose one of {', '.join(CODECS)}")
        if self.compress not in COMPRESSIONS:
            raise bad(f"--compress {self.compress!r}: choose one of {', '.join(COMPRESSIONS)}")
        if self.codec == "flac" and self.compress != "none":
            raise bad("--compress zstd applies to npy audio only (FLAC is already compressed); "
                      "use --codec npy --compress zstd or --codec flac --compress none")
        if self.normalize not in NORMALIZES:
            raise bad(f"--normalize {self.normalize!r}: choose one of {', '.join(NORMALIZES)}")
        if self.sample_rate <= 0:
            raise bad(f"--sample-rate must be positive, got {self.sample_rate}")
        if self.shard_size < 1:
            raise bad(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.max_shard_bytes is not None and self.max_shard_bytes < 1:
            raise bad(f"--max-shard-bytes must be >= 1, got {self.max_shard_bytes}")
        if self.min_duration < 0:
            raise bad(f"--min-duration must be >= 0, got {self.min_duration}")
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise bad(f"--max-duration ({self.max_duration}) must exceed --min-duration "
                      f"({self.min_duration})")
        if self.chunk_seconds is not None and self.chunk_seconds <= 0:
            raise bad(f"--chunk-seconds must be positive, got {self.chunk_seconds}")
        if not self.wait_for_lock >= 0:
            raise bad(f"--wait-for-lock must be >= 0 seconds, got {self.wait_for_lock}")
        if self.workers is not None and self.workers < 1:
            raise bad(f"--workers must be >= 1, got {self.workers}")
        if not self.shard_prefix or not all(c.isalnum() or c in "_-" for c in self.shard_prefix):
            raise bad(f"--shard-prefix {self.shard_prefix!r}: use letters, digits, '_' or '-' "
                      "(no dots or slashes)")
        if self.executor not in (None, "local", "ray"):
            raise bad(f"--executor {self.executor!r}: choose local or ray")
        if self.executor == "local" and self.ray is not None:
            raise bad(f"--ray {self.ray} asks for a Ray build but executor is local: "
                      "drop one of them")
        if self.ray is not None:
            check_ray_address(self.ray)
        if not 1 <= self.zstd_level <= 22:
            raise bad(f"zstd level must be in 1..22, got {self.zstd_level}")

    def output_dict(self) -> dict[str, Any]:
        """The options that change the bytes written (fingerprinted)."""
        run_only = {"workers", "strict", "overwrite", "repair", "wait_for_lock", "progress",
                    "executor", "ray", "storage_options"}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in run_only}
        # Settings that cannot change a byte in this configuration do not count.
        if self.compress == "none":
            d["zstd_level"] = None
        if self.chunk_seconds is None:
            d["min_chunk_seconds"] = None
        return d


def check_ray_address(address: str) -> None:
    """``auto``, ``ray://HOST:PORT``, ``HOST:PORT`` or ``local:N`` (N >= 1)."""
    if address == "auto":
        return
    if address.startswith("local:"):
        n = address.removeprefix("local:")
        if n.isdigit() and int(n) >= 1:
            return
    else:
        hostport = address.removeprefix("ray://")
        host, _, port = hostport.rpartition(":")
        if host and port.isdigit():
            return
    raise BuildConfigError(f"--ray {address!r}: use auto, ray://HOST:PORT, HOST:PORT or local:N "
                           "(N CPUs for a Ray instance started on this machine)")


@dataclass
class SplitResult:
    split: str
    index_url: str
    counts: BuildCounts
    shards: int  # shards listed in the index
    shards_built: int  # built by this run
    shards_reused: int  # skipped: journal entry and file verified
    duration: float  # seconds of audio written
    already_complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildResult:
    out: str
    splits: dict[str, SplitResult]

    @property
    def counts(self) -> BuildCounts:
        total = BuildCounts()
        for s in self.splits.values():
            total.inputs += s.counts.inputs
            total.written += s.counts.written
            total.rejected += s.counts.rejected
            total.samples += s.counts.samples
        return total

    @property
    def already_complete(self) -> bool:
        return bool(self.splits) and all(s.already_complete for s in self.splits.values())

    @property
    def hours(self) -> float:
        return sum(s.duration for s in self.splits.values()) / 3600.0

    def summary(self) -> str:
        c = self.counts
        shards = sum(s.shards for s in self.splits.values())
        built = sum(s.shards_built for s in self.splits.values())
        reused = sum(s.shards_reused for s in self.splits.values())
        line = (f"{c.inputs} inputs, {c.written} written, {c.rejected} rejected; "
                f"{c.samples} samples, {self.hours:.3f} hours, {shards} shards "
                f"({built} built, {reused} reused)")
        if self.already_complete:
            line += "; already complete"
        return line

    def exit_code(self, strict: bool) -> int:
        """0 ok; 1 when nothing was written, or with ``strict`` when anything was rejected."""
        c = self.counts
        if c.written == 0:
            return 1
        if strict and c.rejected > 0:
            return 1
        return 0
