"""The float32 gather split across threads without DataLoader workers (loader/rowsplit.py):
the same bytes as one thread, for ragged rows, zero padding and a dirty recycled buffer; one
thread inside workers and under a user's ``torch.set_num_threads(1)``."""

import os
import threading

import numpy as np
import pytest
import torch
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.loader import collate, rowsplit
from wds_pipeline.loader.decode import Sample


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    # Lengths from 0.01 s to ~1 s: every batch is padded, most rows by different amounts.
    return make_dataset(str(tmp_path_factory.mktemp("ragged")), [23, 9, 31],
                        frames=lambda s, i: 160 + (s * 7919 + i * 104729) % 16000)


@pytest.fixture
def threads():
    """Restores torch's intra-op thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def rows_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [Sample(f"k{i}", rng.integers(-32768, 32768, n, dtype=np.int16), 0, None, None, 0)
            for i, n in enumerate(lengths)]


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_split_rows_are_the_bytes_of_one_thread(monkeypatch, threads, parts):
    torch.set_num_threads(parts)
    monkeypatch.setattr(rowsplit, "MIN_BYTES_PER_THREAD", 1)
    monkeypatch.setattr(rowsplit.os, "sched_getaffinity", lambda pid: set(range(parts)))  # as on a bigger machine
    lengths = [5, 0, 1000, 999, 1, 1000, 37, 512, 640, 3]
    rows, width = rows_of(lengths), 1003  # wider than every row: every row padded
    one = np.full((len(rows), width), np.nan, dtype=np.float32)
    collate.float_rows(one, rows, 0, len(rows))
    split = np.full((len(rows), width), np.nan, dtype=np.float32)  # a dirty recycled buffer
    seen: set[str] = set()

    def fill(lo, hi):
        seen.add(threading.current_thread().name)
        collate.float_rows(split, rows, lo, hi)

    splitter = rowsplit.RowSplitter()
    assert splitter.threads(len(rows), width * 4) == parts
    splitter.run(fill, len(rows), width * 4)
    # The caller and the helpers (a helper done with its part may take the next one).
    assert threading.current_thread().name in seen and any(t.startswith("wds-rows") for t in seen)
    assert one.tobytes() == split.tobytes()
    for i, (r, n) in enumerate(zip(rows, lengths)):  # and those are the scaled rows, zero-padded
        assert np.array_equal(one[i, :n], r.wave.astype(np.float32) / 32768)
        assert not one[i, n:].any()


def test_loader_batches_are_equal_with_and_without_the_split(ragged, monkeypatch, threads):
    monkeypatch.setattr(rowsplit, "MIN_BYTES_PER_THREAD", 1)  # these small batches split too
    opts = dict(batch_size=8, num_workers=0, last_batch="pad", shuffle_buffer=20)
    got = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        assert rowsplit.SPLITTER.threads(8, 4096) == n
        loader = StreamingLoader(ragged, **opts)  # two epochs: the second in recycled buffers
        got[n] = [(b.keys, b.lengths.tolist(), b.waveform.numpy().tobytes()) for _ in range(2) for b in loader]
    assert got[1] == got[2]
    assert any(len(set(lengths)) > 1 for _, lengths, _ in got[1])  # ragged rows, padded


class _ThreadsInWorker(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield rowsplit.SPLITTER.threads(64, 1 << 20)


def test_one_thread_in_workers_and_under_set_num_threads_1(threads):
    torch.set_num_threads(2)
    assert rowsplit.SPLITTER.threads(64, 1 << 20) == 2
    assert rowsplit.SPLITTER.threads(64, 100) == 1  # too little work to hand off
    got = list(torch.utils.data.DataLoader(_ThreadsInWorker(), batch_size=None, num_workers=1))
    assert got == [1]
    torch.set_num_threads(1)
    assert rowsplit.SPLITTER.threads(64, 1 << 20) == 1
    torch.set_num_threads(8)
    assert rowsplit.SPLITTER.threads(64, 1 << 20) == min(8, len(os.sched_getaffinity(0)))  # no more than the cores
