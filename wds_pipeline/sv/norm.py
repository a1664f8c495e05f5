"""Score normalisation against a cohort of training speakers: mean subtraction and AS-norm.

The cohort is drawn from embeddings of the *training* data (never of the trials'
speakers), as in WeSpeaker's VoxCeleb recipe:

- the **training mean**: the mean of every training utterance's embedding. Mean
  subtraction takes it from each embedding before the cosine (which renormalises), a
  shift that centres the evaluation embeddings where training put them;
- the **cohort**: one vector per training speaker, the mean of that speaker's utterance
  embeddings (``tools/vector_mean.py`` in WeSpeaker), less the training mean when mean
  subtraction is on.

**AS-norm** (adaptive symmetric score normalisation; Matejka et al. 2017, WeSpeaker's
``score_norm.py``): each side of a trial is scored (cosine) against every cohort vector; the
top-k of those scores give that side a mean and a standard deviation (population, ddof 0),
and the trial's score ``s`` becomes ``((s - mean_e) / std_e + (s - mean_t) / std_t) / 2``.
k is capped at the cohort's size (k = size is plain S-norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .embeddings import Embeddings

__all__ = ["Cohort", "as_norm", "l2_normalize", "top_k_stats"]

# Rows of cohort scores computed at once: bounds memory at (rows x cohort) float32.
_ROWS = 2048


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float32); an all-zero row stays zero."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class Cohort:
    """What the training embeddings give scoring: their mean and one mean per speaker."""

    mean: np.ndarray  # (D,) float64: the mean training embedding
    speakers: np.ndarray  # (S,) str, sorted
    vectors: np.ndarray  # (S, D) float64: each speaker's mean embedding (raw)

    @classmethod
    def from_embeddings(cls, train: Embeddings, *, source: str = "the cohort") -> Cohort:
        """The cohort of ``train``; utterances without a speaker ("") count towards the mean
        but give no cohort vector."""
        if not len(train):
            raise ConfigError(f"{source}: no embedding to draw a cohort from; give the embeddings "
                              "of the training data (wds-pipeline embed ... on the training index)")
        vectors = np.asarray(train.vectors, dtype=np.float64)
        labelled = train.speakers != ""
        speakers, inverse = np.unique(train.speakers[labelled], return_inverse=True)
        sums = np.zeros((len(speakers), vectors.shape[1]))
        np.add.at(sums, inverse, vectors[labelled])
        counts = np.bincount(inverse, minlength=len(speakers))
        return cls(mean=vectors.mean(axis=0), speakers=speakers, vectors=sums / counts[:, None])

    def normalized(self, mean_subtract: bool) -> np.ndarray:
        """The cohort vectors as cosine scoring uses them: less the training mean when
        ``mean_subtract``, then unit length."""
        return l2_normalize(self.vectors - self.mean if mean_subtract else self.vectors)


def top_k_stats(vectors: np.ndarray, cohort: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 0) of each row's ``top_k`` highest scores against
    ``cohort`` (both unit-length rows: the scores are cosines), float64 (R,) each."""
    size = len(cohort)
    k = min(top_k, size)
    mean = np.empty(len(vectors), dtype=np.float64)
    std = np.empty(len(vectors), dtype=np.float64)
    for lo in range(0, len(vectors), _ROWS):
        scores = vectors[lo:lo + _ROWS] @ cohort.T
        top = np.partition(scores, size - k, axis=1)[:, size - k:].astype(np.float64)
        mean[lo:lo + _ROWS] = top.mean(axis=1)
        std[lo:lo + _ROWS] = top.std(axis=1)
    return mean, std


def as_norm(scores: np.ndarray, enroll_rows: np.ndarray, test_rows: np.ndarray, vectors: np.ndarray,
            cohort: np.ndarray, top_k: int) -> np.ndarray:
    """AS-norm of the trial ``scores``: trial i compared ``vectors[enroll_rows[i]]`` with
    ``vectors[test_rows[i]]`` (unit-length rows, as ``cohort``'s). Each utterance's cohort
    statistics are computed once, however many trials name it."""
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: AS-norm needs k >= 1 cohort scores per side")
    if len(cohort) < 2:
        raise ConfigError(f"AS-norm needs at least 2 cohort speakers, got {len(cohort)}: give the "
                          "embeddings of the training data, with their speakers, as --cohort")
    if min(top_k, len(cohort)) < 2:
        raise ConfigError("--top-k 1: the standard deviation of one cohort score is 0; use k >= 2")
    rows, inverse = np.unique(np.concatenate([enroll_rows, test_rows]), return_inverse=True)
    mean, std = top_k_stats(vectors[rows], cohort, top_k)
    e, t = inverse[:len(enroll_rows)], inverse[len(enroll_rows):]
    s = np.asarray(scores, dtype=np.float64)
    return 0.5 * ((s - mean[e]) / std[e] + (s - mean[t]) / std[t])
