"""``build_dataset``: scan a source, plan, build shards in worker processes, write indexes.

Order of events per split: check OUT (refuse / overwrite / resume), reuse
journaled shards whose files re-hash correctly, build the rest (one shard per
task), and only when every shard is done write ``index.json`` atomically.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tqdm import tqdm

from .. import format as fmt
from .. import storage
from ..index import INDEX_NAME, BuildCounts, DatasetIndex, join_url
from ..options import values as option_values
from ..records import SourceScan
from ..version import __version__
from .journal import (
    STAGING_DIR,
    SplitState,
    clear_split,
    entry_reusable,
    inspect_split,
    journal_dir,
    refuse,
)
from .lock import OutLock, locked
from .options import BuildConfigError, BuildError, BuildOptions, BuildResult, SplitResult
from .plan import ShardTask, SplitPlan, WorkerConfig, make_plans
from .worker import ShardOutcome, process_shard

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def resolve_source_options(source: str, source_options: Mapping[str, Any] | Any) -> Any:
    """The source's ``Options``: given as such, or from a mapping of option names (missing
    ones take their defaults, so the fingerprint does not depend on how they were spelled:
    the CLI passes every option, an API caller maybe none)."""
    from ..sources import get_source
    from ..sources import source_options as to_options

    try:
        return to_options(get_source(source), source_options)
    except (ValueError, TypeError) as e:  # unknown source, unknown option, wrong type
        raise BuildConfigError(str(e)) from None


def scan_source(source: str, root: str, source_options: Any) -> SourceScan:
    from ..sources import get_source

    try:
        return get_source(source).scan(root, source_options)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise BuildConfigError(f"{source} source at {root}: {e}") from e


def worker_config(options: BuildOptions) -> tuple[WorkerConfig, dict[str, Any]]:
    """The per-sample processing settings, and their JSON form for the index."""
    from ..audio import PreprocessConfig

    try:
        pre = PreprocessConfig(sample_rate=options.sample_rate, normalize=options.normalize,
                               trim_silence=options.trim_silence,
                               chunk_seconds=options.chunk_seconds,
                               min_chunk_seconds=options.min_chunk_seconds)
    except ValueError as e:
        raise BuildConfigError(str(e)) from e
    fb = None
    if options.fbank:
        from ..features import FbankConfig

        fb = FbankConfig(sample_rate=options.sample_rate)
    audio_field = fmt.audio_field(options.codec, options.compress)
    cfg = WorkerConfig(preprocess=pre, audio_field=audio_field, zstd_level=options.zstd_level,
                       fbank=fb, min_duration=options.min_duration,
                       max_duration=options.max_duration, chunk_seconds=options.chunk_seconds,
                       min_chunk_seconds=options.min_chunk_seconds)
    preprocessing = dict(pre.to_dict())
    if options.chunk_seconds is None:
        preprocessing["min_chunk_seconds"] = None  # unused without chunking
    preprocessing.update({
        "codec": options.codec,
        "compress": options.compress,
        "zstd_level": options.zstd_level if options.compress == "zstd" else None,
        "fbank": fb.to_dict() if fb is not None else None,
        "min_duration": options.min_duration,
        "max_duration": options.max_duration,
    })
    return cfg, preprocessing


def staging_dir_for(split_url: str) -> str:
    """Local folder for temp tars: next to the output when it is a local disk (so the
    commit is a rename), else the system temp dir (GCS uploads from it; on a FUSE
    mount a copy-then-rename beats writing a tar through FUSE member by member)."""
    if not storage.is_remote(split_url) and not storage.is_fuse_path(split_url):
        return os.path.join(storage.local_path(journal_dir(split_url)), STAGING_DIR)
    # One folder per output split: cleaning leftovers must never touch the temp
    # files of another build running at the same time.
    tag = hashlib.sha256(split_url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "wds_pipeline-staging", tag)


def _clean_staging(plan: SplitPlan) -> None:
    if not plan.shards:
        return
    stage = plan.shards[0].staging_dir
    if not os.path.isdir(stage):
        return
    names = {t.name for t in plan.shards}
    for n in os.listdir(stage):
        # Only leftovers of this split's shards: the shared system temp folder may
        # hold other splits' (or other builds') files.
        if n.endswith(".partial") and n.split(".tar.", 1)[0] + ".tar" in names:
            os.unlink(os.path.join(stage, n))
    try:
        os.rmdir(stage)  # only when empty
    except OSError:
        pass


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


def _run_tasks(tasks: list[ShardTask], options: BuildOptions, log: Log) -> list[ShardOutcome]:
    total = sum(len(t.inputs) for t in tasks)
    workers = min(options.resolved_workers(), len(tasks))
    outcomes: list[ShardOutcome] = []
    bar = tqdm(total=total, desc="build", unit="input", disable=not options.progress,
               file=sys.stderr)
    try:
        if workers <= 1:
            with _single_torch_thread():
                for task in tasks:
                    outcomes.append(_call(task))
                    bar.update(len(task.inputs))
            return outcomes
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                                    initializer=_init_worker,
                                    initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(process_shard, t): t for t in tasks}
            try:
                for fut in cf.as_completed(futures):
                    task = futures[fut]
                    try:
                        outcomes.append(fut.result())
                    except Exception as e:  # re-raised with the shard named
                        raise _shard_failed(task, e) from e
                    bar.update(len(task.inputs))
            except KeyboardInterrupt:
                _abandon(pool)
                raise
            except BaseException:
                # A failed shard: let the running ones finish (and journal) so a
                # rerun loses as little as possible.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return outcomes
    finally:
        bar.close()


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


def _abandon(pool: cf.ProcessPoolExecutor) -> None:
    """Ctrl-C: drop queued shards and stop the running ones now.

    concurrent.futures cannot cancel a running task, so the worker processes are
    terminated; build_dataset then removes their temp files. Finished shards are
    journaled and kept.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown clears it
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=10)


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


