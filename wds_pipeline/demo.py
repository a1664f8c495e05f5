"""``wds-pipeline demo``: the whole job on corpora the project synthesises, offline.

synthesise -> build shards -> inspect -> verify -> stream -> preflight -> train -> summary.
The steps are a list over a shared context, so a new capability appends a step.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import storage
from .errors import WdsPipelineError

EXIT_OK, EXIT_FAIL = 0, 1

# The speaker-ID corpus the demo trains on: LibriSpeech layout, every 4th utterance of each
# speaker held out for validation (closed-set accuracy on the same speakers).
DEMO_SPEAKERS = 16  # dealt to train-clean-100 and dev-clean: 8 speakers train the model
DEMO_UTTERANCES = 6  # per chapter, 2 chapters per speaker
HOLDOUT_EVERY = 4


def demo_config(workdir: str, *, augment: bool = True) -> dict[str, Any]:
    """The demo's training config; ``configs/demo.yaml`` is this for ``workdir="demo"``.

    ``augment``: train with the VoxCeleb recipe's augmentation (speed, reverb, noise,
    SpecAugment) from the synthetic MUSAN and RIRS_NOISES shards; without it the run goes to
    ``run-clean/``, so the two can be compared. Both score validation clean and on its noisy
    copy (``data.valid_noisy``: noise on every utterance, reverberation on half).
    """
    shards = f"{workdir}/shards"
    noise = {"noise_index": f"{shards}/musan/train/index.json", "rir_index": f"{shards}/rirs/train/index.json"}
    run_dir = f"{workdir}/run" if augment else f"{workdir}/run-clean"
    return {
        "data": {
            "train": [f"{shards}/speakers/train/index.json"],
            "valid": [f"{shards}/speakers/valid/index.json", f"{shards}/voxceleb/test/index.json"],
            "valid_noisy": {**noise, "noise": {"probability": 1.0}, "reverb": {"probability": 0.5}},
        },
        "loader": {"batch_size": 16, "crop_seconds": 2.0, "num_workers": 2, "waveform_dtype": "int16",
                   "persistent_workers": True, "shuffle_buffer": 500},
        "model": {"factory": "wds_pipeline.train.models:speaker_tdnn", "channels": 128, "embed_dim": 64},
        "optim": {"lr": 0.003, "warmup_steps": 10, "grad_accum": 1, "grad_clip": 5.0},
        "checkpoint": {"dir": f"{run_dir}/checkpoints", "every_steps": 20, "keep_last": 2,
                       "keep_best": 1, "metric": "valid_accuracy"},
        "run": {"epochs": 30, "out_dir": run_dir, "log_every": 10, "seed": 0,
                "preflight_batches": 5},
        **({"augment": {**noise, "speed": {}, "reverb": {}, "noise": {}, "spec_augment": {}}} if augment else {}),
    }


class DemoFailure(WdsPipelineError, RuntimeError):
    pass


@dataclass
class DemoContext:
    workdir: str
    workers: int | None = None
    epochs: int | None = None
    augment: bool = True
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def corpus(self) -> str:
        return os.path.join(self.workdir, "corpus")

    @property
    def shards(self) -> str:
        return os.path.join(self.workdir, "shards")


DemoStep = tuple[str, Callable[[DemoContext], None]]


def _synth(ctx: DemoContext) -> None:
    from . import synth

    libri = os.path.join(ctx.corpus, "LibriSpeech")
    vox = os.path.join(ctx.corpus, "voxceleb")
    # Deterministic corpora: reuse them when a previous demo run finished writing them.
    if not os.path.exists(os.path.join(libri, "SPEAKERS.TXT")):
        s = synth.synth_librispeech(libri, speakers=DEMO_SPEAKERS, chapters_per_speaker=2,
                                    utterances_per_chapter=DEMO_UTTERANCES, max_seconds=6.0)
        print(f"  LibriSpeech layout: {s['files']} files, {s['seconds'] / 60:.1f} min")
    if not os.path.exists(os.path.join(vox, "voxceleb1", "vox1_meta.csv")):
        s = synth.synth_voxceleb(vox, max_seconds=6.0)
        print(f"  VoxCeleb layout: {s['files']} files, {s['seconds'] / 60:.1f} min, "
              f"{s['trials']} trials")
    speakers = os.path.join(ctx.corpus, "speakers.csv")
    if not os.path.exists(speakers):
        n = write_holdout_manifest(os.path.join(libri, "train-clean-100"), speakers)
        print(f"  speaker-ID manifest: {n} rows, every {HOLDOUT_EVERY}th utterance held out")
    ctx.results["corpora"] = {"librispeech": libri, "voxceleb": vox, "speakers": speakers}


def write_holdout_manifest(part_dir: str, out: str) -> int:
    """A manifest (path, speaker, label = speaker, split) over a LibriSpeech part: each speaker's every
    ``HOLDOUT_EVERY``-th utterance goes to ``valid``, the rest to ``train``."""
    rows = []
    for spk in sorted(os.listdir(part_dir)):
        files = sorted(
            os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(part_dir, spk)) for f in fs
            if f.endswith(".flac")
        )
        for i, path in enumerate(files):
            split = "valid" if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else "train"
            rows.append((os.path.relpath(path, os.path.dirname(out)), spk, spk, split))
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["path", "speaker", "label", "split"])
    w.writerows(rows)
    storage.write_bytes_atomic(out, text.getvalue().encode("utf-8"))
    return len(rows)


def _build_into(ctx: DemoContext, name: str, source: str, root: str, options: Any,
                source_options: dict[str, Any] | None = None, label: str | None = None) -> None:
    """Build ``root`` with ``source`` into ``shards/<name>``, print its summary, record its
    splits; nothing written is a demo failure."""
    from .builder import build_dataset

    r = build_dataset(source, root, os.path.join(ctx.shards, name), options=options,
                      source_options=source_options or {})
    print(f"  {label or name}: {r.summary()}")
    if r.counts.written == 0:
        raise DemoFailure(f"{name}: nothing written")
    ctx.results.setdefault("datasets", {})[name] = {k: v.index_url for k, v in r.splits.items()}


def _synth_once(root: str, write: Callable[[], str]) -> None:
    """Run ``write`` (which synthesises ``root`` and returns its summary line) unless a
    previous run finished it: the corpora are deterministic, reused once complete."""
    if not os.path.exists(os.path.join(root, ".complete")):
        line = write()
        storage.write_bytes_atomic(os.path.join(root, ".complete"), b"")
        print(f"  {line}")


def _build(ctx: DemoContext) -> None:
    from .builder import BuildOptions

    jobs = [("librispeech", "librispeech", {}, BuildOptions(shard_size=16, workers=ctx.workers)),
            ("voxceleb", "voxceleb", {"kaldi_split": True},
             BuildOptions(shard_size=16, fbank=True, workers=ctx.workers)),
            ("speakers", "manifest", {}, BuildOptions(shard_size=16, workers=ctx.workers))]
    ctx.results["datasets"] = {}
    for name, source, source_options, options in jobs:
        _build_into(ctx, name, source, ctx.results["corpora"][name], options, source_options)


def _sessions(ctx: DemoContext) -> None:
    """Voice-command clips cut from long session recordings at their WhisperX word times."""
    from .builder import BuildOptions
    from .synth import COMMANDS, synth_sessions

    root = os.path.join(ctx.corpus, "sessions")

    def write() -> str:
        s = synth_sessions(root, sessions=2, seconds=30.0)
        return f"sessions: {len(s['sessions'])} recordings, {s['seconds'] / 60:.1f} min, WhisperX JSON beside each"

    _synth_once(root, write)
    _build_into(ctx, "sessions", "sessions", root,
                BuildOptions(shard_size=64, min_duration=0.05, workers=ctx.workers),
                {"mode": "words", "vocabulary": ",".join(COMMANDS), "synonyms": "walking=walk",
                 "pad_before": 0.1, "pad_after": 0.1}, label="sessions (words mode)")


def _noise(ctx: DemoContext) -> None:
    """The noise and RIR corpora augmentation draws from: MUSAN and RIRS_NOISES layouts."""
    from . import synth
    from .builder import BuildOptions

    def layout(name: str, s: dict[str, Any]) -> str:
        return f"{name} layout: {s['files']} files, {s['seconds']:.0f} s"

    musan, rirs = os.path.join(ctx.corpus, "musan"), os.path.join(ctx.corpus, "RIRS_NOISES")
    _synth_once(musan, lambda: layout("musan", synth.synth_musan(musan, clips_per_subset=2, seconds=3.0)))
    _synth_once(rirs, lambda: layout("RIRS_NOISES", synth.synth_rirs(rirs)))
    for name, root in (("musan", musan), ("rirs", rirs)):
        # Real RIRs can be shorter than the default minimum duration (0.5 s): keep every clip.
        _build_into(ctx, name, name, root, BuildOptions(shard_size=64, min_duration=0, workers=ctx.workers))


def _inspect(ctx: DemoContext) -> None:
    from .verify import inspect_dataset

    for name in ctx.results["datasets"]:
        for s in inspect_dataset(os.path.join(ctx.shards, name), examples=2):
            print("\n".join("  " + line for line in s.to_text(max_rejects=3).splitlines()))


def _verify(ctx: DemoContext) -> None:
    from .verify import verify_dataset

    for name in ctx.results["datasets"]:
        report = verify_dataset(os.path.join(ctx.shards, name), progress=False)
        print("\n".join("  " + line for line in report.to_text().splitlines()))
        if not report.ok:
            raise DemoFailure(f"verify failed for {name}")


def _stream(ctx: DemoContext) -> None:
    from .loader import StreamingLoader

    index = ctx.results["datasets"]["librispeech"]["train-clean-100"]
    loader = StreamingLoader(index, batch_size=8, num_workers=0, crop_seconds=2.0)
    t0 = time.perf_counter()
    n = batches = 0
    for batch in loader:
        batches += 1
        n += int((~batch.is_padding).sum())
    dt = time.perf_counter() - t0
    print(f"  one epoch of {index}: {batches} batches, {n} samples in {dt:.2f} s")
    ctx.results["stream"] = {"batches": batches, "samples": n}


def _train_config(ctx: DemoContext):
    from .train.config import parse_config

    doc = demo_config(ctx.workdir, augment=ctx.augment)
    if ctx.epochs is not None:
        doc["run"]["epochs"] = ctx.epochs
    return parse_config(doc, source="wds_pipeline.demo.demo_config")


def _write_config(ctx: DemoContext, doc: dict[str, Any]) -> str:
    import yaml

    path = os.path.join(ctx.workdir, "train.yaml" if ctx.augment else "train-clean.yaml")
    storage.write_bytes_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    return path


def _preflight(ctx: DemoContext) -> None:
    from .train.preflight import run_preflight

    cfg = _train_config(ctx)
    ctx.results["config_file"] = _write_config(ctx, demo_config(ctx.workdir, augment=ctx.augment))
    report = run_preflight(cfg)
    print("\n".join("  " + line for line in report.to_text().splitlines()))
    if not report.ok:
        raise DemoFailure("preflight failed")


def _train(ctx: DemoContext) -> None:
    from .train.trainer import Trainer

    cfg = _train_config(ctx).with_run(progress=False)
    summary = Trainer(cfg, log=lambda m: print("  " + m, flush=True)).fit()
    ctx.results["train"] = summary
    print("\n".join("  " + line for line in summary.to_text().splitlines()))


def demo_steps() -> list[DemoStep]:
    """The demo's steps, in order; append to this list to extend the demo."""
    return [("synthesise corpora", _synth), ("build shards", _build),
            ("build voice-command clips from sessions", _sessions),
            ("build noise and RIR corpora for augmentation", _noise), ("inspect", _inspect),
            ("verify", _verify), ("stream one epoch", _stream), ("preflight", _preflight),
            ("train", _train)]


