"""VoxCeleb1 and VoxCeleb2, laid out as distributed (and as lhotse's recipe reads them).

* VoxCeleb1: ``wav/idNNNNN/<video>/<utt>.wav`` with ``vox1_meta.csv`` (tab-separated,
  ``Set`` column dev|test).
* VoxCeleb2: ``aac/idNNNNN/<video>/<utt>.m4a``, often under ``dev/aac`` and ``test/aac``,
  with ``vox2_meta.csv`` (comma-separated; the real header has stray spaces).

``root`` may hold ``voxceleb1/`` and/or ``voxceleb2/`` or be one of them. Record ids are
``<speaker>/<video>/<utt>`` (the builder turns them into keys with ``make_key``). Splits
are ``voxceleb1_dev``, ``voxceleb1_test``, ``voxceleb2_dev``, ``voxceleb2_test``, or with
``--kaldi-split`` ``train`` (VoxCeleb1 dev speakers + all VoxCeleb2) and ``test``
(VoxCeleb1 test speakers).

Extras: ``trials`` ``{list_name: [[label, enroll_path, test_path], ...]}`` with only the
lines whose two files were found (per split: only the lines whose two files are in that
split, see :func:`trials_by_split`), ``trials_missing`` ``{list_name: lines_left_out}``,
``speakers_not_in_meta`` ``{corpus: [speaker, ...]}`` (their split comes from the
dev/test folder, or ``dev`` when there is none).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from wds_pipeline.option_table import switch
from wds_pipeline.records import Reject, SourceRecord, SourceScan
from wds_pipeline.sources import _walk as walk

NAME = "voxceleb"

VERI_TEST2 = "veri_test2.txt"  # the cleaned VoxCeleb1 test list
TRIAL_LISTS: tuple[str, ...] = (
    "veri_test.txt",
    VERI_TEST2,
    "list_test_hard2.txt",
    "list_test_all2.txt",
)
SETS: tuple[str, ...] = ("dev", "test")
_SPEAKER = re.compile(r"^id[0-9]+$")


@dataclass(frozen=True)
class CorpusLayout:
    name: str  # also the record's dataset
    audio_dir: str  # under the corpus folder, or under its dev/ and test/ folders
    ext: str
    meta_file: str
    meta_columns: tuple[str, ...]  # the meta file's header, as distributed
    meta_sep: str
    meta_end: str  # VoxCeleb2's lines end in a stray space

    @property
    def meta_header(self) -> str:
        return self.meta_sep.join(self.meta_columns) + self.meta_end


VOX1 = CorpusLayout("voxceleb1", "wav", ".wav", "vox1_meta.csv",
                    ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set"), "\t", "\n")
VOX2 = CorpusLayout("voxceleb2", "aac", ".m4a", "vox2_meta.csv",
                    ("VoxCeleb2 ID", "VGGFace2 ID", "Gender", "Set"), " ,", " \n")
LAYOUTS: tuple[CorpusLayout, ...] = (VOX1, VOX2)


class SpeakerMeta(NamedTuple):
    set: str  # dev | test
    gender: str | None


@dataclass(frozen=True)
class Options:
    kaldi_split: bool = switch(
        help="splits 'train' (VoxCeleb1 dev speakers + all VoxCeleb2) and 'test' (VoxCeleb1 "
        "test speakers) instead of voxceleb1_dev, voxceleb1_test, voxceleb2_dev, voxceleb2_test")


# ---------------------------------------------------------------------------
# Layout: names and line formats (the scan reads them; synth writes them)


def speaker_id(number: int) -> str:
    """``10270`` -> ``id10270`` (VoxCeleb1), ``12`` -> ``id00012`` (VoxCeleb2)."""
    return f"id{number:05d}"


def utterance_path(layout: CorpusLayout, speaker: str, video: str, utterance: int) -> str:
    """``id10270/x6uYqmx31kE/00001.wav``: an utterance as trial lists name it, relative to
    the audio folder (its record id is this without the extension, see :func:`trial_id`)."""
    return f"{speaker}/{video}/{utterance:05d}{layout.ext}"


def audio_dir(layout: CorpusLayout, corpus_dir: str, corpus_set: str | None = None) -> str:
    """``<corpus>/wav`` or, for a corpus unpacked per set, ``<corpus>/<set>/aac``."""
    parts = [corpus_set] if corpus_set else []
    return os.path.join(corpus_dir, *parts, layout.audio_dir)


def meta_line(layout: CorpusLayout, *, speaker: str, face_id: str, gender: str,
              corpus_set: str, nationality: str = "") -> str:
    """One row of the layout's meta file, in the columns of :attr:`CorpusLayout.meta_columns`."""
    by_column = {"Gender": gender, "Nationality": nationality, "Set": corpus_set}
    cells = [speaker, face_id] + [by_column[c] for c in layout.meta_columns[2:]]
    return layout.meta_sep.join(cells) + layout.meta_end


