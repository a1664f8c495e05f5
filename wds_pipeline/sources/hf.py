"""A Hugging Face dataset (Hub name, local folder, or a packaged builder such as ``parquet``
with ``--data-files``), streamed: nothing is downloaded or held whole.

One sample per row. The audio column is read undecoded (``Audio(decode=False)``: its bytes,
or a path read through fsspec) and decoded by this project's decoder, so neither TorchCodec
nor FFmpeg libraries are needed. The scan reads only the metadata columns where the builder
can leave a column out (parquet); each shard task then streams its rows' audio from the
dataset shards (source files) that hold them, one row in memory at a time.

Ids are positional (``<split>-<dataset shard>-<row>``), so they sort in stream order; a
``ClassLabel`` label column keeps its names and their numbering in the label map. Rows of
one dataset shard stay consecutive in the plan (the seeded shuffle moves whole dataset
shards), so a shard task reads one or two dataset shards, not all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wds_pipeline.option_table import option
from wds_pipeline.records import NO_LABEL, Reject, SourceRecord, SourceScan
from wds_pipeline.sources.manifest import canonical_label

NAME = "hf"
KEEP_RECORDINGS_TOGETHER = True  # rows of one dataset shard: read it once per shard task

_SHARD_PATH = re.compile(r"^hf-shard-(\d+)-of-(\d+)$")
_SPLIT_OK = re.compile(r"^[A-Za-z0-9_.-]+$")


def _comma_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise ValueError(f"expected one or more comma-separated values, got {text!r}")
    return items


@dataclass(frozen=True)
class Options:
    split: str = option("train", help="dataset split(s) to read, comma-separated; each is "
                                      "also the output split (folder under OUT)")
    subset: str | None = option(None, metavar="NAME",
                                help="dataset config (subset) name, e.g. 'en' (load_dataset's "
                                     "name)")
    data_files: tuple[str, ...] | None = option(
        None, metavar="GLOB[,GLOB]", parse=_comma_list,
        help="data files for a packaged builder (NAME_OR_PATH parquet, csv, ...), "
             "comma-separated paths or globs; they form the split given by --split")
    revision: str | None = option(None, metavar="REV", help="Hub revision (branch, tag, commit)")
    audio_column: str = option("audio", metavar="COLUMN", help="the Audio column")
    label_column: str | None = option(None, metavar="COLUMN",
                                      help="class label column (a ClassLabel keeps its names "
                                           "and numbering)")
    text_column: str | None = option(None, metavar="COLUMN", help="transcript column")
    speaker_column: str | None = option(None, metavar="COLUMN",
                                        help="speaker column (the class when no --label-column)")
    id_column: str | None = option(None, metavar="COLUMN",
                                   help="the dataset's own id column, kept as 'hf_id' in the "
                                        "json")

    def splits(self) -> tuple[str, ...]:
        return _comma_list(self.split)


# ---------------------------------------------------------------------------
# Opening the dataset


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError("the hf source needs the 'datasets' package: "
                          "pip install 'wds-pipeline[hf]'") from None
    return datasets


def _load(root: str, options: Options, split: str, columns: list[str] | None = None) -> Any:
    """The split as a streaming IterableDataset; ``columns``: read only these (a builder
    that takes ``columns=``, e.g. parquet)."""
    datasets = _datasets()
    kwargs: dict[str, Any] = {"streaming": True, "revision": options.revision}
    if options.data_files is not None:
        kwargs["data_files"] = {split: list(options.data_files)}
    if columns is not None:
        kwargs["columns"] = columns
    try:
        return datasets.load_dataset(root, options.subset, split=split, **kwargs)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise ValueError(f"cannot open dataset {root!r} (subset {options.subset!r}, split "
                         f"{split!r}): {type(e).__name__}: {e}") from e


def _reads_columns(root: str, options: Options) -> bool:
    """Whether the dataset's builder can read a subset of the columns (parquet can)."""
    kwargs: dict[str, Any] = {"revision": options.revision}
    if options.data_files is not None:
        kwargs["data_files"] = list(options.data_files)
    builder = _datasets().load_dataset_builder(root, options.subset, **kwargs)
    return hasattr(builder.config, "columns")


def _features(ds: Any, where: str) -> Any:
    features = ds.features
    if features is None:  # builders that infer them from the first rows
        features = ds._resolve_features().features
    if features is None:
        raise ValueError(f"{where}: the dataset declares no features (column types)")
    return features


