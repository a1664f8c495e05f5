"""Cosine scoring of trial lists, with the normalisations asked for, and the figures the
field reports: EER and minDCF at p_target 0.01 and 0.05 (definitions in :mod:`.metrics`).

Scoring variants, each a row of the report:

- ``cosine``: the cosine of the two embeddings;
- ``mean_subtract``: the same after taking the training mean from both (needs a cohort);
- ``as_norm`` (on ``cosine``) or ``mean_subtract+as_norm`` (on ``mean_subtract``, when both
  are asked, as WeSpeaker's recipe does): AS-norm against the cohort (:mod:`.norm`).

A trial naming an utterance that has no embedding cannot be scored: it is left out of the
figures and counted (trials and distinct utterances, with examples), never dropped
silently; a list with no trial left is a :class:`~.trials.TrialsError` naming the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embeddings import Embeddings
from .metrics import ScoreSetError, eer_of, error_counts, min_dcf_of
from .norm import Cohort, as_norm, l2_normalize
from .trials import TrialList, TrialsError

__all__ = ["P_TARGETS", "ListResult", "cosine_scores", "figures", "score_lists"]

P_TARGETS = (0.01, 0.05)  # VoxSRC's minDCF prior, and NIST SRE's usual one
MISSING_EXAMPLES = 5  # missing utterances named in the report and the printed line
_TRIALS = 1 << 15  # trials scored at once: bounds the gathered rows' memory


@dataclass
class ListResult:
    """One trial list, scored: counts, figures and scores per variant, the DET points."""

    name: str
    source: str
    trials: int  # lines in the list
    missing: int  # trials left out: an utterance has no embedding
    missing_utterances: int  # distinct utterances without an embedding
    missing_examples: list[str]
    labels: np.ndarray  # (scored,) int8: the scored trials' labels
    enroll: np.ndarray  # (scored,) str
    test: np.ndarray  # (scored,) str
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (scored,) float64
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    det: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (p_miss, p_fa)

    @property
    def scored(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        targets = int(self.labels.sum())
        return {"source": self.source, "trials": self.trials, "scored": self.scored,
                "missing": self.missing, "missing_utterances": self.missing_utterances,
                "missing_examples": self.missing_examples, "targets": targets,
                "nontargets": self.scored - targets, "results": self.figures}

    def missing_line(self, embeddings: str) -> str:
        """The printed line saying how many trials were scored and why any were not."""
        if not self.missing:
            return f"{self.name}: all {self.trials} trials scored"
        return (f"{self.name}: {self.scored} of {self.trials} trials scored; {self.missing} left out: "
                f"{self.missing_utterances} utterances have no embedding in {embeddings} (e.g. "
                f"{', '.join(self.missing_examples)})")


def figure_names() -> list[str]:
    """The keys of each variant's figures: ``eer``, ``min_dcf_0.01``, ``min_dcf_0.05``."""
    return ["eer"] + [f"min_dcf_{p:g}" for p in P_TARGETS]