def trial_line(label: int, enroll: str, test: str) -> str:
    """One line of a trial list, as :func:`parse_trials` reads it."""
    return f"{label} {enroll} {test}\n"


# ---------------------------------------------------------------------------
# Scan


def scan(root: str, options: Options | None = None) -> SourceScan:
    kaldi_split = (options or Options()).kaldi_split
    root = os.path.abspath(root)
    corpora = find_corpora(root)
    records: list[SourceRecord] = []
    rejects: list[Reject] = []
    not_in_meta: dict[str, list[str]] = {}
    for layout, corpus_dir in corpora:
        meta = load_meta(layout, corpus_dir, root)
        missing = scan_corpus(layout, corpus_dir, meta, kaldi_split, records, rejects)
        if missing:
            not_in_meta[layout.name] = missing
    records = walk.drop_duplicate_ids(records, rejects)
    trials, trials_missing = load_trials([root] + [d for _, d in corpora], {r.id for r in records})
    extras: dict[str, Any] = {
        "trials": trials,
        "trials_missing": trials_missing,
        "speakers_not_in_meta": not_in_meta,
    }
    return SourceScan(records=records, rejects=sorted(rejects), extras=extras,
                      split_extras=trials_by_split(trials, records))


def trials_by_split(
    trials: dict[str, list[list[Any]]], records: list[SourceRecord]
) -> dict[str, dict[str, Any]]:
    """Each split's ``trials``: the lines whose two utterances are both in that split (so
    they can be scored from its shards alone), and ``trials_in_other_splits``: how many
    lines name one utterance of this split and one of another."""
    split_of = {r.id: r.split for r in records}
    out: dict[str, dict[str, Any]] = {
        split: {"trials": {name: [] for name in trials},
                "trials_in_other_splits": {name: 0 for name in trials}}
        for split in sorted(set(split_of.values()))
    }
    for name, lines in trials.items():
        for line in lines:
            a, b = split_of[trial_id(line[1])], split_of[trial_id(line[2])]
            if a == b:
                out[a]["trials"][name].append(line)
            else:
                out[a]["trials_in_other_splits"][name] += 1
                out[b]["trials_in_other_splits"][name] += 1
    return out


