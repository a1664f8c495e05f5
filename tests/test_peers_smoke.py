"""benchmarks/peers.py on a tiny set, in the peers' own environment (.peers-venv, see
benchmarks/README.md). Skipped, with the reason, where that environment is missing. And
its old-vs-new mode (``--baseline HEAD``), which needs only this venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_PYTHON = os.path.join(REPO, ".peers-venv", "bin", "python")
SCRIPT = os.path.join(REPO, "benchmarks", "peers.py")


def _peers_python() -> str:
    if not os.path.exists(PEERS_PYTHON):
        pytest.skip(f"no peers environment at {PEERS_PYTHON} (see benchmarks/README.md, 'Peer loaders')")
    env = dict(os.environ, PYTHONPATH=REPO)
    check = subprocess.run([PEERS_PYTHON, SCRIPT, "--check"], capture_output=True, text=True, env=env)
    if check.returncode != 0:
        pytest.skip(f"peer packages do not import: {check.stderr.strip()[-500:]}")
    return PEERS_PYTHON


def test_peers_benchmark_runs_and_every_format_returns_the_same_arrays(tmp_path):
    python = _peers_python()
    out = tmp_path / "peers.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [python, SCRIPT, "--quick", "--workers", "0,2", "--data-dir", str(tmp_path / "data"),
         "--json-out", str(out), "--png-out", str(tmp_path / "peers.png")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    # Every writer/loader pair gives back exactly the source arrays, key for key.
    assert set(res["array_checks"]) == {f"{s}/{f}" for s in ("clips", "utts") for f in
                                        ("wds_pipeline", "wds_pipeline-int16", "webdataset", "litdata",
                                         "mosaic", "lhotse-wav", "lhotse-flac", "hf")}
    assert all(v is None for v in res["array_checks"].values()), res["array_checks"]
    for col, cells in res["table"].items():
        for fmt in ("wds_pipeline", "wds_pipeline-int16"):  # ours: a figure in every column
            assert cells[fmt]["samples_per_s"] > 0, (col, fmt)
        for fmt, cell in cells.items():  # a peer without a figure says why
            assert cell["samples_per_s"] is not None or cell["why"], (col, fmt)
    assert (tmp_path / "peers.png").stat().st_size > 0


def test_old_vs_new_runs_each_revision_in_its_own_process_on_the_same_arrays(tmp_path):
    """--baseline REV (the main venv is enough): the working tree's loader and REV's, each
    imported from its own tree, read the same sets to the source's arrays."""
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip(f"not a git checkout: {head.stderr.strip()}")
    out = tmp_path / "old-new.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--baseline", "HEAD", "--quick", "--workers", "0", "--formats", "wds_pipeline",
         "--data-dir", str(tmp_path / "data"), "--json-out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    formats = ("wds_pipeline",)  # the default float32 output (the int16 one: --formats)
    assert set(res["array_checks"]) == {f"{s}/{f}/{side}" for s in ("clips", "utts") for f in formats
                                        for side in ("new", "old")}
    assert all(v is None for v in res["array_checks"].values()), res["array_checks"]
    old, new = res["setup"]["old"], res["setup"]["new"]
    assert old["commit"] == head.stdout.strip()
    assert old["wds_pipeline"] == os.path.join(old["root"], "wds_pipeline", "__init__.py")
    assert new["wds_pipeline"] == os.path.join(REPO, "wds_pipeline", "__init__.py")
    assert set(res["table"]) == {f"{s}/w0/epoch{e}" for s in ("clips", "utts") for e in (1, 2)}
    for col, cells in res["table"].items():
        assert set(cells) == set(formats)
        for fmt, c in cells.items():
            assert c["new"] > 0 and c["old"] > 0 and c["new_over_old"] > 0, (col, fmt, c)
    assert "columns more than 5% slower:" in proc.stdout
