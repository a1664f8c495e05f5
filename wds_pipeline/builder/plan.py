"""The deterministic build plan: which input goes to which shard, and the fingerprint.

Pure functions over a :class:`~wds_pipeline.records.SourceScan`: records are
grouped by split, sorted by id, given keys (duplicates after sanitising are
rejected), optionally shuffled with a seed, and cut into shards by count and/or
estimated bytes. The same scan and options always give the same plan, whatever
the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import format as fmt
from ..records import Reject, SourceRecord, SourceScan, label_order
from ..storage.urls import join_url
from ..version import __version__
from .options import BuildConfigError, BuildOptions, VadMethod

if TYPE_CHECKING:  # audio and features import soxr/torch, which planning must not
    from ..audio import PreprocessConfig
    from ..features import FbankConfig

CHUNK_SUFFIX_LEN = len("-c0000")
REGION_SUFFIX_LEN = len("-v0000")  # --vad-split-pause (never with chunks)
# Per-sample bytes besides the audio payload: 2-4 tar headers + padding + json.
SAMPLE_OVERHEAD_BYTES = 4 * 512


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to turn decoded audio into sample fields (picklable).

    Derived from :class:`~.options.BuildOptions` by :meth:`from_options`: a field named as
    a build option holds that option's value (declare a new worker setting as a field of
    the option's name), the others are built from the options.
    """

    preprocess: PreprocessConfig  # the signal chain: rate, normalisation, trimming
    audio_field: str  # from --codec and --compress
    zstd_level: int
    fbank: FbankConfig | None  # None without --fbank
    min_duration: float
    max_duration: float | None
    chunk_seconds: float | None
    min_chunk_seconds: float
    vad: VadMethod = "none"
    vad_split_pause: float | None = None

    @classmethod
    def from_options(cls, options: BuildOptions) -> WorkerConfig:
        """The worker's settings of ``options`` (validated)."""
        from ..audio import PreprocessConfig

        fbank = None
        if options.fbank:
            from ..features import FbankConfig

            fbank = FbankConfig(sample_rate=options.sample_rate)
        # Only the signal chain's settings: chunking is the worker's (chunk_seconds here).
        pre = PreprocessConfig(sample_rate=options.sample_rate, normalize=options.normalize,
                               trim_silence=options.trim_silence)
        built: dict[str, Any] = {"preprocess": pre, "fbank": fbank,
                                 "audio_field": fmt.audio_field(options.codec, options.compress)}
        same = {f.name: getattr(options, f.name) for f in dataclasses.fields(cls)
                if f.name not in built}
        return cls(**built, **same)

    @property
    def vad_enabled(self) -> bool:
        return self.vad != "none"

    def preprocessing(self, options: BuildOptions) -> dict[str, Any]:
        """The index's "preprocessing" record (it enters the fingerprint): the signal
        chain's full settings and the options of the "preprocessing" section, with --fbank
        as its feature settings."""
        record = {**self.preprocess.to_dict(), **options.preprocessing_dict()}
        record["fbank"] = self.fbank.to_dict() if self.fbank is not None else None
        return record

    @property
    def sample_rate(self) -> int:
        return int(self.preprocess.sample_rate)

    @property
    def fbank_field(self) -> str:
        return fmt.FBANK_ZST if self.audio_field == fmt.AUDIO_NPY_ZST else fmt.FBANK


@dataclass(frozen=True)
class PlannedInput:
    record: SourceRecord
    key: str  # sample key (chunk suffix added by the worker)
    src: str  # path or URL the worker decodes
    rel: str  # path relative to the source root: json "source" and reject "input"
    label: int | None  # cls value, None when the record has no class label


@dataclass(frozen=True)
class ShardTask:
    """One shard, processed start to finish by one worker process."""

    split: str
    index: int
    name: str  # file name, e.g. shard-000000.tar
    split_url: str  # OUT/<split>
    inputs: tuple[PlannedInput, ...]
    fingerprint: str  # of the whole split plan
    inputs_sha256: str  # of this shard's input ids, in order
    worker: WorkerConfig
    staging_dir: str  # local folder for the temp tar before commit
    storage_options: Mapping[str, Any]
    # A source that reads its inputs itself (``read_inputs``, e.g. dataset rows): its name,
    # root (SRC) and Options, for the worker. None: the inputs are files or URLs
    # (``PlannedInput.src``).
    source: str | None = None
    source_root: str | None = None
    source_options: Any = None

    @property
    def url(self) -> str:
        return join_url(self.split_url, self.name)


