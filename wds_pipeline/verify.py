"""``inspect`` and ``verify``: what a built dataset holds, and whether it is intact.

``OUT`` may be a dataset root (holding ``<split>/index.json``), one split folder,
or an ``index.json`` URL, on any fsspec filesystem.

verify re-hashes every shard (digest + size against the index), re-reads it
member by member (tar checksums, truncation), decodes every field of every
sample, and checks sample counts, byte offsets, frame counts, field sets and
that keys are valid and unique within the split. A shard on remote or FUSE storage
(GCS, Drive) is downloaded once and checked from memory, one shard at a time: the
three passes would otherwise be three downloads.
"""

from __future__ import annotations

import io
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tqdm import tqdm

from . import format as fmt
from . import storage
from .format.checksum import crc32
from .index import INDEX_NAME, DatasetIndex, IndexFormatError, ShardInfo, read_index
from .readpath import default_cache_policy
from .storage.urls import join_url

# ---------------------------------------------------------------------------
# Finding the indexes


def find_indexes(out: str, **storage_options: Any) -> list[str]:
    """``index.json`` URLs under OUT: itself, OUT/index.json, or OUT/<split>/index.json."""
    out = out.rstrip("/") if len(out) > 1 else out
    if out.endswith(".json"):
        if not storage.exists(out, **storage_options):
            raise FileNotFoundError(f"{out}: no such index file")
        return [out]
    direct = join_url(out, INDEX_NAME)
    if storage.exists(direct, **storage_options):
        return [direct]
    try:
        names = storage.listdir(out, **storage_options)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{out}: no such dataset folder") from None
    found = [join_url(join_url(out, n), INDEX_NAME) for n in names
             if not n.startswith(("_", "."))
             and storage.exists(join_url(join_url(out, n), INDEX_NAME), **storage_options)]
    if not found:
        raise FileNotFoundError(
            f"{out}: no index.json in it or in its sub-folders; pass the OUT of "
            "`wds-pipeline build`, a split folder, or an index.json URL (an unfinished build "
            "has no index yet: rerun the build to finish it)")
    return found


def _open(url: str, so: Mapping[str, Any]) -> io.BufferedReader:
    # One request per BLOCK_SIZE on remote filesystems: gcsfs' own cache issues an HTTP
    # request for every small read (each tar header), which made gs:// verify crawl.
    return io.BufferedReader(storage.open_read(url, **so),  # type: ignore[arg-type]
                             buffer_size=storage.BLOCK_SIZE)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ---------------------------------------------------------------------------
# inspect


@dataclass
class SplitSummary:
    index_url: str
    index: DatasetIndex
    examples: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    example_error: str = ""

    def to_text(self, *, max_rejects: int = 5) -> str:
        ix = self.index
        c = ix.counts
        sizes = [s.filesize for s in ix.shards]
        lines = [
            f"== {ix.split or ix.name}  ({self.index_url})",
            (f"dataset {ix.dataset}, shard format v{ix.format_version}, "
             f"tool {ix.tool_version}, fingerprint {ix.build_fingerprint[:12]}"),
            (f"samples {ix.num_samples}, hours {ix.total_duration / 3600:.3f}  "
             f"(inputs {c.inputs}, written {c.written}, rejected {c.rejected})"),
            f"speakers/classes {len(ix.label_map)}",
        ]
        if sizes:
            lines.append(f"shards {len(sizes)}, size min/median/max "
                         f"{_fmt_bytes(min(sizes))} / {_fmt_bytes(statistics.median(sizes))} / "
                         f"{_fmt_bytes(max(sizes))}")
        else:
            lines.append("shards 0")
        pre = ix.preprocessing
        lines.append(f"fields {', '.join(ix.fields)}; audio {ix.audio_field} {ix.audio_dtype} "
                     f"@ {ix.sample_rate} Hz; normalize {pre.get('normalize')}, trim "
                     f"{pre.get('trim_silence')}, chunk {pre.get('chunk_seconds')}")
        if ix.rejected:
            by_stage = Counter(r.stage for r in ix.rejected)
            lines.append(f"rejected {len(ix.rejected)} ("
                         + ", ".join(f"{k} {v}" for k, v in sorted(by_stage.items())) + "):")
            for r in ix.rejected[:max_rejects]:
                lines.append(f"  - [{r.stage}] {r.input}: {r.reason}")
            if len(ix.rejected) > max_rejects:
                lines.append(f"  ... {len(ix.rejected) - max_rejects} more in the index")
        else:
            lines.append("rejected 0")
        if self.examples:
            lines.append("examples (first shard):")
            for key, meta in self.examples:
                lines.append(f"  {key}  {fmt.encode_json(meta).decode('utf-8')}")
        if self.example_error:
            lines.append(f"examples: cannot read the first shard: {self.example_error}")
        return "\n".join(lines)


