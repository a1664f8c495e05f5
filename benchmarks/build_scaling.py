"""Build scaling: the local process pool against Ray, 1 and 2 workers, on the same input.

Synthesises a VoxCeleb2-layout corpus (M4A/AAC at 16 kHz, like the real one) and
builds it with the settings of ``configs/build_voxceleb.yaml`` (int16 npy + Kaldi
fbank, zstd) four ways, interleaved within each repeat (this machine is noisy):

  pool_1 / pool_2   the local process pool with 1 / 2 worker processes;
  ray_1  / ray_2    Ray tasks on a local Ray instance with 1 / 2 CPUs (``--ray local:N``).

A Ray cluster is long-lived in practice, so starting the Ray instance (``ray.init``)
is timed apart and excluded from the build wall time; starting Ray's worker
processes and shipping each task and its result is included (that is Ray's cost).
Reported: audio real-time factor (seconds of audio per wall second) per run and per
worker, and Ray's overhead per shard, ``(ray_N - pool_N) / shards``. Every build's
output must be byte-identical (checked).

    python benchmarks/build_scaling.py            # 96 files (~13 min of audio), ~3 min
    python benchmarks/build_scaling.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import keep_quoted_results  # noqa: E402 (this folder is sys.path[0] when run)

from wds_pipeline.builder import BuildOptions, build_dataset  # noqa: E402
from wds_pipeline.builder.executor import LocalPoolExecutor  # noqa: E402
from wds_pipeline.builder.ray_executor import RayExecutor, import_ray  # noqa: E402

# configs/build_voxceleb.yaml, less what does not change the work per file.
BUILD = dict(codec="npy", compress="zstd", zstd_level=3, fbank=True, min_duration=1.0)


def make_corpus(root: str, speakers: int, videos: int, utterances: int) -> float:
    """VoxCeleb2 dev/aac/idNNNNN/<video>/NNNNN.m4a, 4-12 s each; returns seconds of audio."""
    from wds_pipeline.synth import synth_voxceleb

    info = synth_voxceleb(root, vox1_speakers=0, vox2_speakers=speakers,
                          videos_per_speaker=videos, utterances_per_video=utterances,
                          vox1_test_speakers=0, min_seconds=4.0, max_seconds=12.0, seed=11)
    return float(info.get("seconds", 0.0)) or _audio_seconds(root)


def _audio_seconds(root: str) -> float:
    from wds_pipeline.audio import probe_duration

    return sum(probe_duration(str(p)) for p in Path(root).rglob("*.m4a"))


def tree_digest(root: str) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_build(corpus: str, out: str, shard_size: int, executor) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    opts = BuildOptions(shard_size=shard_size, progress=False, **BUILD)
    t0 = time.perf_counter()
    result = build_dataset("voxceleb", corpus, out, options=opts, executor=executor,
                           log=lambda msg: None)
    wall = time.perf_counter() - t0
    return wall, sum(s.shards for s in result.splits.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--utterances", type=int, default=6)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "wds_bench_scaling"))
    ap.add_argument("--json-out", default=str(RESULTS / "build_scaling.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 files, one repeat")
    args = ap.parse_args()
    keep_quoted_results(args)
    if args.quick:
        args.speakers, args.videos, args.utterances, args.repeats = 2, 2, 2, 1
        args.shard_size = 2
        args.json_out = os.path.join(args.work, "build_scaling-quick.json")
    ray = import_ray()

    shutil.rmtree(args.work, ignore_errors=True)
    corpus = os.path.join(args.work, "corpus")
    seconds = make_corpus(corpus, args.speakers, args.videos, args.utterances)
    files = len(list(Path(corpus).rglob("*.m4a")))
    setup = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "ray": ray.__version__,
        "corpus": "synthetic VoxCeleb2 layout, M4A/AAC 16 kHz mono, 4-12 s",
        "files": files, "audio_seconds": round(seconds, 1),
        "shard_size": args.shard_size, "build_options": BUILD, "repeats": args.repeats,
        "interleaved": "pool_1, pool_2, ray_1, ray_2 within each repeat",
        "ray_instance": "ray.init(num_cpus=N) on this machine, started before and stopped "
                        "after each Ray run; its start is ray_init_s, not in wall_s",
        "load_average_before": os.getloadavg()[0],
    }
    print(json.dumps(setup, indent=1))

    walls: dict[str, list[float]] = {k: [] for k in ("pool_1", "pool_2", "ray_1", "ray_2")}
    ray_init: list[float] = []
    digests: set[str] = set()
    shards = shard_bytes = 0
    for rep in range(args.repeats):
        for name in walls:
            kind, n = name.split("_")
            out = os.path.join(args.work, "out")
            if kind == "pool":
                wall, shards = run_build(corpus, out, args.shard_size,
                                         LocalPoolExecutor(int(n)))
            else:
                t0 = time.perf_counter()
                ray.init(num_cpus=int(n), include_dashboard=False,
                         logging_level=logging.WARNING)
                ray_init.append(time.perf_counter() - t0)
                try:
                    wall, shards = run_build(corpus, out, args.shard_size,
                                             RayExecutor(f"local:{n}"))
                finally:
                    ray.shutdown()
            walls[name].append(round(wall, 3))
            digests.add(tree_digest(out))
            shard_bytes = sum(p.stat().st_size for p in Path(out).rglob("*.tar"))
            print(f"repeat {rep}: {name:7s} {wall:7.2f} s  RTF {seconds / wall:7.1f}",
                  flush=True)

    med = {k: statistics.median(v) for k, v in walls.items()}
    results = {
        name: {"wall_s_median": round(m, 3), "wall_s_all": walls[name],
               "rtf": round(seconds / m, 1),
               "rtf_per_worker": round(seconds / m / int(name.split("_")[1]), 1),
               "files_per_s": round(files / m, 2)}
        for name, m in med.items()
    }
    summary = {
        "shards": shards,
        "shard_bytes": shard_bytes,
        "shard_bytes_per_audio_second": round(shard_bytes / seconds),
        "ray_overhead_per_shard_s": {
            n: round((med[f"ray_{n}"] - med[f"pool_{n}"]) / shards, 3) for n in ("1", "2")},
        "scaling_2_over_1": {k: round(med[f"{k}_1"] / med[f"{k}_2"], 2) for k in ("pool", "ray")},
        "ray_init_s_median": round(statistics.median(ray_init), 2),
        "outputs_identical": len(digests) == 1,
        "load_average_after": os.getloadavg()[0],
    }
    report = {"setup": setup, "results": results, "summary": summary}
    print(json.dumps(summary, indent=1))
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(f"wrote {args.json_out}")
    shutil.rmtree(args.work, ignore_errors=True)
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
