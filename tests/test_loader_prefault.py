"""The prefault thread (``wds_pipeline/loader/prefault.py``): the next local shard's pages
mapped into the process before the gather reads them, on a real file and a real mapping
(their residency read from /proc/self/smaps), a truncated file refused without SIGBUS, and
a loader that prefaults reading exactly what one that does not reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.loader import prefault
from wds_pipeline.loader.mapped import MappedShard, SampleTable, file_stamp

pytestmark = pytest.mark.skipif(prefault._MADVISE is None, reason="needs Linux's madvise")
REPO = Path(__file__).resolve().parent.parent


def _resident(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path``."""
    total, current = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                current = len(fields) >= 6 and fields[-1] == str(path)
            elif current and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


def _mapped(path: Path) -> MappedShard:
    fd = os.open(path, os.O_RDONLY)
    try:
        return MappedShard(fd, str(path), SampleTable(1, file_stamp(fd)))
    finally:
        os.close(fd)


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8).tobytes())
    return path


def test_populate_maps_the_range_without_reading_it(blob):
    m = _mapped(blob)
    assert _resident(blob) == 0  # nothing read yet
    assert prefault.populate(m, 12 << 20, 16 << 20)
    # The 4 MB asked for, not the whole file (the kernel may map whole page-cache folios
    # around the range, up to 2 MB each side).
    assert 4 << 20 <= _resident(blob) <= 8 << 20


def test_the_thread_populates_what_it_is_handed(blob):
    m = _mapped(blob)
    p = prefault.Prefaulter()
    p.ahead(m, 0, m.size)
    deadline = time.monotonic() + 60
    while _resident(blob) < m.size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _resident(blob) == m.size


_TRUNCATED = """
import os, sys
from wds_pipeline.loader import prefault
from wds_pipeline.loader.mapped import MappedShard, SampleTable, file_stamp
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
m = MappedShard(fd, path, SampleTable(1, file_stamp(fd)))
os.truncate(path, 4096)
print(prefault.populate(m, 0, m.size))
"""


def test_a_file_truncated_under_the_mapping_is_no_sigbus(blob):
    # Pages past the new end cannot be mapped: the call fails (EFAULT) instead of raising
    # SIGBUS, and the gather's own size check names the truncation.
    r = subprocess.run([sys.executable, "-c", _TRUNCATED, str(blob)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_a_loader_that_prefaults_reads_what_one_that_does_not_reads(tmp_path):
    idx = make_dataset(str(tmp_path), [9, 7, 8], frames=lambda s, i: 4000 + 37 * i)

    def read(on: bool):
        loader = StreamingLoader(idx, batch_size=4, num_workers=0, last_batch="pad", seed=3)
        loader.dataset._prefault = on
        out = {}
        for epoch in range(2):
            for b in loader:
                for r, key in enumerate(b.keys):
                    out[(epoch, key)] = b.waveform[r, : int(b.lengths[r])].numpy().copy()
        return out, loader.dataset._prefaulter._pid == os.getpid()

    with_prefault, started = read(True)
    without, not_started = read(False)
    assert started and not not_started  # the thread ran in one loader only
    assert with_prefault.keys() == without.keys()
    assert all(np.array_equal(with_prefault[k], without[k]) for k in without)
