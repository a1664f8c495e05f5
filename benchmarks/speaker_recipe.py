"""Speaker-verification recipes compared on one synthetic corpus: TDNN + cross-entropy (the
default model) vs ECAPA-TDNN + AAM-softmax vs the same ECAPA scored with AS-norm.

Same data, same seed, same epochs, same optimizer and schedule for every model; each
trained model is scored the way a user scores one: ``wds-pipeline embed`` over the test
index (full-length utterances) and ``wds-pipeline score`` over the index's trial lists
(EER, minDCF at p_target 0.01 and 0.05). AS-norm takes its cohort from the embeddings of
the training index (``wds-pipeline embed`` over it, the mean over each speaker).

The corpus (written once, reused; :func:`make_corpus`) is made hard on purpose, so that
the baseline's EER lands between 2% and 30% and the recipes can be told apart:

- many synthetic voices (``--speakers`` training, ``--test-speakers`` unseen test
  speakers; ``wds_pipeline.synth`` voices, VoxCeleb1 layout, built with the real builder
  and ``--kaldi-split``: splits ``train`` and ``test``);
- every utterance noisy: coloured noise (white, pink, brown) or babble (3-5 voices that are
  not in the corpus) at an SNR drawn from ``--snr`` dB, as VoxCeleb's "in the wild" audio
  is noisy in training and in trials alike;
- short utterances (``--min-seconds`` .. ``--max-seconds``);
- two trial lists stored as the VoxCeleb source stores them (in the test index's
  ``trials``): ``veri_test2.txt`` (non-targets drawn from any other test speaker) and
  ``list_test_hard2.txt`` (non-targets of the same gender only, as VoxCeleb1-H keeps the
  same gender and nationality), targets across videos where the speaker has them.

The ECAPA here is small (``--ecapa-channels``, 1024 in the paper) and every model trains
a few minutes on the CPU: a comparison of recipes on this machine, no claim about VoxCeleb
numbers.

    .venv/bin/python benchmarks/speaker_recipe.py            # full run (~10 min on 2 cores, +40 s data)
    .venv/bin/python benchmarks/speaker_recipe.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, RESULTS, SR, keep_quoted_results, machine, table, write_json  # noqa: E402

SEED = 7  # the corpus's (voices, noise, trials); --seed is the trainings'
TRIAL_LISTS = ("veri_test2.txt", "list_test_hard2.txt")
# The options: (flag, default, help, quick value); the type is the default's.
OPTIONS: tuple[tuple[str, Any, str, Any], ...] = (
    ("--speakers", 120, "training speakers", 12),
    ("--test-speakers", 40, "unseen test speakers (the trials')", 6),
    ("--videos", 2, "videos per speaker", 2),
    ("--utterances", 5, "utterances per video", 3),
    ("--min-seconds", 2.0, "shortest utterance", 1.5),
    ("--max-seconds", 4.0, "longest utterance", 2.5),
    ("--snr-low", 0.0, "lowest SNR of the noise on every utterance, dB", 0.0),
    ("--snr-high", 15.0, "highest SNR, dB", 15.0),
    ("--targets-per-utterance", 3, "target trials per enrolment utterance (and as many non-targets)", 2),
    ("--epochs", 20, "training epochs of every model", 2),
    ("--batch", 32, "batch size", 16),
    ("--crop-seconds", 2.0, "training crop (WeSpeaker: 200 frames)", 1.0),
    ("--lr", 0.003, "AdamW peak learning rate (every model)", 0.003),
    ("--tdnn-channels", 128, "the default TDNN's channels", 32),
    ("--ecapa-channels", 128, "ECAPA-TDNN channels (the paper: 512 and 1024)", 32),
    ("--top-k", 20, "AS-norm: the top-k cohort scores per side (of the training speakers)", 5),
    ("--threads", 2, "torch threads", 2),
    ("--seed", SEED, "the trainings' seed (weights, batch order, crops)", SEED),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default, help_text, _ in OPTIONS:
        ap.add_argument(flag, type=type(default), default=default, help=f"{help_text} (default {default})")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "wds_pipeline_bench",
                                                       "speaker_recipe"))
    ap.add_argument("--json-out", default=os.path.join(RESULTS, "speaker_recipe.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: a tiny corpus, 2 epochs")
    args = ap.parse_args(argv)
    keep_quoted_results(args)
    if args.quick:
        for flag, _, _, quick in OPTIONS:
            setattr(args, flag[2:].replace("-", "_"), quick)
        args.data_dir += "-quick"
    return args


# ---------------------------------------------------------------------- data


def babble_pool(n: int = 24, seconds: float = 8.0) -> list[np.ndarray]:
    """Voices that are not in the corpus (seeds far from any corpus speaker's), for babble."""
    from wds_pipeline.synth import synth_voice

    return [synth_voice(10**6 + i, seconds, SR, np.random.default_rng([SEED, 2, i])).astype(np.float64)
            for i in range(n)]


def noisy(x: np.ndarray, rng: np.random.Generator, snr_db: float, pool: list[np.ndarray]) -> np.ndarray:
    """``x`` plus coloured noise or babble (3-5 voices of ``pool`` from random offsets) at
    ``snr_db`` (powers over the whole utterance)."""
    from wds_pipeline.synth.noise import coloured_noise

    if rng.random() < 0.5:
        noise = coloured_noise(len(x), float(rng.choice([0.0, 1.0, 2.0])), rng)
    else:
        noise = np.zeros(len(x))
        for i in rng.choice(len(pool), size=int(rng.integers(3, 6)), replace=False):
            noise += np.take(pool[int(i)], np.arange(len(x)) + int(rng.integers(len(pool[int(i)]))), mode="wrap")
    p_x, p_n = float(np.mean(x.astype(np.float64) ** 2)), float(np.mean(noise**2))
    y = x + noise * np.sqrt(p_x / (max(p_n, 1e-12) * 10 ** (snr_db / 10)))
    return y / max(1.0, float(np.max(np.abs(y))) / 0.95)  # no clipping


def add_noise(wavs: list[str], args: argparse.Namespace) -> None:
    """Every wav of the corpus rewritten with noise (deterministic per file)."""
    import soundfile as sf

    from wds_pipeline.synth import to_pcm16, write_soundfile

    pool = babble_pool()
    for i, path in enumerate(wavs):
        rng = np.random.default_rng([SEED, 3, i])
        x = sf.read(path, dtype="float32")[0]
        snr = float(rng.uniform(args.snr_low, args.snr_high))
        write_soundfile(path, to_pcm16(noisy(x, rng, snr, pool)), SR, "WAV")


def trial_lists(vox1: str, args: argparse.Namespace) -> dict[str, list[tuple[int, str, str]]]:
    """``veri_test2.txt`` and ``list_test_hard2.txt`` over the test speakers' utterances."""
    from wds_pipeline.sources import voxceleb as vc

    with open(os.path.join(vox1, vc.VOX1.meta_file), encoding="utf-8") as f:
        meta = [line.rstrip("\n").split("\t") for line in f][1:]
    gender = {row[0]: row[2] for row in meta if row[4] == "test"}
    utts = {spk: sorted(os.path.relpath(p, os.path.join(vox1, "wav")).replace(os.sep, "/")
                        for p in glob.glob(os.path.join(vox1, "wav", spk, "*", "*.wav"))) for spk in gender}
    rng = np.random.default_rng([SEED, 1])
    lists: dict[str, list[tuple[int, str, str]]] = {name: [] for name in TRIAL_LISTS}
    for spk in sorted(utts):
        others = {name: [u for s in sorted(utts) if s != spk and (name == TRIAL_LISTS[0] or gender[s] == gender[spk])
                         for u in utts[s]] for name in TRIAL_LISTS}
        for enroll in utts[spk]:
            # Targets from the speaker's other videos first (cross-session), then its own.
            video = enroll.split("/")[1]
            same = sorted((u for u in utts[spk] if u != enroll), key=lambda u: (u.split("/")[1] == video, u))
            for name in TRIAL_LISTS:
                for test in same[:args.targets_per_utterance]:
                    lists[name].append((1, enroll, test))
                pool = others[name] or others[TRIAL_LISTS[0]]
                for j in rng.choice(len(pool), size=min(len(pool), args.targets_per_utterance), replace=False):
                    lists[name].append((0, enroll, pool[int(j)]))
    return lists


def make_corpus(args: argparse.Namespace) -> dict[str, Any]:
    """The noisy VoxCeleb1-layout corpus, its trial lists and its shards (reused when a
    previous run wrote the same settings: a stamp file names them)."""
    from wds_pipeline.builder import BuildOptions, build_dataset
    from wds_pipeline.sources import voxceleb as vc
    from wds_pipeline.synth import synth_voxceleb, write_text

    root = args.data_dir
    corpus, shards = os.path.join(root, "voxceleb"), os.path.join(root, "shards")
    stamp = os.path.join(root, ".done-v2-" + "-".join(
        str(getattr(args, k)) for k in ("speakers", "test_speakers", "videos", "utterances", "min_seconds",
                                        "max_seconds", "snr_low", "snr_high", "targets_per_utterance")))
    t0 = time.perf_counter()
    if not os.path.exists(stamp):
        shutil.rmtree(root, ignore_errors=True)
        synth_voxceleb(corpus, vox1_speakers=args.speakers + args.test_speakers, vox2_speakers=0,
                       videos_per_speaker=args.videos, utterances_per_video=args.utterances,
                       vox1_test_speakers=args.test_speakers, min_seconds=args.min_seconds,
                       max_seconds=args.max_seconds, seed=SEED)
        vox1 = os.path.join(corpus, "voxceleb1")
        add_noise(sorted(glob.glob(os.path.join(vox1, "wav", "*", "*", "*.wav"))), args)
        for name, lines in trial_lists(vox1, args).items():
            write_text(os.path.join(vox1, name), "".join(vc.trial_line(*t) for t in lines))
        build_dataset("voxceleb", corpus, shards, log=lambda m: None, source_options={"kaldi_split": True},
                      options=BuildOptions(shard_size=200, progress=False))
        open(stamp, "w").close()
    from wds_pipeline.index import load_index

    test = load_index(os.path.join(shards, "test", "index.json"))
    train = load_index(os.path.join(shards, "train", "index.json"))
    trials = test.extras.get("trials") or {}
    return {"train": os.path.join(shards, "train", "index.json"), "test": os.path.join(shards, "test", "index.json"),
            "seconds": round(time.perf_counter() - t0, 1),
            "train_utterances": sum(len(s.sample_frames) for s in train.shards),
            "test_utterances": sum(len(s.sample_frames) for s in test.shards),
            "trials": {name: {"targets": sum(int(t[0]) for t in lines), "nontargets": sum(1 - int(t[0]) for t in lines)}
                       for name, lines in trials.items()}}


# ---------------------------------------------------------------- training

# The recipes: (name, model block, loss block or None for cross-entropy). AdamW and its
# schedule (the trainer's one optimizer) are the same for every model.
def recipes(args: argparse.Namespace) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    return {
        "tdnn_ce": ({"factory": "wds_pipeline.train.models:speaker_tdnn", "channels": args.tdnn_channels,
                     "embed_dim": 128}, None),
        # WeSpeaker's AAM-softmax: s=32, m=0.2; its margin schedule (0 for epochs 0-20, up
        # to 0.2 by epoch 40 of 150, exp) scaled to this run's epochs.
        "ecapa_aam": ({"factory": "wds_pipeline.train.ecapa:ecapa_tdnn", "channels": args.ecapa_channels,
                       "embedding_dim": 192},
                      {"name": "aam", "scale": 32.0, "margin": 0.2, "margin_increase": "exp",
                       "margin_hold_epochs": round(args.epochs * 20 / 150, 2),
                       "margin_warmup_epochs": round(args.epochs * 20 / 150, 2)}),
    }


def train_config(args: argparse.Namespace, corpus: dict[str, Any], out: str, model: dict[str, Any],
                 loss: dict[str, Any] | None) -> dict[str, Any]:
    """One recipe's training config: everything but the model and the loss is shared."""
    doc: dict[str, Any] = {
        "data": {"train": [corpus["train"]], "valid": [corpus["test"]]},
        "loader": {"batch_size": args.batch, "crop_seconds": args.crop_seconds, "num_workers": 1,
                   "waveform_dtype": "int16", "persistent_workers": True, "shuffle_buffer": 2000,
                   "seed": args.seed},
        "model": model,
        "optim": {"lr": args.lr, "warmup_steps": 20, "grad_clip": 5.0},
        "checkpoint": {"dir": os.path.join(out, "checkpoints"), "every_steps": 10**6, "keep_last": 1,
                       "keep_best": 0},
        "run": {"epochs": args.epochs, "out_dir": out, "seed": args.seed, "log_every": 50, "num_threads": args.threads,
                "progress": False, "preflight": False, "tensorboard": False, "device": "cpu",
                "precision": "fp32"},
    }
    if loss is not None:
        doc["loss"] = loss
    return doc


def train(doc: dict[str, Any], out: str) -> dict[str, Any]:
    """Train a fresh model (``out`` emptied first); its summary and the trainer's last
    validation EER."""
    from wds_pipeline.train.config import parse_config
    from wds_pipeline.train.trainer import Trainer

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = Trainer(parse_config(doc, source=f"speaker_recipe:{os.path.basename(out)}"),
                      log=lambda m: print("    " + m, flush=True)).fit()
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": summary.steps,
            "samples_per_s": round(summary.samples_per_s, 1), "classes": summary.num_classes,
            "checkpoint": summary.last_checkpoint, "valid": summary.valid}


