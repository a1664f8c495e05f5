"""RIRS_NOISES (OpenSLR 28), the room impulse responses and noises of the reverberation
recipes: ``simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/RoomNNN-NNNNN.wav`` with
a ``rir_list`` per room size, ``real_rirs_isotropic_noises/`` (recorded RIRs listed in its
``rir_list``, isotropic noises in its ``noise_list``) and ``pointsource_noises/`` (with its
``noise_list``).

``root`` may be the ``RIRS_NOISES`` folder or the folder it was unpacked into. Each file is
one record, kept whole, with id ``<folder path>/<name>`` (e.g.
``simulated_rirs/smallroom/Room001/Room001-00001``), fields ``kind`` (``rir`` or ``noise``)
and ``category`` (``smallroom``, ``mediumroom``, ``largeroom``, ``real``, ``isotropic_noise``
or ``pointsource_noise``), which is also its class (``cls``), and, from its list line,
``rir_id``/``noise_id``, ``room_id`` and ``rt60`` where the line has them. A list line names
its file after ``RIRS_NOISES/`` (or in a ``sox <file> ... |`` pipe that picks a channel; the
builder downmixes a multichannel file). A simulated RIR is taken from its folder even when
``rir_list`` misses it; a file of ``real_rirs_isotropic_noises/`` that neither list names is a
reject, as is a list line whose file is missing. One split, ``--split``.

Simulated RIRs are short (most well under the build-wide 0.5 s ``--min-duration``), and an
RIR is a response, not an utterance: this source builds with ``--min-duration 0`` unless
told otherwise (``BUILD_DEFAULTS``), so every file of the corpus is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wds_pipeline.option_table import option, switch
from wds_pipeline.records import Reject, SourceRecord, SourceScan
from wds_pipeline.sources import _walk as walk
from wds_pipeline.sources.manifest import check_split

NAME = "rirs"
DATASET = "rirs_noises"
CORPUS_DIR = "RIRS_NOISES"
SIMULATED = "simulated_rirs"
ROOM_SIZES: tuple[str, ...] = ("smallroom", "mediumroom", "largeroom")
REAL = "real_rirs_isotropic_noises"
POINTSOURCE = "pointsource_noises"
RIR_LIST, NOISE_LIST = "rir_list", "noise_list"
AUDIO_EXT = ".wav"
# Categories of the files that are not simulated RIRs (those take their room size).
REAL_RIR, ISOTROPIC, POINTSOURCE_NOISE = "real", "isotropic_noise", "pointsource_noise"
METADATA_FILES = frozenset({RIR_LIST, NOISE_LIST, "README", "LICENSE"})
# Build-wide default 0.5 s would drop most simulated RIRs as too short (see the docstring).
BUILD_DEFAULTS = {"min_duration": 0.0}


@dataclass(frozen=True)
class Options:
    split: str = option("train", help="the split every file is written to")
    rirs_only: bool = switch(
        help=f"leave out the noises ({POINTSOURCE}/ and the isotropic noises of {REAL}/)")


# ---------------------------------------------------------------------------
# Layout (the scan reads it; synth writes it)


def room_dir(root: str, size: str, room: int) -> str:
    return os.path.join(root, SIMULATED, size, f"Room{room:03d}")


def rir_name(room: int, number: int) -> str:
    return f"Room{room:03d}-{number:05d}"


def list_line(kind: str, item_id: str, rel: str, **fields: Any) -> str:
    """A ``rir_list``/``noise_list`` line: ``--rir-id ID [--key value ...] RIRS_NOISES/rel``
    (``kind``: ``rir`` or ``noise``; ``room_id`` becomes ``--room-id``)."""
    options = "".join(f" --{k.replace('_', '-')} {v}" for k, v in fields.items())
    return f"--{kind}-id {item_id}{options} {CORPUS_DIR}/{rel}\n"


# ---------------------------------------------------------------------------
# Scan


@dataclass(frozen=True)
class Listed:
    kind: str  # rir | noise
    fields: dict[str, Any]  # rir_id or noise_id, room_id, rt60 ...


# add(path, kind, category, its list line or None): one record
Add = Callable[[str, str, str, Listed | None], None]


def scan(root: str, options: Options | None = None) -> SourceScan:
    options = options or Options()
    check_split(options.split, "--split")
    corpus = find_corpus(os.path.abspath(root))
    records: list[SourceRecord] = []
    rejects: list[Reject] = []

    def add(path: str, kind: str, category: str, listed: Listed | None) -> None:
        if kind == "noise" and options.rirs_only:
            return
        rel = os.path.relpath(path, corpus)[: -len(AUDIO_EXT)].replace(os.sep, "/")
        extra = {"kind": kind, "category": category, **(listed.fields if listed else {})}
        records.append(SourceRecord(id=rel, path=path, label=category, dataset=DATASET,
                                    split=options.split, extra=tuple(sorted(extra.items()))))

    for entry in walk.list_dir(corpus, rejects, skip_hidden=True):
        kind = walk.entry_kind(entry)
        if entry.name == SIMULATED and kind == walk.DIR:
            scan_simulated(corpus, entry.path, add, rejects)
        elif entry.name in (REAL, POINTSOURCE) and kind == walk.DIR:
            listed = read_lists(corpus, entry.path, rejects)
            for path in audio_files(entry.path, rejects):
                item = listed.pop(path, None)
                if entry.name == POINTSOURCE:
                    add(path, "noise", POINTSOURCE_NOISE, item)
                elif item is None:
                    rejects.append(Reject(path, f"{path} is in neither {REAL}/{RIR_LIST} nor "
                                                f"{REAL}/{NOISE_LIST}: a RIR or a noise?"))
                else:
                    add(path, item.kind, REAL_RIR if item.kind == "rir" else ISOTROPIC, item)
            missing_files(listed, rejects)
        elif not (kind == walk.FILE and entry.name in METADATA_FILES):
            rejects.append(Reject(entry.path, f"{entry.path} is not a {CORPUS_DIR} folder "
                                              f"({SIMULATED}, {REAL}, {POINTSOURCE})"))
    records = walk.drop_duplicate_ids(records, rejects)
    walk.tag_split(rejects, 0, options.split)
    return SourceScan(records=records, rejects=sorted(rejects))


def find_corpus(root: str) -> str:
    """``root`` itself when it holds a RIRS_NOISES folder, else ``root/RIRS_NOISES``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"RIRS_NOISES root {root} is not a directory; pass the "
                                f"{CORPUS_DIR} folder or the folder above it")
    for folder in (root, os.path.join(root, CORPUS_DIR)):
        if any(os.path.isdir(os.path.join(folder, d)) for d in (SIMULATED, REAL, POINTSOURCE)):
            return folder
    raise ValueError(f"no RIRS_NOISES corpus under {root}: expected {SIMULATED}/, {REAL}/ or "
                     f"{POINTSOURCE}/ in it or in its {CORPUS_DIR}/ folder")


