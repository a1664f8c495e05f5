"""Augmentation throughput: wds_pipeline's batched augmentation vs a WeSpeaker-style
per-utterance pipeline vs no augmentation, on the same data and the same CPU budget.

One process run, runs interleaved (the order rotates each repeat); ratios are the median
of the per-repeat (paired) ratios. Every pipeline yields batches of ``--batch`` 2-second
random crops of the same speech utterances (float32, padded (B, T), lengths, labels) with
2 DataLoader workers; samples/s count the batches "ready for the model".

  (a) ours: ``StreamingLoader`` over the speech shards (2 workers, crop in the workers, int16
      batches as ``configs/augment.yaml`` has them), then the trainer's device stage
      (``train.stage.DeviceStage`` of an ``augment`` block: ``reverb`` -> ``noise`` ->
      ``row_gain``, draws keyed by the sample ids) on the device, the CPU here, in the main
      process, with the noise and RIR banks in memory, read from the MUSAN and RIRS_NOISES
      shards (``train.banks``; RIRs trimmed to their energetic part by ``trim_rir``).
  (b) WeSpeaker-style, written here as that toolkit does it: a map-style dataset over the
      plain wavs in 2 DataLoader workers; per utterance: ``soundfile`` read, random 2 s crop,
      reverb with probability p (one RIR file read, aligned on its peak,
      ``scipy.signal.fftconvolve`` with the whole RIR), noise with probability p (kind
      noise/music/babble, its SNR range, 1 or 3-7 noise files read whole, each from a
      random offset, looped, mixed in numpy at the drawn SNR), a random gain; padded collate.
  (c) no augmentation: (a)'s loader alone, for the cost of (a).

Data (written once, reused): synthetic VoxCeleb1 speech (``wds_pipeline.synth``), built
into shards with ``build_dataset`` and kept as the wavs (b) reads; ``synth musan`` and
``synth rirs`` corpora, built into shards for (a) and read as wavs by (b).

    .venv/bin/python benchmarks/augment.py            # full run (~6 min incl. data)
    .venv/bin/python benchmarks/augment.py --quick    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    RESULTS,
    SR,
    bar_chart,
    keep_quoted_results,
    machine,
    table,
    targets_of,
    write_json,
)

# Same probabilities and parameters on both sides: the transforms' defaults (Kaldi/ECAPA
# SNR ranges, WeSpeaker's 0.6 split evenly between reverb and noise), gain +-6 dB.
P_REVERB = P_NOISE = 0.3
KINDS = (("noise", 0.0, 15.0, 1, 1), ("music", 5.0, 15.0, 1, 1), ("speech", 13.0, 20.0, 3, 7))
GAIN_DB = (-6.0, 6.0)
# Every RIR of the corpus on both sides (the recipe's default is small and medium rooms).
RIR_CATEGORIES = ("smallroom", "mediumroom", "largeroom", "real")
TARGET_A_OVER_B = 2.0
# The options: (flag, default, help); the type is the default's. Speech, noise, the runs.
Options = tuple[tuple[str, Any, str], ...]
SPEECH_OPTIONS: Options = (
    ("--speakers", 20, "synthetic VoxCeleb1 speakers"),
    ("--videos", 6, "per speaker"),
    ("--utterances", 10, "per video"),
    ("--min-seconds", 2.5, "shortest utterance"),
    ("--max-seconds", 4.5, "longest utterance"),
)
NOISE_OPTIONS: Options = (
    ("--noise-clips", 4, "per MUSAN subset (9 subsets)"),
    ("--noise-seconds", 6.0, "per MUSAN clip"),
    ("--shard-size", 200, "speech samples per shard"),
    ("--crop-seconds", 2.0, "random crop of every utterance, as speaker training does"),
)
RUN_OPTIONS: Options = (
    ("--batch", 64, "samples per batch"),
    ("--workers", 2, "DataLoader workers of (a), (b) and (c)"),
    ("--epochs", 2, "per run (workers persist)"),
    ("--repeats", 7, "interleaved repeats"),
)


# ---------------------------------------------------------------------- data


def make_data(root: str, args: argparse.Namespace) -> dict[str, Any]:
    """Speech (wavs + shards), MUSAN and RIRS_NOISES corpora under ``root``; reused when a
    previous run wrote the same (a stamp file names the settings)."""
    from wds_pipeline.builder import BuildOptions, build_dataset
    from wds_pipeline.synth import synth_musan, synth_rirs, synth_voxceleb

    stamp = os.path.join(root, f".done-v2-{args.speakers}-{args.videos}-{args.utterances}-"
                               f"{args.min_seconds}-{args.max_seconds}-{args.noise_seconds}")
    speech, shards = os.path.join(root, "vox"), os.path.join(root, "shards")
    musan, rirs = os.path.join(root, "musan"), os.path.join(root, "rirs")
    if not os.path.exists(stamp):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        synth_voxceleb(speech, vox1_speakers=args.speakers, vox2_speakers=0,
                       videos_per_speaker=args.videos, utterances_per_video=args.utterances,
                       vox1_test_speakers=0, min_seconds=args.min_seconds,
                       max_seconds=args.max_seconds, seed=24)
        build_dataset("voxceleb", speech, shards, log=lambda m: None,
                      options=BuildOptions(shard_size=args.shard_size, progress=False))
        synth_musan(musan, clips_per_subset=args.noise_clips, seconds=args.noise_seconds, seed=24)
        synth_rirs(rirs, rooms_per_size=2, rirs_per_room=4, real_rirs=2, seed=24)
        for source, corpus in (("musan", musan), ("rirs", rirs)):  # RIRs of 1 s: no duration filter
            build_dataset(source, corpus, os.path.join(root, f"{source}-shards"), log=lambda m: None,
                          options=BuildOptions(progress=False, min_duration=0.0))
        open(stamp, "w").close()
    wavs = sorted(glob.glob(os.path.join(speech, "voxceleb1", "wav", "*", "*", "*.wav")))
    speakers = sorted({w.split(os.sep)[-3] for w in wavs})
    noise = {k: sorted(glob.glob(os.path.join(musan, k, "*", "*.wav"))) for k, *_ in KINDS}
    rir_files = sorted(glob.glob(os.path.join(rirs, "simulated_rirs", "*", "*", "*.wav"))
                       + glob.glob(os.path.join(rirs, "real_rirs_isotropic_noises", "*rir*.wav")))
    return {"wavs": wavs, "labels": [speakers.index(w.split(os.sep)[-3]) for w in wavs],
            "index": os.path.join(shards, "voxceleb1_dev", "index.json"), "noise": noise,
            "noise_index": os.path.join(root, "musan-shards", "train", "index.json"),
            "rir_index": os.path.join(root, "rirs-shards", "train", "index.json"),
            "rirs": rir_files, "seconds": sum(sf.info(w).frames for w in wavs) / SR}


def make_stage(data: dict[str, Any], args: argparse.Namespace) -> tuple[Any, Any, float]:
    """(a)'s device stage as the trainer builds it from an ``augment`` block (banks read from
    the noise and RIR shards through the loader), its banks, and the seconds it took."""
    from wds_pipeline.loader import LoaderConfig
    from wds_pipeline.train.augment import AugmentConfig
    from wds_pipeline.train.stage import DeviceStage
    from wds_pipeline.transforms.bank import Banks
    from wds_pipeline.transforms.noise import AddNoise
    from wds_pipeline.transforms.reverb import Reverb
    from wds_pipeline.transforms.row_gain import RowGain

    augment = AugmentConfig(noise_index=data["noise_index"], rir_index=data["rir_index"],
                            rir_categories=RIR_CATEGORIES, reverb=Reverb(P_REVERB), noise=AddNoise(P_NOISE),
                            gain=RowGain(*GAIN_DB))
    t0 = time.perf_counter()
    stage = DeviceStage(augment, (), loader=LoaderConfig(), sample_rate=SR, seed=args.seed, rank=0,
                        device=torch.device("cpu"))
    seconds = time.perf_counter() - t0
    chain = stage.chain
    assert chain is not None
    bound = {type(t).__name__: t for t in chain.transforms}
    return stage, Banks(noise=getattr(bound["AddNoise"], "bank"), rirs=getattr(bound["Reverb"], "bank")), seconds


# ------------------------------------------------------- (b) WeSpeaker-style


class WespeakerStyle(torch.utils.data.Dataset):
    """Per-utterance reads and augmentation in the DataLoader workers, in numpy/scipy."""

    def __init__(self, data: dict[str, Any], crop: int, augment: bool = True) -> None:
        self.wavs, self.labels, self.noise, self.rirs = data["wavs"], data["labels"], data["noise"], data["rirs"]
        self.crop, self.augment = crop, augment
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self.rng is None:  # one generator per worker, seeded by the DataLoader
            self.rng = np.random.default_rng(torch.initial_seed() % 2**32)
        rng = self.rng
        x = sf.read(self.wavs[i], dtype="float32")[0]
        start = int(rng.integers(0, max(len(x) - self.crop, 0) + 1))
        x = x[start:start + self.crop]
        if self.augment:
            if rng.random() < P_REVERB:
                x = self.reverb(x, rng)
            if rng.random() < P_NOISE:
                x = self.add_noise(x, rng)
            x = x * np.float32(10 ** (rng.uniform(*GAIN_DB) / 20))
        return x.astype(np.float32), self.labels[i]

    def reverb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.signal import fftconvolve

        h = sf.read(self.rirs[int(rng.integers(len(self.rirs)))], dtype="float32")[0]
        peak = int(np.argmax(np.abs(h)))  # aligned on the direct path, at its level
        return fftconvolve(x, h / h[peak])[peak:peak + len(x)]

    def add_noise(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kind, low, high, fewest, most = KINDS[int(rng.integers(len(KINDS)))]
        snr = rng.uniform(low, high)
        noise = np.zeros(len(x), dtype=np.float64)
        for _ in range(int(rng.integers(fewest, most + 1))):
            files = self.noise[kind]
            y = sf.read(files[int(rng.integers(len(files)))], dtype="float32")[0]
            piece = np.take(y, np.arange(len(x)) + int(rng.integers(len(y))), mode="wrap")
            power = float(np.mean(piece.astype(np.float64) ** 2))
            if power > 0:
                noise += piece / np.sqrt(power)
        clean_power, noise_power = float(np.mean(x.astype(np.float64) ** 2)), float(np.mean(noise**2))
        if noise_power == 0:
            return x
        return x + noise * np.sqrt(clean_power / (noise_power * 10 ** (snr / 10)))


def pad_collate(items: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x, _ in items], dtype=torch.int64)
    out = torch.zeros((len(items), int(lengths.max())), dtype=torch.float32)
    for r, (x, _) in enumerate(items):
        out[r, : len(x)] = torch.from_numpy(x)
    return out, lengths, torch.tensor([y for _, y in items], dtype=torch.int64)


# ----------------------------------------------------------------- measuring


class Timed:
    """Samples/s from the first batch on (worker start-up excluded on every side)."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.samples = 0

    def batch(self, n: int) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        else:
            self.samples += n

    def result(self, **extra: Any) -> dict[str, Any]:
        seconds = time.perf_counter() - (self.t0 or time.perf_counter())
        return {"samples": self.samples, "seconds": seconds,
                "samples_per_s": self.samples / seconds if seconds > 0 else 0.0, **extra}


