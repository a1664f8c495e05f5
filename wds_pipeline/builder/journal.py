"""Per-shard build journal and the state of an output split (resume / refuse / overwrite).

After a worker publishes ``OUT/<split>/<prefix>-NNNNNN.tar`` it writes
``OUT/<split>/_build/<prefix>-NNNNNN.json`` atomically: the shard's ShardInfo, its
rejects and counts, the split's plan fingerprint and a hash of the shard's input
ids. A rerun reuses a shard only when all of these match and the file on storage
still has the journal's size and digest, so the final index is byte-identical to
that of an uninterrupted run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import storage
from ..index import INDEX_NAME, BuildCounts, DatasetIndex, ShardInfo, VadCounts
from ..records import Reject
from ..storage.urls import join_url
from .options import OutputConflictError

JOURNAL_DIR = "_build"
STAGING_DIR = "tmp"
JOURNAL_VERSION = 1


@dataclass
class JournalEntry:
    fingerprint: str
    split: str
    shard: str  # file name of the shard
    inputs_sha256: str
    info: ShardInfo | None  # None: all inputs rejected, no tar
    rejects: list[Reject] = field(default_factory=list)
    counts: BuildCounts = field(default_factory=BuildCounts)
    vad: VadCounts | None = None  # None: built without --vad

    def to_json(self) -> bytes:
        d = {
            "journal_version": JOURNAL_VERSION,
            "fingerprint": self.fingerprint,
            "split": self.split,
            "shard": self.shard,
            "inputs_sha256": self.inputs_sha256,
            "info": self.info.to_dict() if self.info else None,
            "rejects": [r.to_dict() for r in sorted(self.rejects)],
            "counts": {"inputs": self.counts.inputs, "written": self.counts.written,
                       "rejected": self.counts.rejected, "samples": self.counts.samples},
        }
        if self.vad is not None:  # absent without --vad: those entries stay as they were
            d["vad"] = asdict(self.vad)
        return (json.dumps(d, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> JournalEntry:
        try:
            d = json.loads(data)
            if d.get("journal_version") != JOURNAL_VERSION:
                raise ValueError(f"journal version {d.get('journal_version')!r}")
            return cls(
                fingerprint=d["fingerprint"], split=d["split"], shard=d["shard"],
                inputs_sha256=d["inputs_sha256"],
                info=(ShardInfo.from_dict(d["info"], source="entry", path="info", fix="")
                      if d["info"] else None),
                rejects=[Reject.from_dict(r) for r in d["rejects"]],
                counts=BuildCounts(**d["counts"]),
                vad=VadCounts(**d["vad"]) if d.get("vad") is not None else None,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{source}: unreadable journal entry ({e})") from None


def journal_dir(split_url: str) -> str:
    return join_url(split_url, JOURNAL_DIR)


def journal_url(split_url: str, shard_name: str) -> str:
    stem = shard_name.removesuffix(".tar")
    return join_url(journal_dir(split_url), stem + ".json")


def write_journal(task: Any, entry: JournalEntry) -> None:
    """Called by the worker right after the shard is published."""
    storage.write_bytes_atomic(journal_url(task.split_url, task.name), entry.to_json(),
                               **task.storage_options)


# ---------------------------------------------------------------------------
# What an output split already holds


@dataclass
class SplitState:
    """What was found under OUT/<split> for a planned split."""

    complete: DatasetIndex | None = None  # identical dataset already finished
    entries: dict[str, JournalEntry] = field(default_factory=dict)  # same fingerprint, by shard


_SHARD_FILE = re.compile(r"^[A-Za-z0-9_-]+-\d{6}\.tar$")


def _safe_listdir(url: str, so: Mapping[str, Any]) -> list[str]:
    try:
        return storage.listdir(url, **so)
    except (FileNotFoundError, NotADirectoryError):
        return []


def inspect_split(split_url: str, fingerprint: str, planned_names: set[str],
                  storage_options: Mapping[str, Any]
                  ) -> tuple[SplitState, list[str], list[str]]:
    """Read index/journal under ``split_url``.

    Returns the state, the reasons OUT holds a different dataset (conflicts), and
    notes for the log.
    """
    so = dict(storage_options)
    state = SplitState()
    conflicts: list[str] = []
    notes: list[str] = []
    index_url = join_url(split_url, INDEX_NAME)
    if storage.exists(index_url, **so):
        try:
            old = DatasetIndex.from_json(storage.read_bytes(index_url, **so), base_url=split_url,
                                         source=index_url)
        except ValueError as e:
            conflicts.append(f"{index_url} is not a readable wds-pipeline index ({e})")
        else:
            if old.build_fingerprint != fingerprint:
                conflicts.append(f"{index_url} describes a different dataset (fingerprint "
                                 f"{old.build_fingerprint[:12] or 'none'}, this build "
                                 f"{fingerprint[:12]})")
            elif all(_size_ok(join_url(split_url, s.url), s.filesize, so) for s in old.shards):
                state.complete = old
    for name in _safe_listdir(journal_dir(split_url), so):
        if not name.endswith(".json"):
            continue
        url = join_url(journal_dir(split_url), name)
        try:
            entry = JournalEntry.from_json(storage.read_bytes(url, **so), source=url)
        except ValueError as e:
            # Entries are only ever written atomically by this tool, so an unreadable
            # one is damage (e.g. a power cut before the data reached the disk), not
            # another dataset: its shard is rebuilt and the entry rewritten.
            notes.append(f"{e}; its shard will be rebuilt")
            continue
        if entry.fingerprint != fingerprint:
            conflicts.append(f"{url} belongs to a different build (fingerprint "
                             f"{entry.fingerprint[:12]}, this build {fingerprint[:12]})")
        else:
            state.entries[entry.shard] = entry
    # Shard-like files that this plan would not write: another dataset (or another
    # --shard-prefix) lives here, and globbing readers would mix it into ours.
    strays = [n for n in _safe_listdir(split_url, so)
              if _SHARD_FILE.match(n) and n not in planned_names]
    if strays:
        more = f" (+{len(strays) - 3} more)" if len(strays) > 3 else ""
        conflicts.append(f"{split_url} holds shards this build would not write: "
                         f"{', '.join(strays[:3])}{more}")
    return state, conflicts, notes


def _size_ok(url: str, size: int, so: Mapping[str, Any]) -> bool:
    try:
        return storage.file_size(url, **so) == size
    except FileNotFoundError:
        return False


def entry_reusable(entry: JournalEntry, task: Any) -> bool:
    """True when the journal entry matches the task and its shard file is intact.

    Re-hashes the shard: a journal alone cannot prove that the file was not
    truncated or replaced since.
    """
    if entry.inputs_sha256 != task.inputs_sha256 or entry.fingerprint != task.fingerprint:
        return False
    if entry.info is None:
        return True
    try:
        digest, size = storage.digest_file(task.url, entry.info.digest.algorithm,
                                           **task.storage_options)
    except FileNotFoundError:
        return False
    return digest == entry.info.digest and size == entry.info.filesize


_TEMP_FILE = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")  # storage.commit_file temp names


def clear_split(split_url: str, storage_options: Mapping[str, Any]) -> int:
    """--overwrite: remove the split's index (first), shard files and journal.

    Only files this tool writes are removed (index, ``<prefix>-NNNNNN.tar``, the
    shards the old index lists, commit temp files, journal entries).
    """
    so = dict(storage_options)
    removed = 0
    index_url = join_url(split_url, INDEX_NAME)
    listed: set[str] = set()
    # Index first: a half-cleared folder must never look like a finished dataset.
    if storage.exists(index_url, **so):
        try:
            old = DatasetIndex.from_json(storage.read_bytes(index_url, **so), source=index_url)
            listed = {s.url for s in old.shards if "/" not in s.url and "://" not in s.url}
        except ValueError:
            pass
        storage.remove(index_url, **so)
        removed += 1
    for name in _safe_listdir(split_url, so):
        if _SHARD_FILE.match(name) or name in listed or _TEMP_FILE.match(name):
            storage.remove(join_url(split_url, name), **so)
            removed += 1
    jdir = journal_dir(split_url)
    for name in _safe_listdir(jdir, so):
        if name.endswith(".json") or _TEMP_FILE.match(name):
            storage.remove(join_url(jdir, name), **so)
            removed += 1
    return removed


def refuse(split_url: str, conflicts: list[str]) -> OutputConflictError:
    lines = "\n  ".join(conflicts[:5])
    return OutputConflictError(
        f"{split_url} already holds a different dataset:\n  {lines}\n"
        "Rerun with --overwrite to delete that split's old shards, index and journal first, "
        "or choose another OUT."
    )
