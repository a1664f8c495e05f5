"""ShardCache: bound, eviction, naming, verification, crash safety, multi-process use."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from shardgen import xxh3

from wds_pipeline.readpath import CacheFullError, ShardCache, ShardIntegrityError, cache_key
from wds_pipeline.storage import Digest


def _write(path, data: bytes) -> tuple[str, Digest, int]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path), xxh3(data), len(data)


def _sources(tmp_path, n: int, base: int = 100_000) -> list[tuple[str, Digest, int]]:
    rng = random.Random(0)
    return [
        _write(str(tmp_path / "src" / f"s-{i:03d}.tar"), rng.randbytes(base + 997 * i))
        for i in range(n)
    ]


def _disk_usage(cache_dir: str) -> int:
    """Independent of the cache's own accounting: every file under cache_dir."""
    total = 0
    for root, _, files in os.walk(cache_dir):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _sha(path: str) -> Digest:
    with open(path, "rb") as f:
        return xxh3(f.read())


def test_bound_never_exceeded_and_sources_untouched(tmp_path):
    srcs = _sources(tmp_path, 12)
    before = {p: (_sha(p), os.stat(p).st_mtime_ns) for p, _, _ in srcs}
    limit = 400_000  # ~3.5 shards
    cache = ShardCache(str(tmp_path / "cache"), limit_bytes=limit)
    rng = random.Random(1)
    for _ in range(60):
        url, sha, size = rng.choice(srcs)
        path = cache.get(url, digest=sha, size=size)
        assert _sha(path) == sha
        assert _disk_usage(cache.cache_dir) <= limit
    st = cache.stats()
    assert st.evictions > 0 and st.hits > 0 and st.misses > 0
    after = {p: (_sha(p), os.stat(p).st_mtime_ns) for p, _, _ in srcs}
    assert after == before, "eviction must never touch source files"


def test_lru_evicts_least_recently_used(tmp_path):
    a, b, c = _sources(tmp_path, 3)
    cache = ShardCache(str(tmp_path / "cache"), limit_bytes=2 * 110_000)
    cache.get(a[0], digest=a[1], size=a[2])
    cache.get(b[0], digest=b[1], size=b[2])
    cache.get(a[0], digest=a[1], size=a[2])  # a is now more recent than b
    cache.get(c[0], digest=c[1], size=c[2])  # must evict b
    assert cache.contains(a[0]) and cache.contains(c[0]) and not cache.contains(b[0])


def test_names_come_from_the_full_url(tmp_path):
    x = _write(str(tmp_path / "a" / "x-000.tar"), b"A" * 5000)
    y = _write(str(tmp_path / "b" / "x-000.tar"), b"B" * 5000)
    cache = ShardCache(str(tmp_path / "cache"))
    px = cache.get(x[0], digest=x[1], size=x[2])
    py = cache.get(y[0], digest=y[1], size=y[2])
    assert px != py and os.path.basename(px).endswith("x-000.tar")
    with open(px, "rb") as fx, open(py, "rb") as fy:
        assert fx.read() == b"A" * 5000 and fy.read() == b"B" * 5000
    assert cache_key("gs://b/train/x-000.tar") != cache_key("gs://b/dev/x-000.tar")
    assert cache.stats().hits == 0 and cache.stats().misses == 2


def test_hit_does_not_rehash(tmp_path):
    (src,) = _sources(tmp_path, 1)
    cache = ShardCache(str(tmp_path / "cache"))
    cache.get(src[0], digest=src[1], size=src[2])
    for _ in range(3):
        cache.get(src[0], digest=src[1], size=src[2])
    st = cache.stats()
    assert (st.misses, st.hits, st.rehashes) == (1, 3, 0)