def our_loader(index: str, args: argparse.Namespace) -> Any:
    from wds_pipeline import StreamingLoader

    # int16 batches, as configs/augment.yaml has them: half the bytes from the workers, and the
    # device stage's scaling to float32 is the one copy of the batch its transforms then write.
    return StreamingLoader(index, batch_size=args.batch, num_workers=args.workers, waveform_dtype="int16",
                           crop_seconds=args.crop_seconds, last_batch="pad", seed=args.seed)


def specs_of(stage: Any) -> list[dict[str, Any]]:
    """The batch transforms' specs ``{name, params}`` of (a)'s device stage, in order."""
    return [spec.to_dict() for spec in stage.chain.specs]


def our_chain(banks: Any, seed: int, specs: list[dict[str, Any]]) -> Any:
    """A batch chain of ``specs`` on the CPU, its transforms bound to the banks."""
    from wds_pipeline.transforms.bank import bind_banks
    from wds_pipeline.transforms.batch import BatchChain

    chain = BatchChain(specs, seed=seed, rank=0, device=torch.device("cpu"))
    chain.transforms = bind_banks(chain.transforms, banks)
    return chain


def run_ours(data: dict[str, Any], stage: Any, args: argparse.Namespace, augment: bool) -> dict[str, Any]:
    from wds_pipeline.transforms.batch import DeviceBatch

    loader = our_loader(data["index"], args)
    timed, device_s, batches = Timed(), 0.0, 0
    for _ in range(args.epochs):
        for b in loader:
            keep = ~b.is_padding
            if augment:
                t = time.perf_counter()
                d = stage(DeviceBatch(b.waveform, b.lengths, b.labels, keep, b.sample_ids), epoch=b.epoch,
                          index=b.index)
                device_s += time.perf_counter() - t
                batches += 1
                assert d.wave.shape == b.waveform.shape
            timed.batch(int(keep.sum()))
    return timed.result(**({"device_ms_per_batch": 1e3 * device_s / batches} if augment else {}))