def _init_worker(coordinator_pid: int) -> None:
    threading.Thread(target=_watch_coordinator, args=(coordinator_pid,), daemon=True,
                     name="wds-coordinator-watch").start()
    # Ctrl-C is the coordinator's business: a worker killed by SIGINT while idle
    # would make the pool "broken" and SIGTERM the others mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Parallelism comes from processes (one shard each): torch's own thread pool
    # (used by --fbank) would only oversubscribe the cores.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


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


def _call(task: ShardTask) -> ShardOutcome:
    try:
        return process_shard(task)
    except Exception as e:
        raise _shard_failed(task, e) from e


def _shard_failed(task: ShardTask, e: BaseException) -> BuildError:
    return BuildError(f"building {task.url} failed: {type(e).__name__}: {e}\n"
                      "Shards finished before this are journaled: fix the cause and rerun the "
                      "same command to resume.")


def _assemble_index(plan: SplitPlan, outcomes: dict[int, ShardOutcome],
                    preprocessing: dict[str, Any], cfg: WorkerConfig) -> DatasetIndex:
    counts = BuildCounts(inputs=plan.num_inputs, rejected=len(plan.rejects))
    rejects = list(plan.rejects)
    shards = []
    for task in plan.shards:  # plan order, whatever order the workers finished in
        o = outcomes[task.index]
        if o.info is not None:
            shards.append(o.info)
        rejects.extend(o.rejects)
        counts.written += o.counts.written
        counts.rejected += o.counts.rejected
        counts.samples += o.counts.samples
    counts.check()
    fields = {cfg.audio_field, fmt.JSON}
    if plan.label_map:
        fields.add(fmt.CLS)
    if cfg.fbank is not None:
        fields.add(cfg.fbank_field)
    return DatasetIndex(
        name=f"{plan.dataset}-{plan.split}", shards=shards, sample_rate=cfg.sample_rate,
        fields=sorted(fields), audio_field=cfg.audio_field, dataset=plan.dataset,
        split=plan.split, label_map=plan.label_map, preprocessing=preprocessing,
        counts=counts, rejected=sorted(rejects), extras=plan.extras,
        build_fingerprint=plan.fingerprint, tool_version=__version__,
    )


def build_dataset(source: str, root: str, out: str, *, options: BuildOptions | None = None,
                  source_options: Mapping[str, Any] | Any = None,
                  log: Log | None = None) -> BuildResult:
    """Build (or resume, or confirm) WebDataset shards + ``index.json`` per split.

    ``source_options``: the source's ``Options`` (e.g. ``librispeech.Options(parts=...)``)
    or a mapping of its option names (``{"parts": "dev-clean"}``).

    Raises :class:`BuildConfigError` (bad options/source, or OUT holds a different
    dataset without ``overwrite``) before anything is written, and
    :class:`BuildError` when a shard fails mid-build (rerun to resume).
    """
    options = options or BuildOptions()
    log = log or _stderr
    options.validate()
    resolved = resolve_source_options(source, source_options)
    out = out.rstrip("/") if len(out) > 1 else out
    scan = scan_source(source, root, resolved)
    cfg, preprocessing = worker_config(options)
    durations = (_probe_durations(scan, root, options, log)
                 if options.max_shard_bytes is not None else None)
    plans = make_plans(scan, source=source, root=root, out=out, options=options,
                       source_options=option_values(resolved), worker=cfg,
                       preprocessing=preprocessing,
                       staging_dir=staging_dir_for, durations=durations)

    with locked(out, options.storage_options, wait_seconds=options.wait_for_lock,
                log=log) as lock:
        return _build_plans(plans, out, options, cfg, preprocessing, lock, log)


