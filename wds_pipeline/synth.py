"""Synthetic speech corpora in the real LibriSpeech and VoxCeleb layouts.

The demo and the tests need corpora that look exactly like the real ones on disk (so
the source modules are exercised as they will be on real data) and whose speakers a
classifier can tell apart (so a training run shows learning). :func:`synth_voice`
is a small source-filter model: a jittered glottal pulse train at a speaker-specific
f0 with intonation, shaped by a speaker-specific spectral tilt and breathiness, through
a cascade of four formant resonators that move between the speaker's own vowel targets
(drawn with the speaker's own vowel preferences) once per syllable, gated by a
syllable-rate envelope with consonant noise and pauses, and finally coloured by three
speaker-specific peaking filters (voice quality beyond the formants). Content varies a
lot between utterances, as in real speech; those fixed per-speaker cues are what lets
even a nearest-centroid classifier on mean log spectra tell 2-second utterances apart.

Output is deterministic: the same arguments give byte-identical files with the same
numpy/scipy/libsndfile/FFmpeg builds. M4A files are written with FFmpeg's ``bitexact``
flags so no library version or time stamp is embedded in them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
VIDEO_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

# Vowel targets F1-F4 (Hz) of an adult male voice (Peterson & Barney style); each
# speaker scales them by a vocal-tract factor and perturbs them into its own vowel space.
BASE_VOWELS: tuple[tuple[float, float, float, float], ...] = (
    (270, 2290, 3010, 3500),
    (390, 1990, 2550, 3400),
    (530, 1840, 2480, 3400),
    (660, 1720, 2410, 3450),
    (730, 1090, 2440, 3350),
    (570, 840, 2410, 3300),
    (440, 1020, 2240, 3300),
    (300, 870, 2240, 3250),
    (640, 1190, 2390, 3400),
)
BASE_BANDWIDTHS = (60.0, 90.0, 120.0, 180.0)

WORDS: tuple[str, ...] = (
    "THE",
    "AND",
    "OF",
    "TO",
    "A",
    "IN",
    "THAT",
    "HE",
    "WAS",
    "IT",
    "HIS",
    "I",
    "WITH",
    "AS",
    "HAD",
    "FOR",
    "YOU",
    "HER",
    "NOT",
    "BUT",
    "AT",
    "ON",
    "SHE",
    "BE",
    "HIM",
    "THEY",
    "BY",
    "ALL",
    "SO",
    "WHICH",
    "THIS",
    "HAVE",
    "FROM",
    "SAID",
    "ONE",
    "WERE",
    "WHEN",
    "WHAT",
    "THERE",
    "MY",
    "NO",
    "WOULD",
    "OUT",
    "UPON",
    "MAN",
    "LITTLE",
    "LIKE",
    "TIME",
    "GREAT",
    "DAY",
    "OLD",
    "HOUSE",
    "NIGHT",
    "HAND",
    "EYES",
    "DOOR",
    "WATER",
    "LIGHT",
    "HEART",
    "MORNING",
    "RIVER",
    "GARDEN",
    "WINDOW",
    "KING",
    "WORLD",
    "COUNTRY",
    "MOTHER",
    "FATHER",
    "STREET",
    "FRIEND",
    "SILENCE",
    "DON'T",
    "CAN'T",
    "WHO'S",
    "THOUGHT",
    "KNEW",
    "CAME",
    "WENT",
    "LOOKED",
    "TURNED",
    "ANSWERED",
    "REMEMBERED",
)

SPEAKERS_TXT_HEADER = (
    "; Synthetic speakers written by wds_pipeline.synth in the layout of LibriSpeech's SPEAKERS.TXT\n"
    ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
)
VOX1_META_HEADER = "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
VOX2_META_HEADER = "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"  # stray spaces as in the real file

# Seed-sequence tags keep the three corpora's speakers distinct for the same seed.
_LIBRI, _VOX1, _VOX2 = 1, 2, 3


@dataclass(frozen=True)
class Voice:
    """Everything that makes one synthetic speaker sound like itself."""

    f0: float  # mean pitch, Hz
    jitter: float  # relative pitch perturbation per ~5 ms
    shimmer: float  # relative pulse-amplitude perturbation
    glottal_pole: float  # closer to 1: darker voice (steeper spectral tilt)
    breathiness: float  # aspiration noise relative to the voiced source
    vowels: tuple[tuple[float, ...], ...]  # this speaker's F1-F4 targets
    vowel_weights: tuple[float, ...]  # how often each vowel occurs
    bandwidths: tuple[float, ...]
    timbre: tuple[
        tuple[float, float, float], ...
    ]  # peaking filters (Hz, dB, Q): voice quality beyond the formants
    fricative_hz: float
    syllable_rate: float  # syllables per second
    pause_rate: float  # probability of a pause after a syllable


def voice_params(speaker_seed: int) -> Voice:
    rng = np.random.default_rng(speaker_seed)
    f0 = float(np.exp(rng.uniform(np.log(90.0), np.log(260.0))))
    # Higher voices come with shorter vocal tracts, hence higher formants.
    tract = float(np.clip(0.86 + 0.32 * (f0 - 90.0) / 170.0 + rng.normal(0, 0.05), 0.8, 1.25))
    vowels = tuple(
        tuple(float(f * tract * (1 + rng.normal(0, 0.12))) for f in v) for v in BASE_VOWELS
    )
    return Voice(
        f0=f0,
        jitter=float(rng.uniform(0.005, 0.03)),
        shimmer=float(rng.uniform(0.03, 0.15)),
        glottal_pole=float(rng.uniform(0.90, 0.985)),
        breathiness=float(rng.uniform(0.02, 0.4)),
        vowels=vowels,
        vowel_weights=tuple(float(w) for w in rng.dirichlet(np.full(len(BASE_VOWELS), 0.5))),
        bandwidths=tuple(float(b * rng.uniform(0.7, 1.5)) for b in BASE_BANDWIDTHS),
        timbre=tuple(
            (
                float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                float(rng.choice([-1, 1]) * rng.uniform(6.0, 12.0)),
                float(rng.uniform(1.0, 3.0)),
            )
            for lo, hi in ((500.0, 1500.0), (1500.0, 3500.0), (3500.0, 7000.0))
        ),
        fricative_hz=float(rng.uniform(3000.0, 6000.0)),
        syllable_rate=float(rng.uniform(3.0, 5.5)),
        pause_rate=float(rng.uniform(0.08, 0.25)),
    )


@dataclass(frozen=True)
class Syllable:
    start: int  # first sample of the consonant onset (or of the vowel when there is none)
    vowel_start: int
    end: int
    vowel: int  # index into Voice.vowels
    accent: float  # relative pitch raise


def plan_syllables(n: int, sr: int, voice: Voice, rng: np.random.Generator) -> list[Syllable]:
    """Lay syllables and pauses over ``n`` samples, leaving short silences at both ends."""
    t = int(rng.uniform(0.05, 0.25) * sr)
    stop = n - int(rng.uniform(0.05, 0.2) * sr)
    syllables: list[Syllable] = []
    while stop - t > int(0.08 * sr):
        length = min(int(sr / voice.syllable_rate * rng.uniform(0.6, 1.4)), stop - t)
        onset = int(length * rng.uniform(0.15, 0.35)) if rng.random() < 0.6 else 0
        vowel = int(rng.choice(len(voice.vowels), p=voice.vowel_weights))
        accent = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.3 else 0.0
        syllables.append(Syllable(t, t + onset, t + length, vowel, accent))
        t += length
        if rng.random() < voice.pause_rate:
            t += int(rng.uniform(0.08, 0.35) * sr)
    return syllables


def resonator(freq: float, bandwidth: float, sr: int) -> tuple[float, np.ndarray]:
    """Two-pole resonator with unity gain at 0 Hz: ``(b0, a)``."""
    r = np.exp(-np.pi * bandwidth / sr)
    a = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * freq / sr), r * r])
    return float(a.sum()), a


def formant_filter(
    formants: Sequence[float] | np.ndarray, bandwidths: Sequence[float] | np.ndarray, sr: int
) -> tuple[float, np.ndarray]:
    """Cascade of resonators as one all-pole filter (formants above Nyquist are left out)."""
    gain, a = 1.0, np.array([1.0])
    for f, bw in zip(formants, bandwidths):
        if f < 0.45 * sr:
            g, ai = resonator(f, bw, sr)
            gain, a = gain * g, np.convolve(a, ai)
    return gain, a


def peaking_filter(freq: float, gain_db: float, q: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook peaking equaliser ``(b, a)``: a bump or dip of ``gain_db`` around ``freq``."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * np.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * np.cos(w0), 1.0 - alpha / amp])
    return b / a[0], a / a[0]


def window(length: int, attack: int) -> np.ndarray:
    """Flat-top envelope with raised-cosine ramps, so syllables do not click."""
    env = np.ones(length)
    ramp = min(attack, length // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[:ramp] = rise
        env[length - ramp :] = rise[::-1]
    return env


def pitch_track(
    n: int, sr: int, voice: Voice, syllables: list[Syllable], rng: np.random.Generator
) -> np.ndarray:
    """f0 per sample: declination over the utterance, accents, slow drift and jitter."""
    hop = sr // 200  # the contour is built at 200 Hz and interpolated: cheap and smooth
    frames = n // hop + 2
    t = np.arange(frames) / 200.0
    contour = np.linspace(1.08, 0.92, frames)
    contour *= 1.0 + 0.05 * np.sin(
        2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi)
    )
    for s in syllables:
        contour[s.vowel_start // hop : s.end // hop + 1] *= 1.0 + s.accent
    contour *= 1.0 + voice.jitter * rng.standard_normal(frames)
    return voice.f0 * np.interp(np.arange(n), np.arange(frames) * hop, contour)


def synth_voice(
    speaker_seed: int, duration: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """``round(duration * sr)`` samples of speech-like float32 audio in [-1, 1] for one speaker.

    ``speaker_seed`` fixes the voice; ``rng`` supplies everything that varies between
    utterances (syllables, pitch movement, noise, level).
    """
    from scipy.signal import lfilter

    voice = voice_params(speaker_seed)
    n = round(duration * sr)
    if n <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    syllables = plan_syllables(n, sr, voice, rng)
    voiced_env = np.zeros(n)
    noise_env = np.zeros(n)
    for s in syllables:
        voiced_env[s.vowel_start : s.end] = window(s.end - s.vowel_start, int(0.03 * sr))
        if s.vowel_start > s.start:
            noise_env[s.start : s.vowel_start] = window(s.vowel_start - s.start, int(0.01 * sr))

    f0 = pitch_track(n, sr, voice, syllables, rng)
    phase = np.cumsum(f0 / sr)
    pulse_at = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
    pulses = np.zeros(n)
    pulses[pulse_at] = 1.0 + voice.shimmer * rng.standard_normal(len(pulse_at))
    p = voice.glottal_pole
    # Double pole = glottal flow (-12 dB/oct), difference = lip radiation (+6 dB/oct).
    source = np.diff(lfilter([1.0], [1.0, -2.0 * p, p * p], pulses), prepend=0.0)
    source /= np.std(source) + 1e-12
    source = (source + voice.breathiness * rng.standard_normal(n)) * voiced_env

    speech = np.zeros(n)
    bandwidths = voice.bandwidths
    state = np.zeros(2 * len(bandwidths))
    bounds = [0] + [s.end for s in syllables[:-1]] + [n]
    previous = (
        np.asarray(voice.vowels[syllables[0].vowel]) if syllables else np.asarray(voice.vowels[0])
    )
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        target = np.asarray(voice.vowels[syllables[i].vowel]) if i < len(syllables) else previous
        target = target * (1.0 + 0.03 * rng.standard_normal(len(target)))
        # Two steps per syllable: a transition half-way from the previous vowel, then the target.
        mid = lo + (hi - lo) // 3
        for (a0, a1), formants in (((lo, mid), (previous + target) / 2), ((mid, hi), target)):
            gain, a = formant_filter(formants, bandwidths, sr)
            zi = state[: len(a) - 1]
            speech[a0:a1], zf = lfilter([gain], a, source[a0:a1], zi=zi)
            state[: len(zf)] = zf
        previous = target

    _, a = resonator(voice.fricative_hz * rng.uniform(0.9, 1.1), 1500.0, sr)
    # The zero at 0 Hz keeps fricatives out of the voice band, as in real /s/ and /f/.
    frication = lfilter([1.0, -1.0], a, rng.standard_normal(n)) * noise_env
    speech = (
        speech / (np.std(speech[voiced_env > 0.5]) + 1e-12) if np.any(voiced_env > 0.5) else speech
    )
    speech += (
        0.15 * frication / (np.std(frication[noise_env > 0.5]) + 1e-12)
        if np.any(noise_env > 0.5)
        else 0.0
    )
    for freq, db, q in voice.timbre:
        speech = lfilter(*peaking_filter(freq, db, q, sr), speech)
    speech += 1e-3 * rng.standard_normal(
        n
    )  # a faint noise floor: real pauses are never digital zero
    speech *= rng.uniform(0.3, 0.9) / (np.max(np.abs(speech)) + 1e-12)
    return speech.astype(np.float32)


# ---------------------------------------------------------------------------
# File writers


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_soundfile(path: str, pcm: np.ndarray, sr: int, fmt: str) -> None:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, pcm, sr, format=fmt, subtype="PCM_16")


def write_m4a(path: str, pcm: np.ndarray, sr: int) -> None:
    """AAC in an M4A (``ipod`` muxer) like VoxCeleb2; ``bitexact`` keeps version strings out."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w", format="ipod", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(
            "aac", rate=sr, options={"flags": "+bitexact", "aac_coder": "fast"}
        )
        stream.layout = "mono"
        stream.bit_rate = 64000
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sr
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


