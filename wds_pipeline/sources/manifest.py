"""A manifest of audio files: CSV with a header row, or JSON Lines (one object a line).

Columns: ``path`` (required; relative paths resolve against the manifest's folder) and
optional ``id``, ``speaker``, ``label``, ``text``, ``offset``, ``duration`` (seconds),
``split`` and ``category`` (what a clip of a noise or RIR set is, e.g. ``noise``, ``music``,
``babble``, ``smallroom``: stored as the sample's ``category`` field, as the musan and rirs
sources store theirs). Other columns are carried into the record's ``extra``.

Class labels: with a ``label`` column (a CSV header naming it, or any JSONL object with
the key), classes come from it alone and a row whose label is empty, missing or null
has no class; without one, the speaker is the class. A label that is a whole number
(``2``, ``2.0``, JSON ``2.0``) is written as the integer (``"2"``), so one value is one
class; a JSON boolean label is rejected (is ``true`` the class "true" or 1?).

The default id is the path relative to the manifest folder without its extension;
when several rows share a file, each id gets ``-<offset in ms, 7 digits>`` appended so
segments of one file stay unique and sort in time order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from wds_pipeline.option_table import option
from wds_pipeline.records import NO_LABEL, Reject, SourceRecord, SourceScan
from wds_pipeline.sources._walk import FILE, not_audio_reason, path_kind, tag_split

NAME = "manifest"
KNOWN_COLUMNS: tuple[str, ...] = (
    "path",
    "id",
    "speaker",
    "label",
    "text",
    "offset",
    "duration",
    "split",
    "category",
)
_SPLIT_OK = re.compile(r"^[a-z0-9_-]+$")
# What a swallowed row's path looks like (see check_multiline_row); the decoders read more.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".aac",
                    ".aif", ".aiff", ".au", ".sph", ".wma")


@dataclass(frozen=True)
class Options:
    split: str = option("train", help="split for rows without a 'split' column")
    dataset_name: str | None = option(
        None, metavar="NAME",
        help="dataset name stored in every record (default: the manifest file name without "
        "extension)")


@dataclass(frozen=True)
class Row:
    """One manifest row before it is checked: raw values and the line it started on."""

    lineno: int
    values: dict[str, Any]
    overflow: int = 0  # CSV fields beyond the header: an unquoted comma shifted the columns


def scan(root: str, options: Options | None = None) -> SourceScan:
    """``root`` is the manifest file (``.csv`` or ``.jsonl``)."""
    options = options or Options()
    split, dataset_name = options.split, options.dataset_name
    check_split(split, "--split")
    manifest = os.path.abspath(root)
    if not os.path.isfile(manifest):
        raise FileNotFoundError(
            f"manifest {manifest} does not exist or is not a file; pass the path of a .csv or .jsonl manifest"
        )
    try:
        with open(manifest, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"manifest {manifest} is not UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8"
        ) from None
    rows, rejects, columns = read_rows(text, manifest)
    dataset = dataset_name or os.path.splitext(os.path.basename(manifest))[0]
    records = rows_to_records(rows, manifest, split, dataset, rejects,
                              labelled="label" in columns)
    tag_split(rejects, 0, split)  # lines rejected before their split column was read
    return SourceScan(records=sorted(records, key=lambda r: r.id), rejects=sorted(rejects))


def row_split(row: Row, default: str) -> str:
    """The split a row counts in: its own split column when valid, else ``default``."""
    value = str(row.values.get("split") or "")
    return value if _SPLIT_OK.match(value) else default


def check_split(split: str, what: str) -> None:
    if not _SPLIT_OK.match(split):
        raise ValueError(
            f"{what} {split!r} is not a valid split name: use only a-z, 0-9, '_' and '-' (it becomes a folder name)"
        )


def read_rows(text: str, manifest: str) -> tuple[list[Row], list[Reject], set[str]]:
    """Rows, rows rejected while reading, and the column names the manifest uses."""
    ext = os.path.splitext(manifest)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        return read_jsonl(text, manifest)
    if ext == ".csv":
        rows, header = read_csv(text, manifest)
        return rows, [], set(header)
    raise ValueError(
        f"manifest {manifest} must end in .csv (with a header row) or .jsonl (one JSON object a line)"
    )


def read_csv(text: str, manifest: str) -> tuple[list[Row], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip() for c in next(reader, [])]
    if "path" not in header:
        raise ValueError(
            f"manifest {manifest}: the header row {header!r} has no 'path' column; the first row must name the columns"
        )
    lines = io.StringIO(text, newline="").readlines()  # as the reader counts them
    rows: list[Row] = []
    start = reader.line_num + 1
    for fields in reader:
        # Quoted fields may span lines, so a row's number is where it starts.
        lineno, start = start, reader.line_num + 1
        check_quotes(lines, lineno, reader.line_num, header, manifest)
        if not any(f.strip() for f in fields):
            continue
        values = {
            name: value for name, value in zip(header, fields) if name and value.strip() != ""
        }
        rows.append(Row(lineno, values, overflow=max(0, len(fields) - len(header))))
    return rows, header


def check_quotes(lines: list[str], first: int, last: int, header: list[str],
                 manifest: str) -> None:
    """Raise for the row on lines ``first``..``last`` (1-based) when it holds a stray
    quote rather than a value with a line break: a quote opened and never closed (the
    file ends inside it), or one that swallowed lines that read as rows of their own. A
    quoted value may span lines in CSV, but in a manifest of one-line rows one unbalanced
    quote would otherwise turn every later row into text, silently: those inputs would
    never be counted, built or rejected."""
    fix = ("close the quote, or write a quote inside a quoted value as two (\"\"), "
           "or leave the value unquoted")
    if last == len(lines):  # only the last row can reach the end of the file
        try:
            for _ in csv.reader(lines[first - 1:last], strict=True):
                pass
        except csv.Error as e:
            # The lenient reader ends the value at the end of the file; a strict one
            # says so. Its other complaints (text after a closing quote) are tolerated.
            if "unexpected end of data" in str(e):
                raise ValueError(
                    f"manifest {manifest} line {first}: a quoted value opened in this row is "
                    f"never closed (the file ends inside it, at line {last}); {fix}") from None
    folder = os.path.dirname(manifest)
    for n in range(first + 1, last + 1):
        if looks_like_row(lines[n - 1], header, folder):
            raise ValueError(
                f"manifest {manifest} line {first}: a quoted value opened in this row runs on "
                f"to line {last}, swallowing line {n} ({lines[n - 1].strip()[:60]!r}), which "
                f"reads as a row of its own; {fix}")


def looks_like_row(line: str, header: list[str], folder: str) -> bool:
    """Whether ``line`` alone reads as a manifest row: the header's number of columns, and
    in the path column an existing file or a name with an audio extension."""
    fields = next(csv.reader([line]), [])
    if len(fields) != len(header):
        return False
    path = fields[header.index("path")].strip()
    if not path or any(c.isspace() for c in path):
        return False
    return (path.lower().endswith(AUDIO_EXTENSIONS)
            or os.path.isfile(os.path.join(folder, path)))


def read_jsonl(text: str, manifest: str) -> tuple[list[Row], list[Reject], set[str]]:
    rows: list[Row] = []
    rejects: list[Reject] = []
    columns: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rejects.append(
                Reject(
                    f"{manifest}:{lineno}", f"{manifest} line {lineno}: not valid JSON ({e.msg})"
                )
            )
            continue
        if not isinstance(obj, dict):
            rejects.append(
                Reject(
                    f"{manifest}:{lineno}",
                    f"{manifest} line {lineno}: expected a JSON object, got {type(obj).__name__}",
                )
            )
            continue
        columns.update(obj)
        rows.append(Row(lineno, {k: v for k, v in obj.items() if v is not None and v != ""}))
    return rows, rejects, columns


def rows_to_records(
    rows: list[Row], manifest: str, split: str, dataset: str, rejects: list[Reject],
    *, labelled: bool = False,
) -> list[SourceRecord]:
    """``labelled``: the manifest has a label column, so a row without a label has no
    class (NO_LABEL) instead of its speaker's."""
    folder = os.path.dirname(manifest)
    checked: list[tuple[Row, dict[str, Any]]] = []
    for row in rows:
        fields, problem = check_row(row)
        if problem:
            rejects.append(
                Reject(
                    f"{manifest}:{row.lineno}",
                    f"{manifest} line {row.lineno}: {problem}",
                    split=row_split(row, split),
                )
            )
            continue
        fields["path"] = os.path.normpath(os.path.join(folder, fields["path"]))
        kind = path_kind(fields["path"])
        if kind != FILE:
            why = not_audio_reason(fields["path"], kind)
            rejects.append(
                Reject(
                    fields["path"],
                    f"{why} ({manifest} line {row.lineno})",
                    split=row_split(row, split),
                )
            )
            continue
        checked.append((row, fields))
    uses = count_paths(f for _, f in checked)
    records: list[SourceRecord] = []
    first_line: dict[str, int] = {}
    for row, fields in checked:
        rid = fields.get("id") or default_id(
            fields["path"], folder, fields["offset"], uses[fields["path"]] > 1
        )
        if rid in first_line:
            rejects.append(
                Reject(
                    f"{manifest}:{row.lineno}",
                    f"{manifest} line {row.lineno}: duplicate id {rid!r} (first on line {first_line[rid]})",
                    split=row_split(row, split),
                )
            )
            continue
        first_line[rid] = row.lineno
        records.append(
            SourceRecord(
                id=rid,
                path=fields["path"],
                speaker=fields.get("speaker"),
                text=fields.get("text"),
                label=fields.get("label", NO_LABEL if labelled else None),
                offset=fields["offset"],
                duration=fields.get("duration"),
                dataset=dataset,
                split=fields.get("split") or split,
                extra=tuple(sorted(fields["extra"].items())),
            )
        )
    return records


