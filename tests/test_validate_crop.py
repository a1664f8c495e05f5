"""Validation's crop (``valid_crop_seconds``) from the index's per-sample frame arrays: the
same answer as the per-sample Python loop it replaced, on an index with its lists inline and
on one whose lists are in the ``index-samples.npy`` sidecar (a large split's), loaded either
way (int64 arrays, as validation and the loader load it, or Python lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wds_pipeline.index import DatasetIndex, load_index
from wds_pipeline.testing import write_synthetic_dataset
from wds_pipeline.train.validate import valid_crop_seconds

SR = 16000
SIZES = [5, 7, 4]
# Longest clip: shard 1's last sample (its frames peak mid-index, so neither end decides).
LONGEST = 900 + 13 * 6
LIMITS = [None, 0.0, 0.01, (LONGEST - 1) / SR, LONGEST / SR, (LONGEST + 1) / SR, 1.0]


def frames(s: int, i: int) -> int:
    return 900 + 13 * i if s == 1 else 800 + 37 * s + 11 * i


def loop_crop(index: DatasetIndex, limit: float | None) -> float | None:
    """The loop validation used before: every sample's frame count as a Python int."""
    longest = max((f for s in index.shards for f in s.sample_frames), default=0)
    return limit if limit and longest > limit * index.sample_rate else None


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """index.json inline (a small split), index-v3.json the same with its lists in the sidecar
    (written as a split over index_sidecar.SIDECAR_MIN_SAMPLES is, the threshold lowered to 0)."""
    root = tmp_path_factory.mktemp("crop")
    write_synthetic_dataset(str(root), SIZES, frames=frames, sample_rate=SR)
    for url, data in load_index(str(root / "index.json")).files(str(root / "index-v3.json"),
                                                                sidecar_min_samples=0):
        Path(url).write_bytes(data)
    assert (root / "index-samples.npy").exists()
    return root


@pytest.mark.parametrize("name", ["index.json", "index-v3.json"])
@pytest.mark.parametrize("arrays", [True, False])
def test_crop_equals_the_per_sample_loop(split, name, arrays):
    index = load_index(str(split / name), arrays=arrays)
    if arrays:
        assert all(isinstance(s.sample_frames, np.ndarray) for s in index.shards)
    assert max(max(s.sample_frames) for s in index.shards) == LONGEST
    got = [valid_crop_seconds(index, limit) for limit in LIMITS]
    assert got == [loop_crop(index, limit) for limit in LIMITS]
    assert got == [None, None, 0.01, (LONGEST - 1) / SR, None, None, None]


def test_crop_of_shards_without_frame_counts(split):
    """An index with an empty shard, and one with no shards: no clip is longer than any limit."""
    index = load_index(str(split / "index-v3.json"), arrays=True)
    index.shards[1].sample_frames = np.zeros(0, dtype=np.int64)
    assert [valid_crop_seconds(index, x) for x in LIMITS] == [loop_crop(index, x) for x in LIMITS]
    index.shards = []
    assert [valid_crop_seconds(index, x) for x in LIMITS] == [None] * len(LIMITS)
