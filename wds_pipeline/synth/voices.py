"""A small source-filter model of speakers: each voice is fixed by a seed, each utterance
varies (see the package docstring for the model).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
        if freq < 0.45 * sr:  # above Nyquist the peaking filter's alpha turns negative: unstable
            speech = lfilter(*peaking_filter(freq, db, q, sr), speech)
    speech += 1e-3 * rng.standard_normal(
        n
    )  # a faint noise floor: real pauses are never digital zero
    speech *= rng.uniform(0.3, 0.9) / (np.max(np.abs(speech)) + 1e-12)
    return speech.astype(np.float32)