def check_row(row: Row) -> tuple[dict[str, Any], str | None]:
    """Typed fields of one row, or a description of what is wrong with it."""
    values = row.values
    if row.overflow:
        return (
            {},
            f"{row.overflow} more field(s) than the header has columns (quote values holding commas)",
        )
    path = values.get("path")
    if not isinstance(path, str) or not path.strip():
        return {}, "no 'path' value"
    fields: dict[str, Any] = {"path": path.strip(), "offset": 0.0}
    for name in ("offset", "duration"):
        if name in values:
            number, problem = parse_seconds(values[name], name, positive=(name == "duration"))
            if problem:
                return {}, problem
            fields[name] = number
    for name in ("id", "speaker", "label", "text", "split", "category"):
        if name in values:
            if isinstance(values[name], (dict, list)):
                return {}, f"{name} must be a string or number, got {type(values[name]).__name__}"
            fields[name] = str(values[name]).strip()
    if "label" in values:
        label, problem = canonical_label(values["label"])
        if problem:
            return {}, problem
        if label:
            fields["label"] = label
        else:
            fields.pop("label")  # whitespace only: no label
    if "split" in fields and not _SPLIT_OK.match(fields["split"]):
        return (
            {},
            f"split {fields['split']!r} is not a valid split name (use only a-z, 0-9, '_' and '-')",
        )
    fields["extra"] = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS}
    if fields.get("category"):  # whitespace only: no category
        fields["extra"]["category"] = fields["category"]
    return fields, None