def inspect_dataset(out: str, *, examples: int = 3, allow_external_shards: bool = False,
                    **storage_options: Any) -> list[SplitSummary]:
    """Raises :class:`~.index.IndexFormatError` for a malformed index and
    :class:`~.index.ExternalShardsError` for shard URLs leaving the dataset (unless
    ``allow_external_shards``), as the loader does."""
    summaries = []
    for url in find_indexes(out, **storage_options):
        ix = read_index(url, **storage_options)
        if not allow_external_shards:
            ix.refuse_external_shards()
        s = SplitSummary(url, ix)
        if ix.shards and examples > 0:
            try:
                with _open(ix.shard_url(0), storage_options) as f:
                    for key, fields in fmt.iter_samples(f, source=ix.shard_url(0), limit=examples):
                        meta = fmt.decode_field(fmt.JSON, fields[fmt.JSON]) if fmt.JSON in fields else {}
                        s.examples.append((key, meta))
            except (OSError, ValueError) as e:
                s.example_error = str(e)
        summaries.append(s)
    return summaries


# ---------------------------------------------------------------------------
# verify


@dataclass
class SplitVerdict:
    index_url: str
    split: str
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)  # "<shard>: <what is wrong> <fix>"

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    splits: list[SplitVerdict]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.splits)

    def to_text(self) -> str:
        lines = []
        for s in self.splits:
            status = "OK" if s.ok else f"FAILED ({len(s.problems)} problems)"
            lines.append(f"{s.split}: {status} - {s.shards} shards, {s.samples} samples checked "
                         f"({s.index_url})")
            lines.extend(f"  {p}" for p in s.problems)
        bad = [s.split for s in self.splits if not s.ok]
        if bad:
            lines.append(f"verify FAILED for {', '.join(bad)}: rebuild the damaged shards by rerunning "
                         "the same `wds-pipeline build` command with --repair (every shard is "
                         "re-hashed against its journal entry and the damaged ones rebuilt), or "
                         "restore them from a good copy")
        else:
            lines.append(f"verify OK: {len(self.splits)} split(s), "
                         f"{sum(s.samples for s in self.splits)} samples")
        return "\n".join(lines)