def figures(scores: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """EER and minDCF at each of :data:`P_TARGETS`, and the DET points, from one sort."""
    counts = error_counts(scores, labels)
    values = [eer_of(counts)] + [min_dcf_of(counts, p) for p in P_TARGETS]
    return dict(zip(figure_names(), values)), (counts.p_miss, counts.p_fa)


def cosine_scores(unit: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of unit-length rows ``unit[rows_a]`` and ``unit[rows_b]``
    (float64), a block of trials at a time."""
    out = np.empty(len(rows_a), dtype=np.float64)
    for lo in range(0, len(rows_a), _TRIALS):
        a = unit[rows_a[lo:lo + _TRIALS]].astype(np.float64)
        b = unit[rows_b[lo:lo + _TRIALS]].astype(np.float64)
        out[lo:lo + _TRIALS] = np.einsum("ij,ij->i", a, b)
    return out


def variant_names(*, mean_subtract: bool, as_norm: bool) -> list[str]:
    names = ["cosine"] + (["mean_subtract"] if mean_subtract else [])
    return names + ([f"{names[-1]}+as_norm" if mean_subtract else "as_norm"] if as_norm else [])


def score_lists(emb: Embeddings, lists: Sequence[TrialList], *, cohort: Cohort | None = None,
                mean_subtract: bool = False, use_as_norm: bool = False, top_k: int = 300,
                embeddings_name: str = "the embeddings") -> list[ListResult]:
    """Every list of ``lists`` scored against ``emb`` in each variant asked for (see the
    module's docstring); ``cohort`` is needed by ``mean_subtract`` and ``use_as_norm``."""
    if (mean_subtract or use_as_norm) and cohort is None:
        raise TrialsError("mean subtraction and AS-norm need a cohort: give the training data's "
                          "embeddings as --cohort TRAIN_EMBEDDINGS")
    if cohort is not None and len(cohort.mean) != emb.dim:
        raise TrialsError(f"the cohort's embeddings have dimension {len(cohort.mean)}, "
                          f"{embeddings_name}'s {emb.dim}: embed both with the same model")
    unit = {"cosine": l2_normalize(emb.vectors)}
    if mean_subtract:
        assert cohort is not None
        unit["mean_subtract"] = l2_normalize(emb.vectors - cohort.mean)
    results = []
    for trials in lists:
        result, rows_e, rows_t = _present(emb, trials, embeddings_name)
        for name in variant_names(mean_subtract=mean_subtract, as_norm=use_as_norm):
            if name.endswith("as_norm"):  # AS-norm of the variant it is named after
                assert cohort is not None
                base = name.removesuffix("as_norm").removesuffix("+") or "cosine"
                result.scores[name] = as_norm(result.scores[base], rows_e, rows_t, unit[base],
                                              cohort.normalized(mean_subtract), top_k)
            else:
                result.scores[name] = cosine_scores(unit[name], rows_e, rows_t)
            try:
                result.figures[name], result.det[name] = figures(result.scores[name], result.labels)
            except ScoreSetError as e:
                raise TrialsError(f"{trials.source}: of the {result.scored} trials scored, {e}; "
                                  "score a list with both kinds of trial") from None
        results.append(result)
    return results


def _present(emb: Embeddings, trials: TrialList,
             embeddings_name: str) -> tuple[ListResult, np.ndarray, np.ndarray]:
    """``trials`` cut to the trials whose two utterances have embeddings, with the count
    of those left out, and the two sides' rows in ``emb``; no trial left is an error naming
    the list and the fix."""
    rows_e, rows_t = emb.rows(trials.enroll), emb.rows(trials.test)
    ok = (rows_e >= 0) & (rows_t >= 0)
    absent = np.unique(np.concatenate([trials.enroll[rows_e < 0], trials.test[rows_t < 0]]))
    examples = [str(k) for k in absent[:MISSING_EXAMPLES]]
    if not ok.any():
        raise TrialsError(
            f"{trials.source}: none of its {len(trials)} trials can be scored: {len(absent)} of its "
            f"utterances have no embedding in {embeddings_name} (e.g. {', '.join(examples)}); embed "
            "the index holding them (wds-pipeline embed ... its index.json) or give this list the "
            "embeddings of its own test set")
    result = ListResult(name=trials.name, source=trials.source, trials=len(trials),
                        missing=int((~ok).sum()), missing_utterances=len(absent),
                        missing_examples=examples, labels=trials.labels[ok],
                        enroll=trials.enroll[ok], test=trials.test[ok])
    return result, rows_e[ok], rows_t[ok]


REPORT_FORMAT = "wds_pipeline.sv.score"
REPORT_VERSION = 1


def file_stem(name: str) -> str:
    """A list's name as a file-name part: ``det_<stem>.png``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "trials"


def report(results: Sequence[ListResult], *, embeddings: str, cohort: str | None,
           cohort_speakers: int | None, mean_subtract: bool, use_as_norm: bool, top_k: int,
           score_files: bool = False) -> dict[str, Any]:
    """``report.json``'s document: the settings, then per list its counts, its figures per
    variant and the files written beside the report."""
    lists = {}
    for r in results:
        stem = file_stem(r.name)
        lists[r.name] = {**r.to_json(), "det_png": f"det_{stem}.png",
                         "scores_file": f"scores_{stem}.txt" if score_files else None}
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "embeddings": embeddings,
        "cohort": cohort, "cohort_speakers": cohort_speakers, "mean_subtract": mean_subtract,
        "as_norm": use_as_norm,
        "top_k": min(top_k, cohort_speakers) if use_as_norm and cohort_speakers else None,
        "p_targets": list(P_TARGETS),
        "variants": variant_names(mean_subtract=mean_subtract, as_norm=use_as_norm),
        "lists": lists,
    }


def scores_text(result: ListResult) -> bytes:
    """The scored trials, one a line: ``enroll test label`` and each variant's score."""
    names = list(result.scores)
    columns = [result.enroll, result.test, result.labels.astype(str)] + \
        [np.char.mod("%.6f", result.scores[n]) for n in names]
    lines = [" ".join(["#enroll", "test", "label"] + names)] + [" ".join(row) for row in zip(*columns)]
    return ("\n".join(lines) + "\n").encode()
