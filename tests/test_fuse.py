"""slowfs (the Drive stand-in) and reading through it: detection, figures, faults.

Timings are reported, not asserted (the machine is noisy); the only timing bound
is a loose sanity check that the configured open latency is really there.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from shardgen import xxh3

from wds_pipeline import storage
from wds_pipeline.readpath import (
    ShardCache,
    ShardReader,
    ShardReadError,
    ShardRef,
    default_cache_policy,
)
from wds_pipeline.storage import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05)


def _put(m, name: str, data: bytes) -> ShardRef:
    with open(os.path.join(m.source, name), "wb") as f:
        f.write(data)
    return ShardRef(os.path.join(m.mountpoint, name), xxh3(data), len(data))


def test_slowfs_is_detected_as_fuse(slow_fuse_mount):
    mnt = slow_fuse_mount.mountpoint
    assert storage.mount_of(mnt).fstype == "fuse.slowfs"
    assert storage.is_fuse_path(os.path.join(mnt, "x.tar"))
    assert default_cache_policy(os.path.join(mnt, "x.tar"))
    assert not storage.is_fuse_path("/tmp") and not default_cache_policy("/tmp/x.tar")


def test_slowfs_figures(slow_fuse_mount, record_property, capsys):
    m = slow_fuse_mount
    rng = random.Random(3)
    for i in range(10):  # 3 s of 16 kHz int16 audio each
        with open(os.path.join(m.source, f"clip-{i}.wav"), "wb") as f:
            f.write(rng.randbytes(96_044))
    _put(m, "shard.tar", rng.randbytes(10 << 20))

    t0 = time.perf_counter()
    fd = os.open(os.path.join(m.mountpoint, "clip-0.wav"), os.O_RDONLY)
    open_s = time.perf_counter() - t0
    os.close(fd)

    t0 = time.perf_counter()
    for i in range(10):
        with open(os.path.join(m.mountpoint, f"clip-{i}.wav"), "rb") as f:
            f.read()
    files_per_s = 10 / (time.perf_counter() - t0)

    def read_clip(i: int) -> int:
        with open(os.path.join(m.mountpoint, f"clip-{i % 10}.wav"), "rb") as f:
            return len(f.read())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:  # like 4 DataLoader workers each opening files
        assert sum(pool.map(read_clip, range(20))) == 20 * 96_044
    files_per_s_4 = 20 / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    with open(os.path.join(m.mountpoint, "shard.tar"), "rb") as f:
        t1 = time.perf_counter()
        while f.read(8 << 20):
            pass
    t2 = time.perf_counter()
    mb = 10 * 1.048576

    figures = {
        "open_ms": round(open_s * 1000, 1),
        "files_per_s": round(files_per_s, 1),  # 96 kB clips, one open each, nw=0
        "files_per_s_4_threads": round(files_per_s_4, 1),
        "shard_MB_per_s_incl_open": round(mb / (t2 - t0), 1),
        "shard_MB_per_s_after_open": round(mb / (t2 - t1), 1),
    }
    for k, v in figures.items():
        record_property(k, v)
    with capsys.disabled():
        print(f"\nslowfs (100 ms/open, 20 MB/s): {figures}")
    assert open_s >= 0.05, "the configured open latency is missing"


def test_reader_survives_enotconn_on_fuse(slowfs_factory):
    m = slowfs_factory(
        "flaky",
        latency_ms=0,
        bandwidth_mbps=0,
        fail_every=5,
        fail_on="open,read",
        fail_errno="ENOTCONN",
    )
    data = random.Random(4).randbytes(3 << 20)
    ref = _put(m, "x-000.tar", data)
    with ShardReader(retry=FAST_RETRY, block_size=256 << 10, prefetch=0) as reader:
        with reader.open(ref) as f:
            assert f.read() == data
        assert reader.stats().retries >= 1


def test_reader_on_dead_fuse_mount_names_the_shard(slowfs_factory):
    m = slowfs_factory(
        "dead", latency_ms=0, bandwidth_mbps=0, fail_every=1, fail_on="read", fail_errno="ENOTCONN"
    )
    ref = _put(m, "x-001.tar", b"a" * 100_000)
    reader = ShardReader(retry=FAST_RETRY, prefetch=0)
    with reader, pytest.raises(ShardReadError) as ei:
        reader.open(ref).read()
    assert ref.url in str(ei.value) and "offset 0" in str(ei.value)
    assert ei.value.errno == 107  # ENOTCONN, as Colab reports it


def test_cache_over_fuse_reads_source_once(slow_fuse_mount, tmp_path):
    m = slow_fuse_mount
    refs = [_put(m, f"s-{i}.tar", bytes([i]) * 200_000) for i in range(3)]
    cache = ShardCache(str(tmp_path / "cache"), limit_bytes=10 << 20)
    for _epoch in range(2):
        with ShardReader(cache=cache, prefetch=2) as reader:
            reader.schedule(refs)
            for i, ref in enumerate(refs):
                with reader.open(ref, offset=10) as f:
                    assert f.read() == bytes([i]) * 199_990
    opens = [line for line in m.log_lines() if line.startswith("open /s-")]
    assert sorted(opens) == ["open /s-0.tar", "open /s-1.tar", "open /s-2.tar"], (
        "epoch 2 read the cache only"
    )
    assert cache.stats().misses == 3 and cache.stats().hits >= 3


@pytest.mark.fuse
def test_verify_downloads_each_shard_on_a_mount_once(slowfs_factory):
    """verify's three passes (digest, members, crc32s) read one download of each shard on a
    Drive-like mount; they used to open and read it three times."""
    from test_remote_e2e import tar_opens

    from wds_pipeline.index import load_index
    from wds_pipeline.testing import write_synthetic_dataset
    from wds_pipeline.verify import verify_index

    m = slowfs_factory("verify", latency_ms=5, bandwidth_mbps=200)
    write_synthetic_dataset(os.path.join(m.source, "ds"), [4, 3])
    index = os.path.join(m.mountpoint, "ds", "index.json")
    verdict = verify_index(index, progress=False)
    assert (verdict.ok, verdict.samples) == (True, 7), verdict.problems
    assert sorted(tar_opens(m)) == ["/ds/shard-000000.tar", "/ds/shard-000001.tar"]

    # The crc32s are checked from that one read too: damage that leaves size, digest and
    # tar headers intact (a rewritten index entry) is still found.
    idx = load_index(index)
    idx.shards[1].sample_crc32[2] ^= 1
    with open(os.path.join(m.source, "ds", "index.json"), "w") as f:
        f.write(idx.to_json())
    assert verify_index(index, progress=False).problems == [
        f"shard-000001.tar: sample 2 (byte {idx.shards[1].sample_offsets[2]}) has crc32 "
        f"{idx.shards[1].sample_crc32[2] ^ 1}, index says {idx.shards[1].sample_crc32[2]}"]
    assert len(tar_opens(m)) == 4
