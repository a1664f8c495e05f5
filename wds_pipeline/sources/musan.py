"""MUSAN (OpenSLR 17), the noise, music and speech corpus of the augmentation recipes:
``musan/<category>/<subset>/<category>-<subset>-NNNN.wav`` with an ``ANNOTATIONS`` file per
subset (and a ``LICENSE``), categories ``music``, ``noise`` and ``speech``.

``root`` may be the ``musan`` folder or the folder it was unpacked into. Every clip is one
record, kept whole (clips run from seconds to minutes; an augmenter draws its own window):
its ``category`` (noise, music or speech) and ``subset`` (``free-sound``, ``fma``, ...) are
fields of the sample's JSON, and the category is its class (``cls``), so a noise bank can pick
clips by category without reading the JSON. A music annotation line (``utt genres vocals
musician``, as Kaldi's ``make_musan.py`` reads it) adds ``genres``, ``vocals`` and
``musician``; another category's line is kept as ``annotation`` text. One split, ``--split``.

The whole corpus is about 109 hours in some 2000 clips of up to minutes each: build it with
``--max-shard-bytes`` (e.g. 512MB), since the default 1000 inputs a shard would make shards
of gigabytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from wds_pipeline.option_table import option
from wds_pipeline.records import Reject, SourceRecord, SourceScan
from wds_pipeline.sources import _walk as walk
from wds_pipeline.sources.manifest import check_split

NAME = "musan"
DATASET = "musan"
CATEGORIES: tuple[str, ...] = ("music", "noise", "speech")
# The subsets of the distributed corpus (others are scanned too: the folder is the truth).
SUBSETS: dict[str, tuple[str, ...]] = {
    "music": ("fma", "fma-western-art", "hd-classical", "jamendo", "rfm"),
    "noise": ("free-sound", "sound-bible"),
    "speech": ("librivox", "us-gov"),
}
ANNOTATIONS = "ANNOTATIONS"
METADATA_FILES = frozenset({ANNOTATIONS, "LICENSE", "README"})  # not inputs
AUDIO_EXT = ".wav"


@dataclass(frozen=True)
class Options:
    split: str = option("train", help="the split every clip is written to")


# ---------------------------------------------------------------------------
# Layout (the scan reads it; synth writes it)


def clip_name(category: str, subset: str, number: int) -> str:
    """``noise-free-sound-0003``: a clip's file name without ``.wav`` (its record id)."""
    return f"{category}-{subset}-{number:04d}"


def subset_dir(root: str, category: str, subset: str) -> str:
    return os.path.join(root, category, subset)


def music_annotation(clip: str, genres: tuple[str, ...], vocals: bool, musician: str) -> str:
    """One line of a music subset's ANNOTATIONS (genres comma-separated, vocals Y/N)."""
    return f"{clip} {','.join(genres)} {'Y' if vocals else 'N'} {musician}\n"


# ---------------------------------------------------------------------------
# Scan


def scan(root: str, options: Options | None = None) -> SourceScan:
    split = (options or Options()).split
    check_split(split, "--split")
    corpus = find_corpus(os.path.abspath(root))
    records: list[SourceRecord] = []
    rejects: list[Reject] = []
    for entry in walk.list_dir(corpus, rejects, skip_hidden=True):
        if entry.name in CATEGORIES and walk.entry_kind(entry) == walk.DIR:
            for subset in walk.list_dir(entry.path, rejects, skip_hidden=True):
                if expect_subset(subset, rejects):
                    scan_subset(entry.name, subset.name, subset.path, split, records, rejects)
        elif entry.name not in METADATA_FILES:
            rejects.append(Reject(entry.path, f"{entry.path} is not a MUSAN category folder "
                                              f"({', '.join(CATEGORIES)}); not scanned"))
    records = walk.drop_duplicate_ids(records, rejects)
    walk.tag_split(rejects, 0, split)
    return SourceScan(records=records, rejects=sorted(rejects))


def find_corpus(root: str) -> str:
    """``root`` itself when it holds a category folder, else ``root/musan``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MUSAN root {root} is not a directory; pass the musan folder "
                                "(holding music/, noise/, speech/) or the folder above it")
    for folder in (root, os.path.join(root, "musan")):
        if any(os.path.isdir(os.path.join(folder, c)) for c in CATEGORIES):
            return folder
    raise ValueError(f"no MUSAN corpus under {root}: expected music/, noise/ or speech/ "
                     "folders in it or in its musan/ folder")


def expect_subset(entry: os.DirEntry[str], rejects: list[Reject]) -> bool:
    kind = walk.entry_kind(entry)
    if kind == walk.DIR:
        return True
    if kind == walk.FILE and entry.name in METADATA_FILES:
        return False
    why = (walk.not_audio_reason(entry.path, kind) if kind != walk.FILE else
           f"unexpected file {entry.path}: a MUSAN category folder holds subset folders")
    rejects.append(Reject(entry.path, why))
    return False


def scan_subset(category: str, subset: str, folder: str, split: str,
                records: list[SourceRecord], rejects: list[Reject]) -> None:
    annotation_path = os.path.join(folder, ANNOTATIONS)
    notes = read_annotations(annotation_path, category, rejects)
    clips: set[str] = set()
    for entry in walk.list_dir(folder, rejects, skip_hidden=True):
        kind = walk.entry_kind(entry)
        if kind == walk.FILE and entry.name in METADATA_FILES:
            continue
        if kind != walk.FILE or not entry.name.endswith(AUDIO_EXT):
            why = (walk.not_audio_reason(entry.path, kind) if kind != walk.FILE else
                   f"unexpected file {entry.path}: a MUSAN subset folder holds *.wav clips, "
                   f"{ANNOTATIONS} and LICENSE")
            rejects.append(Reject(entry.path, why))
            continue
        clip = entry.name[: -len(AUDIO_EXT)]
        clips.add(clip)
        extra = {"category": category, "subset": subset, **notes.get(clip, {})}
        records.append(SourceRecord(id=clip, path=entry.path, label=category, dataset=DATASET,
                                    split=split, extra=tuple(sorted(extra.items()))))
    for clip in sorted(set(notes) - clips):
        audio = os.path.join(folder, clip + AUDIO_EXT)
        rejects.append(Reject(audio, f"annotation line for missing audio {audio} "
                                     f"({annotation_path})"))


def read_annotations(path: str, category: str,
                     rejects: list[Reject]) -> dict[str, dict[str, Any]]:
    """``{clip: fields}`` from a subset's ANNOTATIONS ({} when there is none; a malformed
    line is a reject naming it)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        rejects.append(Reject(path, f"cannot read {path}: {e}; its clips are kept without "
                                    "annotations"))
        return {}
    notes: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if category == "music":
            if len(fields) < 4 or fields[2] not in ("Y", "N"):
                rejects.append(Reject(f"{path}:{lineno}", f"malformed line {lineno} in {path}: "
                                      f"expected 'clip genres Y|N musician', got {line!r}"))
                continue
            notes[fields[0]] = {"genres": fields[1].split(","), "vocals": fields[2] == "Y",
                                "musician": " ".join(fields[3:])}
        else:
            notes[fields[0]] = {"annotation": " ".join(fields[1:])}
    return notes
