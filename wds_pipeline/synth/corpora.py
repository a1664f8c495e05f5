"""Synthetic LibriSpeech and VoxCeleb corpora, written in the layouts the sources read.

File names, transcript lines, meta-file rows and trial lines come from the source modules
(:mod:`wds_pipeline.sources.librispeech`, :mod:`wds_pipeline.sources.voxceleb`), so what
is written here is what the scan expects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sources import librispeech as ls
from ..sources import voxceleb as vc
from .files import to_pcm16, write_m4a, write_soundfile, write_text
from .voices import synth_voice, voice_params

SAMPLE_RATE = 16000
VIDEO_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

WORDS: tuple[str, ...] = tuple("""
THE AND OF TO A IN THAT HE WAS IT HIS I WITH AS HAD FOR YOU HER NOT BUT AT ON SHE BE HIM
THEY BY ALL SO WHICH THIS HAVE FROM SAID ONE WERE WHEN WHAT THERE MY NO WOULD OUT UPON MAN
LITTLE LIKE TIME GREAT DAY OLD HOUSE NIGHT HAND EYES DOOR WATER LIGHT HEART MORNING RIVER
GARDEN WINDOW KING WORLD COUNTRY MOTHER FATHER STREET FRIEND SILENCE DON'T CAN'T WHO'S
THOUGHT KNEW CAME WENT LOOKED TURNED ANSWERED REMEMBERED
""".split())

SPEAKERS_TXT_HEADER = (
    "; Synthetic speakers written by wds_pipeline.synth in the layout of LibriSpeech's "
    f"{ls.SPEAKERS_FILE}\n{ls.SPEAKERS_COLUMNS}"
)

# Seed-sequence tags keep the three corpora's speakers distinct for the same seed.
_LIBRI, _VOX1, _VOX2 = 1, 2, 3


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _check_common(min_seconds: float, max_seconds: float, counts: dict[str, int]) -> None:
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(
            f"need 0 < min_seconds <= max_seconds, got {min_seconds} and {max_seconds}"
        )
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be 0 or more, got {value}")


def _utterance(
    speaker_seed: int, rng: np.random.Generator, min_seconds: float, max_seconds: float
) -> np.ndarray:
    duration = float(rng.uniform(min_seconds, max_seconds))
    return to_pcm16(synth_voice(speaker_seed, duration, SAMPLE_RATE, rng))


def _sentence(rng: np.random.Generator, seconds: float) -> str:
    words = max(1, round(seconds * rng.uniform(2.2, 3.0)))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


# ---------------------------------------------------------------------------
# LibriSpeech


def synth_librispeech(
    root: str,
    *,
    speakers: int = 8,
    chapters_per_speaker: int = 2,
    utterances_per_chapter: int = 4,
    parts: Sequence[str] = ("train-clean-100", "dev-clean"),
    min_seconds: float = 1.0,
    max_seconds: float = 15.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``<root>/<part>/<spk>/<chap>/<spk>-<chap>-<utt>.flac`` + ``trans.txt`` + ``SPEAKERS.TXT``.

    ``root`` plays the role of the ``LibriSpeech`` folder. Speakers are dealt to the parts
    in turn, so, as in the real corpus, no speaker appears in two parts.
    """
    _check_common(min_seconds, max_seconds, {
        "speakers": speakers,
        "chapters_per_speaker": chapters_per_speaker,
        "utterances_per_chapter": utterances_per_chapter,
    })
    unknown = [p for p in parts if p not in ls.KNOWN_PARTS]
    if not parts or unknown:
        raise ValueError(
            f"parts must be LibriSpeech part names ({', '.join(ls.KNOWN_PARTS)}), got {list(parts)}"
        )
    ids_rng = np.random.default_rng(_seed(seed, _LIBRI))
    spk_ids = [int(i) for i in ids_rng.choice(np.arange(10, 10000), size=speakers, replace=False)]
    chap_ids = [int(i) for i in ids_rng.choice(
        np.arange(10000, 1000000), size=speakers * chapters_per_speaker, replace=False)]
    files, seconds, per_split = 0, 0.0, {p: 0 for p in parts}
    speaker_lines: list[str] = []
    for s, spk in enumerate(spk_ids):
        part = parts[s % len(parts)]
        speaker_seed = _seed(seed, _LIBRI, spk)
        spk_seconds = 0.0
        for c in range(chapters_per_speaker):
            chap = chap_ids[s * chapters_per_speaker + c]
            spk_seconds += _write_libri_chapter(
                ls.chapter_dir(root, part, spk, chap), spk, chap, speaker_seed, seed,
                utterances_per_chapter, min_seconds, max_seconds)
        files += chapters_per_speaker * utterances_per_chapter
        per_split[part] += chapters_per_speaker * utterances_per_chapter
        seconds += spk_seconds
        sex = "F" if voice_params(speaker_seed).f0 > 165 else "M"
        speaker_lines.append(ls.speakers_line(spk, sex, part, spk_seconds / 60,
                                              f"Synthetic Speaker {spk}"))
    write_text(os.path.join(root, ls.SPEAKERS_FILE),
               SPEAKERS_TXT_HEADER + "".join(sorted(speaker_lines)))
    return {"dataset": "librispeech", "root": root, "files": files, "speakers": speakers,
            "seconds": round(seconds, 3), "splits": per_split}


