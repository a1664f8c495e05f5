"""Helpers the corpus sources share while walking their folders."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat

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


def tag_split(rejects: list[Reject], start: int, split: str) -> None:
    """Give ``rejects[start:]`` that have no split yet the split ``split`` (in place)."""
    for i in range(start, len(rejects)):
        if rejects[i].split is None:
            rejects[i] = dataclasses.replace(rejects[i], split=split)


FILE, DIR = "file", "dir"


def path_kind(path: str) -> str:
    """``FILE`` or ``DIR`` (following symlinks), else what the path is, for a reject reason:
    "symlink loop", "broken symlink", "FIFO (named pipe)", "socket", "device file"."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "broken symlink"
        if e.errno == errno.ENOENT:
            return "missing file"
        return f"unreadable entry ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device file"


def entry_kind(entry: os.DirEntry[str]) -> str:
    """:func:`path_kind` of a directory entry; plain files and folders are told apart from the
    directory listing alone (no extra stat per file, which counts on a slow mount)."""
    try:
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                return DIR
            if entry.is_file(follow_symlinks=False):
                return FILE
    except OSError:
        pass
    return path_kind(entry.path)


def not_audio_reason(path: str, kind: str) -> str:
    """Why ``path`` (found where an audio file may be) is not one; ``kind`` is not FILE."""
    if kind == DIR:
        return f"{path} is a folder named like an audio file; rename or remove it"
    if kind in ("symlink loop", "broken symlink"):
        return f"{path} is a {kind}, not a file or folder; remove or fix the link"
    if kind == "missing file":
        return f"missing file {path}"
    return f"{path} is a {kind}, not an audio file; remove it"


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
                Reject(
                    rec.path,
                    f"duplicate utterance id {rec.id}: already found at {first.path}",
                    split=rec.split,
                )
            )
    return [kept[k] for k in sorted(kept)]