_WHOLE_NUMBER = re.compile(r"^[+-]?(0|[1-9][0-9]*)(\.0*)?$")


def canonical_label(value: Any) -> tuple[str, str | None]:
    """A label's class name: trimmed text, whole numbers as integers ("2.0" -> "2")."""
    if isinstance(value, bool):
        word = "true" if value else "false"
        return "", f'label {word} is a JSON boolean; write the class as a string ("{word}") or a number'
    if isinstance(value, float) and value.is_integer():
        return str(int(value)), None
    text = str(value).strip()
    if _WHOLE_NUMBER.match(text):
        return str(int(text.split(".")[0])), None
    return text, None


def parse_seconds(value: Any, name: str, *, positive: bool) -> tuple[float, str | None]:
    try:
        if isinstance(value, bool):  # JSON true/false would otherwise pass as 1.0/0.0
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        return 0.0, f"{name} {value!r} is not a number of seconds"
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        need = "greater than 0" if positive else "0 or more"
        return 0.0, f"{name} {value!r} is not a number of seconds {need}"
    return number, None


def count_paths(fields: Any) -> dict[str, int]:
    uses: dict[str, int] = {}
    for f in fields:
        uses[f["path"]] = uses.get(f["path"], 0) + 1
    return uses


def default_id(path: str, folder: str, offset: float, shared: bool) -> str:
    rel = os.path.relpath(path, folder)
    if rel.startswith(os.pardir + os.sep):
        rel = path.lstrip(
            os.sep
        )  # outside the manifest folder: the absolute path is the stable name
    base = os.path.splitext(rel)[0].replace(os.sep, "/")
    return f"{base}-{round(offset * 1000):07d}" if shared else base