# ---------------------------------------------------------------------------
# Corpora


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
    from wds_pipeline.sources.librispeech import KNOWN_PARTS

    _check_common(
        min_seconds,
        max_seconds,
        {
            "speakers": speakers,
            "chapters_per_speaker": chapters_per_speaker,
            "utterances_per_chapter": utterances_per_chapter,
        },
    )
    unknown = [p for p in parts if p not in KNOWN_PARTS]
    if not parts or unknown:
        raise ValueError(
            f"parts must be LibriSpeech part names ({', '.join(KNOWN_PARTS)}), got {list(parts)}"
        )
    ids_rng = np.random.default_rng(_seed(seed, _LIBRI))
    spk_ids = [int(i) for i in ids_rng.choice(np.arange(10, 10000), size=speakers, replace=False)]
    chap_ids = [
        int(i)
        for i in ids_rng.choice(
            np.arange(10000, 1000000), size=speakers * chapters_per_speaker, replace=False
        )
    ]
    files, seconds, per_split = 0, 0.0, {p: 0 for p in parts}
    speaker_lines: list[str] = []
    for s, spk in enumerate(spk_ids):
        part = parts[s % len(parts)]
        speaker_seed = _seed(seed, _LIBRI, spk)
        spk_seconds = 0.0
        for c in range(chapters_per_speaker):
            chap = chap_ids[s * chapters_per_speaker + c]
            chap_dir = os.path.join(root, part, str(spk), str(chap))
            spk_seconds += _write_libri_chapter(
                chap_dir,
                spk,
                chap,
                speaker_seed,
                seed,
                utterances_per_chapter,
                min_seconds,
                max_seconds,
            )
        files += chapters_per_speaker * utterances_per_chapter
        per_split[part] += chapters_per_speaker * utterances_per_chapter
        seconds += spk_seconds
        sex = "F" if voice_params(speaker_seed).f0 > 165 else "M"
        speaker_lines.append(
            f"{spk:<5}| {sex} | {part:<16} | {spk_seconds / 60:5.2f} | Synthetic Speaker {spk}\n"
        )
    write_text(
        os.path.join(root, "SPEAKERS.TXT"), SPEAKERS_TXT_HEADER + "".join(sorted(speaker_lines))
    )
    return {
        "dataset": "librispeech",
        "root": root,
        "files": files,
        "speakers": speakers,
        "seconds": round(seconds, 3),
        "splits": per_split,
    }


