"""LibriSpeech: ``<part>/<speaker>/<chapter>/<spk>-<chap>-<utt>.flac`` plus one
``<spk>-<chap>.trans.txt`` per chapter (``<utt-id> TEXT`` per line), as in lhotse's
``recipes/librispeech.py``.

``root`` may be the ``LibriSpeech`` folder holding parts, its parent (the folder the
tarballs were unpacked into), or a single part folder. The split of a record is its
part name (``train-clean-100``, ``dev-clean``, ...). Scanning only lists directories
and reads transcripts; audio is decoded later by the builder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from wds_pipeline.option_table import option
from wds_pipeline.records import Reject, SourceRecord, SourceScan
from wds_pipeline.sources._walk import (
    DIR,
    FILE,
    drop_duplicate_ids,
    entry_kind,
    list_dir,
    not_audio_reason,
    tag_split,
)

NAME = "librispeech"
DATASET = "librispeech"

PARTS: tuple[str, ...] = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
# Mini LibriSpeech (openslr 31) uses the same layout; lhotse reads it with the same recipe.
MINI_PARTS: tuple[str, ...] = ("dev-clean-2", "train-clean-5")
KNOWN_PARTS: tuple[str, ...] = PARTS + MINI_PARTS

TRANS_SUFFIX = ".trans.txt"
AUDIO_EXT = ".flac"
SPEAKERS_FILE = "SPEAKERS.TXT"  # corpus metadata beside the parts, not an input
SPEAKERS_COLUMNS = ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class Options:
    # A comma string (as typed) or a sequence of part names; kept as given, since the
    # build fingerprint holds the options as they were passed.
    parts: str | tuple[str, ...] | None = option(
        None, metavar="PARTS",
        help="comma-separated LibriSpeech parts to include, e.g. train-clean-100,dev-clean "
        f"(default: every part found; known: {','.join(KNOWN_PARTS)})")


# ---------------------------------------------------------------------------
# Layout: names of folders, files and transcript lines (the scan reads them; synth writes them)


def chapter_dir(root: str, part: str, speaker: int | str, chapter: int | str) -> str:
    return os.path.join(root, part, str(speaker), str(chapter))


def utterance_id(speaker: int | str, chapter: int | str, utterance: int) -> str:
    return f"{speaker}-{chapter}-{utterance:04d}"


def transcript_name(speaker: int | str, chapter: int | str) -> str:
    return f"{speaker}-{chapter}{TRANS_SUFFIX}"


def transcript_line(utt_id: str, text: str) -> str:
    return f"{utt_id} {text}\n"


def speakers_line(speaker: int, sex: str, part: str, minutes: float, name: str) -> str:
    """One row of ``SPEAKERS.TXT`` under :data:`SPEAKERS_COLUMNS`."""
    return f"{speaker:<5}| {sex} | {part:<16} | {minutes:5.2f} | {name}\n"


# ---------------------------------------------------------------------------
# Scan


def scan(root: str, options: Options | None = None) -> SourceScan:
    """List every utterance under ``root``; ``options.parts`` selects parts."""
    wanted = parse_parts((options or Options()).parts)
    rejects: list[Reject] = []
    part_dirs = find_part_dirs(os.path.abspath(root), wanted, rejects)
    records: list[SourceRecord] = []
    for part, part_dir in part_dirs:
        start = len(rejects)
        scan_part(part, part_dir, records, rejects)
        tag_split(rejects, start, part)  # a part's rejects count in that part's split
    records = drop_duplicate_ids(records, rejects)
    return SourceScan(records=records, rejects=sorted(rejects))


def parse_parts(parts: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b"`` or ``["a", "b"]`` -> validated part names; None means every part found."""
    if parts is None:
        return None
    names = parts.split(",") if isinstance(parts, str) else list(parts)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("--parts is empty; give a comma list such as train-clean-100,dev-clean")
    unknown = [n for n in names if n not in KNOWN_PARTS]
    if unknown:
        raise ValueError(
            f"unknown LibriSpeech part(s) {', '.join(unknown)} in --parts; known parts: {', '.join(KNOWN_PARTS)}"
        )
    return tuple(dict.fromkeys(names))


