"""``build_dataset``: scan a source, plan, run the shard tasks on an executor, write indexes.

Order of events per split: check OUT (refuse / overwrite / resume), reuse
journaled shards whose files re-hash correctly, build the rest (one shard per
task, on the :mod:`~.executor` the options ask for: in-process, a local process
pool or Ray), and only when every shard of a split reported success write its
``index.json`` atomically (:class:`~.split_writer.SplitWriter`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tqdm import tqdm

from ..audio.vad import get_vad
from ..option_table import implied_defaults
from ..option_table import values as option_values
from ..records import Reject, SourceScan, explain_rejects
from ..sources import Source
from .executor import Executor, InProcessExecutor, LocalPoolExecutor, TaskReport
from .lock import OutLock, locked
from .options import BuildConfigError, BuildError, BuildOptions, BuildResult, SplitResult
from .plan import ShardTask, SplitPlan, WorkerConfig, make_plans
from .progress import BuildProgress
from .split_writer import SplitWriter
from .staging import staging_dir_for

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def resolve_source_options(source: Source, source_options: Mapping[str, Any] | Any) -> Any:
    """The source's ``Options``: given as such, or from a mapping of option names (missing
    ones take their defaults, so the fingerprint does not depend on how they were spelled:
    the CLI passes every option, an API caller maybe none)."""
    from ..sources import source_options as to_options

    try:
        return to_options(source, source_options)
    except (ValueError, TypeError) as e:  # unknown option, wrong type
        raise BuildConfigError(str(e)) from None


def scan_source(source: Source, root: str, source_options: Any) -> SourceScan:
    try:
        return source.scan(root, source_options)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise BuildConfigError(f"{source.NAME} source at {root}: {e}") from e


def _get_source(name: str) -> Source:
    from ..sources import get_source

    try:
        return get_source(name)
    except (ValueError, TypeError) as e:  # unknown source, or a module that is no source
        raise BuildConfigError(str(e)) from None


def worker_config(options: BuildOptions) -> tuple[WorkerConfig, dict[str, Any]]:
    """The per-sample processing settings, and their record for the index."""
    try:
        cfg = WorkerConfig.from_options(options)
    except ValueError as e:
        raise BuildConfigError(str(e)) from e
    preprocessing = cfg.preprocessing(options)
    if cfg.vad_enabled:
        model = get_vad(cfg.vad).require()  # another model version finds other bounds
        if model is not None:
            preprocessing["vad_model"] = model
    return cfg, preprocessing


def make_executor(options: BuildOptions, num_tasks: int) -> Executor:
    """The executor the options ask for: Ray with ``ray``/``executor: ray``, else a local
    pool of ``workers`` processes (in-process for one worker or one task)."""
    if options.uses_ray():
        from .ray_executor import RayExecutor  # Ray: imported only by builds that ask for it

        return RayExecutor(options.ray or "auto")
    if options.executor not in (None, "local"):
        raise BuildConfigError(f"executor {options.executor!r}: choose local or ray")
    workers = min(options.resolved_workers(), num_tasks)
    if workers <= 1:
        return InProcessExecutor()
    return LocalPoolExecutor(workers)


def _probe_durations(scan: SourceScan, root: str, options: BuildOptions,
                     log: Log) -> dict[str, float]:
    """Durations for --max-shard-bytes, for records that do not carry one."""
    from ..audio import probe_duration
    from .plan import resolve_source_path, source_base

    todo = [r for r in scan.records if r.duration is None]
    base = source_base(root)

    def probe(rec) -> tuple[str, float]:
        try:
            return rec.id, probe_duration(resolve_source_path(base, rec.path))
        except (ValueError, OSError, RuntimeError):
            return rec.id, 0.0  # the worker will reject it with the real reason

    out: dict[str, float] = {}
    # Threads: probing is header reads, i.e. waiting on storage, not CPU.
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        for rid, dur in tqdm(pool.map(probe, todo), total=len(todo), desc="probe",
                             unit="file", disable=not options.progress, file=sys.stderr):
            out[rid] = dur
    return out


def _run_tasks(executor: Executor, tasks: list[ShardTask], writers: dict[str, SplitWriter],
               options: BuildOptions, log: Log) -> None:
    """Run the pending shards; each success goes to its split's writer. Raises
    :class:`BuildError` naming the failed shards once the executor has stopped."""
    log(f"building {len(tasks)} shards on {executor.describe()}")
    progress = BuildProgress(len(tasks), enabled=options.progress)
    failures: list[TaskReport] = []
    try:
        with contextlib.closing(executor.run(tasks)) as reports:
            for report in reports:
                if report.outcome is not None:
                    writers[report.task.split].record(report.outcome)
                    progress.done(report.outcome)
                else:
                    failures.append(report)
                    progress.fail()
    finally:
        progress.close()
    if failures:
        raise _shards_failed(failures)


def _shards_failed(failures: list[TaskReport]) -> BuildError:
    first = failures[0]
    e = first.error
    more = ""
    if len(failures) > 1:
        names = ", ".join(f.task.url for f in failures[1:6])
        more = f" ({len(failures) - 1} more failed: {names}{', ...' if len(failures) > 6 else ''})"
    err = BuildError(f"building {first.task.url} failed: {type(e).__name__}: {e}{more}\n"
                     "Shards finished before this are journaled: fix the cause and rerun the "
                     "same command to resume.")
    err.__cause__ = e
    return err


def build_dataset(source: str, root: str, out: str, *, options: BuildOptions | None = None,
                  source_options: Mapping[str, Any] | Any = None,
                  log: Log | None = None, executor: Executor | None = None) -> BuildResult:
    """Build (or resume, or confirm) WebDataset shards + ``index.json`` per split.

    ``source_options``: the source's ``Options`` (e.g. ``librispeech.Options(parts=...)``)
    or a mapping of its option names (``{"parts": "dev-clean"}``).

    Raises :class:`BuildConfigError` (bad options/source, or OUT holds a different
    dataset without ``overwrite``) before anything is written, and
    :class:`BuildError` when a shard fails mid-build (rerun to resume).
    ``executor`` runs the shard tasks (default: the one ``options`` ask for, see
    `make_executor`).
    """
    log = log or _stderr
    module = _get_source(source)  # once per build
    resolved = resolve_source_options(module, source_options)
    # No options given: the defaults, as the command line has them for this source and these
    # source options (``BUILD_DEFAULTS``: RIRs keep --min-duration 0; ``sets_defaults``:
    # --mode words has its own --min-duration).
    options = options or BuildOptions(**{**module.BUILD_DEFAULTS,
                                         **implied_defaults(type(resolved), option_values(resolved))})
    options.validate()
    out = out.rstrip("/") if len(out) > 1 else out
    # A source with read_inputs hands the worker its inputs' bytes (dataset rows): there is
    # no file to probe for the duration that --max-shard-bytes plans with.
    source_reads = module.read_inputs is not None
    if source_reads and options.max_shard_bytes is not None:
        raise BuildConfigError(f"--max-shard-bytes needs each input's duration before the build, "
                               f"and the {source} source's inputs are dataset rows, not files "
                               "that can be probed; cut shards by count with --shard-size")
    scan = scan_source(module, root, resolved)
    cfg, preprocessing = worker_config(options)
    durations = (_probe_durations(scan, root, options, log)
                 if options.max_shard_bytes is not None else None)
    plans = make_plans(scan, source=source, root=root, out=out, options=options,
                       source_options=option_values(resolved), worker=cfg,
                       preprocessing=preprocessing, staging_dir=staging_dir_for,
                       durations=durations,
                       keep_recordings_together=module.KEEP_RECORDINGS_TOGETHER,
                       source_reads=source_reads, task_source_options=resolved)

    check_out_apart(source, root, out, [p.split_url for p in plans])
    with locked(out, options.storage_options, wait_seconds=options.wait_for_lock,
                log=log) as lock:
        result, rejects = _build_plans(plans, out, options, cfg, preprocessing, lock, log,
                                       executor)
    if result.counts.written == 0:
        settings = {**option_values(options), **option_values(resolved)}
        result.all_rejected = ("every input was rejected: "
                               + explain_rejects(rejects, result.counts.inputs, settings))
    return result


def _local_path(url: str) -> str | None:
    """The real local path of ``url`` (symlinks resolved), or None for a remote URL."""
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url:
        return None
    return os.path.realpath(url)


def check_out_apart(source: str, root: str, out: str, split_urls: list[str]) -> None:
    """Refuse, before anything is written, an OUT whose split folders land on the corpus
    folder SRC: OUT equal to SRC (shards and ``_build/`` among the audio), or a split
    folder OUT/<split> that is SRC itself (SRC one part of a corpus, OUT its parent). A
    rerun would read those outputs as inputs, and the first build counts the files as
    rejects. OUT strictly inside SRC is fine: the plan drops what the scan saw of it. A
    manifest (a file) reads only the paths it lists."""
    src = _local_path(root)
    dst = _local_path(out)
    if src is None or dst is None or not os.path.isdir(src):
        return
    tail = (f"the {source} corpus SRC {root}: the build would write its shards and _build/ "
            "into the corpus and a rerun would read them as inputs; choose another OUT, e.g. "
            "a folder beside SRC or inside it (SRC/shards)")
    if dst == src:
        raise BuildConfigError(f"OUT {out} is {tail}")
    for url in split_urls:
        if _local_path(url) == src:
            raise BuildConfigError(f"OUT {out} would write the split folder {url}, which is "
                                   f"{tail}")


def _build_plans(plans: list[SplitPlan], out: str, options: BuildOptions, cfg: WorkerConfig,
                 preprocessing: dict[str, Any], lock: OutLock, log: Log,
                 executor: Executor | None) -> tuple[BuildResult, list[Reject]]:
    """Everything after planning, run while this build holds the lock on OUT; the result
    and the rejects of every split."""
    writers = {plan.split: SplitWriter(plan, options.storage_options, log) for plan in plans}
    # Check every split before touching any: a refusal must leave OUT as it was.
    for w in writers.values():
        conflicts = w.inspect()
        if conflicts and not options.overwrite:
            raise w.refusal(conflicts)
    if options.overwrite:
        for w in writers.values():
            w.clear()

    results: dict[str, SplitResult] = {}
    rejects: list[Reject] = []
    pending: list[ShardTask] = []
    for plan in plans:
        w = writers[plan.split]
        if w.complete is not None and options.repair:
            # A damaged shard of the right size passes the size check: go through the
            # journal, which re-hashes every shard, and rewrite the (identical) index.
            log(f"{plan.split}: --repair: re-hashing {len(w.complete.shards)} shards "
                "against the journal")
        elif w.complete is not None:
            idx = w.complete
            results[plan.split] = SplitResult(
                split=plan.split, index_url=w.index_url,
                counts=idx.counts, shards=len(idx.shards), shards_built=0,
                shards_reused=len(idx.shards), duration=idx.total_duration,
                already_complete=True)
            rejects += idx.rejected
            log(f"{plan.split}: already complete ({len(idx.shards)} shards, fingerprint "
                f"{plan.fingerprint[:12]}; --repair re-hashes them)")
            continue
        pending.extend(w.resume(options.progress))

    if pending:
        executor = executor or make_executor(options, len(pending))
        try:
            _run_tasks(executor, pending, writers, options, log)
        except KeyboardInterrupt:
            for w in writers.values():
                w.clean_staging()
            raise

    for plan in plans:
        if plan.split in results:
            continue
        w = writers[plan.split]
        index = w.write_index(cfg, preprocessing, lock)
        rejects += index.rejected
        # A planned shard whose every input was rejected has no file and no index entry:
        # counted apart, so that built + reused is the number of shards in the index.
        kept = [o for o in w.outcomes.values() if o.info is not None]
        reused = sum(1 for o in kept if o.reused)
        results[plan.split] = SplitResult(
            split=plan.split, index_url=w.index_url, counts=index.counts,
            shards=len(index.shards), shards_built=len(kept) - reused,
            shards_reused=reused, duration=index.total_duration,
            shards_empty=len(plan.shards) - len(kept))
    return BuildResult(out=out, splits=dict(sorted(results.items()))), rejects
