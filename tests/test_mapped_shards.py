"""Shards that are whole local files are memory-mapped and their samples located from the
tar headers (``wds_pipeline/loader/mapped.py``): with numpy for plain headers, member by
member for anything else. Both must find the same samples, fields and keys, in shards of
this project's writer and of tarfile-based writers; a shard changed on disk between epochs
is located again, not read through a stale table."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from shardgen import all_keys, make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline import format as fmt
from wds_pipeline.index import load_index
from wds_pipeline.loader.mapped import MappedShard, SampleTable, file_stamp


def _tar(path: Path, samples: list[tuple[str, list[tuple[str, bytes]]]], *, fmt_=tarfile.GNU_FORMAT,
         encoding: str = "utf-8") -> list[int]:
    """Write ``samples`` with tarfile; returns each sample's first header offset."""
    offsets = []
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=fmt_, encoding=encoding) as t:
        for key, fields in samples:
            offsets.append(t.offset)
            for field, data in fields:
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return offsets


def _both(path: Path, offsets: list[int]) -> tuple[MappedShard, MappedShard]:
    """The shard located by ``locate`` (numpy first) and member by member."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stamp = file_stamp(fd)
        fast = MappedShard(fd, str(path), SampleTable(len(offsets), stamp))
        slow = MappedShard(fd, str(path), SampleTable(len(offsets), stamp))
    finally:
        os.close(fd)
    fast.locate(tuple(offsets), 0, len(offsets), stamp[0])
    slow._locate_block(offsets[0], stamp[0], 0, len(offsets))
    return fast, slow


def _same(fast: MappedShard, slow: MappedShard) -> None:
    n = fast.table.n
    assert fast.table.located.all() and slow.table.located.all()
    assert [fast.key(i) for i in range(n)] == [slow.key(i) for i in range(n)]
    for i in range(n):
        a, b = fast.fields(i), slow.fields(i)
        assert a.keys() == b.keys()
        assert all(bytes(a[k]) == bytes(b[k]) for k in a)


def _npy(n: int) -> bytes:
    return bytes(fmt.encode_npy(np.arange(n, dtype=np.int16)))


def test_our_shards_are_located_with_numpy_and_match_the_member_parser(tmp_path):
    idx = load_index(make_dataset(str(tmp_path), [7, 5], fbank=True))
    for i, shard in enumerate(idx.shards):
        fast, slow = _both(Path(idx.shard_url(i)), shard.sample_offsets)
        assert (fast.table.key_pos >= 0).all(), "plain headers: located by the numpy path"
        assert sorted(fast.table.columns) == sorted([fmt.AUDIO_NPY, fmt.CLS, fmt.JSON, fmt.FBANK])
        _same(fast, slow)


def test_tarfile_shards_with_fields_in_any_order_and_gaps_match(tmp_path):
    # webdataset's writers go through tarfile; members of a sample in varying order, a
    # sample without a json, payload sizes on and off the 512-byte blocks.
    samples = [
        (f"k{i:03d}", [("audio.npy", _npy(100 + 97 * i)), ("cls", str(i).encode()), ("json", b"{}" * i)][:: 1 if i % 2 else -1])
        for i in range(9)
    ]
    samples[4] = ("k004", [("audio.npy", _npy(256)), ("cls", b"4")])
    for tar_format in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"t{tar_format}.tar"
        offsets = _tar(path, samples, fmt_=tar_format)
        fast, slow = _both(path, offsets)
        _same(fast, slow)
        assert fast.fields(4).keys() == {"audio.npy", "cls"}
        assert bytes(fast.fields(8)["audio.npy"]) == samples[8][1][-1][1]


def test_keys_and_fields_of_varying_lengths_are_located_with_numpy(tmp_path):
    # The numpy path reads names only up to the longest one of each member position: keys
    # of 1 to 57 bytes, field names of 3 to 9, in varying order, must still match the
    # member parser (and a key must not match a longer one it is a prefix of).
    samples = [
        ("k" * (1 + 7 * (i % 9)) + str(i), [("audio.npy", _npy(50 + i)), ("cls", str(i).encode()), ("json", b"{}")][:: 1 if i % 3 else -1])
        for i in range(20)
    ]
    path = tmp_path / "varying.tar"
    offsets = _tar(path, samples, fmt_=tarfile.USTAR_FORMAT)
    fast, slow = _both(path, offsets)
    assert (fast.table.key_pos >= 0).all(), "plain headers: located by the numpy path"
    _same(fast, slow)
    assert [fast.key(i) for i in range(20)] == [k for k, _ in samples]


def test_long_names_fall_back_to_the_member_parser(tmp_path):
    key = "x" * 120  # longer than a ustar name: tarfile writes a GNU long-name member
    path = tmp_path / "long.tar"
    offsets = _tar(path, [(key, [("audio.npy", _npy(10)), ("cls", b"1")]), ("short", [("cls", b"2")])])
    fast, slow = _both(path, offsets)
    assert (fast.table.key_pos < 0).all(), "located member by member"
    _same(fast, slow)
    assert fast.key(0) == key


def test_a_name_that_is_not_utf8_is_a_named_shard_error(tmp_path):
    # A valid header checksum over a Latin-1 name: only the member parser's decode sees it.
    path = tmp_path / "latin1.tar"
    offsets = _tar(path, [("k\xe9y", [("cls", b"1")])], encoding="latin-1")
    fd = os.open(path, os.O_RDONLY)
    shard = MappedShard(fd, str(path), SampleTable(1, file_stamp(fd)))
    os.close(fd)
    with pytest.raises(fmt.ShardFormatError, match=r"latin1\.tar: corrupt tar header at byte 0"):
        shard.locate(tuple(offsets), 0, 1, None)


def test_a_shard_rewritten_between_epochs_is_located_again(tmp_path):
    idx = make_dataset(str(tmp_path), [4, 4])
    loader = StreamingLoader(idx, batch_size=2, num_workers=0, shuffle=False)
    assert {k for b in loader for k in b.keys} == all_keys(idx)
    shard = tmp_path / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[150] = ord("x")  # the first header's checksum field: same size, new mtime
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(1, 1))  # a new stamp even on a coarse-mtime filesystem
    with pytest.raises(fmt.ShardFormatError, match=r"shard-000001\.tar: corrupt tar header at byte 0"):
        list(loader)


def _mapped_shard_rss(root: Path) -> int:
    """Resident bytes of this process's mappings of the shards under ``root``."""
    total, current = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                current = len(fields) >= 6 and fields[-1].startswith(str(root))
            elif current and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