@dataclass
class SplitPlan:
    split: str
    dataset: str
    split_url: str
    fingerprint: str
    label_map: dict[str, int]
    shards: list[ShardTask]
    rejects: list[Reject]  # source rejects + plan rejects (duplicate/invalid keys)
    num_inputs: int  # records + source rejects of this split
    extras: dict[str, Any]


# ---------------------------------------------------------------------------
# Paths


def _is_url(path: str) -> bool:
    return "://" in path


def resolve_source_path(root: str, path: str) -> str:
    """Path the worker reads: absolute paths and URLs as given, others under ``root``."""
    if _is_url(path) or os.path.isabs(path):
        return path
    if _is_url(root):
        return join_url(root, path)
    return os.path.join(root, path)


def relative_source_path(root: str, path: str) -> str:
    """``path`` relative to ``root`` when it lies under it (keeps the index location-free)."""
    if _is_url(path) or _is_url(root):
        base = root.rstrip("/") + "/"
        return path.removeprefix(base)
    if not os.path.isabs(path):
        return path.replace(os.sep, "/")
    rel = os.path.relpath(path, os.path.abspath(root))
    if rel.startswith(".."):
        return path
    return rel.replace(os.sep, "/")


def source_base(root: str) -> str:
    """Folder that record paths are made relative to: ``root``, or its folder when the
    source root is a file (a manifest)."""
    if not _is_url(root) and os.path.isfile(root):
        return os.path.dirname(os.path.abspath(root))
    return root


def _input_name(root: str, record: SourceRecord, rows: bool = False) -> str:
    rel = relative_source_path(root, record.path)
    if rows or record.offset or record.duration is not None:
        # Several segments can share a file: name the segment, not only the file.
        return f"{rel}#{record.id}"
    return rel


def _relativize_reject(root: str, reject: Reject) -> Reject:
    """The reject with its input, and the paths in its reason, relative to ``root``: the
    reasons enter the fingerprint, which must not change when the corpus moves."""
    rel = relative_source_path(root, reject.input)
    base = root.rstrip("/") if _is_url(root) else os.path.abspath(root)
    reason = reject.reason.replace(base + ("/" if _is_url(root) else os.sep), "")
    if rel == reject.input and reason == reject.reason:
        return reject
    return dataclasses.replace(reject, input=rel, reason=reason)


def _inside(rel: str, folder_rel: str | None) -> bool:
    return folder_rel is not None and (rel == folder_rel or rel.startswith(folder_rel + "/"))


def _out_under_root(root: str, out: str) -> str | None:
    """OUT relative to the source root when it lies inside it, else None."""
    if _is_url(root) != _is_url(out):
        return None
    rel = relative_source_path(root, out if _is_url(out) else os.path.abspath(out))
    if _is_url(rel) or os.path.isabs(rel) or rel.startswith(".."):
        return None
    return rel.rstrip("/")


# ---------------------------------------------------------------------------
# Splits


def assign_reject_splits(rejects: list[Reject], records: list[SourceRecord]
                         ) -> dict[str, list[Reject]]:
    """Give each source reject to a split so that every split's counts add up.

    A reject counts in the split its source gave it (``Reject.split``). One without a
    split is corpus-level (e.g. a stray folder beside the LibriSpeech parts): it counts
    in the first split in sorted order, so that it is listed exactly once.
    """
    splits = sorted({r.split for r in records} | {rj.split for rj in rejects if rj.split})
    out: dict[str, list[Reject]] = {}
    for rj in rejects:
        out.setdefault(rj.split or (splits[0] if splits else "train"), []).append(rj)
    return out


def make_label_map(records: list[SourceRecord], names: list[str] | None = None
                   ) -> dict[str, int]:
    """Class label -> int, names numbered 0..K-1 in :func:`label_order` (stable across
    rebuilds), or as the source declares them (``SourceScan.label_names``)."""
    if names is None:
        names = label_order(r.class_label for r in records if r.class_label is not None)
    return {name: i for i, name in enumerate(names)}


def _numeric_label_order(records: list[SourceRecord]) -> bool:
    """Whether the label map's order differs from plain text order (integer labels)."""
    names = {r.class_label for r in records if r.class_label is not None}
    return label_order(names) != sorted(names)


