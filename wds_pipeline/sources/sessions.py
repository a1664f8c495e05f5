"""Session recordings transcribed with WhisperX: ROOT holds session folders, each with one
long recording (any format the decoder reads) and its WhisperX JSON (``<recording
stem>.json`` as WhisperX's CLI writes it, else ``whisperx_output.json``, or the name given
by ``--transcript-name``). ROOT itself may be such a folder.

Modes (``--mode``), each sample cut from the one recording (the builder decodes it once
per shard for all its cuts):

``segments``  one sample per transcript segment: its text, its speaker when diarized (the
              speaker is then the class).
``words``     one sample per word, the normalised word as the class: lower case, no
              punctuation, ``--synonyms walking=walk,...`` applied, then only words in
              ``--vocabulary`` when given; ``--pad-before``/``--pad-after`` seconds of
              context (cut at the recording's edges; the sample json says what was kept);
              ``--min-score`` rejects words aligned with a lower (or no) score. Words are
              short (0.2-0.6 s): in this mode ``--min-duration`` defaults to 0.05 s, not
              the build-wide 0.5 s.
``windows``   fixed windows (``--window-seconds``, ``--hop-seconds``) over the whole
              recording; the sample json lists the words and speakers overlapping each
              window with the overlap's times relative to the window start.

Words without times (older WhisperX, digits and symbols): ``--untimed interpolate`` shares
the gap around them evenly, ``--untimed skip`` rejects them; the index's extras count them
either way. A missing or malformed JSON, a transcript longer than the recording, times that
are negative, reversed, out of order or overlapping: the session is one recorded reject with
the reason. Inputs are segments, words or windows, so ``inputs = written + rejected`` holds
in those units (a rejected session counts once).
"""

from __future__ import annotations

import bisect
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from wds_pipeline.option_table import option
from wds_pipeline.records import (
    LOW_SCORE,
    NO_LABEL,
    NO_TRANSCRIPT,
    UNTIMED,
    Reject,
    SourceRecord,
    SourceScan,
)
from wds_pipeline.sources._walk import list_dir, tag_split
from wds_pipeline.sources._whisperx import (
    Segment,
    TranscriptError,
    Word,
    check_timing,
    interpolate,
    read_transcript,
)
from wds_pipeline.sources.manifest import check_split

NAME = "sessions"
# Thousands of words share one long recording: planned consecutively, each recording is
# decoded once per shard it spans instead of once in nearly every shard.
KEEP_RECORDINGS_TOGETHER = True
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".aac")
DEFAULT_TRANSCRIPT = "whisperx_output.json"
# --min-duration of --mode words unless given: words last 0.2-0.6 s, and the build-wide 0.5 s
# would drop most of them. Shorter than 50 ms (2-3 of WhisperX's 20 ms alignment frames) a
# "word" is an alignment artefact. No maximum: --pad-before/--pad-after lengthen every cut
# by the user's choice, and a misaligned long word is what --min-score is for.
WORD_MIN_DURATION = 0.05


@dataclass(frozen=True)
class Options:
    mode: Literal["segments", "words", "windows"] = option(
        "segments", help="one sample per transcript segment, per word, or per fixed window",
        sets_defaults={"words": {"min_duration": WORD_MIN_DURATION}})
    split: str = option("train", help="split of every sample")
    dataset_name: str | None = option(None, metavar="NAME",
                                      help="dataset name (default: ROOT's folder name)")
    audio_name: str | None = option(
        None, metavar="FILE", help="the recording's file name in each session folder "
        "(default: the folder's only audio file)")
    transcript_name: str | None = option(
        None, metavar="FILE", help="the WhisperX JSON's file name in each session folder "
        f"(default: <recording stem>.json, else {DEFAULT_TRANSCRIPT})")
    vocabulary: str | None = option(
        None, metavar="WORDS", help="words mode: comma-separated words to keep (after "
        "normalisation and synonyms), e.g. jump,punch,walk,stop; default: every word")
    synonyms: str | None = option(
        None, metavar="MAP", help="words mode: comma-separated WORD=CLASS pairs applied after "
        "normalisation, e.g. walking=walk,jumped=jump")
    pad_before: float = option(0.0, metavar="SECONDS",
                               help="words mode: seconds of context before each word")
    pad_after: float = option(0.0, metavar="SECONDS",
                              help="words mode: seconds of context after each word")
    min_score: float | None = option(
        None, metavar="SCORE", help="words mode: reject words whose alignment score is lower "
        "or missing")
    window_seconds: float = option(2.0, metavar="SECONDS", help="windows mode: window length")
    hop_seconds: float = option(0.5, metavar="SECONDS",
                                help="windows mode: step between window starts")
    untimed: Literal["interpolate", "skip"] = option(
        "interpolate", help="words without timestamps: give them the gap around them, or "
        "reject them")
    length_tolerance: float = option(
        1.0, metavar="SECONDS", help="how far a transcript may run past the recording's end "
        "before the session is rejected as not matching it")