def test_over_its_byte_budget_a_worker_drops_the_pages_of_batched_samples(tmp_path, monkeypatch):
    # 4 shards of 40 clips of 3 s (3.8 MB each). Under the default budget the shards stay
    # mapped whole while read; with a budget of one byte each sample's pages are dropped
    # once its batch holds it, and every clip reads the same (the byte budget also bounds
    # the planned shuffle buffer, so the order differs).
    idx = make_dataset(str(tmp_path), [40] * 4, frames=lambda s, i: 48000)
    total = sum(p.stat().st_size for p in tmp_path.glob("*.tar"))
    released: list[int] = []  # bytes each run asked the kernel to drop (MappedShard.release)
    real_release = MappedShard.release

    def counting_release(self, start, end):
        released[-1] += min(int(end), self.size) - int(start)  # a shard's last sample: "to the end"
        return real_release(self, start, end)

    monkeypatch.setattr(MappedShard, "release", counting_release)

    def run(**kw):
        released.append(0)
        loader = StreamingLoader(idx, batch_size=8, num_workers=0, shuffle_buffer=16,
                                 last_batch="pad", seed=2, **kw)
        peak, out = 0, {}
        for b in loader:
            peak = max(peak, _mapped_shard_rss(tmp_path))
            for r, key in enumerate(b.keys):
                out[key] = b.waveform[r].numpy().copy()
        return peak, out

    kept_peak, kept = run()
    dropped_peak, dropped = run(shuffle_buffer_bytes=1)
    assert kept.keys() == dropped.keys() == all_keys(idx)
    assert all(np.array_equal(kept[k], dropped[k]) for k in kept)
    # What the loader does: nothing dropped under the default budget, every sample's bytes
    # (all but each shard's end blocks) dropped over it.
    assert released[0] == 0
    assert total - 4 * 10240 <= released[1] <= total
    # What that does to the process: measured 11.6 MB kept (most of the 15.9 MB of shards),
    # 2.8 MB dropped (the 16 held clips and a batch of 8 are 2.3 MB). Only the upper bound
    # is asserted: a host that pages out memory not touched for a while (DAMON reclaim on
    # this machine) lowers both peaks, never raises one.
    assert dropped_peak < total // 4
    assert kept_peak > 0