# ---------------------------------------------------------------------------
# Fingerprint


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def fingerprint(*, source: str, split: str, source_options: Mapping[str, Any],
                options: BuildOptions, preprocessing: Mapping[str, Any],
                records: list[SourceRecord], rejects: list[Reject], root: str,
                label_names: list[str] | None = None) -> str:
    """sha256 over what determines a split's bytes: versions, source, options, inputs.

    Record paths enter relative to the root, so moving the corpus keeps the
    fingerprint; file contents do not enter (rebuild with --overwrite after
    editing audio in place).
    """
    recs = []
    for r in sorted(records, key=lambda r: r.id):
        d = r.to_dict()
        d["path"] = relative_source_path(root, r.path)
        recs.append(d)
    payload = {
        "tool_version": __version__,
        "format_version": fmt.FORMAT_VERSION,
        "source": source,
        "source_options": dict(source_options),
        "options": options.output_dict(),
        "preprocessing": dict(preprocessing),
        "split": split,
        "records": recs,
        "rejects": [rj.to_dict() for rj in sorted(rejects)],
    }
    if _numeric_label_order(records):
        # Shards built before integer labels were numbered in numeric order hold other
        # cls values: a new fingerprint keeps them from being reused. Other splits keep
        # the fingerprint they had.
        payload["label_order"] = "numeric"
    if label_names is not None:  # declared numbering: the cls values depend on it
        payload["label_names"] = list(label_names)
    return hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()


