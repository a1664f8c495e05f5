"""The dataset index: ``<split>/index.json``.

It is a valid ``wids`` shard-index descriptor (``__kind__``, ``wids_version``,
``shardlist``) so ``wids.ShardListDataset("index.json")`` reads the split as is.
Everything of ours lives in one extra top-level block, ``"wds_pipeline"``, plus
extra per-shard keys; wids ignores both.

The index is the contract between the builder and every reader: the loader plans
epochs from it (per-sample frame counts and byte offsets), the cache verifies
shards against their digest and size, ``verify`` re-checks everything in it.
"""

from __future__ import annotations

import json
import math
import posixpath
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NoReturn

import numpy as np

from . import index_sidecar as sidecar
from .errors import WdsPipelineError
from .format import FORMAT_VERSION, READABLE_FORMAT_VERSIONS
from .index_arrays import lift_sample_lists, lifted
from .records import Reject, RejectStage
from .storage.integrity import DIGEST_ALGORITHMS, Digest
from .storage.urls import dirname_url, join_url

WIDS_KIND = "wids-shard-index-v1"
INDEX_NAME = "index.json"
REBUILD = "the index is damaged or was edited by hand: rebuild it with the same `wds-pipeline build` command"


class IndexFormatError(WdsPipelineError, ValueError):
    """An index that is not what wds-pipeline writes: not JSON, another kind of file, or a
    key of the wrong type or value. The message names the file and the key path
    (``shardlist[3].url``) and what was expected. The CLI maps it to a one-line error."""


class ExternalShardsError(WdsPipelineError, ValueError):
    """An index whose shard URLs leave its folder (see :meth:`DatasetIndex.refuse_external_shards`)."""


@dataclass
class ShardInfo:
    url: str  # relative to the index's folder (or absolute)
    nsamples: int
    filesize: int
    # Of the whole file. Serialised as one key named for its algorithm,
    # ``"xxh3_128": "<hex>"`` (format 1 indexes: ``"sha256"``).
    digest: Digest
    duration: float  # seconds of audio in this shard
    # Per-sample lists: Python lists, or int64 arrays when read with ``arrays=True`` (the
    # loader: see index_arrays.py).
    sample_frames: list[int] | np.ndarray = field(default_factory=list)  # audio frames per sample, in order
    sample_offsets: list[int] | np.ndarray = field(default_factory=list)  # byte offset of each sample's first header
    # zlib.crc32 of each sample's bytes [offset, next offset) (the last one up to the
    # end-of-archive blocks): lets the loader verify samples while a shard downloads.
    # Optional: indexes written before it have none (empty list), and are read whole-shard.
    sample_crc32: list[int] | np.ndarray = field(default_factory=list)

    @property
    def expected_digest(self) -> Digest | None:
        """What reads check the shard against (an empty hex in a hand-made index: nothing)."""
        return self.digest if self.digest.hex else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["digest"]
        d[self.digest.algorithm] = self.digest.hex
        for key in ("sample_frames", "sample_offsets", "sample_crc32"):
            d[key] = [int(v) for v in d[key]] if isinstance(d[key], np.ndarray) else d[key]
        if not len(self.sample_crc32):
            del d["sample_crc32"]  # an index without crcs keeps its exact bytes
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "index", path: str = "shard entry",
                  fix: str = REBUILD, arrays: list[np.ndarray] | None = None) -> ShardInfo:
        """``d`` as read from JSON; :class:`IndexFormatError` (naming ``source``, the key
        path below ``path``, then ``fix``) when a key has the wrong type. ``arrays``: the
        per-sample lists cut out of the text (see index_arrays.py)."""
        check = _Checker(source, fix)
        check.obj(d, path)
        named = [a for a in DIGEST_ALGORITHMS if a in d]
        if len(named) != 1:
            raise IndexFormatError(
                f"{source}: {path} (shard {d.get('url')!r}) names {len(named)} digests "
                f"({named}); expected exactly one of {sorted(DIGEST_ALGORITHMS)}. The index "
                "is damaged or from a newer wds-pipeline: rebuild it or upgrade")
        check.text(d.get("url", MISSING), f"{path}.url", nonempty=True)
        check.whole(d.get("nsamples", MISSING), f"{path}.nsamples")
        check.whole(d.get("filesize", MISSING), f"{path}.filesize")
        check.text(d[named[0]], f"{path}.{named[0]}")
        check.number(d.get("duration", MISSING), f"{path}.duration")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("sample_frames", "sample_offsets", "sample_crc32"):
            values = lifted(d.get(key), arrays) if arrays is not None else None
            if values is not None:
                known[key] = values  # whole numbers, checked as they were parsed
            elif key in d:
                check.wholes(d[key], f"{path}.{key}")
        return cls(**known, digest=Digest(named[0], d[named[0]]))