def test_corrupted_cached_shard_is_detected_and_refetched(tmp_path):
    (src,) = _sources(tmp_path, 1)
    cache = ShardCache(str(tmp_path / "cache"))
    path = cache.get(src[0], digest=src[1], size=src[2])
    with open(path, "r+b") as f:  # same size, bytes flipped, mtime changes
        f.seek(1234)
        f.write(b"\xff\x00\xff")
    path = cache.get(src[0], digest=src[1], size=src[2])
    assert _sha(path) == src[1]
    st = cache.stats()
    assert st.corrupt == 1 and st.misses == 2


def test_corruption_hiding_its_mtime_is_caught_by_verify(tmp_path):
    (src,) = _sources(tmp_path, 1)
    cache = ShardCache(str(tmp_path / "cache"))
    path = cache.get(src[0], digest=src[1], size=src[2])
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\x00\x01\x02\x03")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    path = cache.get(src[0], digest=src[1], size=src[2], verify=True)
    assert _sha(path) == src[1]
    assert cache.stats().corrupt == 1


def test_changed_expected_hash_invalidates_entry(tmp_path):
    p, sha, size = _write(str(tmp_path / "src" / "s.tar"), b"old" * 1000)
    cache = ShardCache(str(tmp_path / "cache"))
    cache.get(p, digest=sha, size=size)
    p, sha2, size2 = _write(p, b"new" * 1000)  # shard rebuilt, index updated
    assert _sha(cache.get(p, digest=sha2, size=size2)) == sha2


def test_download_mismatch_refetched_once_then_reported(tmp_path):
    p, sha, size = _write(str(tmp_path / "src" / "s.tar"), b"good" * 1000)
    calls = []

    def flaky_fetch(url, dst):  # first download corrupt, second fine
        calls.append(url)
        with open(url, "rb") as f:
            data = f.read()
        dst.write(data if len(calls) > 1 else b"X" + data[1:])

    cache = ShardCache(str(tmp_path / "cache"))
    assert _sha(cache.get(p, digest=sha, size=size, fetch=flaky_fetch)) == sha
    assert len(calls) == 2 and cache.stats().refetches == 1

    bad = Digest("xxh3_128", "0" * 32)
    calls.clear()
    with pytest.raises(ShardIntegrityError) as ei:
        cache.get(p, digest=bad, size=size, fetch=flaky_fetch)
    msg = str(ei.value)
    assert p in msg and str(bad) in msg and str(sha) in msg
    assert len(calls) == 2, "re-fetched exactly once"
    assert not cache.contains(p)
    assert os.listdir(os.path.join(cache.cache_dir, "tmp")) == []


def test_source_bigger_than_index_says_never_exceeds_bound(tmp_path):
    p, _, _ = _write(str(tmp_path / "src" / "s.tar"), b"z" * 50_000)
    cache = ShardCache(str(tmp_path / "cache"), limit_bytes=30_000)
    with pytest.raises(ShardIntegrityError):
        cache.get(p, digest=None, size=10_000)  # index claims 10 kB
    assert _disk_usage(cache.cache_dir) <= 30_000


def test_shard_larger_than_limit_is_refused_with_a_clear_error(tmp_path):
    p, sha, size = _write(str(tmp_path / "src" / "big.tar"), b"b" * 50_000)
    cache = ShardCache(str(tmp_path / "cache"), limit_bytes=20_000)
    with pytest.raises(CacheFullError) as ei:
        cache.get(p, digest=sha, size=size)
    assert p in str(ei.value) and "limit" in str(ei.value)
    assert _disk_usage(cache.cache_dir) == 0


# ------------------------------------------------------------ crash safety

_SLOW_CHILD = textwrap.dedent(
    """
    import sys, time
    from wds_pipeline.readpath import ShardCache
    from wds_pipeline.storage import Digest
    cache_dir, url, sha, size, marker = sys.argv[1:6]

    def slow_fetch(u, dst):
        data = open(u, "rb").read()
        dst.write(data[: len(data) // 2])
        dst.flush()
        open(marker, "w").close()      # half written: tell the parent to kill us
        time.sleep(600)

    ShardCache(cache_dir, limit_bytes=10_000_000).get(url, digest=Digest.parse(sha), size=int(size), fetch=slow_fetch)
    """
)


