"""Verification metrics of a score set: EER, minDCF and the DET curve.

A trial is *accepted* when its score is at or above a threshold. Every distinct threshold
is one operating point: thresholds are placed only between distinct scores (trials with
tied scores are accepted or rejected together), so a score set with M distinct values has
M + 1 operating points, from "accept nothing" (p_miss = 1, p_fa = 0) to "accept every
trial" (p_miss = 0, p_fa = 1). The order of trials with equal scores never changes a
figure.

- p_miss(t) = targets scored below t / targets; p_fa(t) = non-targets at or above t /
  non-targets.
- EER: where p_miss and p_fa cross. Between the last operating point with p_fa < p_miss
  and the first with p_fa >= p_miss, the two rates are interpolated linearly (the segment
  joining the two points of the DET/ROC curve), and the EER is the rate where that
  segment meets p_miss = p_fa (as WeSpeaker's and SpeechBrain's scripts, up to their
  handling of ties). An exact crossing at an operating point gives that point's rate.
- minDCF (NIST SRE): the minimum over operating points of
  ``c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)``, divided by the cost of the
  better trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))`` (so it is <= 1).

Scores are float64 internally; one sort of N scores does all the work (O(N log N) time,
a few arrays of N values of memory).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ..errors import WdsPipelineError

__all__ = ["ErrorCounts", "ScoreSetError", "det_curve", "eer", "eer_of", "error_counts", "min_dcf", "min_dcf_of"]


class ScoreSetError(WdsPipelineError, ValueError):
    """Scores and labels that cannot be scored (no targets or no non-targets, NaN scores,
    labels other than 0/1, lengths that differ)."""


class ErrorCounts(NamedTuple):
    """Misses and false alarms at each operating point, strictest threshold first."""

    misses: np.ndarray  # int64 (M + 1,): targets rejected
    false_alarms: np.ndarray  # int64 (M + 1,): non-targets accepted
    targets: int
    nontargets: int

    @property
    def p_miss(self) -> np.ndarray:
        return self.misses / self.targets

    @property
    def p_fa(self) -> np.ndarray:
        return self.false_alarms / self.nontargets


def error_counts(scores: ArrayLike, labels: ArrayLike) -> ErrorCounts:
    """The operating points of ``scores`` (higher = more likely the same speaker) against
    ``labels`` (1 target, 0 non-target): one per distinct threshold, strictest first."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = np.asarray(labels).ravel()
    if s.shape != lab.shape:
        raise ScoreSetError(f"{s.size} scores but {lab.size} labels: give one label per score")
    if np.isnan(s).any():
        raise ScoreSetError(f"{int(np.isnan(s).sum())} of {s.size} scores are NaN: "
                            "check the embeddings they were computed from")
    is_target = lab == 1
    if not np.all(is_target | (lab == 0)):
        raise ScoreSetError("labels must be 0 (non-target) or 1 (target)")
    targets = int(is_target.sum())
    nontargets = s.size - targets
    if targets == 0 or nontargets == 0:
        raise ScoreSetError(f"EER and minDCF need target and non-target trials, got {targets} "
                            f"targets and {nontargets} non-targets")
    order = np.argsort(-s, kind="stable")  # highest score first
    s, is_target = s[order], is_target[order]
    # The last trial of each run of equal scores: a threshold just below that score
    # accepts every trial up to and including it.
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    hits = np.cumsum(is_target, dtype=np.int64)[ends]
    accepted = ends.astype(np.int64) + 1
    zero = np.zeros(1, dtype=np.int64)
    return ErrorCounts(misses=np.concatenate([[targets], targets - hits]).astype(np.int64),
                       false_alarms=np.concatenate([zero, accepted - hits]),
                       targets=targets, nontargets=nontargets)


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(p_miss, p_fa)`` at every operating point, strictest threshold first (p_miss falls
    from 1 to 0 as p_fa rises from 0 to 1): the points a DET curve is drawn through."""
    c = error_counts(scores, labels)
    return c.p_miss, c.p_fa


def eer(scores: ArrayLike, labels: ArrayLike) -> float:
    """Equal error rate (a fraction, 0..1) of ``scores`` against 0/1 ``labels``: see the
    module's docstring for the definition (ties as one threshold, linear interpolation)."""
    return eer_of(error_counts(scores, labels))


def eer_of(counts: ErrorCounts) -> float:
    p_miss, p_fa = counts.p_miss, counts.p_fa
    # Point 0 has p_fa = 0 < p_miss = 1 and the last has p_fa = 1 >= p_miss = 0: the first
    # point where p_fa catches up exists and is not point 0.
    i = int(np.argmax(p_fa >= p_miss))
    d0 = p_miss[i - 1] - p_fa[i - 1]  # > 0
    d1 = p_miss[i] - p_fa[i]  # <= 0
    t = d0 / (d0 - d1)
    return float(p_fa[i - 1] + t * (p_fa[i] - p_fa[i - 1]))


def min_dcf(scores: ArrayLike, labels: ArrayLike, p_target: float, c_miss: float = 1.0,
            c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost (NIST SRE) at prior ``p_target``: see the module's
    docstring. ``p_target`` 0.01 and 0.05 are VoxCeleb's (VoxSRC) and NIST's usual ones."""
    return min_dcf_of(error_counts(scores, labels), p_target, c_miss, c_fa)


def min_dcf_of(counts: ErrorCounts, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    if not 0.0 < p_target < 1.0:
        raise ScoreSetError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ScoreSetError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    cost = c_miss * p_target * counts.p_miss + c_fa * (1.0 - p_target) * counts.p_fa
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))
