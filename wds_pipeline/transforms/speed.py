"""``speed``: speed perturbation (Kaldi/WeSpeaker: 0.9, 1.0 or 1.1, uniformly), resampling
with soxr so that pitch and tempo change together, as those recipes do.

:func:`speed_perturb` is the perturbation itself: ``n`` frames in, ``round(n / factor)`` out,
a tone at ``f`` Hz comes out at ``factor * f`` Hz.

Where it runs: the issue asks for it before the crop, where lengths are still free. The seam
(``loader/finish.py``) crops first, and a sample transform returns as many frames as it got
(batches are planned from the stored lengths), so :class:`Speed` perturbs the crop and fits
the result back to the crop's length: a slowed crop (factor < 1, longer) keeps its first
``n`` frames, so it holds ``n * factor`` frames of the original crop; a sped-up crop (factor
> 1, shorter) is repeated from its start to fill ``n`` frames (as WeSpeaker fills a short
utterance), so its last ``n * (1 - 1 / factor)`` frames (~9% at 1.1) repeat its beginning.
Perturbed copies as new speaker classes (``id10001@sp0.9``) need the label too, which a
sample transform does not see: not done here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr


def speed_perturb(wave: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """``wave`` played ``factor`` times faster: resampled from ``sample_rate * factor`` to
    ``sample_rate``. int16 in, int16 out (rounded and clipped; resampled in float32, since
    soxr's own int16 path is not deterministic in its last samples); float in, float32 out."""
    if factor == 1.0:
        return wave.copy() if wave.dtype == np.int16 else wave.astype(np.float32)
    out = soxr.resample(wave.astype(np.float32), sample_rate * factor, sample_rate)
    if wave.dtype == np.int16:
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Speed:
    factors: tuple[float, ...] = (0.9, 1.0, 1.1)

    def __post_init__(self) -> None:
        if not self.factors or not all(0.5 <= f <= 2.0 for f in self.factors):
            raise ValueError(f"factors must be a non-empty list of speeds in [0.5, 2], got {list(self.factors)}")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
        factor = self.factors[int(rng.integers(len(self.factors)))]
        out = speed_perturb(wave, factor, sample_rate)
        return out[: len(wave)] if len(out) >= len(wave) else np.resize(out, len(wave))
