"""Smoke runs of the benchmarks (``--quick``): they run end to end and write their JSON.

Speed itself is never asserted here (this machine is shared and noisy); the figures
live in benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_build_throughput_quick(tmp_path):
    out = tmp_path / "build_throughput.json"
    p = subprocess.run([sys.executable, "benchmarks/build_throughput.py", "--quick",
                        "--json-out", str(out)], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "(b2) builder --workers 2" in p.stdout and "b2/b1 scaling" in p.stdout
    report = json.loads(out.read_text())
    assert report["setup"]["files"] == 8 and report["setup"]["quick"] is True
    assert report["results"]["index_identical_across_runs_and_workers"] is True
    for k in ("builder_w1_over_baseline_per_worker_wall", "builder_w2_over_w1_scaling"):
        assert report["ratios"][k] > 0
    # The sessions row: word clips cut from two 1-minute session recordings.
    assert "(sb1) builder sessions words, 1 worker" in p.stdout
    sessions = report["sessions"]
    assert sessions["setup"]["sessions"] == 2 and sessions["setup"]["words"] > 100
    assert sorted(sessions["results"]) == ["sa", "sa1", "sb1", "sb2"]
    assert all(r["rtf"] > 0 for r in sessions["results"].values())


def test_augment_quick(tmp_path):
    """benchmarks/augment.py --quick: (a) ours, (b) WeSpeaker-style and (c) no augmentation
    each yield every crop of the 48 synthetic utterances; the report holds the ratios, the
    device cost per batch and the setup (probabilities, data, CPU count)."""
    out, png = tmp_path / "augment.json", tmp_path / "augment.png"
    p = subprocess.run([sys.executable, "benchmarks/augment.py", "--quick", "--json-out", str(out),
                        "--png-out", str(png)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "a/b (ours over WeSpeaker-style)" in p.stdout and png.stat().st_size > 0
    report = json.loads(out.read_text())
    setup = report["setup"]
    assert setup["quick"] is True and setup["workers"] == 2 and setup["cpu_count"] >= 1
    assert setup["probabilities"] == {"reverb": 0.3, "noise": 0.3, "gain": 1.0}
    assert setup["noise"] == {"noise": 2, "music": 5, "speech": 2} and setup["rirs"] == 26
    # (a)'s banks, read from the noise and RIR shards, hold the clips (b) reads as wavs.
    assert setup["bank"]["noise_clips"] == 9 and setup["bank"]["rirs"] == 26
    assert [t["name"] for t in setup["batch_transforms"]] == ["reverb", "noise", "row_gain"]
    assert sorted(report["pipelines"]) == ["a", "b", "c"]
    # One epoch of 48 utterances in batches of 16, counted from the first batch on.
    assert all(r[0]["samples"] == 32 for r in report["runs"].values())
    assert report["ratios"]["a_over_b"] > 0 and report["ratios"]["a_over_c"] > 0
    assert report["pipelines"]["a"]["device_ms_per_batch"] > 0
    cost = report["device_cost"]
    assert cost["batch"] == [16, 32000] and cost["chain_ms"] > 0 and cost["wespeaker_style_ms"] > 0


def test_a_quick_run_leaves_the_quoted_results_alone(tmp_path):
    # results/ holds the runs the benchmarks README quotes; a smoke run's figures mean
    # nothing, so --quick without --json-out writes to the temp folder instead (a --quick
    # scale.py run once replaced results/scale.json with its one-repeat figures).
    quoted = REPO / "benchmarks" / "results" / "flac_decode.json"
    before = quoted.read_bytes()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "benchmarks/flac_decode.py", "--quick"], capture_output=True,
                       text=True, cwd=REPO, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert quoted.read_bytes() == before
    report = json.loads((tmp_path / "wds-bench-quick" / "flac_decode.json").read_text())
    assert set(report) >= {"setup", "rates"}