def _write_libri_chapter(
    chap_dir: str,
    spk: int,
    chap: int,
    speaker_seed: int,
    seed: int,
    utterances: int,
    min_seconds: float,
    max_seconds: float,
) -> float:
    """FLAC files and the transcript of one chapter; returns its seconds of audio."""
    lines = []
    seconds = 0.0
    for u in range(utterances):
        rng = np.random.default_rng(_seed(seed, _LIBRI, spk, chap, u))
        pcm = _utterance(speaker_seed, rng, min_seconds, max_seconds)
        utt = f"{spk}-{chap}-{u:04d}"
        write_soundfile(os.path.join(chap_dir, utt + ".flac"), pcm, SAMPLE_RATE, "FLAC")
        lines.append(f"{utt} {_sentence(rng, len(pcm) / SAMPLE_RATE)}\n")
        seconds += len(pcm) / SAMPLE_RATE
    write_text(os.path.join(chap_dir, f"{spk}-{chap}.trans.txt"), "".join(lines))
    return seconds


def _video_id(rng: np.random.Generator) -> str:
    return "".join(VIDEO_ID_CHARS[i] for i in rng.integers(0, len(VIDEO_ID_CHARS), size=11))


@dataclass(frozen=True)
class VoxCorpus:
    name: str  # voxceleb1 | voxceleb2
    tag: int  # seed-sequence tag
    audio_dir: str  # relative to the corpus folder
    ext: str
    meta_file: str
    meta_header: str


