"""FLAC fields: the loader's decoder gives libsndfile's samples, and a damaged field is a
clear error naming the sample (format/flac.py, format/codecs.py, loader/decode.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wds_pipeline import StreamingLoader, storage
from wds_pipeline import format as fmt
from wds_pipeline.errors import ShardError, ShardFormatError
from wds_pipeline.format.flac import decode_flac_bytes, decode_flac_field, dr_flac_available
from wds_pipeline.index import INDEX_NAME, BuildCounts, DatasetIndex
from wds_pipeline.shard_writer import ShardWriter

SR = 16000
# Odd sizes too: 4096 is a FLAC block of the encoder, so around it a last block is short.
LENGTHS = [1, 17, 4095, 4096, 4097, 3 * SR + 77, 4 * SR + 1, 10 * SR + 4093]


def speechy(n: int, seed: int) -> np.ndarray:
    """Noise under a moving tone, with full-scale samples: what a 16-bit clip holds."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 9000 * np.sin(t * (0.02 + 0.01 * np.sin(t / 800.0))) + 1500 * rng.standard_normal(n)
    x = np.clip(x, -32768, 32767).astype(np.int16)
    x[:: max(1, n // 7)] = 32767
    x[3 :: max(1, n // 5)] = -32768
    return x


@pytest.fixture(scope="module")
def payloads() -> dict[int, tuple[np.ndarray, bytes]]:
    return {n: (pcm := speechy(n, n), fmt.encode_audio(pcm, SR, fmt.AUDIO_FLAC)) for n in LENGTHS}


def test_dr_flac_is_the_path_taken():
    assert dr_flac_available()  # miniaudio is a core dependency: the fast path is there


@pytest.mark.parametrize("n", LENGTHS)
def test_decode_equals_soundfile_of_the_same_bytes(payloads, n):
    pcm, data = payloads[n]
    want, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=False)
    assert rate == SR
    got = fmt.decode_field(fmt.AUDIO_FLAC, data)
    assert got.dtype == np.int16 and got.shape == (n,)
    assert np.array_equal(got, want) and np.array_equal(got, pcm)  # lossless
    fast = decode_flac_bytes(memoryview(data))  # dr_flac itself, from a view of a tar block
    assert fast is not None and fast[1] == SR and np.array_equal(fast[0][:, 0], want)


def test_stereo_fields_keep_their_channels():
    pcm = np.stack([speechy(5001, 1), speechy(5001, 2)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, pcm, SR, format="FLAC", subtype="PCM_16")
    got = decode_flac_field(buf.getvalue())
    assert got.shape == (5001, 2) and np.array_equal(got, pcm)


def damaged(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    return {"truncated": data[: len(data) // 2], "last bytes cut": data[:-10],
            "corrupt": bytes(flipped), "header only": data[:42]}


@pytest.mark.parametrize("how", ["truncated", "last bytes cut", "corrupt", "header only"])
def test_a_damaged_field_is_a_shard_format_error(payloads, how):
    data = damaged(payloads[3 * SR + 77][1])[how]
    with pytest.raises(ShardFormatError, match=rf"FLAC field of {len(data)} bytes does not decode .*"
                                               "truncated or corrupt"):
        fmt.decode_field(fmt.AUDIO_FLAC, data)


def test_a_field_that_is_not_flac_says_so():
    with pytest.raises(ShardFormatError, match=r"does not start with b'fLaC' \(it starts with b'RIFF'\)"):
        fmt.decode_field(fmt.AUDIO_FLAC, b"RIFF....WAVEfmt ")
    with pytest.raises(ShardFormatError, match="not a FLAC stream"):
        fmt.decode_field(fmt.AUDIO_FLAC, b"")


def write_flac_dataset(root: str, clips: list[np.ndarray], bad: dict[int, bytes]) -> str:
    """One FLAC shard (sample i holds ``clips[i]``, or the bytes ``bad[i]``) and its index."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "shard-000000.tar"), "wb") as f:
        writer = ShardWriter(f)
        for i, pcm in enumerate(clips):
            audio = bad.get(i) or fmt.encode_audio(pcm, SR, fmt.AUDIO_FLAC)
            writer.write_sample(f"flac-u{i:04d}", {fmt.AUDIO_FLAC: audio, fmt.CLS: fmt.encode_cls(i % 2)}, len(pcm))
        writer.close()
    index = DatasetIndex(
        name="flac", shards=[writer.info("shard-000000.tar", SR)], sample_rate=SR,
        fields=[fmt.AUDIO_FLAC, fmt.CLS], audio_field=fmt.AUDIO_FLAC, label_map={"a": 0, "b": 1},
        counts=BuildCounts(inputs=len(clips), written=len(clips), samples=len(clips)), build_fingerprint="flac",
    )
    out = os.path.join(root, INDEX_NAME)
    storage.write_bytes_atomic(out, index.to_json().encode("utf-8"))
    return out


def test_the_loader_names_the_sample_of_a_damaged_field_or_skips_it(tmp_path, payloads):
    clips = [speechy(4000 + 37 * i, i) for i in range(8)]
    whole = fmt.encode_audio(clips[5], SR, fmt.AUDIO_FLAC)
    idx = write_flac_dataset(str(tmp_path), clips, {5: whole[: len(whole) // 2]})

    strict = StreamingLoader(idx, batch_size=4, num_workers=0, on_decode_error="raise", shuffle=False)
    with pytest.raises(ShardError, match=r"sample 'flac-u0005' does not decode: FLAC field of \d+ bytes "
                                         r"does not decode .*truncated or corrupt"):
        list(strict)

    loader = StreamingLoader(idx, batch_size=4, num_workers=0, shuffle=False, last_batch="pad",
                             waveform_dtype="int16")
    got: dict[str, np.ndarray] = {}
    for b in loader:
        for k, w, n, pad in zip(b.keys, b.waveform, b.lengths.tolist(), b.is_padding.tolist()):
            if not pad:
                got[k] = w[:n].numpy()
    assert loader.skipped == ["flac-u0005"]
    assert sorted(got) == [f"flac-u{i:04d}" for i in range(8) if i != 5]
    for k, w in got.items():  # the samples around it decode to the clips written
        assert np.array_equal(w, clips[int(k[-4:])])


def test_the_decode_benchmark_runs_and_checks_every_method(tmp_path):
    """benchmarks/flac_decode.py --quick: every method decodes every clip to the same
    samples (it checks before timing), and the report has a rate per method and length."""
    out = tmp_path / "flac_decode.json"
    repo = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "benchmarks/flac_decode.py", "--quick", "--json-out", str(out)],
                       capture_output=True, text=True, cwd=repo, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "all methods decode every clip to the same int16 samples" in p.stdout
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 3 and report["setup"]["repeats"] == 2
    for row in report["rows"]:
        assert all(row[m] > 0 for m in ("ours", "dr_flac", "libFLAC"))