def run_demo(workdir: str, *, workers: int | None = None, epochs: int | None = None, augment: bool = True,
             steps: Sequence[DemoStep] | None = None) -> int:
    ctx = DemoContext(workdir=workdir, workers=workers, epochs=epochs, augment=augment)
    steps = demo_steps() if steps is None else steps
    t_start = time.perf_counter()
    for i, (name, step) in enumerate(steps, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(steps)}] {name}", flush=True)
        try:
            step(ctx)
        except DemoFailure as e:
            print(f"demo failed at step {name!r}: {e}", file=sys.stderr)
            return EXIT_FAIL
        print(f"      ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"demo OK in {time.perf_counter() - t_start:.0f} s: corpus in {ctx.corpus}, shards in {ctx.shards}")
    summary = ctx.results.get("train")
    if summary is not None:
        def pct(key: str) -> str:
            value = summary.valid.get(key)
            return "n/a" if value is None else f"{100 * value:.1f}%"

        print(f"summary ({'augmented' if ctx.augment else 'clean'} training): validation accuracy "
              f"{pct('valid_accuracy')} on {summary.num_classes} speakers (chance "
              f"{100 / max(1, summary.num_classes):.1f}%), EER {pct('valid_eer')}; on the noisy copy: accuracy "
              f"{pct('valid_noisy_accuracy')}, EER {pct('valid_noisy_eer')}; {summary.samples_per_s:.0f} samples/s, "
              f"data-wait {100 * summary.data_wait_fraction:.1f}%")
        print(f"  shards {ctx.shards}; checkpoints {summary.checkpoint_dir}; metrics {summary.metrics_file}")
        print(f"  train again or resume: wds-pipeline train --config {ctx.results['config_file']}")
    return EXIT_OK