def find_corpora(root: str) -> list[tuple[CorpusLayout, str]]:
    """``[(layout, corpus_dir)]``: ``root/voxceleb1``, ``root/voxceleb2``, or root itself."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"VoxCeleb root {root} is not a directory; pass the folder holding voxceleb1/ and/or voxceleb2/"
        )
    with os.scandir(root) as it:
        children = {e.name.lower(): e.path for e in it if walk.entry_kind(e) == walk.DIR}
    found = [(layout, children[layout.name]) for layout in LAYOUTS if layout.name in children]
    if not found:
        found = [(layout, root) for layout in LAYOUTS if looks_like(layout, root)]
    if not found:
        raise ValueError(
            f"no VoxCeleb corpus under {root}: expected voxceleb1/ or voxceleb2/ folders, or root holding "
            "wav/ (VoxCeleb1) or aac/, dev/aac/, test/aac/ (VoxCeleb2) or the vox1_meta.csv / vox2_meta.csv files"
        )
    return found


def looks_like(layout: CorpusLayout, folder: str) -> bool:
    return bool(audio_roots(layout, folder)) or os.path.isfile(
        os.path.join(folder, layout.meta_file)
    )


def audio_roots(layout: CorpusLayout, corpus_dir: str) -> list[tuple[str | None, str]]:
    """``[(folder_set, dir)]``: ``wav/`` (no set) and ``dev/wav/``, ``test/wav/`` (and so for aac)."""
    candidates: list[tuple[str | None, str]] = [(None, audio_dir(layout, corpus_dir))]
    candidates += [(s, audio_dir(layout, corpus_dir, s)) for s in SETS]
    return [(s, d) for s, d in candidates if os.path.isdir(d)]


def load_meta(layout: CorpusLayout, corpus_dir: str, root: str) -> dict[str, SpeakerMeta] | None:
    """The corpus meta file from the corpus folder, else from root; None when there is none."""
    for folder in dict.fromkeys((corpus_dir, root)):
        path = os.path.join(folder, layout.meta_file)
        if os.path.isfile(path):
            with open(path, encoding="utf-8-sig") as f:
                return parse_meta(f.read(), path)
    return None


def parse_meta(text: str, path: str) -> dict[str, SpeakerMeta]:
    """``vox1_meta.csv`` (tabs) or ``vox2_meta.csv`` (commas, padded with spaces) -> ``{speaker: meta}``."""
    lines = text.splitlines()
    if not lines:
        raise ValueError(
            f"{path} is empty; expected a header such as 'VoxCeleb1 ID<TAB>VGGFace1 ID<TAB>Gender<TAB>Nationality<TAB>Set'"
        )
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    header = [c.strip().lower() for c in rows[0]]
    id_col = next((i for i, c in enumerate(header) if re.fullmatch(r"voxceleb[12] id", c)), None)
    if id_col is None or "set" not in header:
        raise ValueError(
            f"{path}: header {rows[0]!r} lacks a 'VoxCeleb1 ID'/'VoxCeleb2 ID' column or a 'Set' column"
        )
    set_col = header.index("set")
    gender_col = header.index("gender") if "gender" in header else None
    meta: dict[str, SpeakerMeta] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        fields = [c.strip() for c in row]
        if not any(fields):
            continue
        if (
            len(fields) <= max(id_col, set_col)
            or fields[set_col].lower() not in SETS
            or not _SPEAKER.match(fields[id_col])
        ):
            raise ValueError(
                f"{path} line {lineno}: expected a speaker id like id10270 and a Set of dev or test, got {row!r}"
            )
        gender = fields[gender_col] if gender_col is not None and gender_col < len(fields) else None
        meta[fields[id_col]] = SpeakerMeta(fields[set_col].lower(), gender or None)
    return meta


def scan_corpus(
    layout: CorpusLayout,
    corpus_dir: str,
    meta: dict[str, SpeakerMeta] | None,
    kaldi_split: bool,
    records: list[SourceRecord],
    rejects: list[Reject],
) -> list[str]:
    """Append the corpus's records; return the speakers that the meta file does not list."""
    roots = audio_roots(layout, corpus_dir)
    if not roots:
        rejects.append(
            Reject(
                corpus_dir,
                f"{corpus_dir} holds no {layout.audio_dir}/, dev/{layout.audio_dir}/ or "
                f"test/{layout.audio_dir}/ folder; no {layout.name} audio scanned",
            )
        )
    not_in_meta: set[str] = set()
    for folder_set, audio_root in roots:
        root_start = len(rejects)
        for spk in walk.list_dir(audio_root, rejects, skip_hidden=True):
            spk_start = len(rejects)
            if not expect_dir(spk, rejects) or not check_speaker(spk, rejects):
                continue
            info = (meta or {}).get(spk.name)
            if info is None:
                not_in_meta.add(spk.name)
            corpus_set = info.set if info else folder_set or "dev"
            split = choose_split(layout, corpus_set, kaldi_split)
            extra = (("gender", info.gender),) if info and info.gender else ()
            for video in walk.list_dir(spk.path, rejects, skip_hidden=True):
                if not expect_dir(video, rejects):
                    continue
                for utt in walk.list_dir(video.path, rejects, skip_hidden=True):
                    kind = walk.entry_kind(utt)
                    if kind == walk.FILE and utt.name.endswith(layout.ext):
                        records.append(
                            SourceRecord(
                                id=f"{spk.name}/{video.name}/{utt.name[: -len(layout.ext)]}",
                                path=utt.path,
                                speaker=spk.name,
                                dataset=layout.name,
                                split=split,
                                extra=extra,
                            )
                        )
                    elif kind not in (walk.FILE, walk.DIR) or utt.name.endswith(layout.ext):
                        rejects.append(Reject(utt.path, walk.not_audio_reason(utt.path, kind)))
                    else:
                        kind = "folder" if kind == walk.DIR else "file"
                        rejects.append(
                            Reject(
                                utt.path,
                                f"unexpected {kind} {utt.path}: {layout.name} video folders hold only *{layout.ext} files",
                            )
                        )
            walk.tag_split(rejects, spk_start, split)
        # Rejects above the speaker folders: the split of the folder's own set.
        walk.tag_split(rejects, root_start, choose_split(layout, folder_set or "dev", kaldi_split))
    return sorted(not_in_meta)


