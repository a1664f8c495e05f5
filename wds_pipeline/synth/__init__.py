"""Synthetic speech corpora in the real LibriSpeech and VoxCeleb layouts, session
recordings with WhisperX transcripts (``sessions``), and the noise and RIR corpora of
augmentation in the MUSAN and RIRS_NOISES layouts (``noise``).

``voices``: the speaker model; ``files``: deterministic audio/text writers; ``corpora``:
the corpus writers, which take file names and line formats from the source modules.

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

from collections.abc import Callable
from typing import Any

from .corpora import (
    SAMPLE_RATE,
    WORDS,
    make_trials,
    synth_librispeech,
    synth_voxceleb,
)
from .files import to_pcm16, write_m4a, write_soundfile, write_text
from .noise import synth_musan, synth_rirs
from .sessions import COMMANDS, synth_sessions
from .voices import Voice, synth_voice, voice_params

# `wds-pipeline synth NAME DIR ...`: each corpus writer by name (the CLI passes its flags
# as the writer's keyword arguments). Adding a synthetic corpus: its writer and a line here.
CORPORA: dict[str, Callable[..., dict[str, Any]]] = {
    "librispeech": synth_librispeech,
    "musan": synth_musan,
    "rirs": synth_rirs,
    "sessions": synth_sessions,
    "voxceleb": synth_voxceleb,
}

__all__ = [
    "COMMANDS",
    "CORPORA",
    "SAMPLE_RATE",
    "WORDS",
    "Voice",
    "make_trials",
    "synth_librispeech",
    "synth_musan",
    "synth_rirs",
    "synth_sessions",
    "synth_voice",
    "synth_voxceleb",
    "to_pcm16",
    "voice_params",
    "write_m4a",
    "write_soundfile",
    "write_text",
]