def _build_plans(plans: list[SplitPlan], out: str, options: BuildOptions, cfg: WorkerConfig,
                 preprocessing: dict[str, Any], lock: OutLock, log: Log) -> BuildResult:
    """Everything after planning, run while this build holds the lock on OUT."""
    # Check every split before touching any: a refusal must leave OUT as it was.
    so = options.storage_options
    states: dict[str, SplitState] = {}
    for plan in plans:
        state, conflicts, notes = inspect_split(plan.split_url, plan.fingerprint,
                                                {t.name for t in plan.shards}, so)
        for note in notes:
            log(f"{plan.split}: {note}")
        if conflicts and not options.overwrite:
            raise refuse(plan.split_url, conflicts)
        states[plan.split] = state
    if options.overwrite:
        for plan in plans:
            n = clear_split(plan.split_url, so)
            if n:
                log(f"{plan.split}: --overwrite removed {n} old files under {plan.split_url}")
            states[plan.split] = SplitState()

    results: dict[str, SplitResult] = {}
    outcomes: dict[str, dict[int, ShardOutcome]] = {}
    pending: list[ShardTask] = []
    for plan in plans:
        state = states[plan.split]
        if state.complete is not None and options.repair:
            # A damaged shard of the right size passes the size check: go through the
            # journal, which re-hashes every shard, and rewrite the (identical) index.
            log(f"{plan.split}: --repair: re-hashing {len(state.complete.shards)} shards "
                "against the journal")
        elif state.complete is not None:
            idx = state.complete
            results[plan.split] = SplitResult(
                split=plan.split, index_url=join_url(plan.split_url, INDEX_NAME),
                counts=idx.counts, shards=len(idx.shards), shards_built=0,
                shards_reused=len(idx.shards), duration=idx.total_duration,
                already_complete=True)
            log(f"{plan.split}: already complete ({len(idx.shards)} shards, fingerprint "
                f"{plan.fingerprint[:12]}; --repair re-hashes them)")
            continue
        done: dict[int, ShardOutcome] = {}
        to_check = [t for t in plan.shards if t.name in state.entries]
        for task in tqdm(to_check, desc=f"verify {plan.split} journal", unit="shard",
                         disable=not options.progress or not to_check, file=sys.stderr):
            entry = state.entries[task.name]
            if entry_reusable(entry, task):
                done[task.index] = ShardOutcome(plan.split, task.index, entry.info,
                                                entry.rejects, entry.counts, reused=True)
            else:
                log(f"{plan.split}: {task.name} does not match its journal entry "
                    "(changed or truncated); rebuilding it")
        outcomes[plan.split] = done
        todo = [t for t in plan.shards if t.index not in done]
        pending.extend(todo)
        _clean_staging(plan)
        log(f"{plan.split}: {len(plan.shards)} shards planned, {len(done)} reused from the "
            f"journal, {len(todo)} to build")

    if pending:
        try:
            for o in _run_tasks(pending, options, log):
                outcomes[o.task_split][o.task_index] = o
        except KeyboardInterrupt:
            for plan in plans:
                _clean_staging(plan)
            raise

    for plan in plans:
        if plan.split in results:
            continue
        done = outcomes[plan.split]
        index = _assemble_index(plan, done, preprocessing, cfg)
        index_url = join_url(plan.split_url, INDEX_NAME)
        lock.check()  # another build took OUT over: its shards may be mixed with ours
        storage.makedirs(plan.split_url, **so)
        # Last and atomic: an index only ever describes a finished split.
        storage.write_bytes_atomic(index_url, index.to_json().encode("utf-8"), **so)
        _clean_staging(plan)
        reused = sum(1 for o in done.values() if o.reused)
        results[plan.split] = SplitResult(
            split=plan.split, index_url=index_url, counts=index.counts,
            shards=len(index.shards), shards_built=len(plan.shards) - reused,
            shards_reused=reused, duration=index.total_duration)
    return BuildResult(out=out, splits=dict(sorted(results.items())))
