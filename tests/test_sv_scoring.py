"""Speaker-verification scoring (wds_pipeline.sv): EER, minDCF and the DET curve against
a reference written here from the NIST definitions (every threshold, plain loops), on
randomised score sets with many ties; mean subtraction and AS-norm against direct loops;
trial lists in VoxCeleb's formats and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wds_pipeline.sv.metrics import ScoreSetError, det_curve, eer, min_dcf
from wds_pipeline.train.metrics import equal_error_rate

# ---------------------------------------------------------------------------
# The reference: NIST's definitions, one threshold at a time.


def reference_points(scores, labels):
    """(p_miss, p_fa) at every threshold t in {+inf} U {each distinct score}, strictest
    first: accept a trial when its score >= t."""
    targets = sum(1 for lab in labels if lab == 1)
    nontargets = len(labels) - targets
    points = []
    for t in [math.inf] + sorted(set(scores), reverse=True):
        misses = sum(1 for s, lab in zip(scores, labels) if lab == 1 and s < t)
        false_alarms = sum(1 for s, lab in zip(scores, labels) if lab == 0 and s >= t)
        points.append((misses / targets, false_alarms / nontargets))
    return points


def reference_eer(scores, labels):
    """Where p_miss and p_fa cross, linear between the two operating points around it."""
    points = reference_points(scores, labels)
    for (m0, f0), (m1, f1) in zip(points, points[1:]):
        if f1 >= m1:  # the first point where false alarms have caught up with misses
            # On the segment (f0, m0) -> (f1, m1): f0 + u (f1 - f0) == m0 + u (m1 - m0).
            u = (m0 - f0) / ((m0 - f0) - (m1 - f1))
            return f0 + u * (f1 - f0)
    raise AssertionError("unreachable: the last point has p_fa = 1 >= p_miss = 0")


def reference_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    costs = [c_miss * m * p_target + c_fa * f * (1 - p_target)
             for m, f in reference_points(scores, labels)]
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


# Score sets: few distinct values (many ties) or continuous ones, both labels present.
score_sets = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.one_of(st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n),
              st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n)),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
)).filter(lambda sl: 0 < sum(sl[1]) < len(sl[1]))


@settings(max_examples=300, deadline=None)
@given(score_sets)
def test_eer_equals_the_reference(sl):
    scores, labels = sl
    assert eer(scores, labels) == pytest.approx(reference_eer(scores, labels), abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(score_sets, st.sampled_from([0.01, 0.05, 0.5]), st.sampled_from([(1.0, 1.0), (10.0, 1.0), (1.0, 3.0)]))
def test_min_dcf_equals_the_reference(sl, p_target, costs):
    scores, labels = sl
    got = min_dcf(scores, labels, p_target, c_miss=costs[0], c_fa=costs[1])
    assert got == pytest.approx(reference_min_dcf(scores, labels, p_target, *costs), abs=1e-12)
    assert 0.0 <= got <= 1.0


@settings(max_examples=100, deadline=None)
@given(score_sets)
def test_det_curve_is_every_operating_point(sl):
    scores, labels = sl
    p_miss, p_fa = det_curve(scores, labels)
    ref = reference_points(scores, labels)
    np.testing.assert_array_equal(p_miss, [m for m, _ in ref])
    np.testing.assert_array_equal(p_fa, [f for _, f in ref])


def test_seeded_large_sets_with_ties_equal_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(50, 400))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(size=n) + labels, 1)  # rounding: many ties
        s, lab = scores.tolist(), labels.tolist()
        assert eer(scores, labels) == pytest.approx(reference_eer(s, lab), abs=1e-12)
        for p in (0.01, 0.05):
            assert min_dcf(scores, labels, p) == pytest.approx(reference_min_dcf(s, lab, p), abs=1e-12)


def test_all_equal_scores_are_one_threshold():
    labels = np.array([1, 0, 0, 1, 0])
    assert eer(np.full(5, 0.3), labels) == 0.5
    assert min_dcf(np.full(5, 0.3), labels, 0.01) == 1.0
    p_miss, p_fa = det_curve(np.full(5, 0.3), labels)
    assert p_miss.tolist() == [1.0, 0.0] and p_fa.tolist() == [0.0, 1.0]


def test_the_order_of_tied_trials_changes_nothing():
    # The trainer's EER before sv.metrics sorted ties by position: [1, 0] gave 0, [0, 1] gave 1.
    assert eer([0.7, 0.7], [1, 0]) == eer([0.7, 0.7], [0, 1]) == 0.5
    assert equal_error_rate(np.array([0.7, 0.7]), np.array([0, 1])) == 0.5


def test_perfect_and_inverted_scores():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert min_dcf([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 0.01) == 0.0
    assert eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0


def test_the_trainer_eer_is_the_sv_one():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    scores = rng.normal(size=1000) + labels
    assert equal_error_rate(scores, labels) == eer(scores, labels)


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 0.2], [1, 1], "got 2 targets and 0 non-targets"),
    ([0.1, 0.2], [0, 0], "got 0 targets and 2 non-targets"),
    ([0.1, float("nan")], [0, 1], "1 of 2 scores are NaN"),
    ([0.1, 0.2], [0, 2], "labels must be 0"),
    ([0.1, 0.2, 0.3], [0, 1], "3 scores but 2 labels"),
])
def test_unscorable_sets_are_named(scores, labels, match):
    with pytest.raises(ScoreSetError, match=match):
        eer(scores, labels)


def test_min_dcf_checks_its_prior():
    with pytest.raises(ScoreSetError, match="p_target must lie strictly between 0 and 1"):
        min_dcf([0.1, 0.2], [0, 1], 1.0)


# ---------------------------------------------------------------------------
# Mean subtraction and AS-norm against direct loops.


def _embeddings(rng, keys, speakers, dim=16):
    from wds_pipeline.sv.embeddings import Embeddings

    return Embeddings(np.array(keys), np.array(speakers), rng.normal(size=(len(keys), dim)).astype(np.float32))


@pytest.fixture(scope="module")
def sv_set():
    """Evaluation embeddings (12 utterances), training embeddings (7 speakers, 3-6 utterances
    each, two without a speaker) and 60 random trials."""
    rng = np.random.default_rng(11)
    ev = _embeddings(rng, [f"id1-v-{i:05d}" for i in range(12)], [f"e{i % 4}" for i in range(12)])
    train_speakers = [f"t{s}" for s in range(7) for _ in range(3 + s % 4)] + ["", ""]
    train = _embeddings(rng, [f"tr-{i}" for i in range(len(train_speakers))], train_speakers)
    a, b = rng.integers(0, 12, 60), rng.integers(0, 12, 60)
    labels = (ev.speakers[a] == ev.speakers[b]).astype(np.int8)
    labels[:2] = [0, 1]
    return ev, train, a, b, labels


def _trial_list(ev, a, b, labels):
    from wds_pipeline.sv.trials import TrialList

    return TrialList("t", "t.txt", labels, ev.keys[a], ev.keys[b])


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / math.sqrt(sum(x * x for x in v))


def _reference_cohort(train, mean_subtract):
    """(training mean, [unit cohort vector per speaker]) with loops."""
    vectors = train.vectors.astype(np.float64)
    mean = sum(vectors[i] for i in range(len(vectors))) / len(vectors)
    cohort = []
    for spk in sorted(set(train.speakers) - {""}):
        rows = [i for i in range(len(vectors)) if train.speakers[i] == spk]
        m = sum(vectors[i] for i in rows) / len(rows)
        cohort.append(_unit(m - mean if mean_subtract else m))
    return mean, cohort


def _reference_scores(ev, train, a, b, *, mean_subtract, as_norm_k=None):
    mean, cohort = _reference_cohort(train, mean_subtract)

    def prep(i):
        v = ev.vectors[i].astype(np.float64)
        return _unit(v - mean if mean_subtract else v)

    def stats(v):
        top = sorted((float(v @ c) for c in cohort), reverse=True)[:as_norm_k]
        mu = sum(top) / len(top)
        return mu, math.sqrt(sum((x - mu) ** 2 for x in top) / len(top))

    out = []
    for i, j in zip(a, b):
        s = float(prep(i) @ prep(j))
        if as_norm_k is not None:
            (me, se), (mt, st_) = stats(prep(i)), stats(prep(j))
            s = 0.5 * ((s - me) / se + (s - mt) / st_)
        out.append(s)
    return np.array(out)


def test_cohort_is_one_mean_per_training_speaker(sv_set):
    from wds_pipeline.sv.norm import Cohort

    _, train, *_ = sv_set
    cohort = Cohort.from_embeddings(train)
    assert cohort.speakers.tolist() == [f"t{s}" for s in range(7)]  # "" gives no cohort vector
    mean, ref = _reference_cohort(train, mean_subtract=False)
    np.testing.assert_allclose(cohort.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(cohort.normalized(False), np.array(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mean_subtract, as_norm_k", [(False, None), (True, None), (False, 3), (True, 4), (True, 300)])
def test_scores_equal_direct_loops(sv_set, mean_subtract, as_norm_k):
    from wds_pipeline.sv.norm import Cohort
    from wds_pipeline.sv.score import score_lists

    ev, train, a, b, labels = sv_set
    (result,) = score_lists(ev, [_trial_list(ev, a, b, labels)], cohort=Cohort.from_embeddings(train),
                            mean_subtract=mean_subtract, use_as_norm=as_norm_k is not None,
                            top_k=as_norm_k or 300)
    name = {(False, None): "cosine", (True, None): "mean_subtract", (False, 3): "as_norm"}.get(
        (mean_subtract, as_norm_k), "mean_subtract+as_norm")
    assert list(result.scores) == ["cosine", "mean_subtract", name][: 1 + mean_subtract] + \
        ([name] if as_norm_k else [])
    # k = 300 is capped at the cohort's 7 speakers (S-norm).
    ref = _reference_scores(ev, train, a, b, mean_subtract=mean_subtract,
                            as_norm_k=min(as_norm_k, 7) if as_norm_k else None)
    np.testing.assert_allclose(result.scores[name], ref, rtol=1e-5, atol=1e-6)
    for key, value in result.figures[name].items():
        want = eer(ref, labels) if key == "eer" else min_dcf(ref, labels, float(key.split("_")[-1]))
        assert value == pytest.approx(want, abs=1e-9), key


def test_as_norm_needs_a_usable_cohort(sv_set):
    from wds_pipeline.sv.embeddings import Embeddings
    from wds_pipeline.sv.norm import Cohort
    from wds_pipeline.sv.score import score_lists
    from wds_pipeline.sv.trials import TrialsError

    ev, train, a, b, labels = sv_set
    trials = [_trial_list(ev, a, b, labels)]
    with pytest.raises(TrialsError, match="need a cohort: give the training data's embeddings as --cohort"):
        score_lists(ev, trials, use_as_norm=True)
    one = Embeddings(train.keys[:3], np.array(["t0"] * 3), train.vectors[:3])
    with pytest.raises(ValueError, match="AS-norm needs at least 2 cohort speakers, got 1"):
        score_lists(ev, trials, cohort=Cohort.from_embeddings(one), use_as_norm=True)
    with pytest.raises(ValueError, match="--top-k 1: the standard deviation"):
        score_lists(ev, trials, cohort=Cohort.from_embeddings(train), use_as_norm=True, top_k=1)
    wide = Embeddings(train.keys, train.speakers, np.hstack([train.vectors, train.vectors]))
    with pytest.raises(TrialsError, match="dimension 32, the embeddings's 16"):
        score_lists(ev, trials, cohort=Cohort.from_embeddings(wide), mean_subtract=True)


def test_missing_utterances_are_counted_not_dropped(sv_set):
    from wds_pipeline.sv.score import score_lists
    from wds_pipeline.sv.trials import TrialList, TrialsError

    ev, _, a, b, labels = sv_set
    t = _trial_list(ev, a, b, labels)
    extra = TrialList("t", "t.txt", np.r_[t.labels, 1, 0, 1].astype(np.int8),
                      np.concatenate([t.enroll, ["gone-1", ev.keys[0], "gone-2"]]),
                      np.concatenate([t.test, [ev.keys[1], "gone-1", "gone-1"]]))
    (r,) = score_lists(ev, [extra])
    assert (r.trials, r.scored, r.missing, r.missing_utterances) == (63, 60, 3, 2)
    assert r.missing_examples == ["gone-1", "gone-2"]
    assert "60 of 63 trials scored; 3 left out: 2 utterances have no embedding in E (e.g. gone-1, gone-2)" \
        in r.missing_line("E")
    none = TrialList("hard", "hard.txt", np.array([1, 0], np.int8), np.array(["x", "y"]), np.array(["y", "z"]))
    with pytest.raises(TrialsError, match=r"^hard.txt: none of its 2 trials can be scored: 3 of its "
                                          r"utterances have no embedding in E \(e.g. x, y, z\); embed"):
        score_lists(ev, [none], embeddings_name="E")


# ---------------------------------------------------------------------------
# Trial lists.

VOX_LINES = ("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
             "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav\n"
             "\n"
             "1 id10309/0cYFdtyWVds/00005.wav id10309/e-IdZTBEV3U/00002.wav\n")


@pytest.mark.parametrize("name", ["veri_test2.txt", "list_test_all2.txt", "list_test_hard2.txt"])
def test_voxceleb_trial_lists_are_read_as_sample_keys(tmp_path, name):
    from wds_pipeline.format import make_key
    from wds_pipeline.sv.trials import read_trial_file, trial_key
    from wds_pipeline.train.validate import trial_key as validation_trial_key

    path = tmp_path / name
    path.write_text(VOX_LINES)
    t = read_trial_file(str(path))
    assert t.name == name.removesuffix(".txt") and t.source == str(path)
    assert t.labels.tolist() == [1, 0, 1]
    assert t.enroll.tolist() == ["id10270_x6uYqmx31kE_00001", "id10270_x6uYqmx31kE_00001",
                                 "id10309_0cYFdtyWVds_00005"]
    assert t.test.tolist() == ["id10270_8jEAjG6SegY_00008", "id10300_ize_eiCFEg0_00003",
                               "id10309_e-IdZTBEV3U_00002"]
    assert t.test[2] == make_key("id10309/e-IdZTBEV3U/00002")
    assert validation_trial_key("id10270/x6uYqmx31kE/00001.wav") == trial_key("id10270/x6uYqmx31kE/00001.wav")


@pytest.mark.parametrize("text, match", [
    ("1 a.wav b.wav\n2 a.wav c.wav\n", r"line 2: expected 'label enroll_path test_path' with label 0 or 1, got '2 a.wav c.wav'; fix or remove the line"),
    ("1 a.wav b.wav\n0 a.wav\n", r"line 2: expected 'label enroll_path test_path'"),
    ("1 a.wav b.wav extra\n", r"line 1: expected"),
    ("\n\n", r"no trial in the file"),
])
def test_malformed_trial_lists_are_one_line_errors_naming_file_and_line(tmp_path, text, match):
    from wds_pipeline.errors import ConfigError
    from wds_pipeline.sv.trials import read_trial_file

    path = tmp_path / "veri_test2.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        read_trial_file(str(path))
    assert str(e.value).startswith(str(path)) or str(e.value).startswith(f"--trials {path}")
    assert "\n" not in str(e.value)


def test_trial_lists_from_an_index_and_refusals(tmp_path):
    import json

    from shardgen import make_dataset

    from wds_pipeline.sv.trials import TrialsError, load_trial_lists

    path = make_dataset(str(tmp_path / "v"), [4], speakers=2, name="v")
    with pytest.raises(TrialsError, match="the index carries no trials"):
        load_trial_lists([path])
    with open(path) as f:
        doc = json.load(f)
    doc["wds_pipeline"]["extras"] = {"trials": {
        "veri_test2.txt": [[1, "v-s0-u0000.wav", "v-s0-u0002.wav"], [0, "v-s0-u0000.wav", "v-s0-u0001.wav"]],
        "list_test_hard2.txt": [[0, "v-s0-u0001.wav", "v-s0-u0003.wav"]],
        "list_test_all2.txt": []}}
    with open(path, "w") as f:
        json.dump(doc, f)
    lists = load_trial_lists([path])
    assert [(t.name, len(t)) for t in lists] == [("veri_test2", 2), ("list_test_hard2", 1)]
    assert lists[0].enroll.tolist() == ["v-s0-u0000", "v-s0-u0000"] and lists[0].labels.tolist() == [1, 0]
    other = tmp_path / "veri_test2.txt"
    other.write_text(VOX_LINES)
    with pytest.raises(TrialsError, match=r"two trial lists named 'veri_test2' \(.*index.json extras"):
        load_trial_lists([path, str(other)])
    with pytest.raises(TrialsError, match=r"--trials .*nope.txt: no such file"):
        load_trial_lists([str(tmp_path / "nope.txt")])
    doc["wds_pipeline"]["extras"]["trials"]["veri_test2.txt"][1] = [5, "a.wav", "b.wav"]
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(TrialsError, match=r"extras\['trials'\]\['veri_test2.txt'\]: trial 2 \[5, 'a.wav', 'b.wav'\] "
                                          r"is not \[label 0/1, enroll path, test path\]"):
        load_trial_lists([path])