def run_wespeaker(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ds = WespeakerStyle(data, round(args.crop_seconds * SR))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         collate_fn=pad_collate, persistent_workers=args.workers > 0)
    timed = Timed()
    for _ in range(args.epochs):
        for wave, _lengths, _labels in loader:
            timed.batch(len(wave))
    return timed.result()


def device_cost(data: dict[str, Any], stage: Any, banks: Any, args: argparse.Namespace) -> dict[str, Any]:
    """(a)'s batch transforms on one real batch, alone (nothing else running): median ms per
    batch of the chain and of each transform with probability 1 (its cost when a row is
    picked); and (b)'s per-utterance augmentation of the same number of utterances in one
    process, for comparison."""
    from wds_pipeline.transforms.batch import DeviceBatch

    loader = our_loader(data["index"], argparse.Namespace(**{**vars(args), "workers": 0}))
    b = next(iter(loader))
    batch = DeviceBatch(b.waveform, b.lengths, b.labels, ~b.is_padding, b.sample_ids)
    reps = max(3, args.cost_repeats)

    def median_ms(fn: Any) -> float:
        times = []
        for i in range(reps):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        return 1e3 * float(np.median(times))

    out = {"batch": tuple(batch.wave.shape), "chain_ms": median_ms(lambda i: stage(batch, epoch=0, index=i))}
    for spec in specs_of(stage):
        params = {**spec["params"], **({"probability": 1.0} if "probability" in spec["params"] else {})}
        one = our_chain(banks, args.seed, [{"name": spec["name"], "params": params}])
        out[f"{spec['name']}_p1_ms"] = median_ms(lambda i, one=one: one(batch, epoch=0, index=i))
    ds = WespeakerStyle(data, round(args.crop_seconds * SR))
    n = batch.wave.shape[0]
    out["wespeaker_style_ms"] = median_ms(lambda i: [ds[(i * n + j) % len(ds)] for j in range(n)])
    plain = WespeakerStyle(data, round(args.crop_seconds * SR), augment=False)
    out["wespeaker_read_only_ms"] = median_ms(lambda i: [plain[(i * n + j) % len(ds)] for j in range(n)])
    return out



