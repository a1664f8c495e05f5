"""``wds-pipeline score`` end to end: embeddings written in the embeddings format, trial
lists as files and in an index, the report against the library's figures, the DET PNG,
missing utterances counted, and the one-line errors with their exit status."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from cli_run import cli
from shardgen import make_dataset
from test_reliability_disk_full import fill

from wds_pipeline.cli import main
from wds_pipeline.errors import EXIT_USAGE
from wds_pipeline.format import make_key
from wds_pipeline.sv.embeddings import Embeddings, load_embeddings, write_embeddings
from wds_pipeline.sv.norm import Cohort
from wds_pipeline.sv.score import P_TARGETS, score_lists
from wds_pipeline.sv.trials import load_trial_lists

DIM = 24


def _path(spk: int, utt: int) -> str:
    return f"id1{spk:04d}/vid{utt % 2}/{utt:05d}.wav"


def _speaker_embeddings(rng, speakers, utts, prefix):
    """Utterances of each speaker scattered around the speaker's own direction."""
    keys, spks, vecs = [], [], []
    for s in speakers:
        centre = rng.normal(size=DIM)
        for u in range(utts):
            keys.append(make_key(_path(s, u)[:-4]) if prefix == "eval" else f"{prefix}-{s}-{u}")
            spks.append(f"id1{s:04d}")
            vecs.append(centre + 1.3 * rng.normal(size=DIM))
    return Embeddings(np.array(keys), np.array(spks), np.array(vecs, dtype=np.float32))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Evaluation embeddings (6 speakers x 5), training embeddings (9 speakers x 4), two
    trial list files (one naming 2 utterances that were not embedded, in 3 trials) and an
    index carrying a third list in extras['trials']."""
    root = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(5)
    write_embeddings(str(root / "emb"), _speaker_embeddings(rng, range(6), 5, "eval"))
    write_embeddings(str(root / "train"), _speaker_embeddings(rng, range(100, 109), 4, "train"))
    pairs = [(a, b) for a in range(30) for b in range(a + 1, 30)]
    picked = [pairs[i] for i in rng.choice(len(pairs), 120, replace=False)]

    def line(a, b):
        return f"{int(a // 5 == b // 5)} {_path(a // 5, a % 5)} {_path(b // 5, b % 5)}\n"

    veri = "".join(line(a, b) for a, b in picked[:80])
    veri += f"1 {_path(0, 0)} {_path(0, 7)}\n0 {_path(9, 1)} {_path(1, 1)}\n1 {_path(9, 1)} {_path(0, 3)}\n"
    (root / "veri_test2.txt").write_text(veri)
    (root / "list_test_hard2.txt").write_text("".join(line(a, b) for a, b in picked[80:]))
    index = make_dataset(str(root / "v"), [2], speakers=2, name="v")
    doc = json.loads(open(index).read())
    doc["wds_pipeline"]["extras"] = {"trials": {"list_test_all2.txt": [
        [int(a // 5 == b // 5), _path(a // 5, a % 5), _path(b // 5, b % 5)] for a, b in pairs[:60]]}}
    open(index, "w").write(json.dumps(doc))
    trials = [str(root / "veri_test2.txt"), str(root / "list_test_hard2.txt"), index]
    return root, trials


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_plots_and_scores_equal_the_library(setup, capsys):
    root, trials = setup
    out = root / "out"
    rc = main(["score", str(root / "emb"), "--trials", *trials, "--cohort", str(root / "train"),
               "--mean-subtract", "--as-norm", "--top-k", "5", "--write-scores", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    variants = ["cosine", "mean_subtract", "mean_subtract+as_norm"]
    assert {k: v for k, v in doc.items() if k != "lists"} == {
        "format": "wds_pipeline.sv.score", "version": 1, "embeddings": str(root / "emb"),
        "cohort": str(root / "train"), "cohort_speakers": 9, "mean_subtract": True, "as_norm": True,
        "top_k": 5, "p_targets": [0.01, 0.05], "variants": variants}
    assert list(doc["lists"]) == ["veri_test2", "list_test_hard2", "list_test_all2"]

    # The library on the same inputs, read back through the same readers.
    expected = score_lists(load_embeddings(str(root / "emb")), load_trial_lists(trials),
                           cohort=Cohort.from_embeddings(load_embeddings(str(root / "train"))),
                           mean_subtract=True, use_as_norm=True, top_k=5)
    for r in expected:
        entry = doc["lists"][r.name]
        assert set(entry) == {"source", "trials", "scored", "missing", "missing_utterances",
                              "missing_examples", "targets", "nontargets", "results", "det_png",
                              "scores_file"}
        assert entry["results"] == r.figures
        assert set(entry["results"]) == set(variants)
        assert all(set(f) == {"eer", "min_dcf_0.01", "min_dcf_0.05"} for f in entry["results"].values())
        assert entry["targets"] + entry["nontargets"] == entry["scored"] == r.scored
        assert _png_size(out / entry["det_png"]) == (600, 600)
        lines = (out / entry["scores_file"]).read_text().splitlines()
        assert lines[0] == "#enroll test label " + " ".join(variants)
        assert len(lines) == 1 + r.scored
        first = lines[1].split()
        assert first[:3] == [r.enroll[0], r.test[0], str(r.labels[0])]
        assert [float(x) for x in first[3:]] == pytest.approx([r.scores[v][0] for v in variants], abs=1e-6)
    assert P_TARGETS == (0.01, 0.05)

    veri = doc["lists"]["veri_test2"]
    assert (veri["trials"], veri["scored"], veri["missing"], veri["missing_utterances"]) == (83, 80, 3, 2)
    assert veri["missing_examples"] == ["id10000_vid1_00007", "id10009_vid1_00001"]
    hard, index_list = doc["lists"]["list_test_hard2"], doc["lists"]["list_test_all2"]
    assert (hard["trials"], hard["scored"], hard["missing"]) == (40, 40, 0)
    assert (index_list["trials"], index_list["missing"]) == (60, 0)
    assert index_list["source"].endswith("index.json extras['trials']['list_test_all2.txt']")
    assert ("veri_test2: 80 of 83 trials scored; 3 left out: 2 utterances have no embedding in "
            f"{root / 'emb'} (e.g. id10000_vid1_00007, id10009_vid1_00001)") in printed
    assert "list_test_hard2: all 40 trials scored" in printed
    assert printed.count(" EER ") == 9  # 3 lists x 3 variants
    assert printed.rstrip().endswith(f"report: {out / 'report.json'}")


def test_cosine_alone_needs_no_cohort(setup):
    root, trials = setup
    out = root / "plain"
    assert main(["score", str(root / "emb"), "--trials", trials[1], "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["variants"] == ["cosine"] and doc["cohort"] is None and doc["top_k"] is None
    assert sorted(p.name for p in out.iterdir()) == ["det_list_test_hard2.png", "report.json"]
    assert doc["lists"]["list_test_hard2"]["scores_file"] is None


def test_a_list_with_no_embedded_utterance_is_one_line_exit_2(setup):
    root, _ = setup
    gone = root / "veri_test.txt"
    gone.write_text(f"1 {_path(50, 0)} {_path(50, 1)}\n0 {_path(50, 0)} {_path(51, 0)}\n")
    out = root / "none"
    p = cli("score", root / "emb", "--trials", gone, "--out", out)
    assert p.returncode == EXIT_USAGE, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"wds-pipeline: error: {gone}: none of its 2 trials can be scored: 3 of its "
                               f"utterances have no embedding in {root / 'emb'} (e.g. id10050_vid0_00000")
    assert "wds-pipeline embed" in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--as-norm"], "--as-norm needs --cohort TRAIN_EMBEDDINGS"),
    (["--mean-subtract"], "--mean-subtract needs --cohort TRAIN_EMBEDDINGS"),
])
def test_normalisation_without_a_cohort_is_a_usage_error(setup, capsys, extra, message):
    root, trials = setup
    assert main(["score", str(root / "emb"), "--trials", trials[1], *extra, "--out", str(root / "x")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"wds-pipeline: error: {message} (embeddings of the training data)\n"


def test_a_malformed_trial_line_names_file_and_line(setup, capsys):
    root, _ = setup
    bad = root / "bad.txt"
    bad.write_text(f"1 {_path(0, 0)} {_path(0, 1)}\nyes {_path(0, 0)} {_path(0, 2)}\n")
    assert main(["score", str(root / "emb"), "--trials", str(bad), "--out", str(root / "y")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"wds-pipeline: error: {bad} line 2: expected 'label enroll_path test_path'")
    assert err.count("\n") == 1


@pytest.mark.gcs
def test_embeddings_trials_and_report_on_the_gcs_emulator(setup, gcs_emulator):
    """Every read and write through storage: embeddings, cohort and trial list in a bucket,
    the report and the plot written there; the same figures as from local files."""
    from wds_pipeline.sv.score_cli import run_score

    root, trials = setup
    so = gcs_emulator.storage_options
    for name in ("emb", "train"):
        write_embeddings(gcs_emulator.gs(f"sv/{name}"), load_embeddings(str(root / name)), **so)
    gcs_emulator.fs.pipe(f"{gcs_emulator.bucket}/sv/veri_test2.txt", (root / "veri_test2.txt").read_bytes())
    out, lines = gcs_emulator.gs("sv/out"), []
    doc = run_score(gcs_emulator.gs("sv/emb"), [gcs_emulator.gs("sv/veri_test2.txt")], out,
                    cohort=gcs_emulator.gs("sv/train"), use_as_norm=True, top_k=5, log=lines.append, **so)
    stored = json.loads(gcs_emulator.fs.cat(f"{gcs_emulator.bucket}/sv/out/report.json"))
    assert stored == doc and list(doc["lists"]) == ["veri_test2"]
    local = run_score(str(root / "emb"), [trials[0]], str(root / "local"), cohort=str(root / "train"),
                      use_as_norm=True, top_k=5, log=lambda line: None)
    assert doc["lists"]["veri_test2"]["results"] == local["lists"]["veri_test2"]["results"]
    assert doc["lists"]["veri_test2"]["missing"] == 3
    png = gcs_emulator.fs.cat(f"{gcs_emulator.bucket}/sv/out/det_veri_test2.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[0].startswith("veri_test2: 80 of 83 trials scored; 3 left out")


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "--as-norm" in out and "--top-k K" in out
    assert "wds-pipeline score emb/test --trials voxceleb1/veri_test2.txt --out scores" in out.split("examples:")[1]


def test_a_full_disk_is_one_line_and_publishes_no_report(setup, tmpfs_factory):
    """ENOSPC on a real small tmpfs while the DET plot is written: one line naming the file,
    no report.json (written last) and no temp file left; with space again the same command
    writes the report."""
    root, trials = setup
    disk = tmpfs_factory(size="64k", name="score-disk")
    filler = fill(disk, leave=4 * 1024)  # less than one DET plot
    out = os.path.join(disk, "scores")
    p = cli("score", root / "emb", "--trials", trials[1], "--out", out)
    assert p.returncode != 0 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "No space left on device" in p.stderr and "det_list_test_hard2.png" in p.stderr, p.stderr
    left = os.listdir(out) if os.path.isdir(out) else []
    assert "report.json" not in left and not [n for n in left if ".tmp-" in n], left
    os.remove(filler)
    p = cli("score", root / "emb", "--trials", trials[1], "--out", out)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["det_list_test_hard2.png", "report.json"]
