"""Typed records that flow from corpus sources into the shard builder.

A source module (``wds_pipeline.sources.<corpus>``) turns a directory into a
:class:`SourceScan`: the inputs it found, the inputs it had to reject (with a
reason), and corpus-level extras such as trial lists. Nothing is dropped
silently: every input ends up either as a record or as a reject.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceRecord:
    """One audio input. The builder turns it into one sample (or several when chunking).

    ``id`` must be unique within a build; the builder derives the shard key from it
    (see :func:`wds_pipeline.format.make_key`), so dots and slashes are allowed here
    but are replaced in the key.
    """

    id: str
    path: str
    speaker: str | None = None
    text: str | None = None
    label: str | None = None  # class label for ``cls``; the speaker when None
    offset: float = 0.0  # seconds into ``path`` where the segment starts
    duration: float | None = None  # seconds; None means to the end of the file
    dataset: str = ""
    split: str = "train"
    extra: tuple[tuple[str, Any], ...] = ()  # small, JSON-able extras copied into the json field

    @property
    def class_label(self) -> str | None:
        return self.label if self.label is not None else self.speaker

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceRecord:
        d = dict(d)
        d["extra"] = tuple(sorted((d.get("extra") or {}).items()))
        return cls(**d)


@dataclass(frozen=True, order=True)
class Reject:
    """An input that could not become a sample, and why. Listed in the index."""

    input: str
    reason: str
    stage: str = "scan"  # scan | decode | filter | write
    # The split whose counts the reject belongs to, set by the source that found it (None:
    # a corpus-level reject, see build.plan.assign_reject_splits). Not in to_dict: an index
    # lists only its own split's rejects, and the fingerprint stays what it was.
    split: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason, "stage": self.stage}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Reject:
        return cls(**d)


@dataclass
class SourceScan:
    """What a source found under its root directory."""

    records: list[SourceRecord]
    rejects: list[Reject] = field(default_factory=list)
    # Corpus-level metadata carried verbatim into the index (must be JSON-able),
    # e.g. {"trials": {"veri_test2.txt": [[1, "id10270/x/00001.wav", "id10300/y/00002.wav"], ...]}}
    extras: dict[str, Any] = field(default_factory=dict)
    # Per-split replacements of extras keys: {split: {key: value}}. VoxCeleb gives each
    # split only the trial lines whose two utterances are in it.
    split_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
