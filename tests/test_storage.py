"""storage.py against real backends: local disk, memory://, the GCS emulator, a FUSE mount."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator

import pytest
from shardgen import xxh3

from wds_pipeline import storage
from wds_pipeline.storage import Digest


def _blob(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


# ------------------------------------------------------- one contract, 3 backends


@pytest.fixture(params=["local", "memory", "gcs"])
def backend(request, tmp_path):
    """(base URL, storage options) of an empty folder on each backend."""
    if request.param == "local":
        return str(tmp_path / "store"), {}
    if request.param == "memory":
        return f"memory://wds-test-{uuid.uuid4().hex}", {}
    emu = request.getfixturevalue("gcs_emulator")
    return emu.gs(f"store-{uuid.uuid4().hex}"), emu.storage_options


def test_round_trip_on_every_backend(backend, tmp_path):
    base, so = backend
    data = _blob(3 << 20, seed=1)
    storage.makedirs(base, **so)
    storage.write_bytes_atomic(f"{base}/a/index.json", b'{"k": 1}', **so)
    assert storage.read_bytes(f"{base}/a/index.json", **so) == b'{"k": 1}'

    src = tmp_path / "shard.tar"
    src.write_bytes(data)
    storage.commit_file(str(src), f"{base}/a/x-000.tar", **so)
    assert not src.exists(), "commit_file moves the source by default"
    assert storage.exists(f"{base}/a/x-000.tar", **so)
    assert storage.file_size(f"{base}/a/x-000.tar", **so) == len(data)
    assert storage.digest_file(f"{base}/a/x-000.tar", **so) == (xxh3(data), len(data))
    assert storage.digest_file(f"{base}/a/x-000.tar", "sha256", **so) == (
        Digest("sha256", hashlib.sha256(data).hexdigest()), len(data))
    assert storage.read_bytes(f"{base}/a/x-000.tar", **so) == data
    assert storage.listdir(f"{base}/a", **so) == ["index.json", "x-000.tar"]

    storage.remove(f"{base}/a/index.json", **so)
    assert not storage.exists(f"{base}/a/index.json", **so)
    assert storage.listdir(f"{base}/a", **so) == ["x-000.tar"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{base}/a/missing.tar", **so)


def test_commit_keep_source(tmp_path):
    src = tmp_path / "s.tar"
    src.write_bytes(b"abc")
    storage.commit_file(str(src), str(tmp_path / "out" / "s.tar"), keep_source=True)
    assert src.read_bytes() == b"abc"
    assert (tmp_path / "out" / "s.tar").read_bytes() == b"abc"


def test_commit_same_filesystem_is_a_rename(tmp_path):
    src = tmp_path / "s.tar"
    src.write_bytes(_blob(1000))
    ino = os.stat(src).st_ino
    dest = tmp_path / "deep" / "dir" / "s.tar"
    storage.commit_file(str(src), "file://" + str(dest))
    assert os.stat(dest).st_ino == ino, "same filesystem: os.replace, no copy"
    assert os.listdir(dest.parent) == ["s.tar"]


def test_commit_missing_source_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tar"):
        storage.commit_file(str(tmp_path / "nope.tar"), str(tmp_path / "x.tar"))


def _watch_sizes(probe, stop: threading.Event, seen: list) -> None:
    while not stop.is_set():
        size = probe()
        if size is not None:
            seen.append(size)


@contextlib.contextmanager
def _sizes_seen(probe) -> Iterator[list]:
    """Poll ``probe()`` in a thread for the duration of the block; yields the sizes
    it saw (None results left out)."""
    stop, seen = threading.Event(), []
    t = threading.Thread(target=_watch_sizes, args=(probe, stop, seen))
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


def test_commit_to_fuse_is_atomic(slow_fuse_mount, tmp_path):
    """Copy to a temp name inside the mount, then rename: a reader polling the final
    name sees nothing or the whole file, never a prefix."""
    data = _blob(6 << 20, seed=2)  # ~0.3 s at 20 MB/s
    src = tmp_path / "local.tar"
    src.write_bytes(data)
    dest = os.path.join(slow_fuse_mount.mountpoint, "train", "x-000.tar")

    def probe():
        try:
            return os.stat(dest).st_size
        except FileNotFoundError:
            return None

    with _sizes_seen(probe) as seen:
        storage.commit_file(str(src), dest)
    assert set(seen) <= {len(data)}, f"a reader saw a partial file: sizes {sorted(set(seen))}"
    with open(os.path.join(slow_fuse_mount.source, "train", "x-000.tar"), "rb") as f:
        assert f.read() == data
    assert os.listdir(os.path.join(slow_fuse_mount.source, "train")) == ["x-000.tar"], (
        "no temp file left"
    )
    created = [line for line in slow_fuse_mount.log_lines() if line.startswith("create ")]
    assert len(created) == 1 and "/train/.x-000.tar.tmp-" in created[0], created
    assert not src.exists()


def test_commit_to_fuse_retries_transient_write_errors(slowfs_factory, tmp_path):
    m = slowfs_factory(
        "flaky", latency_ms=0, bandwidth_mbps=0, fail_every=3, fail_on="write", fail_errno="EIO"
    )
    data = _blob(2 << 20, seed=3)
    src = tmp_path / "s.tar"
    src.write_bytes(data)
    storage.commit_file(str(src), os.path.join(m.mountpoint, "s.tar"))
    with open(os.path.join(m.source, "s.tar"), "rb") as f:
        assert f.read() == data
    assert os.listdir(m.source) == ["s.tar"], "failed attempts left no temp files"


def test_commit_to_gcs_object_visible_only_complete(gcs_emulator, fault_proxy, tmp_path):
    """Upload through a 50 MB/s link while polling the object directly: it is either
    absent or complete."""
    fault_proxy.set_bandwidth(50e6)
    data = _blob(20 << 20, seed=4)
    src = tmp_path / "s.tar"
    src.write_bytes(data)
    url = gcs_emulator.gs(f"commit-{uuid.uuid4().hex}/x-000.tar")
    path = url[len("gs://") :]
    import gcsfs

    watcher = gcsfs.GCSFileSystem(skip_instance_cache=True, **gcs_emulator.storage_options)

    def probe():
        watcher.invalidate_cache()
        try:
            return watcher.info(path)["size"]
        except FileNotFoundError:
            return None

    with _sizes_seen(probe) as seen:
        storage.commit_file(str(src), url, **gcs_emulator.storage_options_via(fault_proxy))
    assert set(seen) <= {len(data)}, f"a partial object was visible: sizes {sorted(set(seen))}"
    assert gcs_emulator.fs.cat_file(path) == data


# ------------------------------------------------------------------- mounts


def test_mount_detection_on_fuse_and_tmp(slow_fuse_mount):
    mi = storage.mount_of(os.path.join(slow_fuse_mount.mountpoint, "not-yet", "x.tar"))
    assert mi.mountpoint == os.path.realpath(slow_fuse_mount.mountpoint)
    assert mi.fstype == "fuse.slowfs"
    assert storage.is_fuse_path(slow_fuse_mount.mountpoint)
    assert storage.is_fuse_path("file://" + slow_fuse_mount.mountpoint + "/a.tar")
    assert not storage.is_fuse_path(slow_fuse_mount.source)
    assert not storage.is_fuse_path("/tmp")
    assert not storage.is_fuse_path("gs://bucket/x.tar")


def test_parse_mounts_unescapes_and_longest_prefix_wins():
    text = (
        "/dev/vda / ext4 rw 0 0\n"
        "drive /content/drive fuse.drive rw 0 0\n"
        "server:/x /content/drive/My\\040Drive/nfs nfs4 rw 0 0\n"
    )
    mounts = storage.parse_mounts(text)
    assert mounts[2].mountpoint == "/content/drive/My Drive/nfs"
    assert storage.find_mount("/content/drive/MyDrive/a.tar", mounts).fstype == "fuse.drive"
    assert storage.find_mount("/content/drive/My Drive/nfs/a.tar", mounts).fstype == "nfs4"
    assert storage.find_mount("/content/driveX", mounts).fstype == "ext4"


# --------------------------------------------------------------- transients


def test_is_transient_classification():
    import aiohttp
    from gcsfs.retry import HttpError

    assert storage.is_transient(OSError(errno.ENOTCONN, "Transport endpoint is not connected"))
    assert storage.is_transient(OSError(errno.EIO, "I/O error"))
    assert storage.is_transient(ConnectionResetError())
    assert storage.is_transient(TimeoutError())
    assert storage.is_transient(aiohttp.ClientPayloadError("payload"))
    assert storage.is_transient(HttpError({"code": 503, "message": "busy"}))
    assert storage.is_transient(HttpError({"code": 429, "message": "slow down"}))
    assert not storage.is_transient(HttpError({"code": 403, "message": "forbidden"}))
    assert not storage.is_transient(FileNotFoundError(errno.ENOENT, "gone"))
    assert not storage.is_transient(PermissionError(errno.EACCES, "no"))
    assert not storage.is_transient(ValueError("bad"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = ConnectionResetError()
    assert storage.is_transient(wrapped)


# ------------------------------------------- one index reader, one retry policy


def test_index_read_retries_transient_errors_like_every_storage_read(slowfs_factory):
    """load_index read through fsspec directly and gave up on the first ENOTCONN from
    a flaky Drive mount, while verify's index read retried: both go through storage now."""
    from shardgen import make_dataset

    from wds_pipeline.index import load_index

    m = slowfs_factory("flaky-index", latency_ms=0, bandwidth_mbps=0, fail_every=3,
                       fail_on="open,read", fail_errno="ENOTCONN")
    make_dataset(str(m.source), [3, 2])
    for _ in range(6):  # every third open/read fails: some of these reads meet a failure
        assert load_index(str(m.mountpoint)).num_samples == 5