VOX1_LAYOUT = VoxCorpus("voxceleb1", _VOX1, "wav", ".wav", "vox1_meta.csv", VOX1_META_HEADER)
# VoxCeleb2 as downloaded: every synthetic speaker is a dev speaker, so only dev/aac/ exists.
VOX2_LAYOUT = VoxCorpus(
    "voxceleb2", _VOX2, os.path.join("dev", "aac"), ".m4a", "vox2_meta.csv", VOX2_META_HEADER
)


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
    _check_common(
        min_seconds,
        max_seconds,
        {
            "vox1_speakers": vox1_speakers,
            "vox2_speakers": vox2_speakers,
            "videos_per_speaker": videos_per_speaker,
            "utterances_per_video": utterances_per_video,
            "vox1_test_speakers": vox1_test_speakers,
        },
    )
    if vox1_test_speakers > vox1_speakers:
        raise ValueError(
            f"vox1_test_speakers ({vox1_test_speakers}) cannot exceed vox1_speakers ({vox1_speakers})"
        )
    n_dev = vox1_speakers - vox1_test_speakers
    vox1 = [(f"id{10001 + i}", "dev") for i in range(n_dev)]
    vox1 += [(f"id{max(10270, 10001 + n_dev) + i}", "test") for i in range(vox1_test_speakers)]
    vox2 = [(f"id{1 + i:05d}", "dev") for i in range(vox2_speakers)]
    summary: dict[str, Any] = {
        "dataset": "voxceleb",
        "root": root,
        "files": 0,
        "speakers": len(vox1) + len(vox2),
        "seconds": 0.0,
        "splits": {},
        "trials": 0,
    }
    finals: list[tuple[str, str]] = []  # (path, text), written once every audio file exists
    test_utts: dict[str, list[str]] = {}
    for layout, speakers in ((VOX2_LAYOUT, vox2), (VOX1_LAYOUT, vox1)):
        meta_lines = []
        for spk, corpus_set in speakers:
            rels, seconds = _write_vox_speaker(
                root,
                layout,
                spk,
                seed,
                videos_per_speaker,
                utterances_per_video,
                min_seconds,
                max_seconds,
            )
            split = f"{layout.name}_{corpus_set}"
            summary["splits"][split] = summary["splits"].get(split, 0) + len(rels)
            summary["files"] += len(rels)
            summary["seconds"] += seconds
            if layout is VOX1_LAYOUT and corpus_set == "test":
                test_utts[spk] = rels
            gender = "f" if voice_params(_seed(seed, layout.tag, int(spk[2:]))).f0 > 165 else "m"
            if layout is VOX1_LAYOUT:
                meta_lines.append(
                    f"{spk}\tSynthetic_Speaker_{spk[2:]}\t{gender}\tNowhere\t{corpus_set}\n"
                )
            else:
                meta_lines.append(f"{spk} ,n{spk[2:]:0>6} ,{gender} ,{corpus_set} \n")
        if speakers:
            finals.append(
                (
                    os.path.join(root, layout.name, layout.meta_file),
                    layout.meta_header + "".join(meta_lines),
                )
            )
    if test_utts:
        trials = make_trials(test_utts, np.random.default_rng(_seed(seed, _VOX1, 0)))
        trial_text = "".join(f"{label} {enroll} {test}\n" for label, enroll, test in trials)
        finals.insert(-1, (os.path.join(root, "voxceleb1", "veri_test2.txt"), trial_text))
        summary["trials"] = len(trials)
    for path, text in finals:
        write_text(path, text)
    summary["seconds"] = round(summary["seconds"], 3)
    return summary