@dataclass
class _Tally:
    """What the index's extras report about the sessions."""

    by_session: dict[str, dict[str, int]] = field(default_factory=dict)
    sessions: int = 0
    untimed_interpolated: int = 0
    untimed_skipped: int = 0
    out_of_vocabulary: int = 0


def scan(root: str, options: Options | None = None) -> SourceScan:
    options = options or Options()
    _check(options)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a folder; pass the folder holding the session "
                                 "folders")
    rejects: list[Reject] = []
    folders = [root] if _find_audio(root, options)[0] else [
        e.path for e in list_dir(root, rejects, skip_hidden=True) if e.is_dir()]
    dataset = options.dataset_name or os.path.basename(root)
    tally = _Tally()
    records: list[SourceRecord] = []
    for folder in folders:
        name = os.path.relpath(folder, root).replace(os.sep, "/")
        name = "session" if name == "." else name
        _session(folder, name, options, dataset, records, rejects, tally)
    tag_split(rejects, 0, options.split)
    extras = {"sessions": {
        "mode": options.mode, "sessions": tally.sessions,
        "untimed": options.untimed, "untimed_interpolated": tally.untimed_interpolated,
        "untimed_skipped": tally.untimed_skipped, "out_of_vocabulary": tally.out_of_vocabulary,
    }}
    return SourceScan(records=sorted(records, key=lambda r: r.id), rejects=sorted(rejects),
                      extras=extras)


def _check(o: Options) -> None:
    check_split(o.split, "--split")
    if o.pad_before < 0 or o.pad_after < 0:
        raise ValueError("--pad-before and --pad-after must be 0 or more seconds")
    if not (o.window_seconds > 0 and o.hop_seconds > 0):
        raise ValueError("--window-seconds and --hop-seconds must be greater than 0")
    _synonyms(o.synonyms)


def _find_audio(folder: str, o: Options) -> tuple[str | None, str | None]:
    """The session's recording, or why there is none."""
    if o.audio_name:
        path = os.path.join(folder, o.audio_name)
        return (path, None) if os.path.isfile(path) else (None, f"no {o.audio_name} (--audio-name)")
    found = sorted(e.name for e in os.scandir(folder)
                   if e.is_file() and e.name.lower().endswith(AUDIO_EXTENSIONS))
    if len(found) == 1:
        return os.path.join(folder, found[0]), None
    if not found:
        return None, "no audio file"
    return None, f"several audio files ({', '.join(found)}); name the recording with --audio-name"


def _find_transcript(folder: str, audio_path: str, o: Options) -> str | None:
    names = [o.transcript_name] if o.transcript_name else [
        os.path.splitext(os.path.basename(audio_path))[0] + ".json", DEFAULT_TRANSCRIPT]
    for n in names:
        if os.path.isfile(os.path.join(folder, n)):
            return os.path.join(folder, n)
    return None


def _session(folder: str, name: str, o: Options, dataset: str, records: list[SourceRecord],
             rejects: list[Reject], tally: _Tally) -> None:
    audio_path, why = _find_audio(folder, o)
    if audio_path is None:
        rejects.append(Reject(folder, f"session {name}: {why}"))
        return
    transcript = _find_transcript(folder, audio_path, o)
    if transcript is None:
        wanted = o.transcript_name or f"{os.path.splitext(os.path.basename(audio_path))[0]}.json"
        rejects.append(Reject(folder, f"session {name}: {NO_TRANSCRIPT.phrase} ({wanted}); "
                                      "transcribe the recording or pass --transcript-name"))
        return
    from wds_pipeline.audio import probe_duration  # audio stack only when there are sessions

    try:
        length = probe_duration(audio_path)
        segments = read_transcript(transcript)
        check_timing(segments, length, o.length_tolerance)
    except TranscriptError as e:
        rejects.append(Reject(transcript, f"session {name}: {os.path.basename(transcript)}: {e}"))
        return
    except (ValueError, OSError, RuntimeError) as e:
        rejects.append(Reject(audio_path, f"session {name}: cannot read the recording: "
                                          f"{getattr(e, 'reason', None) or e}"))
        return
    tally.sessions += 1
    base = SourceRecord(id="", path=audio_path, dataset=dataset, split=o.split,
                        label=NO_LABEL)
    if o.mode == "segments":
        for i, s in enumerate(segments):
            records.append(_record(base, f"{name}/seg-{i:05d}", s.start, s.end, length,
                                   speaker=s.speaker, text=s.text, label=None,
                                   extra={"session": name}))
        return
    segments = _untimed(segments, o, name, audio_path, rejects, tally)
    if o.mode == "words":
        _words(segments, o, name, base, length, records, rejects, tally)
    else:
        _windows(segments, o, name, base, length, records)


def _record(base: SourceRecord, rid: str, start: float, end: float, length: float,
            **fields: Any) -> SourceRecord:
    start, end = max(0.0, start), min(end, length)
    extra = fields.pop("extra", {})
    return SourceRecord(**{**base.to_dict(), "id": rid, "offset": round(start, 6),
                           "duration": round(max(end - start, 1e-3), 6),
                           "extra": tuple(sorted(extra.items())), **fields})