def test_retry_policy_is_one_class():
    from wds_pipeline.readpath import resumable as fetch

    assert fetch.RetryPolicy is storage.RetryPolicy
    assert storage.STORAGE_RETRY.attempts == 4


# ------------------------------------------------- hashing stream and shard check


def test_hashing_writer_hashes_counts_and_refuses_past_its_limit(tmp_path):
    data = _blob(100_000, seed=3)
    with open(tmp_path / "out", "wb") as f:
        w = storage.HashingWriter(f)
        w.write(data[:10])
        w.write(memoryview(data)[10:])
    assert (w.size, w.digest()) == (len(data), xxh3(data))
    assert storage.digest_file(str(tmp_path / "out")) == (w.digest(), len(data))

    with open(tmp_path / "bounded", "wb") as f:
        w = storage.HashingWriter(f, limit=1000)
        w.write(data[:600])
        with pytest.raises(storage.WriteLimitExceeded, match="more than the expected 1000 bytes"):
            w.write(data[600:1200])
    assert w.overflow and w.size == 600
    assert (tmp_path / "bounded").read_bytes() == data[:600]


def test_check_file_names_each_mismatch(tmp_path):
    p = tmp_path / "s.tar"
    p.write_bytes(b"a" * 1000)
    xx = xxh3(b"a" * 1000)
    assert storage.check_file(str(p), expected=xx, expected_size=1000).ok
    assert storage.check_file(str(p), expected=None, expected_size=None).ok
    bad = storage.check_file(str(p), expected=Digest("xxh3_128", "f" * 32), expected_size=1200)
    assert not bad.ok and (bad.digest, bad.size) == (xx, 1000)
    assert bad.problems("s.tar") == [
        "s.tar: size 1000 bytes, index says 1200 (truncated)",
        (f"s.tar: digest mismatch (file xxh3_128 {xx.hex[:16]}..., index xxh3_128 {'f' * 16}...): "
         "the shard changed after the build"),
    ]
    # A format-1 entry (sha256) is checked with sha256.
    sha = Digest("sha256", hashlib.sha256(b"a" * 1000).hexdigest())
    assert storage.check_file(str(p), expected=sha, expected_size=1000).digest == sha
    assert not storage.check_file(str(p), expected=Digest("sha256", "0" * 64), expected_size=1000).ok
    with pytest.raises(FileNotFoundError):
        storage.check_file(str(tmp_path / "missing.tar"), expected=xx, expected_size=1)


def test_digest_names_its_algorithm_and_refuses_unknown_ones():
    d = Digest("xxh3_128", "ab" * 16)
    assert Digest.parse(str(d)) == d and str(d) == "xxh3_128:" + "ab" * 16
    with pytest.raises(ValueError, match="unknown shard digest 'md5'.*upgrade wds-pipeline"):
        Digest("md5", "00")
    with pytest.raises(ValueError, match="not a digest"):
        Digest.parse("abcdef")
