"""Synthetic MUSAN and RIRS_NOISES corpora, written in the layouts
:mod:`wds_pipeline.sources.musan` and :mod:`wds_pipeline.sources.rirs` read (names, folders,
ANNOTATIONS and list lines come from those modules).

MUSAN: ``noise`` clips are coloured Gaussian noise (white, pink, brown in turn: power
spectrum ``1/f**alpha``, alpha 0, 1, 2), ``music`` clips are tone sequences (notes of a
pentatonic scale with three harmonics and an attack/release envelope), ``speech`` clips are
the synthetic voices of :mod:`.voices`, one speaker each (babble is several of them mixed
by the augmenter). RIRs: a unit direct-path peak at a known sample followed by Gaussian
noise under an exponential envelope that falls 60 dB in the RIR's RT60, the room size
setting the RT60's range; every list line carries ``--rt-60`` (the distributed simulated
lists do not; the format allows it), and the summary returns each RIR's RT60 and direct
sample as the truth a test checks against.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..sources import musan as mu
from ..sources import rirs as rr
from .files import to_pcm16, write_soundfile, write_text
from .voices import synth_voice

SAMPLE_RATE = 16000
COLOURS: tuple[tuple[str, float], ...] = (("white", 0.0), ("pink", 1.0), ("brown", 2.0))
# RT60 ranges (seconds) of the simulated room sizes, and of the "real" RIRs.
RT60_RANGE: dict[str, tuple[float, float]] = {
    "smallroom": (0.2, 0.4), "mediumroom": (0.4, 0.7), "largeroom": (0.7, 0.9),
    rr.REAL_RIR: (0.3, 0.8)}
_PENTATONIC = (0, 2, 4, 7, 9)
# Seed-sequence tags keep the two corpora's streams distinct for the same seed.
_MUSAN, _RIRS = 11, 12


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(list(parts))


def _check(**counts: float) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be 0 or more, got {value}")


# ---------------------------------------------------------------------------
# Signals (float in [-1, 1])


def coloured_noise(n: int, alpha: float, rng: np.random.Generator, rms: float = 0.1) -> np.ndarray:
    """``n`` samples of Gaussian noise with power spectrum ``1/f**alpha``, at ``rms``."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # no DC blow-up; the DC bin is zeroed below
    spectrum *= f ** (-alpha / 2)
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    x *= rms / max(float(np.sqrt(np.mean(x**2))), 1e-12)
    return np.clip(x, -1.0, 1.0)