def _untimed(segments: list[Segment], o: Options, name: str, audio_path: str,
             rejects: list[Reject], tally: _Tally) -> list[Segment]:
    out = []
    for i, s in enumerate(segments):
        untimed = [j for j, w in enumerate(s.words) if not w.timed]
        if not untimed:
            out.append(s)
        elif o.untimed == "interpolate":
            tally.untimed_interpolated += len(untimed)
            out.append(interpolate(s))
        else:
            tally.untimed_skipped += len(untimed)
            for j in untimed:
                rejects.append(Reject(f"{audio_path}#{name}/w-{i:05d}-{j:03d}",
                                      f"word {s.words[j].word!r} {UNTIMED.phrase}",
                                      "filter"))
            out.append(Segment(s.start, s.end, s.text,
                               tuple(w for w in s.words if w.timed), s.speaker))
    return out


_PUNCT = re.compile(r"[^\w']+|^'+|'+$")


def normalise(word: str) -> str:
    """Lower case without punctuation (inner apostrophes kept: "don't")."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", word).lower())


def _synonyms(text: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        word, sep, cls = item.partition("=")
        if not sep or not normalise(word) or not normalise(cls):
            raise ValueError(f"--synonyms item {item.strip()!r}: expected WORD=CLASS, e.g. "
                             "walking=walk")
        pairs[normalise(word)] = normalise(cls)
    return pairs


def _words(segments: list[Segment], o: Options, name: str, base: SourceRecord, length: float,
           records: list[SourceRecord], rejects: list[Reject], tally: _Tally) -> None:
    synonyms = _synonyms(o.synonyms)
    vocab = {normalise(w) for w in (o.vocabulary or "").split(",") if normalise(w)}
    for i, s in enumerate(segments):
        for j, w in enumerate(s.words):
            assert w.start is not None and w.end is not None
            rid = f"{name}/w-{i:05d}-{j:03d}"
            cls = normalise(w.word)
            cls = synonyms.get(cls, cls)
            if vocab and cls not in vocab:
                tally.out_of_vocabulary += 1
                continue
            why = _word_problem(w, cls, o)
            if why:
                rejects.append(Reject(f"{base.path}#{rid}", why, "filter"))
                continue
            start, end = max(0.0, w.start - o.pad_before), min(length, w.end + o.pad_after)
            records.append(_record(base, rid, start, end, length, label=cls, text=w.word,
                                   speaker=w.speaker or s.speaker, extra={
                                       "session": name, "word": w.word,
                                       "word_start": w.start, "word_end": w.end,
                                       "pad_before": round(w.start - start, 6),
                                       "pad_after": round(end - w.end, 6), "score": w.score,
                                       "interpolated": w.interpolated}))


def _word_problem(w: Word, cls: str, o: Options) -> str | None:
    if not cls:
        return f"word {w.word!r} has no letters or digits"
    if o.min_score is not None and (w.score is None or w.score < o.min_score):
        got = "no score" if w.score is None else f"score {w.score:g}"
        return f"word {w.word!r}: {got}, {LOW_SCORE.phrase} {o.min_score:g}"
    return None


def _windows(segments: list[Segment], o: Options, name: str, base: SourceRecord, length: float,
             records: list[SourceRecord]) -> None:
    words = sorted((w for s in segments for w in s.words), key=lambda w: w.start or 0.0)
    starts = [w.start or 0.0 for w in words]
    longest = max(((w.end or 0.0) - (w.start or 0.0) for w in words), default=0.0)
    turns = [s for s in segments if s.speaker]
    n = int((length - o.window_seconds) // o.hop_seconds) + 1 if length >= o.window_seconds else 0
    for k in range(n):
        lo = round(k * o.hop_seconds, 6)
        hi = lo + o.window_seconds
        near = words[bisect.bisect_left(starts, lo - longest):bisect.bisect_left(starts, hi)]
        overlaps = [_overlap(w.start or 0.0, w.end or 0.0, lo, hi) for w in near]
        listed = [{"word": w.word, "start": a, "end": b, **({"speaker": w.speaker}
                                                             if w.speaker else {})}
                  for w, (a, b) in zip(near, overlaps) if b > a]
        speakers: dict[str, float] = {}
        for s in turns:
            a, b = _overlap(s.start, s.end, lo, hi)
            if b > a:
                assert s.speaker is not None
                speakers[s.speaker] = round(speakers.get(s.speaker, 0.0) + b - a, 6)
        records.append(_record(base, f"{name}/win-{k:06d}", lo, hi, length, extra={
            "session": name, "words": listed,
            "speakers": [{"speaker": sp, "overlap": t} for sp, t in sorted(speakers.items())]}))


def _overlap(start: float, end: float, lo: float, hi: float) -> tuple[float, float]:
    """The part of [start, end] inside the window [lo, hi], relative to ``lo``."""
    return round(max(start, lo) - lo, 6), round(min(end, hi) - lo, 6)
