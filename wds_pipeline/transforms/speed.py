"""``speed``: speed perturbation (Kaldi/WeSpeaker: 0.9, 1.0 or 1.1, uniformly), resampling
with soxr so that pitch and tempo change together, as those recipes do.

:func:`speed_perturb` is the perturbation itself: ``n`` frames in, ``round(n / factor)`` out
(:func:`perturbed_length`), a tone at ``f`` Hz comes out at ``factor * f`` Hz.

Where the loader runs it (``loader/finish.py``): as a stage of its own, before the crop
(where lengths are still free) and so before every other sample transform, wherever
``speed`` stands in ``loader.sample_transforms``. The factor is drawn per (loader seed,
epoch, sample id) by :meth:`Speed.draw`, a counter-based hash that numpy evaluates for a
whole batch of ids at once (the main process relabels batches with it, see ``as_classes``).

- With a crop of ``crop`` frames: the sample is the perturbed utterance (``m =
  round(n / factor)`` frames) cropped at the loader's seeded offset over ``m - crop``, without
  resampling the utterance: :func:`perturbed_window` resamples only the original frames the
  crop comes from, plus the resampler's filter support on each side (:data:`MARGIN`), and
  returns exactly ``crop`` frames, equal to ``speed_perturb(utterance)[o : o + crop]`` up to
  float32 rounding inside soxr (at most one int16 step). The offset ``o`` is rounded down
  to a multiple of ``q`` (``factor = p / q`` in lowest terms: 10 frames at 0.9 and 1.1) so
  that the window starts on a frame of the original. A sample whose perturbed length is at
  most the crop is perturbed whole and, like any sample shorter than the crop, zero-padded
  by the batch (its length in ``batch.lengths`` is the perturbed length).
- Without a crop (whole samples): batches are planned from the stored lengths before
  anything is read, so the perturbed sample is fitted back to its stored length
  (:meth:`Speed.fit`): a slowed sample (factor < 1, longer) keeps its first ``n`` frames,
  so it holds ``n * factor`` frames of the original; a sped-up one (factor > 1, shorter) is
  repeated from its start to fill ``n`` frames (as WeSpeaker fills a short utterance), so
  its last ``n * (1 - 1 / factor)`` frames (~9% at 1.1) repeat its beginning.

``as_classes: true`` makes each perturbed copy a speaker class of its own, as WeSpeaker
does: a sample perturbed by the ``i``-th distinct factor other than 1.0 (in the order of
``factors``, ``i`` from 1) gets label ``label + i * num_classes``, and the loader's label map
gains a block of names per such factor, ``id10001@sp0.9``, ``id10001@sp1.1``
(:meth:`Speed.class_names`), so ``num_classes`` and the model sized from it follow. The
loader relabels in its main process, after mapping several datasets into one label space.

``Speed.__call__`` is the seam's form of a sample transform (its factor from the generator
it is given, fitted back like a whole sample); the loader does not call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np
import soxr

from ..errors import ConfigError
from .registry import TransformSpec
from .sample import SAMPLE_TRANSFORMS

# Output frames resampled beyond each edge of a crop's window (at factors >= 1; divided by
# the factor below 1): soxr's HQ filter reaches ~100 frames (measured: windows with 96
# output frames of margin equal the whole utterance's resampling within float32 rounding at
# 0.9-2.0, 192 at 0.5), so 256 leaves it room.
MARGIN = 256
# Factors are ratios p / q with q <= this (multiples of 0.01 are, and 2/3): a window then
# starts on a frame of the original at every q-th output frame.
MAX_DENOMINATOR = 100

_MASK = (1 << 64) - 1
_STREAM = 0x5BEED  # this draw's own stream: apart from every other hash of (seed, epoch, id)
Ints = TypeVar("Ints", int, np.ndarray)


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


def _ratio(factor: float) -> tuple[int, int]:
    r = Fraction(factor).limit_denominator(MAX_DENOMINATOR)
    return r.numerator, r.denominator


def perturbed_length(n: int, factor: float) -> int:
    """Frames :func:`speed_perturb` returns for ``n`` frames: ``round(n / factor)``, halves up
    (soxr's rule), in exact integers."""
    p, q = _ratio(factor)
    return (2 * n * q + p) // (2 * p)


def perturbed_window(wave: np.ndarray, factor: float, offset: int, crop: int,
                     sample_rate: int) -> tuple[np.ndarray, int]:
    """Frames ``[o, o + crop)`` of ``speed_perturb(wave, factor)``, ``o`` being ``offset``
    rounded down to a multiple of ``q`` (``factor = p / q``), resampling only the frames of
    ``wave`` they come from (``o * factor`` on) and :data:`MARGIN` output frames' worth on
    each side. Returns them and where they start in ``wave``. Needs ``offset + crop <=
    perturbed_length(len(wave), factor)``."""
    p, q = _ratio(factor)
    j = offset // q
    start = j * p  # output frame j * q is input frame j * p, exactly (soxr is zero-phase)
    side = -(-math.ceil(MARGIN / min(factor, 1.0)) // q) * p  # whole multiples of p
    lo = max(0, start - side)
    hi = min(len(wave), start + -(-crop * p // q) + side)
    out = speed_perturb(wave[lo:hi], factor, sample_rate)
    k = (start - lo) // p * q
    return out[k : k + crop], start


def _mix(x: Ints) -> Ints:
    """splitmix64's finaliser, on a Python int or a uint64 array alike (arrays wrap)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Speed:
    factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    # Each perturbed copy a class of its own (``id10001@sp0.9``), as WeSpeaker does.
    as_classes: bool = False

    def __post_init__(self) -> None:
        if not self.factors or not all(0.5 <= f <= 2.0 for f in self.factors):
            raise ValueError(f"factors must be a non-empty list of speeds in [0.5, 2], got {list(self.factors)}")
        odd = [f for f in self.factors if abs(Fraction(f) - Fraction(*_ratio(f))) > 1e-12]
        if odd:
            raise ValueError(f"factors must be ratios p/q with q <= {MAX_DENOMINATOR} (any multiple of 0.01 is: "
                             f"a crop's window then starts on a frame of the original), got {odd}")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
        return self.fit(wave, self.factors[int(rng.integers(len(self.factors)))], sample_rate)

    @staticmethod
    def fit(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
        """``wave`` perturbed and fitted back to its length (a whole sample: see the module)."""
        out = speed_perturb(wave, factor, sample_rate)
        return out[: len(wave)] if len(out) >= len(wave) else np.resize(out, len(wave))

    def draw(self, seed: int, epoch: int, gids: Ints) -> Ints:
        """Which of ``factors`` sample ``gids`` gets in ``epoch`` (an index; a Python int for
        an int id, an int64 array for a uint64 array of ids): a pure function of (seed,
        epoch, id), whichever process asks, in whatever order."""
        key = _mix(_mix((seed & _MASK) ^ _STREAM) ^ (epoch & _MASK))
        h = _mix(gids ^ key)
        if isinstance(h, np.ndarray):
            return (h % np.uint64(len(self.factors))).astype(np.int64)
        return h % len(self.factors)

    def _others(self) -> list[float]:
        return list(dict.fromkeys(f for f in self.factors if f != 1.0))

    def class_names(self, names: Sequence[str]) -> list[str]:
        """The label map with perturbed copies as classes: ``names``, then a block of
        ``name@sp{factor}`` per distinct factor other than 1.0, in the order of ``factors``."""
        return [*names, *(f"{n}@sp{f:g}" for f in self._others() for n in names)]

    def relabel(self, labels: np.ndarray, seed: int, epoch: int, gids: np.ndarray, num_classes: int) -> np.ndarray:
        """Labels of samples ``gids`` in ``epoch`` in the space of :meth:`class_names`
        (``num_classes``: the names without copies); a negative label (none) stays."""
        others = self._others()
        block = np.array([0 if f == 1.0 else 1 + others.index(f) for f in self.factors], dtype=np.int64)
        shift = block[self.draw(seed, epoch, gids.astype(np.uint64))] * num_classes
        return np.where(labels >= 0, labels + shift, labels)


def configured_speed(specs: Sequence[TransformSpec],
                     where: str = "loader.sample_transforms") -> tuple[Speed | None, int]:
    """The :class:`Speed` among ``specs`` and its position, or ``(None, -1)``; speed given
    twice is a ConfigError (the loader perturbs once, before the crop)."""
    at = [i for i, s in enumerate(specs) if s.name == "speed"]
    if len(at) > 1:
        raise ConfigError(f"{where}: speed is given {len(at)} times (at {at}); give it once")
    if not at:
        return None, -1
    return SAMPLE_TRANSFORMS.build(specs[at[0]], f"{where}[{at[0]}]"), at[0]
