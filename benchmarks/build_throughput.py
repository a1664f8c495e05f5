"""Build throughput: a hand-written preprocessing loop vs the shard builder.

Generates its own corpus of 44.1 kHz FLAC files (2-15 s each) and, in ONE process
run (this machine is noisy: compare ratios within a run), measures:

  (a) baseline: what a user writes by hand: for each file ``soundfile.read`` ->
      ``scipy.signal.resample_poly(x, 160, 441)`` -> int16 -> one ``.npy`` per file;
  (b) the builder (manifest source): FLAC 44.1 kHz -> 16 kHz int16 npy shards with
      ``--workers 1`` and ``--workers 2``.

Reported: real-time factor (seconds of audio per wall second), total and per worker
process; b1/a per worker (target >= 2x) and b2/b1 scaling (target >= 1.7x on 2
cores). The one-off cost of starting the worker pool (the fork server imports the
package once per process) is measured separately and excluded from the RTFs: on a
real corpus (hours of audio) it is noise.

The sessions row (``--rows sessions``): word clips cut from long session recordings
(``wds_pipeline.synth.synth_sessions``: 16 kHz, WhisperX JSON, ~1.4 words a second; WAV,
or re-encoded to FLAC or MP3 with ``--session-format``),
  (sa) by hand: for each timed word of the JSON ``soundfile.read(path, start=, stop=)``
       -> one ``.npy`` per word; (sa') the same reading from one open ``SoundFile``;
  (sb) the builder's sessions source in words mode, ``--workers 1`` and ``2``.
RTF there = seconds of recording per wall second; medians of interleaved repeats.

    python benchmarks/build_throughput.py            # 300 files (~40 min of audio), ~1 min
    python benchmarks/build_throughput.py --quick    # smoke run (a few seconds)
    python benchmarks/build_throughput.py --rows sessions --sessions 4 --session-minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
from _common import keep_quoted_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SOURCE_RATE = 44100
TARGET_RATE = 16000


def make_corpus(folder: str, files: int, min_s: float, max_s: float, seed: int) -> tuple[str, float]:
    """FLAC files of speech-like signal (harmonics + noise bursts); returns (manifest, seconds)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    rows = ["path,speaker"]
    total = 0.0
    for i in range(files):
        dur = float(rng.uniform(min_s, max_s))
        n = int(dur * SOURCE_RATE)
        t = np.arange(n) / SOURCE_RATE
        f0 = 100 + 80 * (i % 7) / 6
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
        x = 0.15 * x * envelope + 0.01 * rng.standard_normal(n)
        name = f"utt{i:04d}.flac"
        sf.write(os.path.join(folder, name), x.astype(np.float32), SOURCE_RATE, subtype="PCM_16")
        rows.append(f"{name},spk{i % 10}")
        total += n / SOURCE_RATE
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w") as f:
        f.write("\n".join(rows) + "\n")
    return manifest, total


def run_baseline(corpus: str, out: str, dtype: str = "float64") -> tuple[float, float]:
    """The loop a user would write by hand; returns (wall s, CPU s).

    ``sf.read(path)`` returns float64 unless told otherwise: that default is what a
    hand-written loop gets; the float32 variant is measured as a tighter reference.
    """
    from scipy.signal import resample_poly

    os.makedirs(out, exist_ok=True)
    names = sorted(n for n in os.listdir(corpus) if n.endswith(".flac"))
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        x, sr = sf.read(os.path.join(corpus, name), dtype=dtype)
        assert sr == SOURCE_RATE
        y = resample_poly(x, 160, 441)
        pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
        np.save(os.path.join(out, name[:-5] + ".npy"), pcm)
    return time.perf_counter() - t0, time.process_time() - c0


def run_decode_only(corpus: str) -> tuple[float, float]:
    """Just ``sf.read(dtype=float32)`` of every file: the floor under (a) and (b) alike."""
    names = sorted(n for n in os.listdir(corpus) if n.endswith(".flac"))
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        sf.read(os.path.join(corpus, name), dtype="float32")
    return time.perf_counter() - t0, time.process_time() - c0


def run_decode_builder(corpus: str) -> tuple[float, float]:
    """Just the builder's decoder (``decode_audio(dtype="int16")``: dr_flac for whole
    16-bit FLAC files): the floor under (b)."""
    from wds_pipeline.audio import decode_audio

    names = sorted(n for n in os.listdir(corpus) if n.endswith(".flac"))
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        decode_audio(os.path.join(corpus, name), dtype="int16")
    return time.perf_counter() - t0, time.process_time() - c0