def _check_columns(features: Any, options: Options, where: str) -> None:
    datasets = _datasets()
    named = {"--audio-column": options.audio_column, "--label-column": options.label_column,
             "--text-column": options.text_column, "--speaker-column": options.speaker_column,
             "--id-column": options.id_column}
    for flag, column in named.items():
        if column is not None and column not in features:
            raise ValueError(f"{where}: {flag} {column!r} is not a column; the dataset has "
                             f"{sorted(features)}")
    if not isinstance(features[options.audio_column], datasets.Audio):
        raise ValueError(f"{where}: --audio-column {options.audio_column!r} is "
                         f"{features[options.audio_column]!r}, not an Audio column")


# ---------------------------------------------------------------------------
# Scan


def scan(root: str, options: Options | None = None) -> SourceScan:
    """``root``: a Hub dataset name, a local dataset folder, or a packaged builder name
    (``parquet``) with ``--data-files``."""
    options = options or Options()
    records: list[SourceRecord] = []
    rejects: list[Reject] = []
    label_names: list[str] | None = None
    narrow = _reads_columns(root, options)
    for split in options.splits():
        if not _SPLIT_OK.match(split):
            raise ValueError(f"--split {split!r} is not a valid split name")
        where = f"{root} split {split}"
        ds = _load(root, options, split)
        features = _features(ds, where)
        _check_columns(features, options, where)
        label = features[options.label_column] if options.label_column else None
        names = list(label.names) if isinstance(label, _datasets().ClassLabel) else None
        if names is not None:
            if label_names is not None and names != label_names:
                raise ValueError(f"{where}: the ClassLabel names differ between splits")
            label_names = names
        meta = list(dict.fromkeys(c for c in (options.label_column, options.text_column,
                                              options.speaker_column, options.id_column)
                                  if c is not None))
        if meta and narrow:  # the audio column is never read in the scan
            rows_ds = _load(root, options, split, columns=meta)
        else:  # read undecoded, dropped row by row (with no other column it counts the rows)
            rows_ds = ds.cast_column(options.audio_column, _datasets().Audio(decode=False))
            rows_ds = rows_ds.select_columns(meta or [options.audio_column])
        speaker = features[options.speaker_column] if options.speaker_column else None
        speakers = list(speaker.names) if isinstance(speaker, _datasets().ClassLabel) else None
        _scan_split(rows_ds, ds.num_shards, split, options, names, speakers, records, rejects,
                    dataset=root.rstrip("/").rsplit("/", 1)[-1])
    return SourceScan(records=records, rejects=sorted(rejects), label_names=label_names)


def _scan_split(ds: Any, num_shards: int, split: str, options: Options,
                names: list[str] | None, speakers: list[str] | None,
                records: list[SourceRecord], rejects: list[Reject], dataset: str) -> None:
    """``names``/``speakers``: the ClassLabel names of the label/speaker column, if it is one."""
    for s in range(num_shards):
        path = f"hf-shard-{s:05d}-of-{num_shards:05d}"
        for row_index, row in enumerate(ds.shard(num_shards=num_shards, index=s)):
            rid = f"{split}-{s:05d}-{row_index:08d}"
            label, problem = _label(row, options, names)
            if problem:
                rejects.append(Reject(f"{path}#{rid}", f"{path} row {row_index}: {problem}",
                                      split=split))
                continue
            extra: dict[str, Any] = {"hf_shard": s, "hf_row": row_index}
            if options.id_column is not None and row.get(options.id_column) is not None:
                extra["hf_id"] = str(row[options.id_column])
            text = row.get(options.text_column) if options.text_column else None
            speaker = row.get(options.speaker_column) if options.speaker_column else None
            if speakers is not None and isinstance(speaker, int):  # ClassLabel: its name
                speaker = speakers[speaker] if 0 <= speaker < len(speakers) else None
            records.append(SourceRecord(
                id=rid, path=path, speaker=None if speaker is None else str(speaker),
                text=None if text is None else str(text), label=label, split=split,
                dataset=dataset, extra=tuple(sorted(extra.items()))))


