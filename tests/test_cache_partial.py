"""Reading shards while the cache downloads them, verified sample by sample.

With per-sample crc32s in the index the loader does not wait for a whole remote/FUSE
shard: it reads the cache's temp file as it fills, checks every sample against its crc
before decoding it, and still gets the whole-shard digest verdict at the end. Real
parts only: the slowfs FUSE mount (Drive stand-in), the GCS emulator, DataLoader
workers. Nothing is timed: "before the download finished" is what the cache recorded
when the first bytes were read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import numpy as np
import pytest
from shardgen import xxh3
from test_remote_e2e import assert_same_samples, epoch, synthetic_expected, tar_opens

from wds_pipeline import StreamingLoader
from wds_pipeline import format as fmt
from wds_pipeline.index import load_index
from wds_pipeline.readpath import (
    PartialShard,
    ShardCache,
    ShardIntegrityError,
    ShardReader,
    ShardRef,
)
from wds_pipeline.storage import Digest
from wds_pipeline.testing import write_synthetic_dataset
from wds_pipeline.verify import verify_index

BIG = 32_000  # frames per clip: 64 KB of int16 audio


def big_frames(s: int, i: int) -> int:
    return BIG


def loader_for(index: str, cache_dir, **kw) -> StreamingLoader:
    kw.setdefault("num_workers", 0)
    return StreamingLoader(index, batch_size=4, waveform_dtype="int16", last_batch="pad",
                           shuffle_buffer=8, cache_dir=str(cache_dir), **kw)


def drop_crcs(index_path: str) -> None:
    with open(index_path) as f:
        d = json.load(f)
    for s in d["shardlist"]:
        del s["sample_crc32"]
    with open(index_path, "w") as f:
        json.dump(d, f)


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def cached_sha(cache: ShardCache, url: str) -> Digest:
    with open(cache.path_for(url), "rb") as f:
        return xxh3(f.read())


@pytest.mark.fuse
def test_first_batch_is_read_before_its_shard_finished_downloading(slowfs_factory, tmp_path):
    # One 16 MB shard behind a 5 MB/s mount: the download takes seconds, the first
    # batch needs 8 samples (512 KB).
    m = slowfs_factory("slow", latency_ms=100, bandwidth_mbps=5)
    sizes = [250]
    write_synthetic_dataset(os.path.join(m.source, "ds"), sizes, frames=big_frames)
    index = os.path.join(m.mountpoint, "ds", "index.json")
    info = load_index(index).shards[0]
    loader = loader_for(index, tmp_path / "cache")

    it = iter(loader)
    first = next(it)
    reader = loader.dataset._reader
    cache = reader.cache
    st = cache.stats()
    assert st.partial_opens == 1 and reader.stats().partial_opens == 1
    # Bytes of the shard still on their way when the first bytes were read:
    assert 0 < st.partial_bytes_missing < info.filesize
    assert not cache.contains(load_index(index).shard_url(0))  # not committed yet

    rest = list(it)
    waves = {}
    for b in [first, *rest]:
        for row, (key, pad) in enumerate(zip(b.keys, b.is_padding.tolist())):
            if not pad:
                waves[key] = b.waveform[row, : int(b.lengths[row])].numpy().copy()
    assert_same_samples(waves, synthetic_expected(sizes, big_frames))
    # The download went on to the end, verified and committed the entry: once.
    url = load_index(index).shard_url(0)
    st = cache.stats()
    assert cache.contains(url) and cached_sha(cache, url) == info.digest
    assert (st.misses, st.bytes_downloaded) == (1, info.filesize)
    assert tar_opens(m) == ["/ds/shard-000000.tar"]


@pytest.mark.fuse
def test_streamed_cold_epoch_in_workers_equals_local_read(slow_fuse_mount, tmp_path):
    m = slow_fuse_mount
    sizes = [40, 40, 40, 25]
    write_synthetic_dataset(os.path.join(m.source, "ds"), sizes, frames=big_frames)
    remote = loader_for(os.path.join(m.mountpoint, "ds", "index.json"), tmp_path / "cache",
                        num_workers=2)
    local = loader_for(os.path.join(m.source, "ds", "index.json"), tmp_path / "unused",
                       num_workers=2)
    keys_r, waves_r = epoch(remote)
    keys_l, waves_l = epoch(local)
    assert keys_r == keys_l  # same plan, same order
    assert_same_samples(waves_r, waves_l)
    assert_same_samples(waves_r, synthetic_expected(sizes, big_frames))
    # One download per shard (prefetch and partial reads joined), each committed verified.
    names = [f"/ds/shard-{s:06d}.tar" for s in range(len(sizes))]
    assert sorted(tar_opens(m)) == names
    idx = load_index(os.path.join(m.mountpoint, "ds", "index.json"))
    cache = ShardCache(str(tmp_path / "cache"))
    for i, info in enumerate(idx.shards):
        assert cache.contains(idx.shard_url(i))
        assert cached_sha(cache, idx.shard_url(i)) == info.digest
    assert os.listdir(tmp_path / "cache" / "tmp") == []


@pytest.mark.fuse
def test_shard_damaged_mid_file_names_the_sample(slowfs_factory, tmp_path):
    m = slowfs_factory("slow", latency_ms=100, bandwidth_mbps=5)
    write_synthetic_dataset(os.path.join(m.source, "ds"), [200], frames=big_frames)
    index = os.path.join(m.mountpoint, "ds", "index.json")
    info = load_index(index).shards[0]
    # A flipped byte in the audio payload of sample 120, in the backing file.
    flip_byte(os.path.join(m.source, "ds", "shard-000000.tar"), info.sample_offsets[120] + 5000)
    loader = loader_for(index, tmp_path / "cache", on_corrupt_shard="raise")
    keys: list[str] = []
    with pytest.raises(fmt.ShardFormatError) as exc:
        for b in loader:
            keys.extend(k for k, pad in zip(b.keys, b.is_padding.tolist()) if not pad)
    msg = str(exc.value)
    assert "shard-000000.tar: sample 120 (bytes" in msg and "crc32" in msg
    assert "rebuild the shard" in msg and "on_corrupt_shard='skip'" in msg
    assert not any(k.endswith(f"u{i:04d}") for k in keys for i in range(120, 200))
    assert loader.dataset._reader.cache.stats().partial_opens == 1
    cache = ShardCache(str(tmp_path / "cache"))
    assert not cache.contains(load_index(index).shard_url(0))  # never committed


@pytest.mark.fuse
def test_damage_outside_sample_bytes_fails_the_shard_after_its_samples(slowfs_factory, tmp_path):
    m = slowfs_factory("slow", latency_ms=100, bandwidth_mbps=20)
    write_synthetic_dataset(os.path.join(m.source, "ds"), [30], frames=big_frames)
    index = os.path.join(m.mountpoint, "ds", "index.json")
    shard = os.path.join(m.source, "ds", "shard-000000.tar")
    flip_byte(shard, os.path.getsize(shard) - 1)  # in the end-of-archive blocks
    loader = loader_for(index, tmp_path / "cache", on_corrupt_shard="raise")
    keys: list[str] = []
    with pytest.raises(fmt.ShardFormatError) as exc:
        for b in loader:
            keys.extend(k for k, pad in zip(b.keys, b.is_padding.tolist()) if not pad)
    msg = str(exc.value)
    assert "shard-000000.tar failed verification" in msg
    assert "every sample read from it passed its crc32" in msg


@pytest.mark.fuse
def test_index_without_crcs_reads_whole_verified_shards(slow_fuse_mount, tmp_path):
    m = slow_fuse_mount
    sizes = [20, 15]
    write_synthetic_dataset(os.path.join(m.source, "ds"), sizes, frames=big_frames)
    drop_crcs(os.path.join(m.source, "ds", "index.json"))
    index = os.path.join(m.mountpoint, "ds", "index.json")
    assert all(not s.sample_crc32 for s in load_index(index).shards)
    loader = loader_for(index, tmp_path / "cache")
    keys, waves = epoch(loader)
    assert Counter(keys) == Counter({k: 1 for k in synthetic_expected(sizes, big_frames)})
    assert_same_samples(waves, synthetic_expected(sizes, big_frames))
    reader = loader.dataset._reader
    assert reader.stats().partial_opens == 0 and reader.stats().cached_opens == 2
    assert reader.cache.stats().partial_opens == 0


def _two_slow_shards(slowfs_factory, tmp_path, per_shard: int):
    """Two shards of ``per_shard`` samples on a 5 MB/s mount, refs that may stream, a cache."""
    m = slowfs_factory("slow", latency_ms=100, bandwidth_mbps=5)
    write_synthetic_dataset(os.path.join(m.source, "ds"), [per_shard, per_shard], frames=big_frames)
    idx = load_index(os.path.join(m.mountpoint, "ds", "index.json"))
    refs = [ShardRef(idx.shard_url(i), s.digest, s.filesize, partial_ok=True)
            for i, s in enumerate(idx.shards)]
    return m, idx, refs, ShardCache(str(tmp_path / "cache"))


@pytest.mark.fuse
def test_partial_open_joins_the_prefetch_download(slowfs_factory, tmp_path):
    m, idx, refs, cache = _two_slow_shards(slowfs_factory, tmp_path, 60)
    with ShardReader(cache=cache, prefetch=2) as reader:
        reader.schedule(refs)
        for ref, info in zip(refs, idx.shards):
            with reader.open(ref) as f:
                data = f.read()
                if isinstance(f, PartialShard):
                    f.wait_verified()
            assert xxh3(data) == info.digest
    st = cache.stats()
    assert st.misses == 2 and st.bytes_downloaded == sum(s.filesize for s in idx.shards)
    assert st.joins >= 1  # the first shard's prefetch was running when it was opened
    assert sorted(tar_opens(m)) == ["/ds/shard-000000.tar", "/ds/shard-000001.tar"]
    assert all(cache.contains(r.url) for r in refs)


@pytest.mark.gcs
def test_streamed_epoch_over_gcs_equals_local_read(gcs_emulator, tmp_path):
    sizes = [30, 30, 12]
    local_dir = tmp_path / "ds"
    write_synthetic_dataset(str(local_dir), sizes, frames=big_frames)
    fs = gcs_emulator.fs
    remote = gcs_emulator.gs("partial/ds")
    for p in sorted(local_dir.iterdir()):
        fs.pipe_file(f"{remote}/{p.name}", p.read_bytes())
    got = loader_for(f"{remote}/index.json", tmp_path / "cache", num_workers=2,
                     storage_options=gcs_emulator.storage_options)
    want = loader_for(str(local_dir / "index.json"), tmp_path / "unused", num_workers=2)
    keys_g, waves_g = epoch(got)
    keys_l, waves_l = epoch(want)
    assert keys_g == keys_l
    assert_same_samples(waves_g, waves_l)
    cache = ShardCache(str(tmp_path / "cache"))
    idx = load_index(f"{remote}/index.json", **gcs_emulator.storage_options)
    for i, info in enumerate(idx.shards):
        assert cached_sha(cache, idx.shard_url(i)) == info.digest
    assert np.all([cache.contains(idx.shard_url(i)) for i in range(len(sizes))])


@pytest.mark.fuse
def test_next_shard_waits_until_the_one_being_read_is_nearly_downloaded(slowfs_factory, tmp_path):
    from wds_pipeline.readpath.reader import PREFETCH_OVERLAP

    m, idx, refs, cache = _two_slow_shards(slowfs_factory, tmp_path, 250)
    with ShardReader(cache=cache, prefetch=2) as reader:
        reader.schedule(refs)
        with reader.open(refs[0]) as f:
            assert isinstance(f, PartialShard)
            assert len(f.read(1 << 20)) == 1 << 20
            opens = tar_opens(m)  # before the progress: a shard opened by then saw it smaller
            written, size = f.progress()
            # 16 MB at 5 MB/s: most of it is still on its way, and the link is all its own.
            assert size - written > PREFETCH_OVERLAP
            assert opens == ["/ds/shard-000000.tar"]
            rest = f.read()
            f.wait_verified()
        with reader.open(refs[1]) as g:
            second = g.read()
            if isinstance(g, PartialShard):
                g.wait_verified()
    assert len(rest) + (1 << 20) == idx.shards[0].filesize
    assert xxh3(second) == idx.shards[1].digest
    assert cache.stats().misses == 2


def downgrade_to_format_1(index_path: str) -> None:
    """Rewrite an index as format 1 recorded shards: a sha256 digest (hashlib's, here)."""
    with open(index_path) as f:
        d = json.load(f)
    for s in d["shardlist"]:
        del s["xxh3_128"]
        with open(os.path.join(os.path.dirname(index_path), s["url"]), "rb") as f:
            s["sha256"] = hashlib.sha256(f.read()).hexdigest()
    d["wds_pipeline"]["format_version"] = 1
    with open(index_path, "w") as f:
        json.dump(d, f)


@pytest.mark.fuse
def test_a_format_1_index_with_sha256_digests_is_read_through_the_cache_and_verified(
        slowfs_factory, tmp_path):
    """Shards built before XXH3-128 digests keep working: the cache checks each download
    with the algorithm its index entry names, and a changed byte is still caught."""
    m = slowfs_factory("v1", latency_ms=5, bandwidth_mbps=200)
    sizes = [6, 5]
    write_synthetic_dataset(os.path.join(m.source, "ds"), sizes, frames=big_frames)
    downgrade_to_format_1(os.path.join(m.source, "ds", "index.json"))
    index = os.path.join(m.mountpoint, "ds", "index.json")
    idx = load_index(index)
    assert idx.format_version == 1 and [s.digest.algorithm for s in idx.shards] == ["sha256"] * 2
    assert verify_index(index, progress=False).ok

    loader = loader_for(index, tmp_path / "cache")
    _, waves = epoch(loader)
    assert_same_samples(waves, synthetic_expected(sizes, big_frames))
    cache = loader.dataset._reader.cache
    assert cache.stats().misses == 2 and cache.stats().refetches == 0
    for i, info in enumerate(idx.shards):
        with open(cache.path_for(idx.shard_url(i)), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == info.digest.hex

    flip_byte(os.path.join(m.source, "ds", "shard-000001.tar"), idx.shards[1].filesize // 2)
    problems = verify_index(index, progress=False).problems
    assert problems[0].startswith("shard-000001.tar: digest mismatch (file sha256 "), problems
    with pytest.raises(ShardIntegrityError, match="expected sha256:"):
        ShardCache(str(tmp_path / "cache2")).get(idx.shard_url(1), digest=idx.shards[1].digest,
                                                 size=idx.shards[1].filesize)