def find_part_dirs(
    root: str, wanted: tuple[str, ...] | None, rejects: list[Reject]
) -> list[tuple[str, str]]:
    """Resolve ``root`` to ``[(part, folder)]`` in part-name order."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"LibriSpeech root {root} is not a directory; pass the LibriSpeech folder "
            "(holding train-clean-100, dev-clean, ...) or one part folder"
        )
    base = os.path.basename(root)
    if base in KNOWN_PARTS:
        found = {base: root}
        strays: list[Reject] = []
    else:
        entries = list_dir(root, rejects)
        nested = os.path.join(root, "LibriSpeech")
        if os.path.isdir(nested) and not any(e.name in KNOWN_PARTS for e in entries):
            # The folder the tarballs were unpacked into: they all unpack to LibriSpeech/<part>.
            return find_part_dirs(nested, wanted, rejects)
        found = {e.name: e.path for e in entries if e.name in KNOWN_PARTS and entry_kind(e) == DIR}
        others = (e for e in entries if e.name not in found and not e.name.startswith("."))
        strays = [r for r in map(not_a_part, others) if r is not None]
    if not found:
        raise ValueError(
            f"no LibriSpeech part under {root}: expected folders named like {', '.join(PARTS[:3])}, ... "
            "or root itself being one of them; pass the LibriSpeech folder or a part folder"
        )
    rejects.extend(strays)
    selected = sorted(found) if wanted is None else list(wanted)
    missing = [p for p in selected if p not in found]
    if missing:
        raise ValueError(
            f"--parts asks for {', '.join(missing)} but {root} holds only {', '.join(sorted(found))}"
        )
    return [(p, found[p]) for p in sorted(selected)]


def not_a_part(entry: os.DirEntry[str]) -> Reject | None:
    """A reject for a folder or audio file beside the parts; None for files such as
    SPEAKERS.TXT or CHAPTERS.TXT, which are corpus metadata rather than inputs."""
    kind = entry_kind(entry)
    if kind not in (FILE, DIR):
        return Reject(entry.path, not_audio_reason(entry.path, kind))
    if kind == DIR:
        known = ", ".join(KNOWN_PARTS)
        return Reject(
            entry.path, f"{entry.path} is not a LibriSpeech part (known: {known}); not scanned"
        )
    if entry.name.endswith(AUDIO_EXT):
        return Reject(
            entry.path,
            f"unexpected audio file {entry.path} outside a part folder: LibriSpeech audio lives in "
            "<part>/<speaker>/<chapter>/",
        )
    return None


def scan_part(part: str, part_dir: str, records: list[SourceRecord], rejects: list[Reject]) -> None:
    for spk in list_dir(part_dir, rejects):
        if not expect_numbered_dir(spk, "speaker", rejects):
            continue
        for chap in list_dir(spk.path, rejects):
            if expect_numbered_dir(chap, "chapter", rejects):
                scan_chapter(part, spk.name, chap.name, chap.path, records, rejects)


def expect_numbered_dir(entry: os.DirEntry[str], what: str, rejects: list[Reject]) -> bool:
    if entry.name.startswith("."):
        return False  # .DS_Store and the like are not corpus inputs
    kind = entry_kind(entry)
    if kind not in (FILE, DIR):
        rejects.append(Reject(entry.path, not_audio_reason(entry.path, kind)))
        return False
    if kind != DIR:
        rejects.append(
            Reject(
                entry.path,
                f"unexpected file {entry.path}: a LibriSpeech part holds only {what} folders here",
            )
        )
        return False
    if not _DIGITS.match(entry.name):
        rejects.append(
            Reject(
                entry.path,
                f"{entry.path} is not a {what} folder (LibriSpeech {what} folders are numbers)",
            )
        )
        return False
    return True


def scan_chapter(
    part: str,
    spk: str,
    chap: str,
    chap_dir: str,
    records: list[SourceRecord],
    rejects: list[Reject],
) -> None:
    prefix = f"{spk}-{chap}"
    audio_name = re.compile(rf"^{re.escape(prefix)}-[0-9]+{re.escape(AUDIO_EXT)}$")
    trans_path = os.path.join(chap_dir, transcript_name(spk, chap))
    flacs: dict[str, str] = {}
    for entry in list_dir(chap_dir, rejects):
        if entry.name.startswith(".") or entry.path == trans_path:
            continue
        kind = entry_kind(entry)
        if kind == FILE and audio_name.match(entry.name):
            flacs[entry.name[: -len(AUDIO_EXT)]] = entry.path
        elif kind not in (FILE, DIR) or (kind == DIR and entry.name.endswith(AUDIO_EXT)):
            rejects.append(Reject(entry.path, not_audio_reason(entry.path, kind)))
        elif entry.name.endswith(AUDIO_EXT):
            rejects.append(
                Reject(
                    entry.path,
                    f"file name {entry.name} does not match its folder: expected {prefix}-<utt>.flac",
                )
            )
        else:
            rejects.append(
                Reject(
                    entry.path,
                    f"unexpected {'folder' if kind == DIR else 'file'} {entry.path} in a LibriSpeech chapter folder",
                )
            )
    lines, trans_error = read_transcript(trans_path)
    if trans_error:
        for utt in sorted(flacs):
            rejects.append(
                Reject(flacs[utt], f"no transcript line in {trans_path} ({trans_error})")
            )
        return
    texts, bad = parse_transcript(lines, trans_path, prefix)
    rejects.extend(bad)
    for utt, path in flacs.items():
        if utt in texts:
            records.append(
                SourceRecord(
                    id=utt,
                    path=path,
                    speaker=spk,
                    text=texts[utt][0],
                    dataset=DATASET,
                    split=part,
                    extra=(("chapter", chap),),
                )
            )
        else:
            rejects.append(Reject(path, f"no transcript line in {trans_path}"))
    for utt, (_, lineno) in texts.items():
        if utt not in flacs:
            audio = os.path.join(chap_dir, utt + AUDIO_EXT)
            rejects.append(
                Reject(
                    audio, f"transcript line for missing audio {audio} ({trans_path} line {lineno})"
                )
            )


def read_transcript(path: str) -> tuple[list[str], str | None]:
    """Lines of a transcript, or ``([], why)`` when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines(), None
    except FileNotFoundError:
        return [], "the transcript file does not exist"
    except UnicodeDecodeError as e:
        return [], f"the transcript file is not UTF-8: {e.reason} at byte {e.start}"
    except OSError as e:
        return [], f"cannot read the transcript file: {e.strerror or e}"


def parse_transcript(
    lines: list[str], trans_path: str, prefix: str
) -> tuple[dict[str, tuple[str, int]], list[Reject]]:
    """``<utt-id> TEXT`` lines -> ``{utt_id: (text, line_number)}`` plus rejects for bad lines."""
    utt_id = re.compile(rf"^{re.escape(prefix)}-[0-9]+$")
    texts: dict[str, tuple[str, int]] = {}
    rejects: list[Reject] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=1)
        where = f"{trans_path}:{lineno}"
        if len(fields) < 2 or not utt_id.match(fields[0]):
            rejects.append(
                Reject(
                    where,
                    f"malformed transcript line {lineno} in {trans_path}: expected '{prefix}-<utt> TEXT', got {line!r}",
                )
            )
        elif fields[0] in texts:
            rejects.append(
                Reject(
                    where,
                    f"duplicate transcript line {lineno} for {fields[0]} in {trans_path} (first on line {texts[fields[0]][1]})",
                )
            )
        else:
            texts[fields[0]] = (fields[1].strip(), lineno)
    return texts, rejects