@pytest.mark.parametrize("crop", [None, 0.05])
def test_plain_npy_samples_skip_the_decoder_with_identical_results(tmp_path, crop):
    # Asking for "text" too sends every sample through the decoder: the slices of the
    # mapped PCM must equal what it returns, crops and labels included.
    idx = make_dataset(str(tmp_path), [9, 7])
    opts = dict(batch_size=4, num_workers=0, last_batch="pad", seed=5, crop_seconds=crop)

    def read(fields):
        loader, out = StreamingLoader(idx, fields=fields, **opts), {}
        for b in loader:
            for r, key in enumerate(b.keys):
                out[key] = (int(b.labels[r]), b.waveform[r, : int(b.lengths[r])].numpy().copy())
        return out, list(loader.dataset._tables._tables.values())

    (fast, tables), (decoded, _) = read(("waveform", "label")), read(("waveform", "label", "text"))
    assert fast.keys() == decoded.keys() == all_keys(idx)
    assert all(fast[k][0] == decoded[k][0] and np.array_equal(fast[k][1], decoded[k][1]) for k in fast)
    assert len(tables) == 2 and all((t.pcm_off >= 0).all() for t in tables)  # the fast path ran


def test_npy_headers_the_fast_path_cannot_vouch_for_go_through_the_decoder(tmp_path):
    # float32 audio, a 2-D array and a big-endian one are left to the decoder, which
    # refuses them per sample (skipped and named), exactly as before.
    arrays = [np.arange(8, dtype=np.int16), np.arange(8, dtype=np.float32),
              np.zeros((2, 4), dtype=np.int16), np.arange(8, dtype=">i2")]
    path = tmp_path / "odd.tar"
    offsets = _tar(path, [(f"k{i}", [("audio.npy", bytes(fmt.encode_npy(a))), ("cls", b"3")])
                          for i, a in enumerate(arrays)])
    fast, _ = _both(path, offsets)
    assert fast.table.pcm_off.tolist()[0] >= 0 and fast.table.pcm_off.tolist()[1:] == [-1, -1, -1]
    assert fast.table.label.tolist() == [3, 3, 3, 3]


def _mapped_shards(root: Path) -> list[str]:
    """This process's mappings of files under ``root`` (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return [line.split()[-1] for line in f if line.split()[-1].startswith(str(root))]


def test_close_unmaps_a_shard_nothing_views_and_leaves_one_that_is_still_viewed(tmp_path):
    idx = load_index(make_dataset(str(tmp_path), [3]))
    path = Path(idx.shard_url(0))
    fd = os.open(path, os.O_RDONLY)
    try:
        stamp = file_stamp(fd)
        m = MappedShard(fd, str(path), SampleTable(3, stamp))
        viewed = MappedShard(fd, str(path), SampleTable(3, stamp))
    finally:
        os.close(fd)
    offsets = idx.shards[0].sample_offsets
    m.locate(offsets, 0, 3, stamp[0])
    viewed.locate(offsets, 0, 3, stamp[0])
    assert len(_mapped_shards(tmp_path)) == 2
    assert m.close() is True
    assert _mapped_shards(tmp_path) == [str(path)]
    # A sample's array still points into the mapping: Python refuses to unmap it, so the
    # array keeps reading the shard's bytes; the mapping goes with the array.
    audio = np.frombuffer(viewed.fields(1)[fmt.AUDIO_NPY], dtype=np.uint8)
    expected = path.read_bytes()[int(viewed.table.columns[fmt.AUDIO_NPY][0][1]):][: len(audio)]
    assert viewed.close() is False
    assert audio.tobytes() == expected
    del audio
    assert viewed.close() is True
    assert _mapped_shards(tmp_path) == []


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_a_pass_leaves_no_shard_mapped_and_unmaps_off_the_loaders_thread(tmp_path, monkeypatch, dtype):
    # The loader hands a shard it is done with to the unmapper thread once the batch that
    # last read it is collated (mapped.Unmapper); every close there must succeed (nothing
    # of the loader still views the shard), and no mapping may outlive the pass.
    idx = make_dataset(str(tmp_path), [6, 6, 6], frames=lambda s, i: 1600 + 160 * i)
    closes: list[tuple[bool, str]] = []
    real_close = MappedShard.close

    def recording_close(self):
        done = real_close(self)
        closes.append((done, threading.current_thread().name))
        return done

    monkeypatch.setattr(MappedShard, "close", recording_close)
    loader = StreamingLoader(idx, batch_size=4, num_workers=0, waveform_dtype=dtype, seed=3, last_batch="pad")
    for epoch in range(2):
        keys = [k for b in loader for k, pad in zip(b.keys, b.is_padding.tolist()) if not pad]
        assert sorted(keys) == sorted(all_keys(idx))
        deadline = time.monotonic() + 10
        while len(closes) < 3 * (epoch + 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closes == [(True, "wds-unmap")] * (3 * (epoch + 1))
        assert _mapped_shards(tmp_path) == []
