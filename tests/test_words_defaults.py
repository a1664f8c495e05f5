"""Per-mode defaults and the all-rejected message, as a new user meets them on the command
line: `build sessions --mode words` with no other option writes every word of the
synthetic sessions (its own --min-duration default, shown by --help, recorded like any
value); a flag or a YAML key still wins; a build that rejects everything says why in one
line, naming the option that would change it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run

from wds_pipeline import format as fmt
from wds_pipeline.builder import build_dataset
from wds_pipeline.cli import main
from wds_pipeline.index import load_index
from wds_pipeline.records import TOO_SHORT, Reject, explain_rejects
from wds_pipeline.sources.sessions import WORD_MIN_DURATION

QUIET = ("--workers", "1", "--no-progress")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> tuple[Path, set[str]]:
    """The synthetic sessions (written by the CLI) and the key of every word of their
    WhisperX JSONs, timed or not (untimed words get the gap around them by default)."""
    root = tmp_path_factory.mktemp("sessions")
    assert main(["synth", "sessions", str(root / "corpus")]) == 0
    keys = set()
    for folder in sorted((root / "corpus").iterdir()):
        doc = json.loads((folder / "audio_16k.json").read_text())
        for i, seg in enumerate(doc["segments"]):
            keys |= {f"{folder.name}_w-{i:05d}-{j:03d}" for j in range(len(seg["words"]))}
    return root / "corpus", keys


def _keys(split: Path) -> list[str]:
    idx = load_index(str(split))
    keys = []
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            keys += [k for k, _ in fmt.iter_samples(f, source=idx.shard_url(i))]
    return keys


def test_words_mode_with_no_other_option_writes_every_word(capsys, sessions, tmp_path):
    root, words = sessions
    code, out, err = run(capsys, "build", "sessions", root, tmp_path / "out", "--mode", "words",
                         *QUIET)
    assert code == 0, err
    assert f"{len(words)} inputs, {len(words)} written, 0 rejected" in out
    keys = _keys(tmp_path / "out" / "train")
    assert len(keys) == len(words) and set(keys) == words
    idx = load_index(str(tmp_path / "out" / "train"))
    assert idx.preprocessing["min_duration"] == WORD_MIN_DURATION == 0.05
    assert idx.rejected == []


def test_min_duration_given_by_flag_or_yaml_still_wins(capsys, sessions, tmp_path):
    root, words = sessions
    (tmp_path / "b.yaml").write_text("mode: words\nmin-duration: 0.45\n")
    for name, given in (("flag", ("--mode", "words", "--min-duration", "0.45")),
                        ("yaml", ("--config", tmp_path / "b.yaml"))):
        code, out, err = run(capsys, "build", "sessions", root, tmp_path / name, *given, *QUIET)
        assert code == 0, err
        idx = load_index(str(tmp_path / name / "train"))
        assert idx.preprocessing["min_duration"] == 0.45
        assert idx.counts.inputs == len(words) and 0 < idx.counts.rejected < len(words)
        assert {r.reason.split(" (")[0] for r in idx.rejected} == {TOO_SHORT.phrase}
    assert _keys(tmp_path / "flag" / "train") == _keys(tmp_path / "yaml" / "train")


def test_a_mode_default_is_recorded_as_the_value_it_is(capsys, sessions, tmp_path):
    """The fingerprint sees the value, not where it came from: builds that set
    --min-duration keep their fingerprint (and resume), and so do other modes' defaults."""
    root, _ = sessions

    def fingerprint(name: str, *given: str) -> str:
        code, _, err = run(capsys, "build", "sessions", root, tmp_path / name, *given, *QUIET)
        assert code == 0, err
        return load_index(str(tmp_path / name / "train")).build_fingerprint

    assert fingerprint("w", "--mode", "words") == \
        fingerprint("w005", "--mode", "words", "--min-duration", "0.05")
    assert fingerprint("s", "--mode", "segments") == \
        fingerprint("s05", "--mode", "segments", "--min-duration", "0.5")
    # The API without options: the command line's defaults for these source options.
    r = build_dataset("sessions", str(root), str(tmp_path / "api"),
                      source_options={"mode": "words"})
    assert r.counts.rejected == 0
    assert load_index(str(tmp_path / "api" / "train")).build_fingerprint == \
        load_index(str(tmp_path / "w" / "train")).build_fingerprint


def test_help_shows_both_defaults(capsys):
    code, out, _ = run(capsys, "build", "sessions", "--help")
    assert code == 0
    assert "(default: 0.5; 0.05 with --mode words)" in " ".join(out.split())
    code, out, _ = run(capsys, "build", "librispeech", "--help")  # no --mode there
    assert "(default: 0.5)" in " ".join(out.split())


def test_a_build_that_rejects_everything_names_the_reason_and_the_option(capsys, sessions,
                                                                         tmp_path):
    root, words = sessions
    n = len(words)
    for _ in range(2):  # the rerun finds it "already complete": the same message
        code, out, err = run(capsys, "build", "sessions", root, tmp_path / "out", "--mode",
                             "words", "--min-duration", "3", *QUIET)
        assert code == 1 and "Traceback" not in err
        assert err.splitlines()[-1] == (
            f"wds-pipeline: nothing was written: every input was rejected: {n} of {n} shorter "
            "than --min-duration 3 s; lower --min-duration (words are often 0.2-0.6 s; 0 keeps "
            "every input)")
        assert f"{n} inputs, 0 written, {n} rejected" in out
    code, _, err = run(capsys, "build", "sessions", root, tmp_path / "score", "--mode", "words",
                       "--min-score", "2", *QUIET)
    assert code == 1 and err.splitlines()[-1] == (
        f"wds-pipeline: nothing was written: every input was rejected: {n} of {n} aligned "
        "below --min-score 2; lower --min-score, or leave it out")


def test_explain_rejects_counts_the_most_common_reason():
    rejects = [Reject("a.wav", "cannot decode: Error opening 'a.wav'", "decode"),
               Reject("b.wav", "cannot decode: Error opening 'b.wav'", "decode"),
               Reject("c.wav", "shorter than --min-duration (0.100 s < 0.5 s after "
                               "preprocessing)", "filter"),
               Reject("d.wav", "odd: something else")]
    assert explain_rejects(rejects, 1234, {}) == (
        "2 of 1,234 that cannot be decoded; `wds-pipeline inspect OUT` lists each file and why")
    assert explain_rejects(rejects[2:3], 1, {}) == (  # an option value missing: the phrase
        "1 of 1 shorter than --min-duration; lower --min-duration (0 keeps every input)")
    # The hint on word lengths only where word clips are built (it once showed for every
    # source, e.g. a VoxCeleb build whose utterances were all under --min-duration).
    assert explain_rejects(rejects[2:3], 1, {"min_duration": 4.0, "mode": "utterances"}) == (
        "1 of 1 shorter than --min-duration 4 s; lower --min-duration (0 keeps every input)")
    assert explain_rejects(rejects[2:3], 1, {"min_duration": 3.0, "mode": "words"}) == (
        "1 of 1 shorter than --min-duration 3 s; lower --min-duration (words are often 0.2-0.6 s; "
        "0 keeps every input)")
    assert explain_rejects(rejects[3:], 1, {}) == "1 of 1: odd: something else"