def _group_samples(members: Iterator[tuple[fmt.TarMember, Any]]
                   ) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(key, offset of the first member, {field: payload}) from a member stream."""
    key = None
    start = 0
    fields: dict[str, Any] = {}
    for member, payload in members:
        k, f = fmt.split_member_name(member.name)
        if key is not None and k != key:
            yield key, start, fields
            fields = {}
        if k != key:
            start = member.offset
        key = k
        if f in fields:
            raise fmt.ShardFormatError(f"member {member.name!r} appears twice in sample {k!r}")
        fields[f] = payload
    if key is not None:
        yield key, start, fields


Opener = Callable[[], BinaryIO]  # a fresh stream over one shard's bytes


def _read_shard(url: str, info: ShardInfo, so: Mapping[str, Any]
                ) -> tuple[storage.ShardCheck, Opener]:
    """The shard's digest and size against its index entry, and how to open it again for
    the member and crc passes: from memory for remote and FUSE shards (read once), from
    the file for local ones (the passes after the first read the page cache)."""
    if default_cache_policy(url):  # where the loader caches, a read is a download
        blob = storage.read_bytes(url, **so)
        check = storage.check_bytes(url, blob, expected=info.expected_digest,
                                    expected_size=info.filesize)
        return check, lambda: io.BytesIO(blob)
    check = storage.check_file(url, expected=info.expected_digest, expected_size=info.filesize,
                               **so)
    return check, lambda: _open(url, so)


def _check_shard(ix: DatasetIndex, i: int, seen: dict[str, str], so: Mapping[str, Any],
                 *, decode: bool) -> tuple[int, list[str]]:
    info = ix.shards[i]
    url = ix.shard_url(i)
    name = info.url
    problems: list[str] = []
    try:
        check, opener = _read_shard(url, info, so)
    except FileNotFoundError:
        return 0, [f"{name}: missing ({url} does not exist)"]
    problems.extend(check.problems(name))
    required = set(ix.fields) - {fmt.CLS}
    allowed = set(ix.fields)
    labels = set(ix.label_map.values())
    offsets: list[int] = []
    frames: list[int] = []
    n = 0
    try:
        with opener() as f:
            for key, offset, fields in _group_samples(fmt.iter_tar_members(f, source=url)):
                n += 1
                offsets.append(offset)
                where = f"{name}: sample {key!r}"
                try:
                    fmt.validate_key(key)
                except ValueError as e:
                    problems.append(f"{where}: {e}")
                if key in seen:
                    problems.append(f"{where}: duplicate key (also in {seen[key]})")
                seen.setdefault(key, name)
                missing = sorted(required - set(fields))
                extra = sorted(set(fields) - allowed)
                if missing or extra:
                    problems.append(f"{where}: fields {sorted(fields)} (missing {missing}, "
                                    f"unexpected {extra}); a key with a dot splits samples")
                nframes = -1
                if decode:
                    for fname, payload in sorted(fields.items()):
                        try:
                            value = fmt.decode_field(fname, payload)
                        except Exception as e:  # noqa: BLE001 - any decoder failure is a finding
                            problems.append(f"{where}: member {key}.{fname} does not decode "
                                            f"({type(e).__name__}: {e})")
                            continue
                        if fname == ix.audio_field:
                            nframes = len(value)
                        elif fname == fmt.CLS and value not in labels:
                            # The model's output layer has one unit per label_map id: any
                            # other class index fails in the loss (a device assert on CUDA).
                            problems.append(f"{where}: label {value} is not a class of the "
                                            f"index's label_map ({_label_range(labels)})")
                        elif fname == fmt.JSON and isinstance(value, dict) and \
                                value.get("key", key) != key:
                            problems.append(f"{where}: json key {value.get('key')!r} differs")
                frames.append(nframes)
    except fmt.ShardFormatError as e:
        problems.append(f"{name}: unreadable after {n} samples: {e}")
        return n, problems
    except OSError as e:
        problems.append(f"{name}: read error after {n} samples: {e}")
        return n, problems
    if n != info.nsamples:
        problems.append(f"{name}: {n} samples, index says {info.nsamples}")
    elif info.sample_offsets and offsets != info.sample_offsets:
        bad = next(j for j, (a, b) in enumerate(zip(offsets, info.sample_offsets)) if a != b)
        problems.append(f"{name}: sample {bad} starts at byte {offsets[bad]}, index says "
                        f"{info.sample_offsets[bad]}")
    elif info.sample_crc32 and check.ok:
        # Bytes that match the digest must match their crcs too, or streamed reads of this
        # shard would fail; a digest mismatch is already reported as such.
        problems.extend(_crc_problems(url, opener, info, name))
    if decode and n == info.nsamples and info.sample_frames and frames != info.sample_frames:
        bad = next(j for j, (a, b) in enumerate(zip(frames, info.sample_frames)) if a != b)
        problems.append(f"{name}: sample {bad} has {frames[bad]} audio frames, index says "
                        f"{info.sample_frames[bad]}")
    return n, problems


def _crc_problems(url: str, opener: Opener, info: ShardInfo, name: str) -> list[str]:
    """Each sample's bytes against its crc32 in the index (offsets already agree)."""
    if len(info.sample_crc32) != info.nsamples:
        return [f"{name}: {len(info.sample_crc32)} crc32s, index says {info.nsamples} samples"]
    bad: list[str] = []
    offsets = info.sample_offsets
    try:
        with opener() as f:
            f.seek(offsets[0])
            for i, start in enumerate(offsets):
                if i + 1 < len(offsets):
                    data = f.read(offsets[i + 1] - start)
                else:  # the last sample ends where the end-of-archive blocks start
                    data = f.read()
                    data = data[: fmt.members_end(data, 0, url)]
                got = crc32(data)
                if got != info.sample_crc32[i]:
                    bad.append(f"{name}: sample {i} (byte {start}) has crc32 {got}, "
                               f"index says {info.sample_crc32[i]}")
    except (fmt.ShardFormatError, OSError) as e:
        bad.append(f"{name}: crc32 check failed: {e}")
    return bad


def _label_range(labels: set[int]) -> str:
    if not labels:
        return "it has none"
    return f"{len(labels)} classes, ids {min(labels)}-{max(labels)}"


def verify_index(index_url: str, *, decode: bool = True, progress: bool = True,
                 allow_external_shards: bool = False, **storage_options: Any) -> SplitVerdict:
    """Raises :class:`~.index.IndexFormatError` for a malformed index and
    :class:`~.index.ExternalShardsError` for shard URLs leaving the dataset (unless
    ``allow_external_shards``): the loader refuses both, so verify does not call them OK."""
    try:
        ix = read_index(index_url, **storage_options)
    except IndexFormatError:
        raise
    except (ValueError, OSError) as e:
        return SplitVerdict(index_url, "?", problems=[f"index: {e}"])
    if not allow_external_shards:
        ix.refuse_external_shards()
    verdict = SplitVerdict(index_url, ix.split or ix.name, shards=len(ix.shards))
    seen: dict[str, str] = {}
    for i in tqdm(range(len(ix.shards)), desc=f"verify {verdict.split}", unit="shard",
                  disable=not progress, file=sys.stderr):
        n, problems = _check_shard(ix, i, seen, storage_options, decode=decode)
        verdict.samples += n
        verdict.problems.extend(problems)
    if ix.num_samples != ix.counts.samples:
        verdict.problems.append(f"index: shards hold {ix.num_samples} samples, counts say "
                                f"{ix.counts.samples}")
    return verdict


def verify_dataset(out: str, *, decode: bool = True, progress: bool = True,
                   allow_external_shards: bool = False, **storage_options: Any) -> VerifyReport:
    return VerifyReport([verify_index(u, decode=decode, progress=progress,
                                      allow_external_shards=allow_external_shards,
                                      **storage_options)
                         for u in find_indexes(out, **storage_options)])