def inputs_sha256(inputs: tuple[PlannedInput, ...]) -> str:
    return hashlib.sha256("\n".join(p.record.id for p in inputs).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Keys and shard assignment


def plan_keys(records: list[SourceRecord], *, chunking: bool, root: str, rows: bool = False,
              splitting: bool = False) -> tuple[list[tuple[SourceRecord, str]], list[Reject]]:
    """Sorted records with their keys; later duplicates and invalid keys rejected.
    ``rows``: see :func:`make_plans`. ``chunking``/``splitting``: the worker adds a chunk
    or a region suffix, whose length the keys must leave free."""
    keyed: list[tuple[SourceRecord, str]] = []
    rejects: list[Reject] = []
    seen: dict[str, str] = {}
    limit = fmt.MAX_KEY_LENGTH - (CHUNK_SUFFIX_LEN if chunking else 0) - (
        REGION_SUFFIX_LEN if splitting else 0)
    for rec in sorted(records, key=lambda r: r.id):
        name = _input_name(root, rec, rows)
        try:
            key = fmt.make_key(rec.id)
        except ValueError as e:
            rejects.append(Reject(name, f"invalid sample key from id {rec.id!r}: {e}", "filter"))
            continue
        if len(key) > limit:
            rejects.append(Reject(name, f"sample key {key!r} longer than {limit} characters "
                                        "(shorten the ids in the source)", "filter"))
            continue
        if key in seen:
            rejects.append(Reject(name, f"duplicate key {key!r} (id {rec.id!r} sanitises to the "
                                        f"same key as id {seen[key]!r})", "filter"))
            continue
        seen[key] = rec.id
        keyed.append((rec, key))
    return keyed, rejects


def estimate_bytes(duration: float | None, options: BuildOptions) -> int:
    if not duration:
        return SAMPLE_OVERHEAD_BYTES
    frames = duration * options.sample_rate
    audio = frames * 2
    # Imported here: features imports torch, which planning (and the CLI's start) must not.
    from ..features import FEATURE_BYTES, FRAME_SHIFT_MS, NUM_MEL_BINS

    hop = options.sample_rate * FRAME_SHIFT_MS / 1000.0  # audio frames per feature frame
    fbank = frames / hop * NUM_MEL_BINS * FEATURE_BYTES if options.fbank else 0
    return int(audio + fbank) + SAMPLE_OVERHEAD_BYTES


def assign_shards(items: list[Any], *, shard_size: int, max_bytes: int | None,
                  sizes: list[int] | None = None) -> list[list[Any]]:
    """Cut ``items`` (in order) into shards of <= shard_size items and <= max_bytes.

    An item larger than max_bytes gets a shard of its own (never dropped).
    """
    shards: list[list[Any]] = []
    cur: list[Any] = []
    cur_bytes = 0
    for i, item in enumerate(items):
        size = sizes[i] if sizes is not None else 0
        full = len(cur) >= shard_size or (
            max_bytes is not None and cur and cur_bytes + size > max_bytes)
        if full:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(item)
        cur_bytes += size
    if cur:
        shards.append(cur)
    return shards


def _by_recording(keyed: list[tuple[SourceRecord, str]], seed: int | None
                  ) -> list[tuple[SourceRecord, str]]:
    """``keyed`` (id order) regrouped so each recording's segments are consecutive; the
    recordings in order of their first id, or shuffled with ``seed``."""
    groups: dict[str, list[tuple[SourceRecord, str]]] = {}
    for item in keyed:
        groups.setdefault(item[0].path, []).append(item)
    order = list(groups.values())
    if seed is not None:
        random.Random(seed).shuffle(order)
    return [item for group in order for item in group]


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def make_plans(scan: SourceScan, *, source: str, root: str, out: str, options: BuildOptions,
               source_options: Mapping[str, Any], worker: WorkerConfig,
               preprocessing: Mapping[str, Any],
               staging_dir: Callable[[str], str],
               durations: Mapping[str, float] | None = None,
               keep_recordings_together: bool = False, source_reads: bool = False,
               task_source_options: Any = None) -> list[SplitPlan]:
    """One :class:`SplitPlan` per split, in sorted split order.

    ``keep_recordings_together`` (a source's ``KEEP_RECORDINGS_TOGETHER``): the segments of
    one recording stay consecutive, in id order, and the seeded shuffle moves whole
    recordings; a worker then decodes each recording once for the build (once per shard it
    spans) instead of once in nearly every shard.

    ``source_reads`` (a source with ``read_inputs``, e.g. dataset rows): the source hands the
    worker each input's bytes, so a record's path names a container of rows (a dataset
    shard) and each input is named ``<path>#<id>``. The tasks then carry ``source`` and
    ``task_source_options`` (the source's Options) for the worker.
    """
    if not scan.records and not scan.rejects:
        raise BuildConfigError(f"{root}: the {source} source found no inputs; check SRC and the "
                               f"source options (wds-pipeline build {source} --help)")
    given_root = root
    root = source_base(root)
    by_split: dict[str, list[SourceRecord]] = {}
    for rec in scan.records:
        by_split.setdefault(rec.split, []).append(rec)
    # What a source saw of OUT (when OUT lies inside the corpus) is this tool's own
    # output, not an input: it would change the fingerprint between two runs.
    out_rel = _out_under_root(root, out)
    source_rejects = [rj for rj in (_relativize_reject(root, r) for r in scan.rejects)
                      if not _inside(rj.input, out_rel)]
    rejects_by_split = assign_reject_splits(source_rejects, scan.records)
    plans: list[SplitPlan] = []
    for split in sorted(set(by_split) | set(rejects_by_split)):
        if not split or "/" in split or split.startswith(("_", ".")):
            raise BuildConfigError(f"split name {split!r} cannot be a folder name under OUT; "
                                   "fix the source's split names")
        records = by_split.get(split, [])
        src_rejects = rejects_by_split.get(split, [])
        split_url = join_url(out, split)
        fp = fingerprint(source=source, split=split, source_options=source_options,
                         options=options, preprocessing=preprocessing, records=records,
                         rejects=src_rejects, root=root, label_names=scan.label_names)
        label_map = make_label_map(records, scan.label_names)
        keyed, key_rejects = plan_keys(records, chunking=options.chunk_seconds is not None,
                                       root=root, rows=source_reads,
                                       splitting=options.vad_split_pause is not None)
        if keep_recordings_together:
            keyed = _by_recording(keyed, options.shuffle_seed)
        elif options.shuffle_seed is not None:
            random.Random(options.shuffle_seed).shuffle(keyed)
        planned = [
            PlannedInput(
                record=rec, key=key, src=resolve_source_path(root, rec.path),
                rel=_input_name(root, rec, source_reads),
                label=label_map.get(rec.class_label) if rec.class_label is not None else None,
            )
            for rec, key in keyed
        ]
        sizes = None
        if options.max_shard_bytes is not None:
            sizes = [estimate_bytes(p.record.duration if p.record.duration is not None
                                    else (durations or {}).get(p.record.id), options)
                     for p in planned]
        groups = assign_shards(planned, shard_size=options.shard_size,
                               max_bytes=options.max_shard_bytes, sizes=sizes)
        stage = staging_dir(split_url)
        # Only a source that reads its inputs itself needs to be named in its tasks.
        reader: dict[str, Any] = dict(source=source, source_root=given_root,
                                      source_options=task_source_options) if source_reads else {}
        tasks = [
            ShardTask(split=split, index=i, name=shard_name(options.shard_prefix, i),
                      split_url=split_url, inputs=tuple(g), fingerprint=fp,
                      inputs_sha256=inputs_sha256(tuple(g)), worker=worker,
                      staging_dir=stage, storage_options=options.storage_options, **reader)
            for i, g in enumerate(groups)
        ]
        # One corpus -> its name; a mix (VoxCeleb1 + 2 in "train") -> the source name.
        datasets = {r.dataset for r in records if r.dataset}
        dataset = datasets.pop() if len(datasets) == 1 else source
        plans.append(SplitPlan(split=split, dataset=dataset, split_url=split_url,
                               fingerprint=fp, label_map=label_map, shards=tasks,
                               rejects=src_rejects + key_rejects,
                               num_inputs=len(records) + len(src_rejects),
                               extras={**scan.extras, **scan.split_extras.get(split, {})}))
    return plans