# ----------------------------------------------------------------- scoring

WDS = [os.path.join(os.path.dirname(sys.executable), "wds-pipeline")]
if not os.path.exists(WDS[0]):
    WDS = [sys.executable, "-m", "wds_pipeline.cli"]


def cli(*argv: str) -> str:
    """``wds-pipeline ARGV`` as a user runs it; its stdout (a failure raises, with stderr)."""
    p = subprocess.run(WDS + list(argv), capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise RuntimeError(f"wds-pipeline {' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def embed(checkpoint: str, index: str, out: str) -> float:
    """``wds-pipeline embed`` of every utterance of ``index`` (whole utterances); seconds."""
    t0 = time.perf_counter()
    cli("embed", "--checkpoint", checkpoint, index, out, "--device", "cpu", "--no-progress", "--overwrite")
    return time.perf_counter() - t0


def score(embeddings: str, trials: str, out: str, *, cohort: str | None = None, top_k: int = 0) -> dict[str, Any]:
    """``wds-pipeline score`` of the trial lists in index ``trials``: its report.json."""
    norm = ["--cohort", cohort, "--as-norm", "--top-k", str(top_k)] if cohort else []
    cli("score", embeddings, "--trials", trials, "--out", out, *norm)
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------- main

# The rows: (row, recipe trained, scoring variant of `wds-pipeline score`).
ROWS = (("TDNN + CE", "tdnn_ce", "cosine"), ("ECAPA + AAM", "ecapa_aam", "cosine"),
        ("ECAPA + AAM + AS-norm", "ecapa_aam", "as_norm"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    corpus = make_corpus(args)
    setup = {**machine(), "cpu_count": os.cpu_count(), "quick": args.quick, "corpus_seed": SEED,
             **{flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, *_ in OPTIONS},
             "corpus": corpus, "optimizer": "AdamW (the trainer's), linear warm-up 20 steps, cosine decay",
             "recipes": {}}
    print(f"corpus: {corpus['train_utterances']} training utterances of {args.speakers} speakers, "
          f"{corpus['test_utterances']} test utterances of {args.test_speakers} unseen speakers, every one noisy "
          f"({args.snr_low:g}-{args.snr_high:g} dB); trials: "
          + ", ".join(f"{n} {t['targets']} targets + {t['nontargets']} non-targets" for n, t in corpus["trials"].items()),
          flush=True)
    work = os.path.join(args.data_dir, "runs")
    trained: dict[str, dict[str, Any]] = {}
    for name, (model, loss) in recipes(args).items():
        out = os.path.join(work, name)
        doc = train_config(args, corpus, out, model, loss)
        setup["recipes"][name] = {"model": model, "loss": loss or {"name": "ce"}}
        print(f"training {name}: {args.epochs} epochs ...", flush=True)
        run = train(doc, out)
        ckpt = os.path.join(out, "checkpoints")
        run["embed_test_s"] = round(embed(ckpt, corpus["test"], os.path.join(out, "emb-test")), 1)
        cohort = None
        if any(r == name and v != "cosine" for _, r, v in ROWS):
            run["embed_train_s"] = round(embed(ckpt, corpus["train"], os.path.join(out, "emb-train")), 1)
            cohort = os.path.join(out, "emb-train")
        run["report"] = score(os.path.join(out, "emb-test"), corpus["test"], os.path.join(out, "scores"),
                              cohort=cohort, top_k=args.top_k)
        trained[name] = run
        print(f"  {run['steps']} steps in {run['seconds']:.0f} s ({run['samples_per_s']:.0f} samples/s)", flush=True)
    from wds_pipeline.sv.trials import list_name

    results = []
    for row, name, variant in ROWS:
        for trials in TRIAL_LISTS:
            figures = trained[name]["report"]["lists"][list_name(trials)]["results"][variant]
            # The trainer's own last validation of the same checkpoint (cosine scoring).
            trainer = trained[name]["valid"].get(f"valid_eer/{trials}") if variant == "cosine" else None
            results.append({"recipe": row, "trials": trials, "eer_pct": 100 * figures["eer"],
                            "trainer_eer_pct": None if trainer is None else 100 * trainer,
                            "min_dcf_0.01": figures["min_dcf_0.01"], "min_dcf_0.05": figures["min_dcf_0.05"]})
    print(f"\nsetup: {setup['machine']}, torch {setup['torch']}; {args.epochs} epochs, batch {args.batch}, "
          f"{args.crop_seconds:g} s crops, AdamW lr {args.lr:g}, seed {args.seed}; TDNN channels {args.tdnn_channels}, "
          f"ECAPA channels {args.ecapa_channels} (the paper: 512/1024); AS-norm top-{args.top_k} of "
          f"{args.speakers} training speakers' mean embeddings")
    print(table(results, [("recipe", "recipe", ""), ("trials", "trials", ""), ("eer_pct", "EER %", ".2f"),
                          ("trainer_eer_pct", "trainer's EER %", ".2f"),
                          ("min_dcf_0.01", "minDCF 0.01", ".3f"), ("min_dcf_0.05", "minDCF 0.05", ".3f")]))
    print("(EER, minDCF: `wds-pipeline embed` + `wds-pipeline score` of the last checkpoint; the trainer's EER: "
          "its own validation of that checkpoint, for comparison)")
    seconds = time.perf_counter() - t_start
    print(f"\nwhole run {seconds / 60:.1f} min")
    write_json(args.json_out, {"setup": setup, "results": results, "runs": trained, "seconds": round(seconds, 1)})
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
