"""A synthetic session corpus in the layout :mod:`wds_pipeline.sources.sessions` reads.

Each session folder holds one long recording (``audio_16k.wav``) of spoken command words
at known times over a quiet noise floor, and the WhisperX JSON (``audio_16k.json``) that
describes it: segments of a few words, word times rounded to the millisecond as WhisperX
writes them (each word starts exactly at its sample ``round(start * 16000)``), alignment
scores, a few words spelt with case, punctuation or as a synonym ("Walking!", "STOP."),
and a few numbers left untimed as WhisperX up to v3.3 leaves digits. Every other session
is diarized: two speakers take turns by segment, with ``speaker`` on segments and words.
A word's sound is fixed per speaker and word, so a classifier can learn the commands.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..sources.sessions import DEFAULT_TRANSCRIPT
from .files import to_pcm16, write_soundfile, write_text
from .voices import synth_voice

SAMPLE_RATE = 16000
AUDIO_NAME = "audio_16k.wav"
COMMANDS: tuple[str, ...] = ("jump", "punch", "attack", "turn", "walk", "idle", "rest", "stop")
# How a command may be spelt in the transcript: normalisation and --synonyms undo these.
SPELLINGS: dict[str, tuple[str, ...]] = {"walk": ("walk", "Walking!", "walking"),
                                         "stop": ("stop", "STOP."), "jump": ("jump", "Jump,")}
NUMBERS: tuple[str, ...] = ("2", "42", "7")
_NOISE_FLOOR = 0.003


def synth_sessions(root: str, *, sessions: int = 2, seconds: float = 30.0,
                   untimed_per_session: int = 2, seed: int = 0,
                   word_gap: tuple[float, float] = (0.25, 0.7)) -> dict[str, Any]:
    """Write ``sessions`` session folders under ``root``; ``word_gap``: the range of the
    pause between two words of a segment (seconds; shorter pauses, more words per hour).
    Returns a summary with the truth:
    ``{"files", "seconds", "splits", "sessions": {name: {"words": [(word, start, end,
    speaker), ...]}}}`` where untimed words carry the times they were spoken at."""
    if sessions < 0 or untimed_per_session < 0 or seconds < 5:
        raise ValueError("need sessions >= 0, untimed_per_session >= 0 and seconds >= 5")
    if not 0 < word_gap[0] <= word_gap[1]:
        raise ValueError(f"word_gap {word_gap}: need 0 < shortest <= longest pause")
    truth: dict[str, Any] = {}
    for k in range(sessions):
        name = f"session-{k:03d}"
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        speakers = (2 * k + 1, 2 * k + 2) if k % 2 else (2 * k + 1,)
        words, doc, pcm = _session(np.random.default_rng([seed, k]), seconds, speakers,
                                   untimed_per_session, diarized=len(speakers) > 1,
                                   word_gap=word_gap)
        write_soundfile(os.path.join(folder, AUDIO_NAME), pcm, SAMPLE_RATE, "WAV")
        write_text(os.path.join(folder, os.path.splitext(AUDIO_NAME)[0] + ".json"),
                   json.dumps(doc, indent=1))
        truth[name] = {"words": words}
    return {"files": 2 * sessions, "seconds": sessions * seconds, "splits": ["train"],
            "sessions": truth, "transcript_default": DEFAULT_TRANSCRIPT}


def _session(rng: np.random.Generator, seconds: float, speakers: tuple[int, ...],
             untimed: int, *, diarized: bool, word_gap: tuple[float, float]
             ) -> tuple[list[tuple[str, float, float, str | None]], dict[str, Any], np.ndarray]:
    n = round(seconds * SAMPLE_RATE)
    x = (_NOISE_FLOOR * rng.standard_normal(n)).astype(np.float32)
    bank: dict[tuple[int, str], np.ndarray] = {}
    words: list[tuple[str, float, float, str | None]] = []
    segments: list[dict[str, Any]] = []
    t = 0.5
    turn = 0
    # Word numbers that are spoken digits (untimed in the JSON), among the first words.
    pool = np.arange(2, max(untimed + 2, int(seconds / 1.5)))
    numbers = set(rng.choice(pool, size=min(untimed, len(pool)), replace=False).tolist())
    index = 0
    while True:
        spk = speakers[turn % len(speakers)]
        label = f"SPEAKER_{turn % len(speakers):02d}" if diarized else None
        seg_words: list[dict[str, Any]] = []
        span: list[float] = []  # the segment's first start and last end, as spoken
        for _ in range(int(rng.integers(3, 7))):
            index += 1
            spoken = str(rng.choice(NUMBERS)) if index in numbers else str(rng.choice(COMMANDS))
            if (spk, spoken) not in bank:
                wrng = np.random.default_rng([spk, sum(map(ord, spoken))])
                bank[spk, spoken] = synth_voice(spk, float(wrng.uniform(0.3, 0.5)),
                                                SAMPLE_RATE, wrng)
            clip = bank[spk, spoken]
            start = round(t, 3)
            first = round(start * SAMPLE_RATE)
            if first + len(clip) + SAMPLE_RATE > n:
                break
            x[first:first + len(clip)] += 0.5 * clip
            end = round((first + len(clip)) / SAMPLE_RATE, 3)
            words.append((spoken, start, end, label))
            span[:] = [span[0] if span else start, end]
            written = spoken if spoken in NUMBERS else str(rng.choice(SPELLINGS.get(spoken,
                                                                                   (spoken,))))
            w: dict[str, Any] = {"word": written}
            if spoken not in NUMBERS:  # digits stay unaligned, as older WhisperX leaves them
                w.update(start=start, end=end, score=round(float(rng.uniform(0.4, 1.0)), 3))
                if label:
                    w["speaker"] = label
            seg_words.append(w)
            t = end + float(rng.uniform(*word_gap))
        else:
            segments.append(_segment(seg_words, span, label))
            turn += 1
            t += float(rng.uniform(0.3, 1.0))
            continue
        if seg_words:
            segments.append(_segment(seg_words, span, label))
        break
    doc = {"segments": segments, "language": "en"}
    return words, doc, to_pcm16(x)


def _segment(words: list[dict[str, Any]], span: list[float], speaker: str | None
             ) -> dict[str, Any]:
    seg: dict[str, Any] = {"start": span[0], "end": span[1],
                           "text": " ".join(w["word"] for w in words), "words": words}
    if speaker:
        seg["speaker"] = speaker
    return seg
