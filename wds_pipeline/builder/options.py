"""Typed build options, results and errors (no I/O here)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..audio.vad import BACKENDS as VAD_BACKENDS
from ..audio.vad import VadMethod, get_vad
from ..errors import ConfigError, WdsPipelineError
from ..index import BuildCounts
from ..option_table import Preset, choices, internal, option, recorded, switch
from ..sizes import parse_size

# The choices of the options that take one of a few values: the --help choices, the
# checks of validate() and the YAML checks all read these (typing.get_args); VadMethod
# (audio.vad) is also the registry of the VAD backends.
Codec = Literal["npy", "flac"]
Compression = Literal["none", "zstd"]
Normalize = Literal["none", "peak", "loudness"]
ExecutorName = Literal["local", "ray"]

PRE, SHARDING, RUNNING = "preprocessing", "sharding", "running"  # --help sections


class BuildConfigError(ConfigError):
    """The build cannot start as asked: bad options, bad source, or an OUT conflict.

    The CLI maps it to exit status 2 (usage error): the fix is to change the command.
    """


class OutputConflictError(BuildConfigError):
    """OUT already holds a different dataset; ``--overwrite`` replaces it."""


class BuildError(WdsPipelineError, RuntimeError):
    """The build started but failed (a worker crashed, output could not be written)."""


@dataclass(frozen=True)
class BuildOptions:
    """Everything that shapes the output, plus how to run (workers, strict, progress).

    Each field is declared once, here: its flag of `wds-pipeline build`, its key of the
    --config YAML and its choices (wds_pipeline.option_table), whether it enters the plan
    fingerprint (``fingerprint=False``: the number of workers or ``strict`` never change
    the bytes written; see :meth:`output_dict`), and, for the "preprocessing" section, its
    record in the index and its copy in the worker's settings (builder.plan.WorkerConfig).
    """

    sample_rate: int = option(16000, help="output rate in Hz", metavar="HZ", group=PRE)
    codec: Codec = option(
        "npy", group=PRE,
        help="audio field: int16 npy (fastest to read) or FLAC (about half the size)")
    compress: Compression = option(
        "none", help="zstd-compress npy fields (audio.npy.zst, fbank.npy.zst)", group=PRE)
    zstd_level: int = option(3, help="zstd level 1-22", metavar="LEVEL", group=PRE,
                             unused_when=lambda o: o.compress == "none")
    normalize: Normalize = option("none", help="gain normalisation", group=PRE)
    trim_silence: bool = option(False, help="trim leading/trailing silence", group=PRE)
    # omit_default: builds without VAD keep the fingerprint they had before it existed.
    vad: VadMethod = option(
        "none", group=PRE, omit_default=True,
        help="voice activity detection: trim leading/trailing non-speech and reject clips "
        "with no speech ('all silence'); seconds removed and clips dropped are counted in the "
        "index's extras. energy: signal level, no extra package; silero: the Silero neural "
        "model (pip install 'wds-pipeline[vad]'), which also tells speech from other sounds")
    vad_split_pause: float | None = option(
        None, metavar="SECONDS", group=PRE, omit_default=True,
        help="with --vad: also split each input at pauses of at least SECONDS, one sample per "
        "speech region (keys get -v0000, -v0001...; --min-duration/--max-duration apply per "
        "region); not with --chunk-seconds")
    chunk_seconds: float | None = option(
        None, metavar="SECONDS", group=PRE,
        help="cut each input into chunks of this length (keys get -c0000, -c0001...)")
    min_chunk_seconds: float = option(
        0.5, metavar="SECONDS", group=PRE, unused_when=lambda o: o.chunk_seconds is None,
        help="keep a last shorter chunk only when at least this long")
    min_duration: float = option(
        0.5, metavar="SECONDS", group=PRE,
        help="reject inputs shorter than this after preprocessing")
    max_duration: float | None = option(
        None, metavar="SECONDS", group=PRE,
        help="reject inputs longer than this (default: no limit)")
    fbank: bool = option(False, help="add fbank.npy: 80-bin Kaldi log-mel float16 (frames, 80)",
                         group=PRE)
    shard_size: int = option(1000, help="inputs per shard", metavar="N", group=SHARDING)
    max_shard_bytes: int | None = option(
        None, parse=parse_size, metavar="SIZE", group=SHARDING,
        help="also cut shards by estimated size, e.g. 512MB (probes durations)")
    # Seeded shuffle of the id-sorted inputs so that every shard mixes speakers (a
    # streaming reader only shuffles within a buffer); None keeps the sorted order.
    shuffle_seed: int | None = option(
        0, metavar="SEED", group=SHARDING,
        help="seed of the shuffle of id-sorted inputs over shards",
        presets=[Preset("--no-shuffle", None,
                        "keep inputs in id order (shards then hold few speakers each)")])
    shard_prefix: str = option("shard", help="shard file prefix", metavar="PREFIX",
                               group=SHARDING)
    # -- how to run (not part of the fingerprint) --
    workers: int | None = option(  # None: os.cpu_count()
        None, metavar="N", group=RUNNING, fingerprint=False,
        help=f"worker processes (default: CPU count, here {os.cpu_count()})")
    strict: bool = option(False, help="exit 1 when any input was rejected", group=RUNNING,
                          fingerprint=False)
    overwrite: bool = switch(
        help="replace a different dataset already in OUT (deletes its shards/index)",
        group=RUNNING, fingerprint=False)
    # Re-hash every shard of a split that looks complete and rebuild those that no longer
    # match their journal entry (what ``verify`` advises after finding damage).
    repair: bool = switch(
        help="re-hash every shard of a finished split against its journal entry and "
        "rebuild the ones that fail (after `wds-pipeline verify` found damage)", group=RUNNING,
        fingerprint=False)
    # Seconds to wait for another build that holds OUT (0: fail at once, naming it).
    wait_for_lock: float = option(
        0.0, metavar="SECONDS", group=RUNNING, fingerprint=False,
        help="wait up to SECONDS for another build writing the same OUT to finish "
        "(default 0: fail at once, naming that build)")
    progress: bool = option(True, help="progress bars", flag=None, group=RUNNING,
                            presets=[Preset("--no-progress", False, "no progress bars")],
                            fingerprint=False)
    executor: ExecutorName | None = option(
        None, group=RUNNING, fingerprint=False,
        help="where shards are built: local (worker processes on this machine, the default) "
        "or ray (tasks on a Ray cluster; see --ray)")
    ray: str | None = option(
        None, metavar="ADDRESS", group=RUNNING, fingerprint=False,
        help="build on Ray: auto (the cluster this machine belongs to), ray://HOST:PORT "
        "(Ray Client), HOST:PORT (a cluster's GCS address) or local:N (a Ray instance "
        "started here with N CPUs). Tasks read SRC and write OUT themselves: use storage "
        "every node reaches (gs://...). Needs pip install 'wds-pipeline[ray]'")
    # fsspec options of OUT (API only)
    storage_options: dict[str, Any] = internal(dict, fingerprint=False)

    def resolved_workers(self) -> int:
        return max(1, self.workers if self.workers is not None else (os.cpu_count() or 1))

    def uses_ray(self) -> bool:
        return self.executor == "ray" or (self.executor is None and self.ray is not None)

    def validate(self) -> None:
        def bad(msg: str) -> BuildConfigError:
            return BuildConfigError(msg)

        for f in fields(self):  # every option declared with a Literal type
            allowed = choices(BuildOptions, f.name)
            value = getattr(self, f.name)
            if allowed is not None and value not in allowed:
                names = ", ".join(str(a) for a in allowed if a is not None)
                raise bad(f"--{f.name.replace('_', '-')} {value!r}: choose one of {names}")
        if self.codec == "flac" and self.compress != "none":
            raise bad("--compress zstd applies to npy audio only (FLAC is already compressed); "
                      "use --codec npy --compress zstd or --codec flac --compress none")
        if self.vad != "none":
            try:
                get_vad(self.vad).require()  # a missing package: before any work
            except ImportError as e:
                raise bad(str(e)) from e
        if self.vad_split_pause is not None:
            if not self.vad_split_pause > 0:
                raise bad(f"--vad-split-pause must be positive, got {self.vad_split_pause}")
            if self.vad == "none":
                backends = " or ".join(f"--vad {name}" for name in VAD_BACKENDS)
                raise bad("--vad-split-pause splits at the pauses that voice activity detection "
                          f"finds: add {backends}")
            if self.chunk_seconds is not None:
                raise bad("--vad-split-pause and --chunk-seconds both cut inputs into samples: "
                          "use one of them (--max-duration rejects over-long speech regions)")
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
        if self.executor == "local" and self.ray is not None:
            raise bad(f"--ray {self.ray} asks for a Ray build but executor is local: "
                      "drop one of them")
        if self.ray is not None:
            check_ray_address(self.ray)
        if not 1 <= self.zstd_level <= 22:
            raise bad(f"zstd level must be in 1..22, got {self.zstd_level}")

    def output_dict(self) -> dict[str, Any]:
        """The options that change the bytes written (fingerprinted), as their declarations
        say: a setting that cannot change a byte in this configuration is None."""
        return recorded(self)

    def preprocessing_dict(self) -> dict[str, Any]:
        """The "preprocessing" section's options, recorded as :meth:`output_dict` does."""
        return recorded(self, group=PRE)


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
    # Planned shards whose every input was rejected: no file, not in the index.
    shards_empty: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shards_text(self) -> str:
        return shards_text(self.shards, self.shards_built, self.shards_reused,
                           self.shards_empty)


def shards_text(shards: int, built: int, reused: int, empty: int) -> str:
    """The shard counts of a build: in the index, built, reused and, when some planned
    shards held only rejected inputs, how many of those (neither built nor indexed)."""
    text = f"{shards} shards ({built} built, {reused} reused)"
    if empty:
        text += (f", {empty} planned shard{'s' if empty > 1 else ''} not written "
                 "(every input rejected)")
    return text


@dataclass
class BuildResult:
    out: str
    splits: dict[str, SplitResult]
    # When nothing was written: why, in one line ("every input was rejected: 12 of 12
    # shorter than --min-duration 0.5 s; lower --min-duration ..."); else "".
    all_rejected: str = ""

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
        empty = sum(s.shards_empty for s in self.splits.values())
        line = (f"{c.inputs} inputs, {c.written} written, {c.rejected} rejected; "
                f"{c.samples} samples, {self.hours:.3f} hours, "
                f"{shards_text(shards, built, reused, empty)}")
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
