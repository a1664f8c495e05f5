"""The format package: one header parser behind both tar readers, a read path free of
build-side code, and the shard writer every shard goes through."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from shardgen import sample_crcs, xxh3

from wds_pipeline import format as fmt
from wds_pipeline.shard_writer import ShardWriter

REPO = Path(__file__).resolve().parents[1]


def _tar(members: list[tuple[str, bytes]], *, fmt_: int, dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt_) as t:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = [
    ("k1.audio.npy", b"\x01" * 700),
    ("k1.json", b'{"a":1}'),
    ("d" * 90 + "/" + "k2" + "x" * 60 + ".json", b"{}"),  # ustar prefix or a long name
    ("k3.cls", b"7"),
]


@pytest.mark.parametrize("fmt_", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_stream_and_buffer_readers_read_the_same_members(fmt_):
    data = _tar(MEMBERS, fmt_=fmt_, dirs=("somedir",))
    stream = [(m.name, bytes(p)) for m, p in fmt.iter_tar_members(io.BytesIO(data))]
    buffer = [(n, bytes(p)) for n, p in fmt.iter_buffer_members(data)]
    assert stream == buffer == MEMBERS


def test_both_readers_report_a_damaged_header_the_same_way():
    data = bytearray(_tar(MEMBERS[:2], fmt_=tarfile.GNU_FORMAT))
    second = 512 + 1024  # header, 700 bytes of payload padded to 1024
    data[second + 3] ^= 0x20  # one bit of the second member's name
    want = re.escape("s.tar: corrupt tar header at byte 1536 (checksum mismatch)")
    with pytest.raises(fmt.ShardFormatError, match=want):
        list(fmt.iter_tar_members(io.BytesIO(bytes(data)), source="s.tar"))
    with pytest.raises(fmt.ShardFormatError, match=want):
        list(fmt.iter_buffer_members(bytes(data), source="s.tar"))


def test_flac_fields_decode_without_the_build_side(tmp_path):
    """Decoding an audio.flac field imported wds_pipeline.audio, and with it the resampler
    and decoder backends the loader never uses."""
    pcm = (np.sin(np.arange(16000) / 7.0) * 12000).astype(np.int16)
    (tmp_path / "f.flac").write_bytes(fmt.encode_audio(pcm, 16000, fmt.AUDIO_FLAC))
    np.save(tmp_path / "pcm.npy", pcm)
    code = (
        "import sys, numpy as np\n"
        "from wds_pipeline import format as fmt\n"
        f"data = open({str(tmp_path / 'f.flac')!r}, 'rb').read()\n"
        f"want = np.load({str(tmp_path / 'pcm.npy')!r}, allow_pickle=False)\n"
        "assert np.array_equal(fmt.decode_field(fmt.AUDIO_FLAC, memoryview(data)), want)\n"
        "print(sorted(m for m in ('wds_pipeline.audio', 'soxr', 'av') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True, env={"PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]", out.stderr


def test_shard_writer_records_what_it_wrote(tmp_path):
    path = tmp_path / "shard-000000.tar"
    frames = [1600, 3200, 800]
    with open(path, "wb") as f:
        w = ShardWriter(f)
        for i, n in enumerate(frames):
            pcm = np.full(n, i, dtype=np.int16)
            w.write_sample(f"k{i}", {fmt.AUDIO_NPY: fmt.encode_npy(pcm), fmt.CLS: fmt.encode_cls(i)}, n)
        w.close()
    info = w.info("shard-000000.tar", 16000)
    data = path.read_bytes()
    assert (info.filesize, info.digest) == (len(data), xxh3(data))
    assert (info.nsamples, info.sample_frames, info.duration) == (3, frames, 5600 / 16000)
    assert info.sample_crc32 == sample_crcs(str(path), info.sample_offsets)
    assert len(set(info.sample_crc32)) == 3
    for i, offset in enumerate(info.sample_offsets):
        key, fields = next(fmt.iter_samples(io.BytesIO(data[offset:])))
        assert key == f"k{i}" and sorted(fields) == [fmt.AUDIO_NPY, fmt.CLS]
        assert len(fmt.decode_field(fmt.AUDIO_NPY, fields[fmt.AUDIO_NPY])) == frames[i]


def _tarfile_gnu_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, fmt.TAR_MTIME, fmt.TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


# Over 100 bytes of UTF-8, tarfile writes a GNU long-name member first.
NAMES = ["a", "k.cls", "spk0001-utt0001.audio.npy", "x" * 99, "x" * 100, "x" * 101, "d/" * 40 + "k.json",
         "k" * 300 + ".json", "clé-ü.json", "é" * 50, "é" * 49 + "ab", "日本語" * 11 + ".npy",
         "emoji-\U0001f600.json", "bad-\udcff.json", "k.json.npy.zst"]
SIZES = [0, 1, 7, 511, 512, 513, 1024, 96_044, 10**9, 8**11 - 1, 8**11, 2 * 8**11 + 5]


@pytest.mark.parametrize("name", NAMES)
def test_member_headers_are_the_bytes_tarfile_makes(name):
    for size in SIZES:
        assert fmt.member_header(name, size) == _tarfile_gnu_header(name, size), (name, size)


def test_a_shard_is_the_bytes_tarfile_writes(tmp_path):
    """The whole stream (headers, small members joined with their padding, large ones
    written alone, end blocks, record padding) against tarfile writing the same members."""
    rng = np.random.default_rng(3)
    samples = [(f"s{i}", {fmt.AUDIO_NPY: fmt.encode_npy(rng.integers(-9, 9, n, dtype=np.int16)),
                          fmt.CLS: fmt.encode_cls(i), fmt.JSON: fmt.encode_json({"i": i, "pad": "p" * n})})
               for i, n in enumerate([0, 1, 250, 256, 40_000, 48_000, 70_000])]
    with open(tmp_path / "ours.tar", "wb") as f:
        w = fmt.ReproducibleTarWriter(f)
        for key, fields in samples:
            w.write_sample(key, fields)
        w.close()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for key, fields in samples:
            for name, data in fmt.sample_members(key, fields):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
                t.addfile(info, io.BytesIO(bytes(data)))
    assert (tmp_path / "ours.tar").read_bytes() == buf.getvalue()
    assert w.sample_offsets[0] == 0 and len(w.sample_offsets) == len(w.sample_crc32) == len(samples)


@pytest.mark.parametrize("array", [
    np.arange(5, dtype=np.int16), np.zeros(0, dtype=np.int16), np.array(3.5), np.arange(48_000, dtype="<i2"),
    np.arange(12, dtype=np.float16).reshape(3, 4), np.arange(12, dtype=np.float32).reshape(3, 4).T,
    np.arange(6, dtype=">i4"), np.zeros((2, 0, 3), dtype=np.uint8), np.arange(4, dtype=np.int16)[::2],
    np.zeros(3, dtype=[("a", "<i2"), ("b", "<f4")]), np.arange(10**6, dtype=np.int64),
])
def test_encode_npy_is_np_save(array):
    for _ in range(2):  # the second call takes the cached header
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        assert bytes(fmt.encode_npy(array)) == buf.getvalue()


def test_sample_checksum_is_zlibs_crc32_whole_and_chained():
    """The index's sample_crc32 is zlib's crc32 (readers elsewhere check it with zlib):
    the accelerated crc32 must give the same values, whole and continued across writes."""
    import zlib

    from wds_pipeline.format.checksum import crc32

    rng = np.random.default_rng(3)
    for n in (0, 1, 511, 5 * 1024 + 1, 96128, 1 << 20):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32(data) == zlib.crc32(data)
        cut = n // 3
        assert crc32(data[cut:], crc32(data[:cut])) == zlib.crc32(data)
        assert crc32(memoryview(data)) == zlib.crc32(data)