def scan_simulated(corpus: str, folder: str, add: Add, rejects: list[Reject]) -> None:
    for size in walk.list_dir(folder, rejects, skip_hidden=True):
        if size.name not in ROOM_SIZES or walk.entry_kind(size) != walk.DIR:
            rejects.append(Reject(size.path, f"{size.path} is not a room-size folder "
                                             f"({', '.join(ROOM_SIZES)})"))
            continue
        listed = read_lists(corpus, size.path, rejects)
        for room in walk.list_dir(size.path, rejects, skip_hidden=True):
            kind = walk.entry_kind(room)
            if kind == walk.FILE and room.name in METADATA_FILES:
                continue
            if kind != walk.DIR or not room.name.startswith("Room"):
                rejects.append(Reject(room.path, f"{room.path} is not a RoomNNN folder"))
                continue
            for path in audio_files(room.path, rejects):
                add(path, "rir", size.name, listed.pop(path, None))
        missing_files(listed, rejects)


def audio_files(folder: str, rejects: list[Reject]) -> list[str]:
    """The ``*.wav`` files of ``folder``; anything else but the lists is a reject."""
    paths = []
    for entry in walk.list_dir(folder, rejects, skip_hidden=True):
        kind = walk.entry_kind(entry)
        if kind == walk.FILE and entry.name.endswith(AUDIO_EXT):
            paths.append(entry.path)
        elif kind != walk.FILE:
            rejects.append(Reject(entry.path, walk.not_audio_reason(entry.path, kind)))
        elif entry.name not in METADATA_FILES:
            rejects.append(Reject(entry.path, f"unexpected file {entry.path}: expected *.wav, "
                                              f"{RIR_LIST} or {NOISE_LIST}"))
    return paths


def missing_files(listed: dict[str, Listed], rejects: list[Reject]) -> None:
    for path, item in sorted(listed.items()):
        item_id = item.fields.get(f"{item.kind}_id", "?")
        rejects.append(Reject(path, f"{item.kind} {item_id} is listed but its file {path} "
                                    "is missing"))


def read_lists(corpus: str, folder: str, rejects: list[Reject]) -> dict[str, Listed]:
    """``{absolute path: Listed}`` from the ``rir_list`` and ``noise_list`` of ``folder``
    (the first line naming a file wins: several lines may pick channels of one file)."""
    listed: dict[str, Listed] = {}
    for name in (RIR_LIST, NOISE_LIST):
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as e:
            rejects.append(Reject(path, f"cannot read {path}: {e}"))
            continue
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            item, wav = parse_list_line(line, name.split("_")[0])
            if item is None or wav is None:
                rejects.append(Reject(f"{path}:{lineno}", f"malformed line {lineno} in {path}: "
                                      f"expected '--{name.split('_')[0]}-id ID ... "
                                      f"{CORPUS_DIR}/<file>.wav', got {line!r}"))
                continue
            rel = wav[len(CORPUS_DIR) + 1:] if wav.startswith(CORPUS_DIR + "/") else wav
            listed.setdefault(os.path.join(corpus, *rel.split("/")), item)
    return listed


def parse_list_line(line: str, kind: str) -> tuple[Listed | None, str | None]:
    """``--rir-id ID --room-id R [--rt-60 S] RIRS_NOISES/x.wav`` -> (Listed, the path as
    written); the path may also be the input of a ``sox ... |`` pipe."""
    tokens = line.split()
    fields: dict[str, Any] = {}
    i = 0
    while i + 1 < len(tokens) and tokens[i].startswith("--"):
        key = tokens[i][2:].replace("-", "_")
        value: Any = tokens[i + 1]
        if key == "rt_60":
            key = "rt60"
            try:
                value = float(value)
            except ValueError:
                return None, None
        fields[key] = value
        i += 2
    wav = next((t for t in tokens[i:] if t.endswith(AUDIO_EXT)), None)
    if f"{kind}_id" not in fields or wav is None:
        return None, None
    return Listed(kind, fields), wav