def run_builder(manifest: str, out: str, workers: int, shard_size: int
                ) -> tuple[float, float, object]:
    """Returns (wall s, CPU s of this process, result); CPU time covers the work only
    with workers=1 (in-process), with more it is the coordinator's share."""
    from wds_pipeline.builder import BuildOptions, build_dataset

    t0, c0 = time.perf_counter(), time.process_time()
    result = build_dataset("manifest", manifest, out,
                           options=BuildOptions(workers=workers, shard_size=shard_size,
                                                sample_rate=TARGET_RATE, overwrite=True,
                                                progress=False, min_duration=0.0),
                           log=lambda msg: None)
    return time.perf_counter() - t0, time.process_time() - c0, result


def warm_pool(manifest_dir: str, work: str) -> float:
    """Start the fork server (imports the package) with a tiny 2-worker build."""
    tiny = os.path.join(work, "warm")
    manifest, _ = make_corpus(tiny, 2, 0.6, 0.7, seed=99)
    t0 = time.perf_counter()
    run_builder(manifest, os.path.join(work, "warm_out"), workers=2, shard_size=1)
    run_builder(manifest, os.path.join(work, "warm_out1"), workers=1, shard_size=1)
    return time.perf_counter() - t0


def make_sessions(folder: str, sessions: int, minutes: float, seed: int, fmt: str
                  ) -> tuple[float, list[tuple[str, list[tuple[float, float]]]]]:
    """Session folders (16 kHz recording in ``fmt`` + WhisperX JSON); returns the seconds of
    recording and, per recording, the (start, end) of its timed words as the JSON gives
    them."""
    from wds_pipeline.synth import synth_sessions
    from wds_pipeline.synth.sessions import AUDIO_NAME

    synth_sessions(folder, sessions=sessions, seconds=60.0 * minutes, untimed_per_session=0,
                   seed=seed, word_gap=(0.08, 0.25))
    stem = os.path.splitext(AUDIO_NAME)[0]
    recordings = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, AUDIO_NAME)
        if fmt != "wav":  # same samples, re-encoded; the JSON keeps its <stem>.json name
            x, sr = sf.read(path, dtype="int16")
            os.remove(path)
            path = os.path.join(folder, name, f"{stem}.{fmt}")
            sf.write(path, x, sr, format=fmt.upper())
        with open(os.path.join(folder, name, stem + ".json")) as f:
            doc = json.load(f)
        words = [(w["start"], w["end"]) for seg in doc["segments"] for w in seg["words"]
                 if "start" in w]
        recordings.append((path, words))
    return sessions * 60.0 * minutes, recordings