def _write_libri_chapter(chap_dir: str, spk: int, chap: int, speaker_seed: int, seed: int,
                         utterances: int, min_seconds: float, max_seconds: float) -> float:
    """FLAC files and the transcript of one chapter; returns its seconds of audio."""
    lines = []
    seconds = 0.0
    for u in range(utterances):
        rng = np.random.default_rng(_seed(seed, _LIBRI, spk, chap, u))
        pcm = _utterance(speaker_seed, rng, min_seconds, max_seconds)
        utt = ls.utterance_id(spk, chap, u)
        write_soundfile(os.path.join(chap_dir, utt + ls.AUDIO_EXT), pcm, SAMPLE_RATE, "FLAC")
        lines.append(ls.transcript_line(utt, _sentence(rng, len(pcm) / SAMPLE_RATE)))
        seconds += len(pcm) / SAMPLE_RATE
    write_text(os.path.join(chap_dir, ls.transcript_name(spk, chap)), "".join(lines))
    return seconds


# ---------------------------------------------------------------------------
# VoxCeleb


@dataclass(frozen=True)
class VoxCorpus:
    layout: vc.CorpusLayout  # names, extension, meta file format
    tag: int  # seed-sequence tag
    audio_set: str | None  # the dev/ or test/ folder above the audio folder, if any


VOX1_LAYOUT = VoxCorpus(vc.VOX1, _VOX1, None)
# VoxCeleb2 as downloaded: every synthetic speaker is a dev speaker, so only dev/aac/ exists.
VOX2_LAYOUT = VoxCorpus(vc.VOX2, _VOX2, "dev")