def test_killed_download_leaves_nothing_trusted(tmp_path):
    (src,) = _sources(tmp_path, 1)
    cache_dir = str(tmp_path / "cache")
    marker = tmp_path / "half-written"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CHILD, cache_dir, src[0], str(src[1]), str(src[2]), str(marker)]
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "child died before writing half the shard"
            assert time.monotonic() < deadline, "child never got halfway"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cache = ShardCache(cache_dir, limit_bytes=10_000_000)
    assert not cache.contains(src[0]), "a partial download must not look cached"
    assert len(os.listdir(os.path.join(cache_dir, "tmp"))) == 1, "the killed download's temp file"
    path = cache.get(src[0], digest=src[1], size=src[2])
    assert _sha(path) == src[1]
    assert cache.stats().misses == 1 and cache.stats().stale_tmp_removed == 1
    assert os.listdir(os.path.join(cache_dir, "tmp")) == []


# ------------------------------------------------------- two real processes


def _worker_get(cache_dir, url, sha, size, barrier, out):
    cache = ShardCache(cache_dir, limit_bytes=64 << 20)
    barrier.wait()
    path = cache.get(url, digest=sha, size=size)
    with open(path, "rb") as f:
        digest = xxh3(f.read())
    st = cache.stats()
    out.put((digest, st.misses, st.hits, st.bytes_downloaded))


def test_two_processes_share_one_download(slow_fuse_mount, tmp_path):
    """Both processes ask for the same shard on a slow FUSE source at once: it is
    opened on the source exactly once and both read the complete verified bytes."""
    data = random.Random(5).randbytes(6 << 20)  # ~0.3 s at 20 MB/s
    _write(os.path.join(slow_fuse_mount.source, "shard-000.tar"), data)
    url = os.path.join(slow_fuse_mount.mountpoint, "shard-000.tar")
    sha = xxh3(data)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    cache_dir = str(tmp_path / "cache")
    procs = [
        ctx.Process(target=_worker_get, args=(cache_dir, url, sha, len(data), barrier, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [r[0] for r in results] == [sha, sha]
    assert sorted((r[1], r[2]) for r in results) == [(0, 1), (1, 0)], results
    assert sum(r[3] for r in results) == len(data)
    opens = [line for line in slow_fuse_mount.log_lines() if line == "open /shard-000.tar"]
    assert len(opens) == 1, slow_fuse_mount.log_lines()


def test_threads_sharing_a_cache_download_once(tmp_path):
    """Prefetch threads and the consumer thread may ask for the same shard at once."""
    import threading

    p, sha, size = _write(str(tmp_path / "src" / "s.tar"), random.Random(9).randbytes(500_000))
    cache = ShardCache(str(tmp_path / "cache"))
    fetches, started = [], threading.Event()
    release = threading.Event()

    def gated_fetch(url, dst):  # holds the download open until both threads are in get()
        fetches.append(url)
        started.set()
        release.wait(60)
        with open(url, "rb") as f:
            dst.write(f.read())

    results = []

    def get():
        results.append(_sha(cache.get(p, digest=sha, size=size, fetch=gated_fetch)))

    t1 = threading.Thread(target=get)
    t1.start()
    assert started.wait(60)
    t2 = threading.Thread(target=get)
    t2.start()
    # Release the download only once the second thread has joined it (not merely started:
    # it could come after the download and pass as a plain hit).
    deadline = time.monotonic() + 60
    while cache.stats().joins < 1:
        assert time.monotonic() < deadline, "the second get() never joined the download"
        time.sleep(0.005)
    release.set()
    t1.join(60)
    t2.join(60)
    assert results == [sha, sha] and len(fetches) == 1
    assert (cache.stats().misses, cache.stats().hits, cache.stats().joins) == (1, 1, 1)