def run_sessions_baseline(recordings: list[tuple[str, list[tuple[float, float]]]], out: str,
                          one_open: bool) -> tuple[float, float]:
    """Per word: read its frames (by path, or from one open SoundFile per recording) ->
    one ``.npy``; the recordings are already at the output rate, so no resampling."""
    os.makedirs(out, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    for r, (path, words) in enumerate(recordings):
        f = sf.SoundFile(path) if one_open else None
        sr = f.samplerate if f is not None else sf.info(path).samplerate
        for i, (start, end) in enumerate(words):
            a, b = round(start * sr), round(end * sr)
            if f is not None:
                f.seek(a)
                x = f.read(b - a, dtype="int16")
            else:
                x, _ = sf.read(path, start=a, stop=b, dtype="int16")
            np.save(os.path.join(out, f"r{r:03d}-w{i:05d}.npy"), x)
        if f is not None:
            f.close()
    return time.perf_counter() - t0, time.process_time() - c0


def run_sessions_builder(root: str, out: str, workers: int, shard_size: int
                         ) -> tuple[float, float, object]:
    from wds_pipeline.builder import BuildOptions, build_dataset

    t0, c0 = time.perf_counter(), time.process_time()
    result = build_dataset("sessions", root, out, source_options={"mode": "words"},
                           options=BuildOptions(workers=workers, shard_size=shard_size,
                                                overwrite=True, progress=False,
                                                min_duration=0.0),
                           log=lambda msg: None)
    return time.perf_counter() - t0, time.process_time() - c0, result


def sessions_row(args: argparse.Namespace, work: str) -> dict:
    """The sessions row: (sa), (sa'), (sb1), (sb2), interleaved; medians reported."""
    sessions, minutes = (2, 1.0) if args.quick else (args.sessions, args.session_minutes)
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    root = os.path.join(work, "sessions")
    seconds, recordings = make_sessions(root, sessions, minutes, args.seed,
                                        args.session_format)
    words = sum(len(w) for _, w in recordings)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("sa", "sa1", "sb1", "sb2")}
    # Untimed warm-up: starts the worker pool's fork server (a one-off per process) and
    # brings the recordings into the page cache for every variant alike.
    run_sessions_builder(root, os.path.join(work, "sb_warm"), 2, args.session_shard_size)
    for rep in range(repeats):
        runs["sa"].append(run_sessions_baseline(recordings, os.path.join(work, f"sa_{rep}"),
                                                one_open=False))
        runs["sa1"].append(run_sessions_baseline(recordings, os.path.join(work, f"sa1_{rep}"),
                                                 one_open=True))
        for w in (1, 2):
            wall, cpu, r = run_sessions_builder(root, os.path.join(work, f"sb{w}_{rep}"), w,
                                                args.session_shard_size)
            if r.counts.written != words:  # type: ignore[attr-defined]
                raise SystemExit(f"builder wrote {r.counts.written} of {words} words")  # type: ignore[attr-defined]
            runs[f"sb{w}"].append((wall, cpu))
    load_after = os.getloadavg()[0]
    med = {k: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v])))
           for k, v in runs.items()}
    names = {"sa": "(sa) sf.read(path, start, stop) per word",
             "sa1": "(sa') one SoundFile, seek + read per word",
             "sb1": "(sb1) builder sessions words, 1 worker",
             "sb2": "(sb2) builder sessions words, 2 workers"}
    print(f"sessions setup: {sessions} sessions x {minutes:g} min (16 kHz "
          f"{args.session_format.upper()}, "
          f"{seconds / 60:.0f} min of recording), {words} timed words -> 16 kHz int16 npy, "
          f"shard size {args.session_shard_size}, median of {repeats} interleaved, "
          f"load average {load_before:.1f} -> {load_after:.1f}")
    print(f"{'run':44s} {'wall s':>7s} {'CPU s':>7s} {'RTF':>7s} {'words/s':>8s}")
    results = {}
    for k, (wall, cpu) in med.items():
        print(f"{names[k]:44s} {wall:7.2f} {cpu:7.2f} {seconds / wall:7.0f} {words / wall:8.0f}")
        results[k] = {"run": names[k], "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                      "rtf": round(seconds / wall, 1), "words_per_s": round(words / wall, 1),
                      "all_wall_s": [round(w, 3) for w, _ in runs[k]]}
    print(f"sb1/sa: {med['sa'][0] / med['sb1'][0]:.2f}x wall; sb1/sa': "
          f"{med['sa1'][0] / med['sb1'][0]:.2f}x; sb2/sb1: "
          f"{med['sb1'][0] / med['sb2'][0]:.2f}x (CPU time of sb2 is the coordinator's only)")
    return {"setup": {"sessions": sessions, "minutes_each": minutes,
                      "format": f"{args.session_format} 16 kHz mono",
                      "recording_seconds": seconds, "words": words,
                      "shard_size": args.session_shard_size, "repeats": repeats,
                      "statistic": "median",
                      "load_average_before_after": [round(load_before, 2),
                                                    round(load_after, 2)]},
            "results": results}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import scipy
    import soxr

    import wds_pipeline

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__, "miniaudio": version("miniaudio"),
            "soxr": soxr.__version__, "wds_pipeline": wds_pipeline.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 short files")
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--shard-size", type=int, default=8,
                   help="inputs per shard (enough shards to keep 2 workers busy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5,
                   help="runs of each variant, interleaved; the fastest counts (noisy machine)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--rows", choices=("files", "sessions", "all"), default="all",
                   help="files: the FLAC file rows; sessions: word clips cut from sessions")
    p.add_argument("--sessions", type=int, default=4, help="sessions row: recordings")
    p.add_argument("--session-minutes", type=float, default=10.0,
                   help="sessions row: minutes per recording (~1.4 words a second)")
    p.add_argument("--session-format", choices=("wav", "flac", "mp3"), default="wav",
                   help="sessions row: the recordings' format (flac/mp3: decoding costs)")
    p.add_argument("--session-shard-size", type=int, default=1000,
                   help="sessions row: words per shard (the builder's default)")
    p.add_argument("--json-out", default=os.path.join(RESULTS, "build_throughput.json"))
    args = p.parse_args(argv)
    keep_quoted_results(args)
    report: dict = {}
    if args.rows in ("files", "all"):
        report.update(files_rows(args))
    if args.rows in ("sessions", "all"):
        work = args.workdir or tempfile.mkdtemp(prefix="build_bench_")
        try:
            report["sessions"] = sessions_row(args, work)
        finally:
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(f"wrote {args.json_out}")
    return 0


