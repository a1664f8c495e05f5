"""Smoke runs of the I/O benchmarks (``--quick``): they run end to end against the real
FUSE mount / GCS emulator and write their JSON and PNG with every key the reports use.

Speed is never asserted (the machine is shared and noisy); the figures live in
benchmarks/results/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_KEYS = {"samples", "seconds", "bytes", "samples_per_s", "MBps", "cap_fraction"}


def run_quick(script: str, tmp_path: Path) -> dict:
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    p = subprocess.run(
        [
            sys.executable,
            f"benchmarks/{script}",
            "--quick",
            "--data-dir",
            str(tmp_path / "d"),
            "--json-out",
            str(out),
            "--png-out",
            str(png),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets:" in p.stdout
    return json.loads(out.read_text())


@pytest.mark.fuse
def test_fuse_io_quick(slowfs_factory, tmp_path):  # the fixture skips without /dev/fuse
    r = run_quick("fuse_io.py", tmp_path)
    assert r["setup"]["quick"] is True and r["setup"]["clips"] == 200
    assert r["setup"]["latency_ms"] == 100 and r["setup"]["bandwidth_MBps"] == 20
    assert set(r["runs"]) == {
        "a_per_file_nw0",
        "a_per_file_nw4",
        "b_epoch1_stream_fill_cache",
        "b_epoch2_from_cache",
    }
    for name, run in r["runs"].items():
        assert RUN_KEYS - {"cap_fraction"} <= set(run), name
        assert run["x_vs_a_nw0"] > 0
    assert r["runs"]["b_epoch1_stream_fill_cache"]["samples"] == 200
    assert r["runs"]["b_epoch2_from_cache"]["samples"] == 200
    assert set(r["targets"]) == {"epoch1_over_a0", "epoch1_cap_fraction", "epoch2_over_a0"}
    for t in r["targets"].values():
        assert {"target", "measured", "met"} <= set(t)
    assert r["page_cache_check"]["capped_on_reread"] is True
    assert r["mount_opens"] == {"epoch1": [4], "epoch2": 0}  # 4 shards, then the cache only


@pytest.mark.gcs
def test_gcs_io_quick(tmp_path):
    pytest.importorskip("gcp_storage_emulator")
    r = run_quick("gcs_io.py", tmp_path)
    assert r["setup"]["quick"] is True and r["setup"]["clips"] == 200
    assert r["setup"]["latency_ms"] == 30 and r["setup"]["bandwidth_MBps"] == 50
    assert set(r["ceilings"]) == {
        "emulator_direct",
        "proxy_no_limits",
        "limited_1_stream",
        "limited_4_streams",
        "limited_cat_file_4",
    }
    assert set(r["runs"]) == {
        "ours_cache_epoch1",
        "ours_cache_epoch2",
        "ours_nocache",
        "per_file_gcsfs",
        "webdataset_default_opener",
        "webdataset_tuned_opener",
    }
    for name, run in r["runs"].items():
        assert RUN_KEYS | {"wire_bytes", "x_vs_per_file"} <= set(run), name
    assert r["runs"]["ours_cache_epoch2"]["wire_bytes"] == 0  # served by the cache
    assert r["runs"]["ours_nocache"]["wire_bytes"] >= r["setup"]["shard_bytes_total"]
    assert set(r["targets"]) == {"ours_epoch1_cap_fraction"}
    assert r["emulator_direct_per_file"]["files_per_s"] > 0
    assert "ours_epoch1_over_webdataset_tuned" in r["ratios"]