def tones(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Notes of a pentatonic scale, 0.2-0.5 s each, three harmonics, attack/release."""
    x = np.zeros(n)
    start = 0
    while start < n:
        length = min(n - start, int(rng.integers(int(0.2 * sr), int(0.5 * sr))))
        semitone = 12 * int(rng.integers(0, 2)) + _PENTATONIC[int(rng.integers(0, 5))]
        f0 = 220.0 * 2 ** (semitone / 12)
        t = np.arange(length) / sr
        note = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
        ramp = max(1, min(length // 4, int(0.02 * sr)))
        env = np.minimum(1.0, np.minimum(np.arange(length) + 1, length - np.arange(length)) / ramp)
        x[start:start + length] = 0.2 * note * env
        start += length
    return x


def rir(n: int, rt60: float, direct: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A RIR of ``n`` samples: 1.0 at sample ``direct``, then a noise tail whose envelope
    falls 60 dB (a factor 1000) in ``rt60`` seconds, bounded below the direct path."""
    h = np.zeros(n)
    h[direct] = 1.0
    t = np.arange(n - direct - 1) / sr
    tail = 0.2 * rng.standard_normal(len(t)) * np.exp(-math.log(1000.0) * t / rt60)
    h[direct + 1:] = np.clip(tail, -0.5, 0.5)
    return h


# ---------------------------------------------------------------------------
# MUSAN


def synth_musan(root: str, *, clips_per_subset: int = 2, seconds: float = 3.0,
                seed: int = 0) -> dict[str, Any]:
    """Write ``<root>/{music,noise,speech}/<subset>/<category>-<subset>-NNNN.wav`` with an
    ANNOTATIONS and a LICENSE per subset, ``clips_per_subset`` clips of ``seconds`` each in
    every subset of :data:`wds_pipeline.sources.musan.SUBSETS`."""
    _check(clips_per_subset=clips_per_subset)
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    n = round(seconds * SAMPLE_RATE)
    categories = {c: 0 for c in mu.CATEGORIES}
    for c_index, category in enumerate(mu.CATEGORIES):
        for s_index, subset in enumerate(mu.SUBSETS[category]):
            folder = mu.subset_dir(root, category, subset)
            lines = []
            for k in range(clips_per_subset):
                rng = _rng(seed, _MUSAN, c_index, s_index, k)
                clip = mu.clip_name(category, subset, k)
                if category == "noise":
                    colour, alpha = COLOURS[k % len(COLOURS)]
                    x = coloured_noise(n, alpha, rng)
                    lines.append(f"{clip} synthetic {colour} noise\n")
                elif category == "music":
                    x = tones(n, SAMPLE_RATE, rng)
                    lines.append(mu.music_annotation(clip, ("synthetic", "tones"), False,
                                                     f"synth-{subset}"))
                else:
                    speaker_seed = int(rng.integers(2**31))
                    x = synth_voice(speaker_seed, seconds, SAMPLE_RATE, rng)
                    lines.append(f"{clip} synthetic english\n")
                write_soundfile(os.path.join(folder, clip + mu.AUDIO_EXT), to_pcm16(x),
                                SAMPLE_RATE, "WAV")
            categories[category] += clips_per_subset
            write_text(os.path.join(folder, "LICENSE"), "Synthetic audio written by "
                       "wds_pipeline.synth; no rights reserved.\n")
            write_text(os.path.join(folder, mu.ANNOTATIONS), "".join(lines))
    files = sum(categories.values())
    return {"dataset": "musan", "root": root, "files": files,
            "seconds": round(files * n / SAMPLE_RATE, 3), "splits": {"train": files},
            "categories": categories}


# ---------------------------------------------------------------------------
# RIRS_NOISES


def synth_rirs(root: str, *, rooms_per_size: int = 1, rirs_per_room: int = 2,
               real_rirs: int = 2, isotropic_noises: int = 1, pointsource_noises: int = 2,
               rir_seconds: float = 1.0, noise_seconds: float = 2.0,
               seed: int = 0) -> dict[str, Any]:
    """Write ``<root>`` as a ``RIRS_NOISES`` folder: simulated RIRs per room size with their
    ``rir_list``, real RIRs and isotropic noises with ``rir_list``/``noise_list``, point-source
    noises with ``noise_list``. The summary's ``rirs`` maps each RIR's record id to its
    ``rt60`` (seconds) and ``direct`` (the sample of its direct-path peak)."""
    _check(rooms_per_size=rooms_per_size, rirs_per_room=rirs_per_room, real_rirs=real_rirs,
           isotropic_noises=isotropic_noises, pointsource_noises=pointsource_noises)
    if not (rir_seconds > 0 and noise_seconds > 0):
        raise ValueError(f"rir_seconds and noise_seconds must be positive, got {rir_seconds} "
                         f"and {noise_seconds}")
    n_rir, n_noise = round(rir_seconds * SAMPLE_RATE), round(noise_seconds * SAMPLE_RATE)
    truth: dict[str, dict[str, float]] = {}
    categories: dict[str, int] = {}

    def write_rir(rel: str, category: str, rng: np.random.Generator) -> float:
        low, high = RT60_RANGE[category]
        rt60 = round(float(rng.uniform(low, high)), 3)
        direct = int(rng.integers(16, 160))  # 1-10 ms: a source 0.3-3.4 m away
        h = rir(n_rir, rt60, direct, SAMPLE_RATE, rng)
        write_soundfile(os.path.join(root, *rel.split("/")), to_pcm16(0.9 * h), SAMPLE_RATE, "WAV")
        truth[rel[: -len(rr.AUDIO_EXT)]] = {"rt60": rt60, "direct": direct}
        categories[category] = categories.get(category, 0) + 1
        return rt60

    def write_noise(rel: str, category: str, k: int, rng: np.random.Generator) -> None:
        x = coloured_noise(n_noise, COLOURS[k % len(COLOURS)][1], rng)
        write_soundfile(os.path.join(root, *rel.split("/")), to_pcm16(x), SAMPLE_RATE, "WAV")
        categories[category] = categories.get(category, 0) + 1

    for s_index, size in enumerate(rr.ROOM_SIZES):
        lines = []
        for room in range(1, rooms_per_size + 1):
            folder = os.path.relpath(rr.room_dir(root, size, room), root).replace(os.sep, "/")
            for k in range(1, rirs_per_room + 1):
                name = rr.rir_name(room, k)
                rel = f"{folder}/{name}{rr.AUDIO_EXT}"
                rt60 = write_rir(rel, size, _rng(seed, _RIRS, 0, s_index, room, k))
                prefix = size[: -len("room")]
                lines.append(rr.list_line("rir", f"{prefix}-{name}", rel,
                                          room_id=f"{prefix}-Room{room:03d}", rt_60=rt60))
        if rooms_per_size:
            write_text(os.path.join(root, rr.SIMULATED, size, rr.RIR_LIST), "".join(lines))
    rir_lines, noise_lines = [], []
    for k in range(real_rirs):
        name = f"synthetic_air_rir_{k}"
        rel = f"{rr.REAL}/{name}{rr.AUDIO_EXT}"
        rt60 = write_rir(rel, rr.REAL_RIR, _rng(seed, _RIRS, 1, k))
        rir_lines.append(rr.list_line("rir", name, rel, room_id="synthetic_air", rt_60=rt60))
    for k in range(isotropic_noises):
        name = f"synthetic_isotropic_noise_{k}"
        rel = f"{rr.REAL}/{name}{rr.AUDIO_EXT}"
        write_noise(rel, rr.ISOTROPIC, k, _rng(seed, _RIRS, 2, k))
        noise_lines.append(rr.list_line("noise", name, rel, noise_type="isotropic",
                                        bg_fg_type="background", room_linkage="synthetic_air"))
    if real_rirs or isotropic_noises:
        write_text(os.path.join(root, rr.REAL, rr.RIR_LIST), "".join(rir_lines))
        write_text(os.path.join(root, rr.REAL, rr.NOISE_LIST), "".join(noise_lines))
    point_lines = []
    for k in range(pointsource_noises):
        name = mu.clip_name("noise", "free-sound", k)
        rel = f"{rr.POINTSOURCE}/{name}{rr.AUDIO_EXT}"
        write_noise(rel, rr.POINTSOURCE_NOISE, k, _rng(seed, _RIRS, 3, k))
        point_lines.append(rr.list_line("noise", name, rel, noise_type="point-source",
                                        bg_fg_type="foreground"))
    if pointsource_noises:
        write_text(os.path.join(root, rr.POINTSOURCE, rr.NOISE_LIST), "".join(point_lines))
    files = sum(categories.values())
    seconds = (len(truth) * n_rir + (files - len(truth)) * n_noise) / SAMPLE_RATE
    return {"dataset": "rirs_noises", "root": root, "files": files, "seconds": round(seconds, 3),
            "splits": {"train": files}, "categories": categories, "rirs": truth}