def files_rows(args: argparse.Namespace) -> dict:
    """The FLAC file rows (a), (a'), (d), (d'), (b1), (b2); printed, and returned for the
    JSON report."""
    files, min_s, max_s = (8, 1.0, 3.0) if args.quick else (args.files, 2.0, 15.0)
    repeats = 1 if args.quick else args.repeats

    load_before = os.getloadavg()[0]
    work = args.workdir or tempfile.mkdtemp(prefix="build_bench_")
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("d", "db", "a64", "a32", "b1", "b2")}
    try:
        corpus = os.path.join(work, "corpus")
        manifest, seconds = make_corpus(corpus, files, min_s, max_s, args.seed)
        startup = warm_pool(corpus, work)
        for rep in range(repeats):
            runs["d"].append(run_decode_only(corpus))
            runs["db"].append(run_decode_builder(corpus))
            runs["a64"].append(run_baseline(corpus, os.path.join(work, f"a64_{rep}")))
            runs["a32"].append(run_baseline(corpus, os.path.join(work, f"a32_{rep}"), "float32"))
            for w in (1, 2):
                wall, cpu, r = run_builder(manifest, os.path.join(work, f"b{w}_{rep}"), w,
                                           args.shard_size)
                if r.counts.written != files:  # type: ignore[attr-defined]
                    raise SystemExit(f"builder wrote {r.counts.written} of {files} inputs")  # type: ignore[attr-defined]
                runs[f"b{w}"].append((wall, cpu))
        indexes = {_read(os.path.join(work, f"b{w}_{rep}", "train", "index.json"))
                   for w in (1, 2) for rep in range(repeats)}
        same = len(indexes) == 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    best = {k: min(v) for k, v in runs.items()}  # fastest wall (with its CPU time)
    t_a, cpu_a = best["a64"]
    t_a32, cpu_a32 = best["a32"]
    t_b1, cpu_b1 = best["b1"]
    t_b2, _ = best["b2"]
    t_d, cpu_d = best["d"]
    t_db, cpu_db = best["db"]
    rtf_a, rtf_a32, rtf_b1, rtf_b2 = (seconds / t for t in (t_a, t_a32, t_b1, t_b2))
    per_worker_ratio = rtf_b1 / rtf_a
    per_worker_cpu_ratio = cpu_a / cpu_b1
    scaling = rtf_b2 / rtf_b1
    report = {
        "setup": {
            "cpu_count": os.cpu_count(), "files": files, "audio_seconds": round(seconds, 2),
            "audio_hours": round(seconds / 3600, 4), "source": f"FLAC {SOURCE_RATE} Hz mono, "
            f"{min_s:g}-{max_s:g} s", "target": f"{TARGET_RATE} Hz int16 npy",
            "shard_size": args.shard_size, "quick": args.quick, "repeats": repeats,
            "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
            "versions": versions(),
        },
        "results": {
            "baseline_sf_read_float64_resample_poly": {
                "wall_s": round(t_a, 3), "cpu_s": round(cpu_a, 3), "rtf": round(rtf_a, 1),
                "rtf_cpu": round(seconds / cpu_a, 1)},
            "baseline_sf_read_float32_resample_poly": {
                "wall_s": round(t_a32, 3), "cpu_s": round(cpu_a32, 3), "rtf": round(rtf_a32, 1),
                "rtf_cpu": round(seconds / cpu_a32, 1)},
            "decode_only_sf_read_float32": {"wall_s": round(t_d, 3), "cpu_s": round(cpu_d, 3),
                                            "rtf": round(seconds / t_d, 1)},
            "decode_only_builder_decoder_int16": {"wall_s": round(t_db, 3),
                                                  "cpu_s": round(cpu_db, 3),
                                                  "rtf": round(seconds / t_db, 1)},
            "builder_workers_1": {"wall_s": round(t_b1, 3), "cpu_s": round(cpu_b1, 3),
                                  "rtf": round(rtf_b1, 1), "rtf_per_worker": round(rtf_b1, 1),
                                  "rtf_cpu": round(seconds / cpu_b1, 1)},
            "builder_workers_2": {"wall_s": round(t_b2, 3), "rtf": round(rtf_b2, 1),
                                  "rtf_per_worker": round(rtf_b2 / 2, 1)},
            "worker_pool_startup_s": round(startup, 3),
            "index_identical_across_runs_and_workers": same,
            "all_runs_wall_s": {k: [round(w, 3) for w, _ in v] for k, v in runs.items()},
        },
        "ratios": {"builder_w1_over_baseline_per_worker_wall": round(per_worker_ratio, 2),
                   "builder_w1_over_baseline_per_worker_cpu": round(per_worker_cpu_ratio, 2),
                   "builder_w1_over_float32_baseline_wall": round(rtf_b1 / rtf_a32, 2),
                   "builder_w2_over_w1_scaling": round(scaling, 2),
                   # Both (a) and (b) must decode every file: no builder can beat (a) by
                   # more than (a) / (its own decoder alone).
                   "ceiling_baseline_over_decode_only": round(cpu_a / cpu_d, 2),
                   "ceiling_baseline_over_builder_decoder": round(cpu_a / cpu_db, 2),
                   "builder_decoder_share_of_builder_cpu": round(cpu_db / cpu_b1, 2)},
        "targets": {"per_worker_vs_baseline": 2.0, "scaling_2_workers": 1.7,
                    "per_worker_met": per_worker_ratio >= 2.0, "scaling_met": scaling >= 1.7},
    }

    s = report["setup"]
    print(f"setup: {s['cpu_count']} CPUs, {files} files, {seconds / 60:.1f} min of audio "
          f"({s['source']} -> {s['target']}), shard size {args.shard_size}, best of {repeats}, "
          f"load average {load_before:.1f} -> {load_after:.1f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()))
    print(f"{'run':40s} {'wall s':>7s} {'CPU s':>7s} {'RTF':>7s} {'RTF/worker':>11s}")
    rows = [("(a) sf.read + resample_poly + npy", t_a, cpu_a, rtf_a, rtf_a),
            ("(a') same, sf.read(dtype=float32)", t_a32, cpu_a32, rtf_a32, rtf_a32),
            ("(d) decode only: sf.read float32", t_d, cpu_d, seconds / t_d, seconds / t_d),
            ("(d') decode only: builder's decoder", t_db, cpu_db, seconds / t_db, seconds / t_db),
            ("(b1) builder --workers 1", t_b1, cpu_b1, rtf_b1, rtf_b1),
            ("(b2) builder --workers 2", t_b2, float("nan"), rtf_b2, rtf_b2 / 2)]
    for name, wall, cpu, rtf, per in rows:
        print(f"{name:40s} {wall:7.2f} {cpu:7.2f} {rtf:7.1f} {per:11.1f}")
    print(f"b1/a per worker: {per_worker_ratio:.2f}x wall, {per_worker_cpu_ratio:.2f}x CPU "
          f"(target >= 2.0x: {'met' if per_worker_ratio >= 2 else 'MISSED'}); "
          f"b1/a' {rtf_b1 / rtf_a32:.2f}x; ceiling a/d' {cpu_a / cpu_db:.2f}x (decoding is "
          f"{100 * cpu_db / cpu_b1:.0f}% of the builder's CPU time)")
    print(f"b2/b1 scaling:   {scaling:.2f}x (target >= 1.7x: "
          f"{'met' if scaling >= 1.7 else 'MISSED'})")
    if max(load_before, load_after) > 1.5:
        print(f"note: other processes were running (load average {load_before:.1f} -> "
              f"{load_after:.1f}); wall-clock scaling is unreliable, compare CPU times")
    print(f"worker pool start-up (one-off, excluded): {startup:.2f} s; "
          f"index identical across runs and worker counts: {same}")
    return report


if __name__ == "__main__":
    sys.exit(main())