def expect_dir(entry: os.DirEntry[str], rejects: list[Reject]) -> bool:
    kind = walk.entry_kind(entry)
    if kind == walk.DIR:
        return True
    if kind != walk.FILE:
        rejects.append(Reject(entry.path, walk.not_audio_reason(entry.path, kind)))
        return False
    rejects.append(
        Reject(
            entry.path,
            f"unexpected file {entry.path}: expected <speaker>/<video>/<utt> folders above the audio files",
        )
    )
    return False


def check_speaker(entry: os.DirEntry[str], rejects: list[Reject]) -> bool:
    if _SPEAKER.match(entry.name):
        return True
    rejects.append(
        Reject(
            entry.path,
            f"{entry.path} is not a VoxCeleb speaker folder (expected a name like id10270)",
        )
    )
    return False


def choose_split(layout: CorpusLayout, corpus_set: str, kaldi_split: bool) -> str:
    if kaldi_split:
        return "test" if layout is VOX1 and corpus_set == "test" else "train"
    return f"{layout.name}_{corpus_set}"


def load_trials(
    folders: list[str], present_ids: set[str]
) -> tuple[dict[str, list[list[Any]]], dict[str, int]]:
    """Trial lists found in ``folders``, keeping the lines whose two files were scanned."""
    trials: dict[str, list[list[Any]]] = {}
    missing: dict[str, int] = {}
    for name in TRIAL_LISTS:
        paths = [
            p for p in dict.fromkeys(os.path.join(f, name) for f in folders) if os.path.isfile(p)
        ]
        if len(paths) > 1:
            raise ValueError(
                f"trial list {name} found twice ({paths[0]} and {paths[1]}); keep one of them"
            )
        if not paths:
            continue
        with open(paths[0], encoding="utf-8") as f:
            lines = parse_trials(f.read(), paths[0])
        trials[name] = [
            t for t in lines if trial_id(t[1]) in present_ids and trial_id(t[2]) in present_ids
        ]
        missing[name] = len(lines) - len(trials[name])
    return trials, missing


def parse_trials(text: str, path: str) -> list[list[Any]]:
    """``label enroll_path test_path`` lines -> ``[[label, enroll, test], ...]``."""
    trials: list[list[Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ValueError(
                f"{path} line {lineno}: expected 'label enroll_path test_path' with label 0 or 1, got {line!r}; "
                "fix or remove the line"
            )
        trials.append([int(fields[0]), fields[1], fields[2]])
    return trials


def trial_id(path: str) -> str:
    """``id10270/x6uYqmx31kE/00001.wav`` -> the record id ``id10270/x6uYqmx31kE/00001``."""
    return os.path.splitext(path)[0]