def synth_voxceleb(
    root: str,
    *,
    vox1_speakers: int = 6,
    vox2_speakers: int = 4,
    videos_per_speaker: int = 2,
    utterances_per_video: int = 3,
    vox1_test_speakers: int = 2,
    min_seconds: float = 1.0,
    max_seconds: float = 15.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``<root>/voxceleb1`` (wav/, vox1_meta.csv, veri_test2.txt) and ``<root>/voxceleb2`` (dev/aac/, vox2_meta.csv).

    VoxCeleb1 dev speakers are ``id10001...``, its test speakers ``id10270...`` (where the
    real test set starts), VoxCeleb2 speakers ``id00001...``, all of them dev speakers.
    The meta files are written after all audio, ``vox1_meta.csv`` last (``vox2_meta.csv``
    without VoxCeleb1), so their presence means the corpus is complete.
    """
    _check_common(min_seconds, max_seconds, {
        "vox1_speakers": vox1_speakers,
        "vox2_speakers": vox2_speakers,
        "videos_per_speaker": videos_per_speaker,
        "utterances_per_video": utterances_per_video,
        "vox1_test_speakers": vox1_test_speakers,
    })
    if vox1_test_speakers > vox1_speakers:
        raise ValueError(
            f"vox1_test_speakers ({vox1_test_speakers}) cannot exceed vox1_speakers ({vox1_speakers})"
        )
    n_dev = vox1_speakers - vox1_test_speakers
    vox1 = [(vc.speaker_id(10001 + i), "dev") for i in range(n_dev)]
    vox1 += [(vc.speaker_id(max(10270, 10001 + n_dev) + i), "test")
             for i in range(vox1_test_speakers)]
    vox2 = [(vc.speaker_id(1 + i), "dev") for i in range(vox2_speakers)]
    summary: dict[str, Any] = {"dataset": "voxceleb", "root": root, "files": 0,
                               "speakers": len(vox1) + len(vox2), "seconds": 0.0, "splits": {},
                               "trials": 0}
    finals: list[tuple[str, str]] = []  # (path, text), written once every audio file exists
    test_utts: dict[str, list[str]] = {}
    for corpus, speakers in ((VOX2_LAYOUT, vox2), (VOX1_LAYOUT, vox1)):
        layout = corpus.layout
        meta_lines = []
        for spk, corpus_set in speakers:
            rels, seconds = _write_vox_speaker(root, corpus, spk, seed, videos_per_speaker,
                                               utterances_per_video, min_seconds, max_seconds)
            split = vc.choose_split(layout, corpus_set, kaldi_split=False)
            summary["splits"][split] = summary["splits"].get(split, 0) + len(rels)
            summary["files"] += len(rels)
            summary["seconds"] += seconds
            if layout is vc.VOX1 and corpus_set == "test":
                test_utts[spk] = rels
            number = int(spk[2:])
            gender = "f" if voice_params(_seed(seed, corpus.tag, number)).f0 > 165 else "m"
            face_id = (f"Synthetic_Speaker_{spk[2:]}" if layout is vc.VOX1
                       else f"n{spk[2:]:0>6}")
            meta_lines.append(vc.meta_line(layout, speaker=spk, face_id=face_id, gender=gender,
                                           corpus_set=corpus_set, nationality="Nowhere"))
        if speakers:
            finals.append((os.path.join(root, layout.name, layout.meta_file),
                           layout.meta_header + "".join(meta_lines)))
    if test_utts:
        trials = make_trials(test_utts, np.random.default_rng(_seed(seed, _VOX1, 0)))
        trial_text = "".join(vc.trial_line(*t) for t in trials)
        finals.insert(-1, (os.path.join(root, vc.VOX1.name, vc.VERI_TEST2), trial_text))
        summary["trials"] = len(trials)
    for path, text in finals:
        write_text(path, text)
    summary["seconds"] = round(summary["seconds"], 3)
    return summary


def _write_vox_speaker(root: str, corpus: VoxCorpus, spk: str, seed: int, videos: int,
                       utterances: int, min_seconds: float,
                       max_seconds: float) -> tuple[list[str], float]:
    """One speaker's files; returns their trial-list paths (``id/video/00001.wav``) and seconds."""
    layout = corpus.layout
    number = int(spk[2:])
    speaker_seed = _seed(seed, corpus.tag, number)
    video_rng = np.random.default_rng(_seed(seed, corpus.tag, number, 1))
    video_ids = [_video_id(video_rng) for _ in range(videos)]
    audio_root = vc.audio_dir(layout, os.path.join(root, layout.name), corpus.audio_set)
    rels: list[str] = []
    seconds = 0.0
    for v, video in enumerate(video_ids):
        for u in range(1, utterances + 1):
            rng = np.random.default_rng(_seed(seed, corpus.tag, number, 2, v, u))
            pcm = _utterance(speaker_seed, rng, min_seconds, max_seconds)
            rel = vc.utterance_path(layout, spk, video, u)
            path = os.path.join(audio_root, *rel.split("/"))
            if layout.ext == ".wav":
                write_soundfile(path, pcm, SAMPLE_RATE, "WAV")
            else:
                write_m4a(path, pcm, SAMPLE_RATE)
            rels.append(rel)
            seconds += len(pcm) / SAMPLE_RATE
    return rels, seconds


def _video_id(rng: np.random.Generator) -> str:
    return "".join(VIDEO_ID_CHARS[i] for i in rng.integers(0, len(VIDEO_ID_CHARS), size=11))


def make_trials(utts: dict[str, list[str]], rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """One target and one non-target trial per enrolment utterance, where possible."""
    trials: list[tuple[int, str, str]] = []
    speakers = sorted(utts)
    for spk in speakers:
        own = utts[spk]
        others = [u for s in speakers if s != spk for u in utts[s]]
        for i, enroll in enumerate(own):
            if len(own) > 1:
                trials.append((1, enroll, own[(i + 1) % len(own)]))
            if others:
                trials.append((0, enroll, others[int(rng.integers(len(others)))]))
    return trials
