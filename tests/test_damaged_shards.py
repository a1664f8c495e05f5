"""Damaged shards on disk: the loader and `verify` name the shard and go on as told.

Real tar files damaged the way disks and downloads damage them: a byte changed in a
tar header (checksum, size or name field), a shard overwritten with zeros, an HTML
error page saved in place of a shard by a failed download.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from shardgen import all_keys, make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.format import ShardFormatError
from wds_pipeline.verify import verify_dataset

REPO = Path(__file__).resolve().parent.parent
HTML = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        b"<body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>\n") * 12


def _damage(shard: Path, how: str) -> None:
    data = bytearray(shard.read_bytes())
    if how == "checksum":  # the repro: `printf x | dd seek=150` lands in the checksum field
        data[150] = ord("x")
    elif how == "size":  # a non-octal digit in the size field of the first header
        data[130] = ord("9")
    elif how == "name":  # a byte that is not UTF-8 in the first member's name
        data[5] = 0xFF
    elif how == "zeros":
        data = bytearray(len(data))
    elif how == "html":
        data = bytearray(HTML)
    shard.write_bytes(bytes(data))


def _dataset(tmp_path: Path, how: str) -> tuple[str, set[str], set[str]]:
    """3 shards of 4 samples, the middle one damaged: (index, keys of the good shards, bad keys)."""
    idx = make_dataset(str(tmp_path), [4, 4, 4])
    keys = all_keys(idx)
    bad = {k for k in keys if "-s1-" in k}
    _damage(tmp_path / "shard-000001.tar", how)
    return idx, keys - bad, bad


DAMAGE = ["checksum", "size", "name", "zeros", "html"]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("workers", [0, 2])
def test_damaged_shard_raises_an_error_naming_it(tmp_path, how, workers):
    idx, _, _ = _dataset(tmp_path, how)
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, shuffle=False)
    # With workers, torch re-raises the worker's exception type with its message inside.
    with pytest.raises(ShardFormatError, match=r"shard-000001\.tar.*on_corrupt_shard='skip'"):
        list(loader)


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("workers", [0, 2])
def test_skip_skips_the_damaged_shard_and_counts_its_samples(tmp_path, how, workers, caplog):
    idx, good, bad = _dataset(tmp_path, how)
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, on_corrupt_shard="skip",
                             last_batch="pad")
    with caplog.at_level(logging.WARNING, logger="wds_pipeline"):
        batches = list(loader)
    real = [k for b in batches for k, p in zip(b.keys, b.is_padding.tolist()) if not p]
    shard = f"{tmp_path}/shard-000001.tar"
    assert loader.skipped and all(k.startswith(shard + "#") for k in loader.skipped)
    skipped = {int(k.rsplit("#", 1)[1]) for k in loader.skipped}
    assert 0 in skipped  # the damaged first header's sample
    # Samples of the damaged shard before the damage, or read from their own offset by
    # another worker, are intact and delivered; all else of that shard is skipped.
    delivered = {k for k in bad if int(k[-4:]) not in skipped}
    assert Counter(real) == Counter(good | delivered)  # every other sample, once
    assert loader.skipped_count == len(skipped) == len(bad) - len(delivered)
    if workers == 0:  # one read covers the shard; worker processes log in their own process
        assert skipped == {0, 1, 2, 3}
        assert any(shard in r.getMessage() for r in caplog.records)


def test_verify_reports_a_shard_that_is_not_a_tar_and_exits_1(tmp_path):
    _dataset(tmp_path, "html")
    p = subprocess.run([sys.executable, "-m", "wds_pipeline.cli", "verify", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "Traceback" not in out and "DOCTYPE" not in out and "html" not in out.lower(), out
    assert "shard-000001.tar: unreadable after 0 samples:" in out
    assert "shard-000001.tar: not a tar archive (no valid tar header at byte 0" in out
    assert "verify FAILED" in out


@pytest.mark.parametrize("how,reason", [
    ("checksum", "shard-000001.tar: corrupt tar header at byte 0 (checksum mismatch)"),
    ("size", "shard-000001.tar: corrupt tar header at byte 0 (checksum mismatch)"),
    ("name", "shard-000001.tar: corrupt tar header at byte 0 (checksum mismatch)"),
    ("zeros", "shard-000001.tar: 0 samples, index says 4"),
])
def test_verify_names_each_damaged_shard(tmp_path, how, reason):
    _dataset(tmp_path, how)
    report = verify_dataset(str(tmp_path), progress=False)
    assert not report.ok
    (split,) = report.splits
    assert all(p.startswith("shard-000001.tar: ") for p in split.problems), split.problems
    assert any(reason in p for p in split.problems), split.problems


def test_verify_checks_each_samples_crc32_from_the_index(tmp_path):
    import json

    make_dataset(str(tmp_path), [4, 4, 4])
    assert verify_dataset(str(tmp_path), progress=False).ok  # the written crcs check out
    index = tmp_path / "index.json"
    d = json.loads(index.read_text())
    d["shardlist"][1]["sample_crc32"][3] ^= 1  # the last sample: up to the end blocks
    d["shardlist"][2]["sample_crc32"][1] ^= 1
    index.write_text(json.dumps(d))
    report = verify_dataset(str(tmp_path), progress=False)
    (split,) = report.splits
    assert [p.split(" (byte")[0] for p in split.problems] == [
        "shard-000001.tar: sample 3", "shard-000002.tar: sample 1"], split.problems
    assert all("has crc32" in p and "index says" in p for p in split.problems)
