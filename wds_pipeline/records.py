"""Typed records that flow from corpus sources into the shard builder.

A source module (``wds_pipeline.sources.<corpus>``) turns a directory into a
:class:`SourceScan`: the inputs it found, the inputs it had to reject (with a
reason), and corpus-level extras such as trial lists. Nothing is dropped
silently: every input ends up either as a record or as a reject.
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Literal

# ``SourceRecord.label`` of a record whose source has labels but none for it (an empty
# manifest cell): it gets no class, and the speaker does not stand in for it.
NO_LABEL = ""

_INTEGER = re.compile(r"^-?(0|[1-9][0-9]*)$")  # "007" is a name, not the number 7


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
    # Class label for ``cls``. None: the source has no labels and the speaker is the
    # class (speaker-ID corpora); NO_LABEL: the source has labels, this record has none.
    label: str | None = None
    offset: float = 0.0  # seconds into ``path`` where the segment starts
    duration: float | None = None  # seconds; None means to the end of the file
    dataset: str = ""
    split: str = "train"
    extra: tuple[tuple[str, Any], ...] = ()  # small, JSON-able extras copied into the json field

    @property
    def class_label(self) -> str | None:
        if self.label is None:
            return self.speaker
        return self.label if self.label != NO_LABEL else None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy was most of the planning time of a session
        # with thousands of words. The fields are immutable and ``extra`` was never copied.
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceRecord:
        d = dict(d)
        d["extra"] = tuple(sorted((d.get("extra") or {}).items()))
        return cls(**d)


def label_order(names: Any) -> list[str]:
    """Class names in the order they are numbered 0..K-1.

    Numeric order when every name is an integer (``-3``, ``2``, ``10``; no leading
    zeros), so integer labels keep their order; otherwise sorted as text.
    """
    names = sorted(set(names))
    if names and all(_INTEGER.match(n) for n in names):
        return sorted(names, key=int)
    return names


# Where an input was rejected: while scanning the corpus, decoding its audio, by a duration
# filter, or while writing its shard.
RejectStage = Literal["scan", "decode", "filter", "write"]


@dataclass(frozen=True, order=True)
class Reject:
    """An input that could not become a sample, and why. Listed in the index."""

    input: str
    reason: str
    stage: RejectStage = "scan"
    # The split whose counts the reject belongs to, set by the source that found it (None:
    # a corpus-level reject, see build.plan.assign_reject_splits). Not in to_dict: an index
    # lists only its own split's rejects, and the fingerprint stays what it was.
    split: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason, "stage": self.stage}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Reject:
        stage = d.get("stage", "scan")
        if stage not in typing.get_args(RejectStage):
            raise ValueError(f"reject {d.get('input')!r}: unknown stage {stage!r}; "
                             f"expected one of {typing.get_args(RejectStage)}")
        return cls(**d)  # type: ignore[arg-type]  # stage checked just above


@dataclass(frozen=True)
class RejectKind:
    """A reject reason worded the same way each time, and the option that changes it.

    The builder and the sources word such a reason with :attr:`phrase` in it; a build whose
    every input was rejected names its most common kind (:func:`explain_rejects`).
    ``what``: how a count of them reads ("12 of 12 " + what), with ``{field}`` taken from
    the build's and the source's option values; ``fix``: the option that would keep them.
    """

    phrase: str
    what: str
    fix: str
    # The fix as worded for a build of word clips (a source's ``mode`` option "words"), where
    # the kind has one: a hint on word lengths misleads anyone building utterances.
    words_fix: str = ""


TOO_SHORT = RejectKind("shorter than --min-duration", "shorter than --min-duration "
                       "{min_duration:g} s", "lower --min-duration (0 keeps every input)",
                       words_fix="lower --min-duration (words are often 0.2-0.6 s; 0 keeps every input)")
TOO_LONG = RejectKind("longer than --max-duration", "longer than --max-duration "
                      "{max_duration:g} s", "raise --max-duration, or cut long inputs into "
                      "pieces with --chunk-seconds")
NO_CHUNK = RejectKind("no chunk of at least", "shorter than --min-chunk-seconds "
                      "{min_chunk_seconds:g} s", "lower --min-chunk-seconds")
ALL_SILENCE = RejectKind("all silence (--vad", "all silence to --vad {vad}",
                         "check the recordings' level, or build without --vad")
NO_REGION = RejectKind("no speech region within", "without a speech region within "
                       "--min-duration {min_duration:g} s", "lower --min-duration, or raise "
                       "--vad-split-pause")
LOW_SCORE = RejectKind("below --min-score", "aligned below --min-score {min_score:g}",
                       "lower --min-score, or leave it out")
UNTIMED = RejectKind("has no timestamps (--untimed skip)", "words without timestamps",
                     "--untimed interpolate gives them the gap around them")
NO_TRANSCRIPT = RejectKind("no WhisperX transcript", "sessions without a WhisperX transcript",
                           "transcribe the recordings, or name the JSON with --transcript-name")
UNDECODABLE = RejectKind("cannot decode", "that cannot be decoded",
                         "`wds-pipeline inspect OUT` lists each file and why")
REJECT_KINDS: tuple[RejectKind, ...] = (TOO_SHORT, TOO_LONG, NO_CHUNK, ALL_SILENCE, NO_REGION,
                                        LOW_SCORE, UNTIMED, NO_TRANSCRIPT, UNDECODABLE)


def explain_rejects(rejects: list[Reject], inputs: int, settings: dict[str, Any]) -> str:
    """The most common reject reason of ``rejects`` out of ``inputs``, with its count and,
    for a :class:`RejectKind`, the option that changes it: "12 of 12 shorter than
    --min-duration 0.5 s; lower --min-duration ...". ``settings``: the option values its
    ``what`` names. Other reasons are counted as they are worded."""
    kinds: dict[str, RejectKind | None] = {}  # a kind's phrase, or a reason of no kind
    counts: Counter[str] = Counter()
    for r in rejects:
        kind = next((k for k in REJECT_KINDS if k.phrase in r.reason), None)
        name = kind.phrase if kind else r.reason
        kinds[name] = kind
        counts[name] += 1
    if not counts:
        return f"0 of {inputs:,} rejected"
    top, n = counts.most_common(1)[0]  # ties: the first in the (sorted) rejects
    kind = kinds[top]
    if kind is None:
        return f"{n:,} of {inputs:,}: {top}"
    try:
        what = kind.what.format_map(settings)
    except (KeyError, ValueError, TypeError):  # an option it names is unset here
        what = kind.phrase
    fix = kind.words_fix if kind.words_fix and settings.get("mode") == "words" else kind.fix
    return f"{n:,} of {inputs:,} {what}; {fix}"


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
    # The class names in their numbering, when the corpus declares one (a Hugging Face
    # ClassLabel): the label map keeps it, unused classes included. None: numbered by
    # label_order over the labels found.
    label_names: list[str] | None = None
