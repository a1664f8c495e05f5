"""FLAC decoding per core: our FLAC field decoder against libFLAC and dr_flac called directly.

What the loader's workers do with a FLAC shard is mostly this: one FLAC field (a whole
16-bit mono file, as the builder writes it) -> int16 samples. Measured in one process
(one core), on the same encoded clips, methods interleaved per repeat:

  ours      ``wds_pipeline.format.decode_field("flac", payload)`` (dr_flac through
            miniaudio's cffi, straight into the numpy array: the loader's path);
  dr_flac   ``miniaudio.flac_read_s16(payload)`` (dr_flac's own open-and-read call,
            into an ``array.array``, then a numpy view of it);
  libFLAC   ``soundfile.read(BytesIO(payload), dtype="int16")`` (libsndfile, which
            decodes FLAC with libFLAC).

Clips: synthetic speech (``wds_pipeline.synth``'s voices, 16 kHz), encoded by the
builder's encoder (``format.codecs.encode_flac``), at the FLAC shards' real lengths (3-4 s,
as in ``train_input.py``) and longer (10 s, 30 s). Figure: MB/s of int16 output per core
(the bytes a worker hands to the batch), median of the repeats; ratios against libFLAC and
dr_flac measured in the same run.

    python benchmarks/flac_decode.py           # ~40 s
    python benchmarks/flac_decode.py --quick   # smoke run

Writes benchmarks/results/flac_decode.json.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, RESULTS, keep_quoted_results, machine, table, write_json

sys.path.insert(0, REPO)
import miniaudio

from wds_pipeline import format as fmt
from wds_pipeline.format.codecs import encode_flac
from wds_pipeline.synth.voices import synth_voice

SR = 16000


def ours(payload: bytes) -> np.ndarray:
    return fmt.decode_field(fmt.AUDIO_FLAC, payload)


def dr_flac(payload: bytes) -> np.ndarray:
    return np.frombuffer(miniaudio.flac_read_s16(payload).samples, dtype=np.int16)


def libflac(payload: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(payload), dtype="int16")[0]


METHODS: dict[str, Callable[[bytes], np.ndarray]] = {"ours": ours, "dr_flac": dr_flac, "libFLAC": libflac}


def make_clips(lengths: list[tuple[str, float, float]], per_length_seconds: float) -> dict[str, list[bytes]]:
    """Per length label, FLAC payloads of about ``per_length_seconds`` of audio in all."""
    rng = np.random.default_rng(0)
    out: dict[str, list[bytes]] = {}
    for label, lo, hi in lengths:
        clips, total = [], 0.0
        while total < per_length_seconds:
            # Odd lengths too: not every clip is a whole number of FLAC blocks.
            seconds = float(rng.uniform(lo, hi)) + int(rng.integers(0, 4096)) / SR
            wave = synth_voice(int(rng.integers(0, 1000)), seconds, SR, rng)
            clips.append(encode_flac(np.round(wave * 32767 * 0.7).astype(np.int16), SR))
            total += seconds
        out[label] = clips
    return out


def check_equal(clips: dict[str, list[bytes]]) -> None:
    """Every method decodes every clip to the same samples (FLAC is lossless)."""
    for label, payloads in clips.items():
        for p in payloads:
            ref = libflac(p)
            for name, fn in METHODS.items():
                if not np.array_equal(fn(p), ref):
                    raise AssertionError(f"{name} differs from libFLAC on a {label} clip")


def measure(clips: dict[str, list[bytes]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """label -> method -> int16 output MB/s per repeat, methods interleaved per repeat."""
    rates: dict[str, dict[str, list[float]]] = {lab: {m: [] for m in METHODS} for lab in clips}
    for r in range(repeats):
        for label, payloads in clips.items():
            order = list(METHODS) if r % 2 == 0 else list(reversed(METHODS))
            for name in order:
                fn = METHODS[name]
                t0 = time.perf_counter()
                out_bytes = sum(fn(p).nbytes for p in payloads)
                rates[label][name].append(out_bytes / (time.perf_counter() - t0) / 1e6)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="audio per clip length, in seconds")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json-out", default=os.path.join(RESULTS, "flac_decode.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 s per length, 2 repeats")
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    if args.quick:
        args.seconds, args.repeats = 20.0, 2
    lengths = [("3-4 s (train_input's clips)", 3.0, 4.0), ("10 s", 10.0, 10.0), ("30 s", 30.0, 30.0)]
    clips = make_clips(lengths, args.seconds)
    setup = {**machine(), "sample_rate": SR, "channels": 1, "bits": 16, "encoder": "format.codecs.encode_flac",
             "audio_seconds_per_length": args.seconds, "repeats": args.repeats, "process": "1 (one core)",
             "miniaudio": miniaudio.__version__, "libsndfile": sf.__libsndfile_version__,
             "clips": {lab: len(c) for lab, c in clips.items()},
             "compression": {lab: sum(map(len, c)) / (sum(len(ours(p)) for p in c) * 2) for lab, c in clips.items()}}
    print("setup:", setup, flush=True)
    check_equal(clips)
    print("all methods decode every clip to the same int16 samples", flush=True)
    rates = measure(clips, args.repeats)
    rows = []
    for label, by in rates.items():
        med = {m: float(np.median(v)) for m, v in by.items()}
        rows.append({"clips": label, **{m: med[m] for m in METHODS},
                     "vs_libflac": med["ours"] / med["libFLAC"], "vs_dr_flac": med["ours"] / med["dr_flac"]})
    print(table(rows, [("clips", "clips", ""), ("ours", "ours MB/s", ".0f"), ("dr_flac", "dr_flac MB/s", ".0f"),
                       ("libFLAC", "libFLAC MB/s", ".0f"), ("vs_libflac", "ours / libFLAC", ".2f"),
                       ("vs_dr_flac", "ours / dr_flac", ".2f")]))
    write_json(args.json_out, {"setup": setup, "rates": rates, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