def _label(row: Mapping[str, Any], options: Options, names: list[str] | None
           ) -> tuple[str | None, str | None]:
    """(the row's class label, None) or (None, what is wrong with it)."""
    if options.label_column is None:
        return None, None  # the speaker, if any, is the class
    value = row.get(options.label_column)
    if value is None:
        return NO_LABEL, None
    if names is not None:  # ClassLabel: an index into names, -1 for "no label"
        if isinstance(value, bool) or not isinstance(value, int) or value >= len(names) \
                or value < -1:
            return None, (f"label {value!r} is not a class of the ClassLabel column "
                          f"{options.label_column!r} (0..{len(names) - 1}, or -1 for none)")
        return (NO_LABEL if value == -1 else names[value]), None
    if isinstance(value, (dict, list)):
        return None, f"label must be a string or number, got {type(value).__name__}"
    text, problem = canonical_label(value)
    if problem:
        return None, problem
    return text or NO_LABEL, None


# ---------------------------------------------------------------------------
# Worker side: the audio bytes of planned inputs


def read_inputs(root: str, inputs: Sequence[Any], options: Options,
                storage_options: Mapping[str, Any]) -> Iterator[bytes | Exception]:
    """Each planned input's audio bytes (or the error that rejects it), in plan order.

    Consecutive inputs of one dataset shard are read in one pass over that shard, from its
    first wanted row (``skip``); only the audio column when the builder allows it.
    """
    opened: dict[str, Any] = {}  # split -> streaming dataset, opened once per shard task
    narrow: bool | None = None
    i = 0
    while i < len(inputs):
        split, s, n = _where(inputs[i])
        j = i + 1
        while j < len(inputs) and _where(inputs[j])[:2] == (split, s) \
                and _row(inputs[j]) > _row(inputs[j - 1]):
            j += 1
        if split not in opened:
            if narrow is None:
                narrow = _reads_columns(root, options)
            ds = _load(root, options, split, columns=[options.audio_column] if narrow else None)
            if ds.num_shards != n:
                raise ValueError(f"{root} split {split} has {ds.num_shards} shards, the plan "
                                 f"{n}: the dataset changed since the scan; rebuild with "
                                 "--overwrite")
            opened[split] = ds.cast_column(options.audio_column,
                                           _datasets().Audio(decode=False))
        yield from _shard_audio(opened[split], s, n, inputs[i:j], options, storage_options)
        i = j


def _where(p: Any) -> tuple[str, int, int]:
    m = _SHARD_PATH.match(p.record.path)
    if m is None:
        raise ValueError(f"{p.rel}: not a row of the hf source (path {p.record.path!r})")
    return p.record.split, int(m.group(1)), int(m.group(2))


def _row(p: Any) -> int:
    return int(dict(p.record.extra)["hf_row"])


def _shard_audio(ds: Any, s: int, n: int, inputs: Sequence[Any], options: Options,
                 storage_options: Mapping[str, Any]) -> Iterator[bytes | Exception]:
    """The audio of ``inputs`` (rows of dataset shard ``s``, increasing) in one pass."""
    first = _row(inputs[0])
    rows = ds.shard(num_shards=n, index=s)
    if first:
        rows = rows.skip(first)
    from wds_pipeline.audio import AudioDecodeError

    want = iter(inputs)
    p = next(want)
    target = first  # the row of ``p``
    for row_index, row in enumerate(rows, start=first):
        if row_index < target:
            continue
        yield _audio_bytes(row.get(options.audio_column), p, options, storage_options)
        p = next(want, None)
        if p is None:
            return
        target = _row(p)
    while p is not None:  # the shard ended early
        yield AudioDecodeError(p.rel, "no such row (the dataset shard has fewer rows than at "
                                      "the scan; rebuild with --overwrite)")
        p = next(want, None)


def _audio_bytes(value: Any, p: Any, options: Options,
                 storage_options: Mapping[str, Any]) -> bytes | Exception:
    from wds_pipeline.audio import AudioDecodeError

    if value is None:
        return AudioDecodeError(p.rel, f"no audio (the {options.audio_column!r} value is null)")
    data, path = value.get("bytes"), value.get("path")
    if data:
        return bytes(data)
    if path:
        from wds_pipeline import storage

        try:
            return storage.read_bytes(path, **storage_options)
        except OSError as e:
            return OSError(f"audio path {path!r} of this row cannot be read: {e}")
    return AudioDecodeError(p.rel, f"no audio (the {options.audio_column!r} value has no bytes "
                                   "and no path)")