@dataclass
class BuildCounts:
    inputs: int = 0  # inputs the sources found (records + rejects)
    written: int = 0  # inputs that produced at least one sample
    rejected: int = 0
    samples: int = 0  # samples written (>= written when chunking)

    def check(self) -> None:
        if self.inputs != self.written + self.rejected:
            raise ValueError(
                f"accounting error: {self.inputs} inputs != {self.written} written + "
                f"{self.rejected} rejected"
            )


@dataclass
class VadCounts:
    """What voice activity detection (``--vad``) did to a shard's or a split's inputs."""

    clips_trimmed: int = 0  # clips that lost leading/trailing non-speech (or pauses, split)
    clips_dropped: int = 0  # all-silence clips, rejected (also counted in BuildCounts.rejected)
    samples_removed: int = 0  # at the output rate, non-speech cut from the clips
    # --vad-split-pause only (in the index only when it is set):
    recordings_split: int = 0  # inputs cut into two or more speech regions
    regions: int = 0  # speech regions written as samples
    regions_too_short: int = 0  # regions dropped by --min-duration (not inputs: no reject)
    regions_too_long: int = 0  # regions dropped by --max-duration

    def add(self, other: VadCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def extras(self, method: str, sample_rate: int,
               split_pause: float | None = None) -> dict[str, Any]:
        """The index's ``extras["vad"]``."""
        d: dict[str, Any] = {"method": method, "clips_trimmed": self.clips_trimmed,
                             "clips_dropped": self.clips_dropped,
                             "seconds_removed": round(self.samples_removed / sample_rate, 6)}
        if split_pause is not None:  # absent otherwise: indexes stay as they were
            d.update({"split_pause": split_pause, "recordings_split": self.recordings_split,
                      "regions": self.regions, "regions_too_short": self.regions_too_short,
                      "regions_too_long": self.regions_too_long})
        return d


@dataclass
class DatasetIndex:
    name: str
    shards: list[ShardInfo]
    sample_rate: int
    fields: list[str]
    audio_field: str
    audio_dtype: str = "int16"
    dataset: str = ""
    split: str = ""
    label_map: dict[str, int] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    counts: BuildCounts = field(default_factory=BuildCounts)
    rejected: list[Reject] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    build_fingerprint: str = ""
    tool_version: str = ""
    format_version: int = FORMAT_VERSION
    # Where the index was read from; not serialised. Shard URLs resolve against it.
    base_url: str = ""

    # -- derived -----------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return sum(s.nsamples for s in self.shards)

    @property
    def total_duration(self) -> float:
        return sum(s.duration for s in self.shards)

    def external_shard_urls(self) -> list[str]:
        """Shard URLs that leave the index's folder: another scheme, an absolute path, or
        a relative path climbing out with ``..``. The builder never writes them."""
        out = []
        for s in self.shards:
            url = s.url
            norm = posixpath.normpath(url)
            if "://" in url or url.startswith("/") or norm == ".." or norm.startswith("../"):
                out.append(url)
        return out

    def refuse_external_shards(self) -> None:
        """Raise :class:`ExternalShardsError` when a shard URL leaves the index's folder:
        an index from elsewhere could otherwise make a reader open any file or URL. The
        one rule and message of every reader (the loader, ``verify``, ``inspect``)."""
        outside = self.external_shard_urls()
        if not outside:
            return
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        raise ExternalShardsError(
            f"{join_url(self.base_url, INDEX_NAME) if self.base_url else self.name}: shard "
            f"URL(s) {', '.join(map(repr, outside[:3]))}{more} point outside the dataset "
            "folder; an index from elsewhere could make the loader read any file. If you "
            "trust this index, pass allow_external_shards=True (StreamingLoader) or "
            "--allow-external-shards (wds-pipeline verify, inspect)")

    def shard_url(self, i: int) -> str:
        url = self.shards[i].url
        if "://" in url or url.startswith("/") or not self.base_url:
            return url
        return join_url(self.base_url, url)

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "__kind__": WIDS_KIND,
            "wids_version": 1,
            "name": self.name,
            "shardlist": [s.to_dict() for s in self.shards],
            "wds_pipeline": {
                "format_version": self.format_version,
                "tool_version": self.tool_version,
                "dataset": self.dataset,
                "split": self.split,
                "sample_rate": self.sample_rate,
                "fields": list(self.fields),
                "audio_field": self.audio_field,
                "audio_dtype": self.audio_dtype,
                "num_samples": self.num_samples,
                "total_duration": round(self.total_duration, 3),
                "label_map": dict(sorted(self.label_map.items())),
                "preprocessing": self.preprocessing,
                "counts": asdict(self.counts),
                "rejected": [r.to_dict() for r in sorted(self.rejected)],
                "extras": self.extras,
                "build_fingerprint": self.build_fingerprint,
            },
        }

    def to_json(self) -> str:
        # Deterministic bytes: an interrupted-then-resumed build must equal a clean one.
        return json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    def files(self, index_url: str, *, sidecar_min_samples: int | None = None) -> list[tuple[str, bytes]]:
        """(URL, bytes) of the files this index is written as, in the order to write them
        (``index.json`` last: present = split complete). From ``sidecar_min_samples``
        samples on, the per-sample lists go into the sidecar (index_sidecar.py) and
        ``index.json`` records it; smaller indexes are ``to_json()`` alone, byte for byte."""
        if sidecar_min_samples is None:
            sidecar_min_samples = sidecar.SIDECAR_MIN_SAMPLES
        lists = [(s.sample_frames, s.sample_offsets, s.sample_crc32) for s in self.shards]
        packed = (sidecar.pack([s.nsamples for s in self.shards], lists)
                  if self.num_samples >= sidecar_min_samples else None)
        if packed is None:
            return [(index_url, self.to_json().encode("utf-8"))]
        d = self.to_dict()
        for entry in d["shardlist"]:
            for key in sidecar.LISTS:
                entry.pop(key, None)
        d["wds_pipeline"]["format_version"] = sidecar.SIDECAR_FORMAT_VERSION
        d["wds_pipeline"]["sample_lists"] = sidecar.describe(packed)
        text = json.dumps(d, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        return [(join_url(dirname_url(index_url), sidecar.SIDECAR_NAME), packed),
                (index_url, text.encode("utf-8"))]

    @classmethod
    def from_dict(cls, d: Any, *, base_url: str = "", source: str = "index",
                  arrays: list[np.ndarray] | None = None) -> DatasetIndex:
        """``d`` as read from JSON. Every key is checked for its type (and counts, rates and
        label ids for their range) before use: :class:`IndexFormatError` naming ``source``,
        the key path and what was expected, never a TypeError from deep inside a reader."""
        check = _Checker(source)
        check.obj(d, "the top level")
        if d.get("__kind__") != WIDS_KIND or d.get("wids_version") != 1:
            raise IndexFormatError(f"{source}: not a wids-shard-index-v1 descriptor "
                                   f"('__kind__' {d.get('__kind__')!r}, 'wids_version' "
                                   f"{d.get('wids_version')!r})")
        ours = d.get("wds_pipeline")
        if not isinstance(ours, dict):
            raise IndexFormatError(
                f"{source}: no 'wds_pipeline' block; this index was not written by wds-pipeline "
                "(build the dataset with `wds-pipeline build`)"
            )
        version = ours.get("format_version")
        if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
            raise IndexFormatError(
                f"{source}: shard format version {version!r} is not supported by this "
                f"wds_pipeline (reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}); "
                "upgrade wds-pipeline or rebuild"
            )
        if (version == sidecar.SIDECAR_FORMAT_VERSION) != ("sample_lists" in ours):
            check.fail("wds_pipeline.sample_lists", ours.get("sample_lists", MISSING),
                       f"a sidecar record exactly when format_version is {sidecar.SIDECAR_FORMAT_VERSION}")
        shardlist = check.items(d.get("shardlist", MISSING), "shardlist")
        shards = [ShardInfo.from_dict(s, source=source, path=f"shardlist[{i}]", arrays=arrays)
                  for i, s in enumerate(shardlist)]
        w = "wds_pipeline"
        fields_ = [check.text(f, f"{w}.fields[{i}]", nonempty=True)
                   for i, f in enumerate(check.items(ours.get("fields", MISSING), f"{w}.fields"))]
        audio_field = check.text(ours.get("audio_field", MISSING), f"{w}.audio_field",
                                 nonempty=True)
        if audio_field not in fields_:
            check.fail(f"{w}.audio_field", audio_field, f"one of {w}.fields {fields_}")
        label_map = check.obj(ours.get("label_map", {}), f"{w}.label_map")
        for name, label in label_map.items():
            check.whole(label, f"{w}.label_map[{name!r}]")
        counts = check.obj(ours.get("counts", {}), f"{w}.counts")
        for key, value in counts.items():
            if key not in BuildCounts.__dataclass_fields__:
                check.fail(f"{w}.counts.{key}", value,
                           f"only the keys {list(BuildCounts.__dataclass_fields__)}")
            check.whole(value, f"{w}.counts.{key}")
        rejected = check.items(ours.get("rejected", []), f"{w}.rejected")
        for i, r in enumerate(rejected):
            _check_reject(check, r, f"{w}.rejected[{i}]")
        return cls(
            name=check.text(d.get("name", ""), "name"),
            shards=shards,
            sample_rate=check.whole(ours.get("sample_rate", MISSING), f"{w}.sample_rate",
                                    minimum=1),
            fields=fields_,
            audio_field=audio_field,
            audio_dtype=check.text(ours.get("audio_dtype", "int16"), f"{w}.audio_dtype"),
            dataset=check.text(ours.get("dataset", ""), f"{w}.dataset"),
            split=check.text(ours.get("split", ""), f"{w}.split"),
            label_map=dict(label_map),
            preprocessing=dict(check.obj(ours.get("preprocessing", {}), f"{w}.preprocessing")),
            counts=BuildCounts(**counts),
            rejected=[Reject.from_dict(r) for r in rejected],
            extras=dict(check.obj(ours.get("extras", {}), f"{w}.extras")),
            build_fingerprint=check.text(ours.get("build_fingerprint", ""),
                                         f"{w}.build_fingerprint"),
            tool_version=check.text(ours.get("tool_version", ""), f"{w}.tool_version"),
            # The shards' format: a sidecar index (3) holds format 2 shards.
            format_version=FORMAT_VERSION if version == sidecar.SIDECAR_FORMAT_VERSION else version,
            base_url=base_url,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, base_url: str = "", source: str = "index",
                  arrays: bool = False, read_file: Callable[[str], bytes] | None = None) -> DatasetIndex:
        """``arrays``: per-sample lists as int64 arrays, never as Python ints (the loader).
        ``read_file(name)``: the bytes of a file beside the index (its sidecar, when it
        has one); without it a sidecar's lists stay unread (empty): enough for the shard
        list, not for a loader."""
        lists: list[np.ndarray] | None = None
        if arrays:
            text, lists = lift_sample_lists(text.encode() if isinstance(text, str) else text)
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexFormatError(
                f"{source}: index is not valid JSON ({e}); was the upload truncated?") from None
        index = cls.from_dict(d, base_url=base_url, source=source, arrays=lists)
        record = d["wds_pipeline"].get("sample_lists")
        if record is not None and read_file is not None:
            index._read_sidecar(record, read_file, source, arrays)
        return index

    def _read_sidecar(self, record: Any, read_file: Callable[[str], bytes], source: str,
                      arrays: bool) -> None:
        """Fill the shards' per-sample lists from the sidecar ``record`` names."""
        w = "wds_pipeline.sample_lists"
        check = _Checker(source)
        check.obj(record, w)
        name = check.text(record.get("file", MISSING), f"{w}.file", nonempty=True)
        check.whole(record.get("bytes", MISSING), f"{w}.bytes")
        check.text(record.get("sha256", MISSING), f"{w}.sha256", nonempty=True)
        if "/" in name or name in (".", ".."):
            check.fail(f"{w}.file", name, "a file name in the index's folder")
        where = join_url(self.base_url, name) if self.base_url else name
        try:
            data = read_file(name)
        except FileNotFoundError:
            raise IndexFormatError(
                f"{source}: its per-sample lists are in {where}, which is missing: copy it "
                "along with index.json (the two files go together), or rebuild") from None
        try:
            per_shard = sidecar.unpack(data, record, [s.nsamples for s in self.shards])
        except sidecar.SidecarError as e:
            raise IndexFormatError(f"{where} (the per-sample lists of {source}): {e}; {REBUILD}") from None
        for s, (frames, offsets, crcs) in zip(self.shards, per_shard):
            if arrays:
                s.sample_frames, s.sample_offsets, s.sample_crc32 = frames, offsets, crcs
            else:
                s.sample_frames, s.sample_offsets, s.sample_crc32 = (
                    frames.tolist(), offsets.tolist(), crcs.tolist())


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


MISSING: Any = object()  # a required key that is absent


def _describe(value: Any) -> str:
    if value is MISSING:
        return "missing"
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if value is None or isinstance(value, (dict, list)):
        return kind
    text = json.dumps(value) if isinstance(value, (str, int, float)) else repr(value)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"


class _Checker:
    """Type checks of JSON values, each failing with the file, key path and expectation."""

    def __init__(self, source: str, fix: str = REBUILD):
        self.source = source
        self.fix = fix

    def fail(self, path: str, value: Any, expected: str) -> NoReturn:
        where = path if path == "the top level" else f"key '{path}'"
        raise IndexFormatError(f"{self.source}: {where} is {_describe(value)}, expected "
                               f"{expected}{f'; {self.fix}' if self.fix else ''}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, value, "an object")
        return value

    def items(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, value, "a list")
        return value

    def text(self, value: Any, path: str, *, nonempty: bool = False) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            self.fail(path, value, "a non-empty string" if nonempty else "a string")
        return value

    def whole(self, value: Any, path: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path, value, f"a whole number >= {minimum}")
        return value

    def number(self, value: Any, path: str) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            self.fail(path, value, "a number >= 0")
        return float(value)

    def wholes(self, value: Any, path: str) -> None:
        values = self.items(value, path)
        # The common case in C (an index has ~3 per-sample numbers per sample: millions):
        # only ints, none negative. Else one by one, for the message naming the bad one.
        if not values or (set(map(type, values)) == {int} and min(values) >= 0):
            return
        for i, v in enumerate(values):
            self.whole(v, f"{path}[{i}]")


def _check_reject(check: _Checker, r: Any, path: str) -> None:
    check.obj(r, path)
    stages = typing.get_args(RejectStage)
    for key, value in r.items():
        if key in ("input", "reason"):
            check.text(value, f"{path}.{key}")
        elif key == "stage":
            if value not in stages:
                check.fail(f"{path}.stage", value, f"one of {list(stages)}")
        else:
            check.fail(f"{path}.{key}", value, "only the keys input, reason, stage")
    for key in ("input", "reason"):
        if key not in r:
            check.fail(f"{path}.{key}", MISSING, "a string")


def read_index(url: str, *, arrays: bool = False, **storage_options: Any) -> DatasetIndex:
    """Read the ``index.json`` at ``url`` through the storage layer (transient errors
    retried); its shard URLs resolve against its folder. ``arrays``: per-sample lists as
    int64 arrays (see :meth:`DatasetIndex.from_json`)."""
    from . import storage  # on first read: `import wds_pipeline` does not load fsspec

    text = storage.read_bytes(url, **storage_options)
    folder = dirname_url(url)

    def beside(name: str) -> bytes:
        return storage.read_bytes(join_url(folder, name), **storage_options)

    return DatasetIndex.from_json(text, base_url=folder, source=url, arrays=arrays, read_file=beside)


def load_index(url: str, *, arrays: bool = False, **storage_options: Any) -> DatasetIndex:
    """Read an ``index.json`` (or a split folder holding one) from any fsspec URL.
    ``arrays``: per-sample lists as int64 arrays (what the loader reads them as)."""
    if not url.endswith(".json"):
        url = join_url(url, INDEX_NAME)
    try:
        return read_index(url, arrays=arrays, **storage_options)
    except FileNotFoundError:
        folder = dirname_url(url)
        splits = _split_folders(folder, **storage_options)
        if splits:  # the OUT of a build: its indexes are one level down
            raise FileNotFoundError(
                f"{url}: no index found, but {folder} holds the split folders "
                f"{', '.join(splits)} (each with an index.json): pass one of them, e.g. "
                f"StreamingLoader('{join_url(folder, splits[0])}'), or a list of them"
            ) from None
        raise FileNotFoundError(
            f"{url}: no index found; build the dataset first (`wds-pipeline build ...`) or "
            "pass the split folder that holds index.json"
        ) from None


def _split_folders(folder: str, **storage_options: Any) -> list[str]:
    """Sub-folders of ``folder`` holding an index.json (a build's split folders), sorted."""
    from . import storage

    try:
        names = storage.listdir(folder, **storage_options)
        return [n for n in names if not n.startswith(("_", "."))
                and storage.exists(join_url(join_url(folder, n), INDEX_NAME), **storage_options)]
    except (OSError, ValueError):
        return []  # not a listable folder: the plain "no index" message applies
