"""Local shards read through memory maps (``wds_pipeline/loader/mapped.py``) damaged on disk:
bytes overwritten inside a sample, a shard replaced by another of the same size, a shard
truncated while a loader holds its mapping. Each is found (the index's per-sample crc32s,
the file's size before its pages are touched) and goes the way ``on_corrupt_shard`` says:
an error naming the shard and sample, or only the damaged samples skipped and counted.

Real tar files damaged on disk, real DataLoader workers, and a real truncation in a child
process (so a SIGBUS of a loader that touches a page past the new end shows as a signal
exit, not as a crashed test run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
from shardgen import all_keys, make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.format import ShardFormatError
from wds_pipeline.index import load_index

REPO = Path(__file__).resolve().parent.parent


def _delivered(loader: StreamingLoader) -> Counter[str]:
    return Counter(k for b in loader for k, p in zip(b.keys, b.is_padding.tolist()) if not p)


def _overwritten(tmp_path: Path) -> tuple[str, str]:
    """3 shards of 4; 1,000 bytes inside sample 1 of shard 1's audio overwritten in place
    (as ``dd conv=notrunc`` would): (index, the damaged sample's key)."""
    idx = make_dataset(str(tmp_path), [4, 4, 4])
    shard = tmp_path / "shard-000001.tar"
    key = "synthetic-s1-u0001"
    with tarfile.open(shard) as t:
        member = t.getmember(f"{key}.audio.npy")
    assert member.size > 1300  # the overwritten bytes are PCM: the .npy header stays valid
    at = member.offset_data + 200
    with open(shard, "r+b") as f:
        f.seek(at)
        old = f.read(1000)
        f.seek(at)
        f.write(bytes(b ^ 0x5A for b in old))
    return idx, key


def _replaced(tmp_path: Path) -> str:
    """Shard 1 replaced by a copy of shard 0, which has the same size: the issue's repro of
    4 samples delivered twice and 4 never."""
    idx = make_dataset(str(tmp_path), [4, 4, 4], frames=lambda s, i: 3200)
    one, zero = tmp_path / "shard-000001.tar", tmp_path / "shard-000000.tar"
    assert one.stat().st_size == zero.stat().st_size
    shutil.copyfile(zero, one)
    return idx


@pytest.mark.parametrize("workers", [0, 2])
def test_overwritten_bytes_in_a_mapped_shard_raise_naming_shard_and_sample(tmp_path, workers):
    idx, key = _overwritten(tmp_path)
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, shuffle=False)
    with pytest.raises(ShardFormatError,
                       match=rf"shard-000001\.tar: sample 1 \(key '{key}' in its header.*has crc32 "
                             r"\d+, the index says \d+.*on_corrupt_shard='skip'"):
        list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_overwritten_bytes_skip_only_the_damaged_sample(tmp_path, workers):
    idx, key = _overwritten(tmp_path)
    keys = all_keys(idx)
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, on_corrupt_shard="skip",
                             last_batch="pad")
    assert _delivered(loader) == Counter(keys - {key})  # every other sample, once
    assert loader.skipped == [f"{tmp_path}/shard-000001.tar#1"]
    assert loader.skipped_count == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_replaced_by_another_of_the_same_size_raises(tmp_path, workers):
    idx = _replaced(tmp_path)
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, shuffle=False)
    with pytest.raises(ShardFormatError,
                       match=r"shard-000001\.tar: sample \d \(key 'synthetic-s0-u\d+' in its header"):
        list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_replaced_shard_is_skipped_and_no_sample_comes_twice(tmp_path, workers):
    idx = _replaced(tmp_path)
    good = {k for k in all_keys(idx) if "-s1-" not in k}  # shard 1's file holds shard 0's keys now
    good |= {f"synthetic-s2-u{i:04d}" for i in range(4)}
    loader = StreamingLoader(idx, batch_size=2, num_workers=workers, on_corrupt_shard="skip",
                             last_batch="pad")
    assert _delivered(loader) == Counter(good)
    assert sorted(loader.skipped) == [f"{tmp_path}/shard-000001.tar#{i}" for i in range(4)]
    assert loader.skipped_count == 4


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_checks_split_across_threads_find_the_damaged_sample_of_a_big_batch(tmp_path, policy):
    # Without workers, a batch's crc32 checks run on the gather's threads (rowsplit.py):
    # a batch of 24 clips of 3 s (2.3 MB) is split in two, and the damaged sample, in the
    # second half, is still the one named and the only one left out.
    import torch

    from wds_pipeline.loader.rowsplit import SPLITTER

    idx = make_dataset(str(tmp_path), [24], frames=lambda s, i: 48000)
    key = "synthetic-s0-u0020"
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard) as t:
        at = t.getmember(f"{key}.audio.npy").offset_data + 4000
    with open(shard, "r+b") as f:
        f.seek(at)
        f.write(b"\x7f" * 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        if SPLITTER.threads(24, 96000) < 2:
            pytest.skip("one usable core: the checks are not split")
        loader = StreamingLoader(idx, batch_size=24, num_workers=0, shuffle=False, on_corrupt_shard=policy,
                                 last_batch="pad")
        if not loader.dataset._defer_checks:
            pytest.skip("a core to spare: the verifier thread checks ahead instead")
        if policy == "raise":
            with pytest.raises(ShardFormatError, match=rf"shard-000000\.tar: sample 20 \(key '{key}'"):
                list(loader)
            return
        (batch,) = list(loader)
        assert batch.keys == sorted(all_keys(idx) - {key})
        assert loader.skipped == [f"{tmp_path}/shard-000000.tar#20"]
    finally:
        torch.set_num_threads(threads)


def test_samples_are_checked_once_per_process_not_every_epoch(tmp_path):
    # The crc32 of a sample is taken the first time a process gathers it: a later epoch
    # over the same file (same stamp) trusts it. A rewrite gets a new stamp, so a new check.
    idx = make_dataset(str(tmp_path), [4, 4])
    loader = StreamingLoader(idx, batch_size=2, num_workers=0, shuffle=False)
    assert sum(_delivered(loader).values()) == 8
    (table,) = [t for url, t in loader.dataset._tables._tables.items() if url.endswith("000001.tar")]
    assert bytes(table.verified) == b"\x01" * 4
    assert sum(_delivered(loader).values()) == 8


# A loader in a child process: the shard is truncated after the second batch, while the
# loader holds its mapping. Prints what arrived, or the error; a SIGBUS shows as rc -7.
_TRUNCATE = """
import json, os, sys
from wds_pipeline import StreamingLoader
from wds_pipeline.format import ShardFormatError
idx, shard, cut, workers, policy = sys.argv[1:]
loader = StreamingLoader(idx, batch_size=2, num_workers=int(workers), shuffle=False,
                         on_corrupt_shard=policy, last_batch="pad")
keys = []
try:
    for n, b in enumerate(loader):
        keys += [k for k, p in zip(b.keys, b.is_padding.tolist()) if not p]
        if n == 1:  # batch 1 comes from worker 1: both workers hold the mapping now
            os.truncate(shard, int(cut))
except ShardFormatError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(3)
print(json.dumps({"keys": keys, "skipped": loader.skipped}))
"""


def _truncated_run(tmp_path: Path, workers: int, policy: str) -> tuple[subprocess.CompletedProcess, int, str]:
    """One shard of 64 samples cut inside sample 40 after the second batch."""
    idx = make_dataset(str(tmp_path), [64], frames=lambda s, i: 3200)
    cut = load_index(idx).shards[0].sample_offsets[40] + 100
    shard = str(tmp_path / "shard-000000.tar")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", _TRUNCATE, idx, shard, str(cut), str(workers), policy],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    return p, cut, shard


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_truncated_while_mapped_is_a_named_error_not_sigbus(tmp_path, workers):
    p, cut, shard = _truncated_run(tmp_path, workers, "raise")
    assert p.returncode == 3, (p.returncode, p.stderr[-2000:])
    error = json.loads(p.stdout)["error"]
    # With workers, torch re-raises the worker's exception with its traceback inside.
    assert f"{shard}: truncated while being read: {cut} bytes on disk now, " in error, error
    assert "on_corrupt_shard='skip'" in error


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_truncated_while_mapped_skips_only_the_samples_cut_off(tmp_path, workers):
    # Samples 0-39 lie wholly before the cut: delivered (whether gathered before or after
    # it); 40-63 are skipped and counted, with workers too (worker 1 reads 32-63).
    p, _, shard = _truncated_run(tmp_path, workers, "skip")
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert Counter(out["keys"]) == Counter(f"synthetic-s0-u{i:04d}" for i in range(40))
    assert sorted(out["skipped"]) == [f"{shard}#{i}" for i in range(40, 64)]


def test_an_intact_shard_is_checked_in_chunks_on_the_verifier_thread(tmp_path, monkeypatch):
    # Every sample's bytes are checked, but as one crc32 per chunk of consecutive samples on
    # the verifier thread (verifier.RangeChecks), against their crc32s combined: never one
    # sample at a time on the loader's thread, and never a byte twice.
    from wds_pipeline.loader import mapped, verifier

    idx = make_dataset(str(tmp_path), [5, 7], frames=lambda s, i: 1600 + 320 * i)
    calls: list[tuple[str, int]] = []
    real_crc32 = verifier.crc32

    def recording_crc32(data):
        calls.append((threading.current_thread().name, len(data)))
        return real_crc32(data)

    def no_per_sample_check(*args):
        raise AssertionError("a sample checked on its own")

    monkeypatch.setattr(verifier, "crc32", recording_crc32)
    monkeypatch.setattr(mapped.MappedShard, "crc_problem", no_per_sample_check)
    loader = StreamingLoader(idx, batch_size=3, num_workers=0, last_batch="pad")
    assert _delivered(loader) == Counter(all_keys(idx))
    index = load_index(idx)
    sizes = []  # each shard's bytes up to its last member's padding (tarfile's reading)
    for i in range(2):
        with tarfile.open(index.shard_url(i)) as t:
            last = t.getmembers()[-1]
        sizes.append(last.offset_data + -(-last.size // 512) * 512)
    assert {name for name, _ in calls} == {"wds-verify"}
    assert sum(n for _, n in calls) == sum(sizes)
    for table in loader.dataset._tables._tables.values():
        assert bytes(table.verified) == b"\x01" * table.n
        assert bytes(table.pending) == bytes(table.n)


def test_a_runs_checks_are_queued_before_its_headers_are_parsed(tmp_path, monkeypatch):
    # The verifier thread hashes a run while the loader's thread locates it (the crc32 spans
    # come from the index's offsets): by the time the locate starts, every sample of the run
    # is queued or checked, except the shard's last, whose end only its located members give
    # (queued right after). Both are checked on the thread in the end.
    from wds_pipeline.loader import mapped

    idx = make_dataset(str(tmp_path), [6, 9], frames=lambda s, i: 1600 + 320 * i)
    seen: list[tuple[int, int, list[int]]] = []
    real_locate = mapped.MappedShard.locate

    def recording_locate(self, offsets, a, b, index_size):
        t = self.table
        seen.append((a, b, [max(t.pending[i], t.verified[i]) for i in range(a, b)]))
        return real_locate(self, offsets, a, b, index_size)

    monkeypatch.setattr(mapped.MappedShard, "locate", recording_locate)
    loader = StreamingLoader(idx, batch_size=4, num_workers=0, last_batch="pad", shuffle_buffer=1)
    assert _delivered(loader) == Counter(all_keys(idx))
    fresh = [(a, b, flags) for a, b, flags in seen if a == 0]
    assert sorted(b for _, b, _ in fresh) == [6, 9]
    for _, b, flags in fresh:
        assert flags == [1] * (b - 1) + [0]  # all but the shard's last sample, queued before the locate
    for table in loader.dataset._tables._tables.values():
        assert bytes(table.verified) == b"\x01" * table.n


def _checked(tmp_path: Path, monkeypatch, damage=None, close: bool = False, cut: int | None = None):
    """Shard 0 of 8 samples mapped and located, every sample queued for a range check in
    chunks of 2 samples (after ``damage(path, index)`` and optionally the mapping closed or
    the file cut to ``cut`` bytes): its table once the checks are done."""
    from wds_pipeline.loader import verifier
    from wds_pipeline.loader.mapped import MappedShard, SampleTable, file_stamp
    from wds_pipeline.loader.shards import shard_table

    idx = make_dataset(str(tmp_path), [8], frames=lambda s, i: 3200)
    index = load_index(idx)
    span = index.shards[0].sample_offsets[1]  # every sample's bytes: the same length here
    monkeypatch.setattr(verifier, "CHUNK_BYTES", 2 * span + 1)  # chunks [0, 2), [2, 4), ...
    (entry,) = shard_table([index])
    path = index.shard_url(0)
    fd = os.open(path, os.O_RDONLY)
    try:
        m = MappedShard(fd, path, SampleTable(8, file_stamp(fd)))
    finally:
        os.close(fd)
    m.locate(entry.offsets, 0, 8, entry.size)
    if damage is not None:
        damage(path, index)
    if cut is not None:
        os.truncate(path, cut)
    if close:
        m.close()
    checks = verifier.RangeChecks([entry])
    checks.submit(m, 0, 0, 8)
    assert any(m.table.pending) or close or cut is not None
    for i in range(8):
        checks.wait(m, i)
    assert bytes(m.table.pending) == bytes(8)
    return m.table, index


def test_a_range_check_passes_the_chunks_that_match_and_leaves_the_damaged_one(tmp_path, monkeypatch):
    def flip(path, index):  # one byte of sample 5's audio, through the file (the mapping sees it)
        with open(path, "r+b") as f:
            f.seek(index.shards[0].sample_offsets[5] + 1024 + 100)
            old = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([old[0] ^ 1]))

    table, _ = _checked(tmp_path, monkeypatch)
    assert bytes(table.verified) == b"\x01" * 8
    table, _ = _checked(tmp_path / "damaged", monkeypatch, damage=flip)
    # Chunks of two samples: 4-5 is left for the gather to check sample by sample.
    assert list(table.verified) == [1, 1, 1, 1, 0, 0, 1, 1]


def test_a_range_check_of_a_closed_or_cut_shard_passes_nothing_and_never_blocks(tmp_path, monkeypatch):
    table, _ = _checked(tmp_path / "closed", monkeypatch, close=True)
    assert bytes(table.verified) == bytes(8)
    span = load_index(make_dataset(str(tmp_path / "probe"), [8], frames=lambda s, i: 3200)).shards[0].sample_offsets[1]
    table, _ = _checked(tmp_path / "cut", monkeypatch, cut=6 * span + 10)
    # The chunks wholly before the cut pass; the one the cut goes through is never read.
    assert list(table.verified) == [1, 1, 1, 1, 1, 1, 0, 0]


def _wait_in_child(m, entry) -> None:  # runs in a forked child
    from wds_pipeline.loader import verifier

    verifier.RangeChecks([entry]).wait(m, 3)
    assert not any(m.table.pending)


def test_checks_queued_by_another_process_do_not_block_a_forked_copy(tmp_path):
    # A table copied into a forked worker may carry flags of checks its parent queued, which
    # no thread of the child will ever clear: the child must not wait on them.
    import multiprocessing

    from wds_pipeline.loader.mapped import MappedShard, SampleTable, file_stamp
    from wds_pipeline.loader.shards import shard_table

    index = load_index(make_dataset(str(tmp_path), [8], frames=lambda s, i: 3200))
    (entry,) = shard_table([index])
    fd = os.open(index.shard_url(0), os.O_RDONLY)
    try:
        m = MappedShard(fd, index.shard_url(0), SampleTable(8, file_stamp(fd)))
    finally:
        os.close(fd)
    m.table.pending[:] = b"\x01" * 8  # queued here, as if the thread had not got to them yet
    child = multiprocessing.get_context("fork").Process(target=_wait_in_child, args=(m, entry))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


@pytest.mark.parametrize(("cores", "workers", "ranges"), [(2, 0, True), (2, 2, False), (4, 2, True), (1, 0, True)])
def test_range_checks_run_in_process_and_beside_workers_only_with_a_core_to_spare(
        tmp_path, monkeypatch, cores, workers, ranges):
    from wds_pipeline.loader import dataset

    monkeypatch.setattr(dataset, "usable_cores", lambda: cores)
    idx = make_dataset(str(tmp_path), [4])
    assert StreamingLoader(idx, batch_size=2, num_workers=workers).dataset._range_checks is ranges


def test_loaders_built_one_after_another_share_one_verifier_thread(tmp_path):
    # The range checks' thread is the process's, not each loader's: a loader built per epoch
    # (or per validation) must not leave one more idle thread behind every time.
    idx = make_dataset(str(tmp_path), [4, 4])
    for _ in range(3):
        assert sum(_delivered(StreamingLoader(idx, batch_size=2, num_workers=0, last_batch="pad")).values()) == 8
    assert [t.name for t in threading.enumerate()].count("wds-verify") == 1
