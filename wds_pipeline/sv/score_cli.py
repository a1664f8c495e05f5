"""``wds-pipeline score``: trial lists scored on an embeddings folder, with a report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from .. import storage
from ..errors import EXIT_OK, ConfigError
from ..storage.urls import join_url

SCORE_EPILOG = """\
examples:
  wds-pipeline score emb/test --trials voxceleb1/veri_test2.txt --out scores
  wds-pipeline score emb/test --trials voxceleb1/veri_test2.txt voxceleb1/list_test_hard2.txt \\
      voxceleb1/list_test_all2.txt --cohort emb/train --mean-subtract --as-norm --out scores
  wds-pipeline score gs://bucket/emb/test --trials shards/test/index.json --out gs://bucket/scores

EMBEDDINGS and --cohort are folders written by `wds-pipeline embed` (the cohort: embeddings
of the training data, one mean per training speaker). --trials takes VoxCeleb trial lists
('label enroll_path test_path' lines: veri_test2.txt, list_test_hard2.txt,
list_test_all2.txt) or an index.json, whose extras['trials'] lists are all scored.

Writes DIR/det_<list>.png per list (and DIR/scores_<list>.txt with --write-scores), then
DIR/report.json: per list the trials scored and left out, and EER and minDCF (p_target 0.01
and 0.05) of each scoring asked for (cosine; mean_subtract; as_norm). A trial naming an
utterance without an embedding is left out and counted, in the report and on the screen;
a list with no trial left is an error (exit 2).
"""


def add_score_command(sub: Any, raw: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("score", help="score trial lists on embeddings: EER, minDCF, DET plot",
                       epilog=SCORE_EPILOG, formatter_class=raw,
                       description="Cosine scores of speaker-verification trials, optionally "
                                   "mean-subtracted and AS-normalised, with EER, minDCF and DET curves.")
    p.add_argument("embeddings", metavar="EMBEDDINGS", help="embeddings folder (wds-pipeline embed)")
    p.add_argument("--trials", nargs="+", required=True, metavar="FILE",
                   help="trial lists (veri_test2.txt, ...) or index.json files carrying them")
    p.add_argument("--cohort", metavar="TRAIN_EMBEDDINGS", default=None,
                   help="embeddings of the training data: the mean and the speaker cohort")
    p.add_argument("--mean-subtract", action="store_true",
                   help="also score with the training mean taken from every embedding (needs --cohort)")
    p.add_argument("--as-norm", action="store_true",
                   help="also score with AS-norm against the cohort's speakers (needs --cohort)")
    p.add_argument("--top-k", type=_positive, default=300, metavar="K",
                   help="cohort scores per side that AS-norm keeps (default 300, at most the cohort's speakers)")
    p.add_argument("--write-scores", action="store_true",
                   help="also write DIR/scores_<list>.txt: every scored trial with its scores")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json and the plots")
    p.set_defaults(handler=cmd_score)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def cmd_score(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    run_score(args.embeddings, args.trials, args.out, cohort=args.cohort, mean_subtract=args.mean_subtract,
              use_as_norm=args.as_norm, top_k=args.top_k, write_scores=args.write_scores)
    return EXIT_OK


def run_score(embeddings: str, trials: Sequence[str], out: str, *, cohort: str | None = None,
              mean_subtract: bool = False, use_as_norm: bool = False, top_k: int = 300,
              write_scores: bool = False, log: Callable[[str], None] = print,
              **storage_options: Any) -> dict[str, Any]:
    """What ``wds-pipeline score`` does, on any storage: the trial lists scored on the
    embeddings folder ``embeddings``, the plots (and score files) written under ``out``, then
    ``out/report.json``; returns the report. ``log`` gets the lines the command prints."""
    from ..plots import require_matplotlib
    from .det_plot import plot_det
    from .embeddings import load_embeddings
    from .norm import Cohort
    from .score import report, score_lists, scores_text
    from .trials import load_trial_lists

    require_matplotlib()  # the DET plots: say so before any work, not after it
    if (mean_subtract or use_as_norm) and not cohort:
        flag = "--mean-subtract" if mean_subtract else "--as-norm"
        raise ConfigError(f"{flag} needs --cohort TRAIN_EMBEDDINGS (embeddings of the training data)")
    so = storage_options
    lists = load_trial_lists(trials, **so)  # a bad list fails before any embedding is read
    emb = load_embeddings(embeddings, **so)
    pool = Cohort.from_embeddings(load_embeddings(cohort, **so), source=cohort) if cohort else None
    results = score_lists(emb, lists, cohort=pool, mean_subtract=mean_subtract, use_as_norm=use_as_norm,
                          top_k=top_k, embeddings_name=embeddings)
    doc = report(results, embeddings=embeddings, cohort=cohort,
                 cohort_speakers=len(pool.speakers) if pool is not None else None,
                 mean_subtract=mean_subtract, use_as_norm=use_as_norm, top_k=top_k, score_files=write_scores)
    for r in results:
        log(r.missing_line(embeddings))
        for name, f in r.figures.items():
            log(f"  {name}: EER {100 * f['eer']:.2f}%, minDCF(0.01) {f['min_dcf_0.01']:.4f}, "
                f"minDCF(0.05) {f['min_dcf_0.05']:.4f}")
        entry = doc["lists"][r.name]
        plot_det(r.name, r.det, r.figures, join_url(out, entry["det_png"]), **so)
        if write_scores:
            storage.write_bytes_atomic(join_url(out, entry["scores_file"]), scores_text(r), **so)
    # Last: a report.json vouches for the plots and score files beside it.
    url = join_url(out, "report.json")
    storage.write_bytes_atomic(url, (json.dumps(doc, indent=1) + "\n").encode(), **so)
    log(f"report: {url}")
    return doc