# ------------------------------------------------------------------- report

RUNS = {
    "a": "(a) wds_pipeline: loader + batch augmentation",
    "b": "(b) WeSpeaker-style: per-utterance in workers",
    "c": "(c) wds_pipeline loader, no augmentation",
}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per pipeline: the median run's samples/s (and all of them); the ratios a/b and a/c as
    the median of the per-repeat ratios (each repeat ran a, b and c back to back)."""
    out: dict[str, Any] = {}
    for k, rs in runs.items():
        rates = [r["samples_per_s"] for r in rs]
        out[k] = {"name": RUNS[k], "samples_per_s": float(np.median(rates)),
                  "repeats_samples_per_s": rates, "samples": rs[0]["samples"]}
        if "device_ms_per_batch" in rs[0]:
            out[k]["device_ms_per_batch"] = float(np.median([r["device_ms_per_batch"] for r in rs]))
    rate = {k: [r["samples_per_s"] for r in rs] for k, rs in runs.items()}
    ratios = {"a_over_b": float(np.median([a / b for a, b in zip(rate["a"], rate["b"])])),
              "a_over_c": float(np.median([a / c for a, c in zip(rate["a"], rate["c"])]))}
    return {"pipelines": out, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default, what in SPEECH_OPTIONS + NOISE_OPTIONS + RUN_OPTIONS:
        ap.add_argument(flag, type=type(default), default=default, help=what)
    ap.add_argument("--main-threads", type=int, default=1,
                    help="torch threads of the main process, which runs (a)'s batch transforms: "
                         "the 2 workers already take the 2 cores; more threads there only contend")
    ap.add_argument("--cost-repeats", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "wds_pipeline_bench", "augment"))
    ap.add_argument("--json-out", default=os.path.join(RESULTS, "augment.json"))
    ap.add_argument("--png-out", default=os.path.join(RESULTS, "augment.png"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 48 clips, one repeat")
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    if args.quick:
        args.speakers, args.videos, args.utterances, args.noise_clips = 4, 2, 6, 1
        args.batch, args.shard_size, args.epochs, args.repeats, args.cost_repeats = 16, 16, 1, 1, 3
        args.data_dir += "-quick"

    torch.set_num_threads(args.main_threads)
    t0 = time.perf_counter()
    data = make_data(args.data_dir, args)
    data_s = time.perf_counter() - t0
    stage, banks, bank_s = make_stage(data, args)
    import scipy

    import wds_pipeline

    setup = {
        **machine(), "cpu_count": os.cpu_count(), "torch_threads_main": torch.get_num_threads(),
        "numpy": np.__version__, "scipy": scipy.__version__, "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__, "wds_pipeline": wds_pipeline.__version__,
        "speech": f"synthetic VoxCeleb1 layout, {len(data['wavs'])} wavs of {args.min_seconds}-"
                  f"{args.max_seconds} s ({data['seconds'] / 60:.1f} min), 16 kHz int16; "
                  f"shards of {args.shard_size} (npy)",
        "noise": {k: len(v) for k, v in data["noise"].items()}, "noise_seconds": args.noise_seconds,
        "rirs": len(data["rirs"]), "rir_seconds": 1.0,
        "bank": {"noise_clips": int(banks.noise.clips.shape[0]), "noise_MB": banks.noise.clips.numel() * 4 / 1e6,
                 "rirs": int(banks.rirs.rirs.shape[0]),
                 "rir_frames_trimmed_max": int(banks.rirs.rirs.shape[1]), "read_from_shards_seconds": round(bank_s, 3),
                 "noise_index": data["noise_index"], "rir_index": data["rir_index"]},
        "probabilities": {"reverb": P_REVERB, "noise": P_NOISE, "gain": 1.0},
        "noise_kinds": [dict(zip(("category", "min_snr_db", "max_snr_db", "min_clips", "max_clips"), k))
                        for k in KINDS], "gain_db": GAIN_DB, "batch_transforms": specs_of(stage),
        "crop_seconds": args.crop_seconds, "batch": args.batch, "workers": args.workers,
        "epochs_per_run": args.epochs, "repeats": args.repeats, "quick": args.quick,
        "timing": "from each run's first batch (worker start-up excluded); median of the repeats; "
                  "ratios: median of per-repeat ratios, a/b/c order rotated each repeat",
        "data_seconds": round(data_s, 1),
    }
    print("setup:")
    for k, v in setup.items():
        print(f"  {k}: {v}")

    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in RUNS}
    order = list(RUNS)
    for rep in range(args.repeats):
        for k in order[rep % 3:] + order[: rep % 3]:
            r = (run_wespeaker(data, args) if k == "b"
                 else run_ours(data, stage, args, augment=k == "a"))
            runs[k].append(r)
            print(f"  repeat {rep + 1} {k}: {r['samples_per_s']:8.0f} samples/s", flush=True)
    summary = summarize(runs)
    cost = device_cost(data, stage, banks, args)
    ratios = summary["ratios"]
    targets = targets_of(ratios, {"a_over_b": TARGET_A_OVER_B})

    rows = [{"pipeline": p["name"], **p} for p in summary["pipelines"].values()]
    print()
    print(table(rows, [("pipeline", "pipeline", ""), ("samples_per_s", "samples/s", ",.0f"),
                       ("device_ms_per_batch", "device ms/batch", ".1f")]))
    print(f"\na/b (ours over WeSpeaker-style): {ratios['a_over_b']:.2f}x  (target >= {TARGET_A_OVER_B:g}x: "
          f"{'met' if targets['a_over_b']['met'] else 'MISSED'})")
    print(f"a/c (augmentation's cost on our loader): {ratios['a_over_c']:.2f} "
          f"(augmented input at {ratios['a_over_c']:.0%} of the plain loader's rate)")
    print(f"\ndevice cost per batch of {cost['batch'][0]} x {cost['batch'][1]} (alone, median ms): "
          f"chain {cost['chain_ms']:.1f}; with probability 1: "
          + ", ".join(f"{s['name']} {cost[s['name'] + '_p1_ms']:.1f}" for s in specs_of(stage))
          + f"; WeSpeaker-style, same {cost['batch'][0]} utterances in one process: "
            f"{cost['wespeaker_style_ms']:.1f} (reads and crops alone {cost['wespeaker_read_only_ms']:.1f})")

    report = {"setup": setup, "runs": runs, **summary, "targets": targets, "device_cost": cost}
    write_json(args.json_out, report)
    # Labels end with the run's letter: bar_chart greys out labels that start with "(a)".
    bar_chart(args.png_out, [RUNS[k][4:].replace(": ", ":\n") + f" ({k})" for k in RUNS],
              [summary["pipelines"][k]["samples_per_s"] for k in RUNS],
              title=f"Augmented batches ready for the model, {args.workers} workers, {os.cpu_count()} CPUs "
                    f"(a/b {ratios['a_over_b']:.2f}x, a/c {ratios['a_over_c']:.2f})",
              ylabel="samples/s", log=True,
              notes=[f"reverb p={P_REVERB}, noise p={P_NOISE} (noise 0-15 dB, music 5-15 dB, babble 3-7 clips "
                     f"13-20 dB), gain {GAIN_DB[0]:g}..{GAIN_DB[1]:g} dB",
                     f"batch {args.batch}, {args.crop_seconds:g} s crops; median of {args.repeats} "
                     "interleaved repeats"])
    print(f"\nwrote {args.json_out} and {args.png_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
