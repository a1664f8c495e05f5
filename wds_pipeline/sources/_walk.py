"""Helpers the corpus sources share while walking their folders."""

from __future__ import annotations

import os

from wds_pipeline.records import Reject, SourceRecord


def list_dir(
    path: str, rejects: list[Reject], *, skip_hidden: bool = False
) -> list[os.DirEntry[str]]:
    """Entries of ``path`` sorted by name (without dot-files if ``skip_hidden``); an
    unreadable folder becomes a reject, not a crash."""
    try:
        with os.scandir(path) as it:
            entries = (e for e in it if not (skip_hidden and e.name.startswith(".")))
            return sorted(entries, key=lambda e: e.name)
    except OSError as e:
        rejects.append(
            Reject(
                path,
                f"cannot read directory {path}: {e.strerror or e}; fix its permissions and rescan",
            )
        )
        return []


def drop_duplicate_ids(records: list[SourceRecord], rejects: list[Reject]) -> list[SourceRecord]:
    """Sort by id; a later record with an id already seen (copied folders, or a file in
    both dev/ and test/) is rejected, the first one is kept."""
    kept: dict[str, SourceRecord] = {}
    for rec in records:
        first = kept.get(rec.id)
        if first is None:
            kept[rec.id] = rec
        else:
            rejects.append(
                Reject(rec.path, f"duplicate utterance id {rec.id}: already found at {first.path}")
            )
    return [kept[k] for k in sorted(kept)]