def _write_vox_speaker(
    root: str,
    layout: VoxCorpus,
    spk: str,
    seed: int,
    videos: int,
    utterances: int,
    min_seconds: float,
    max_seconds: float,
) -> tuple[list[str], float]:
    """One speaker's files; returns their trial-list paths (``id/video/00001.wav``) and seconds."""
    number = int(spk[2:])
    speaker_seed = _seed(seed, layout.tag, number)
    video_rng = np.random.default_rng(_seed(seed, layout.tag, number, 1))
    video_ids = [_video_id(video_rng) for _ in range(videos)]
    rels: list[str] = []
    seconds = 0.0
    for v, video in enumerate(video_ids):
        for u in range(1, utterances + 1):
            rng = np.random.default_rng(_seed(seed, layout.tag, number, 2, v, u))
            pcm = _utterance(speaker_seed, rng, min_seconds, max_seconds)
            rel = f"{spk}/{video}/{u:05d}{layout.ext}"
            path = os.path.join(root, layout.name, layout.audio_dir, *rel.split("/"))
            if layout.ext == ".wav":
                write_soundfile(path, pcm, SAMPLE_RATE, "WAV")
            else:
                write_m4a(path, pcm, SAMPLE_RATE)
            rels.append(rel)
            seconds += len(pcm) / SAMPLE_RATE
    return rels, seconds


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
