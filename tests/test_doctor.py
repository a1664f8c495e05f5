"""The input-pipeline doctor (train/doctor.py, loader/stages.py): per-stage time collected in
the workers, logged with the data-wait fraction, and at each epoch end one line naming the
bottleneck and its fix. Four bottlenecks built for real, each must be named: a slow model, too
few workers, slow decoding (FLAC shards on 2 cores) and a slow link (a FUSE mount at 2 MB/s)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from trainer_helpers import small_config

from wds_pipeline.builder import BuildOptions, build_dataset
from wds_pipeline.loader import LoaderConfig
from wds_pipeline.loader.stages import STAGE_FIELDS
from wds_pipeline.synth import synth_librispeech
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.doctor import PipelineTimes, diagnose
from wds_pipeline.train.trainer import Trainer

FAST_MODEL = "trainer_helpers:mean_model"  # next to no compute: the input is the limit
# The slow model's sleep per step. At 0.05 s, a loaded 2-core machine measured data-wait
# 10-14% (the workers' start-up and each batch's hand-over), over the 10% that names the
# model; 0.15 s with persistent workers keeps it near 3%.
SLOW_STEP = 0.15


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """A LibriSpeech-layout corpus as int16 (.npy) shards, and one of longer clips (10-14 s)
    as FLAC shards: decoding a whole clip for each 0.1 s crop then costs several times the
    other stages (clips of up to 4 s decoded in about what collating took, and a loaded
    machine named either)."""
    root = tmp_path_factory.mktemp("doctor")
    lengths = {"npy": (1.0, 4.0), "flac": (10.0, 14.0)}
    out = {}
    for codec, (shortest, longest) in lengths.items():
        synth_librispeech(str(root / f"libri-{codec}"), speakers=4, chapters_per_speaker=2,
                          utterances_per_chapter=6, min_seconds=shortest, max_seconds=longest)
        r = build_dataset("librispeech", str(root / f"libri-{codec}"), str(root / codec),
                          options=BuildOptions(codec=codec, shard_size=16, workers=1, progress=False),
                          log=lambda _: None)
        out[codec] = root / codec
        assert r.counts.written == 48
    return out


def train_index(shards: Path) -> list[str]:
    """Both splits' indexes: 48 clips, 24 batches of 2 an epoch."""
    return sorted(str(p) for p in shards.glob("*/index.json"))


def run_doctor(index: list[str], out: Path, *, model: str = FAST_MODEL, workers: int = 2, **loader) -> list[str]:
    doc = small_config(index, str(out))
    doc["model"] = {"factory": model} | ({"delay": SLOW_STEP} if model.endswith("slow_tdnn") else {})
    doc["loader"].update(num_workers=workers, batch_size=2, **loader)
    doc["run"].update(epochs=2, progress=False)
    lines: list[str] = []
    trainer = Trainer(parse_config(doc, "doctor.yaml"), log=lines.append)
    try:
        trainer.fit()
        # Its persistent workers were stopped as fit returned (loader.close()), not left
        # for the garbage collector.
        assert trainer.loader.dataloader._iterator is None
    finally:
        trainer.close()
    verdicts = [line for line in lines if "input doctor" in line]
    assert [v.split(" input doctor")[0] for v in verdicts] == ["epoch 0", "epoch 1"], lines
    # Epoch 1: the workers persist, so its start-up is short (a real epoch's thousands of
    # batches dwarf it; these have 24).
    return verdicts[1:]


@pytest.fixture
def two_cores():
    """The run on 2 cores whatever the machine (CI's size): 'too few workers' then needs an
    idle core, as on Colab's 2 vCPUs."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:2])
    yield
    os.sched_setaffinity(0, before)


def test_a_slow_model_is_named(corpora, tmp_path, two_cores):
    lines = run_doctor(train_index(corpora["npy"]), tmp_path, model="trainer_helpers:slow_tdnn",
                       persistent_workers=True)
    assert len(lines) == 1 and "bottleneck: model" in lines[0], lines
    assert "fix: none on the input side" in lines[0]


def test_too_few_workers_are_named(corpora, tmp_path, two_cores):
    lines = run_doctor(train_index(corpora["npy"]), tmp_path, workers=0)
    assert len(lines) == 1 and "bottleneck: workers" in lines[0], lines
    assert "fix: loader.num_workers is 0: use 2" in lines[0]


def test_slow_decoding_is_named(corpora, tmp_path, two_cores):
    lines = run_doctor(train_index(corpora["flac"]), tmp_path)
    assert len(lines) == 1 and "bottleneck: decoding" in lines[0], lines
    assert "fix: the shards hold FLAC, decoded on every read: rebuild with --codec npy" in lines[0]


def test_a_slow_link_is_named_and_the_figures_reach_metrics(corpora, tmp_path, slowfs_factory, two_cores):
    mount = slowfs_factory("drive", latency_ms=50, bandwidth_mbps=2)
    shutil.copytree(corpora["npy"], Path(mount.source) / "npy")
    index = train_index(Path(mount.mountpoint) / "npy")
    lines = run_doctor(index, tmp_path, cache_dir=False)
    assert len(lines) == 1 and "bottleneck: link" in lines[0], lines
    assert "fix: shards are read from Drive/GCS without a cache: set loader.cache_dir to local disk" in lines[0]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]  # each epoch's record carries the doctor's figures
    assert len(epochs) == 2 and epochs[1]["input/bottleneck"] == "link"
    e = epochs[1]
    assert {"input/read_ms", "input/decode_ms", "input/transform_ms", "input/collate_ms", "input/to_device_ms",
            "input/link_mb_s", "input/startup_s", "data_wait"} <= set(e)
    assert 0.2 < e["input/link_mb_s"] < 4  # the mount's 2 MB/s cap (and its burst), over the whole loop
    assert e["input/read_ms"] > e["input/decode_ms"]
    trains = [r for r in records if r["kind"] == "train"]  # and every log window's
    assert trains and all("input/read_ms" in r for r in trains)


def test_rules_on_figures():
    """The rules alone, on figures as the trainer adds them (the runs above measure them)."""
    cfg = LoaderConfig(num_workers=2)

    def times(wait: float, **stages: float) -> PipelineTimes:
        t = PipelineTimes()
        worker = [stages.get(name, 0.0) for name in STAGE_FIELDS]
        for _ in range(10):
            t.add(worker, wait=wait, seconds=0.1, to_device=0.0)
        return t

    assert diagnose(times(0.005, decode=0.2), cfg, slow_storage=False, audio_fields=["audio.npy"], cores=2).bottleneck \
        == "model"
    assert diagnose(times(0.05, read=0.3, decode=0.1), cfg, slow_storage=True, audio_fields=["audio.npy"],
                    cores=16).bottleneck == "link"
    d = diagnose(times(0.05, decode=0.3), cfg, slow_storage=False, audio_fields=["audio.npy"], cores=16)
    assert d.bottleneck == "workers" and "raise loader.num_workers from 2 to" in d.fix
    assert diagnose(times(0.05, decode=0.3, transform=0.25), cfg, slow_storage=False, audio_fields=["audio.npy"],
                    cores=2).bottleneck == "transforms"
    assert diagnose(times(0.05, decode=0.01, collate=0.3), cfg, slow_storage=False, audio_fields=["audio.npy"],
                    cores=2).bottleneck == "collating"


@pytest.mark.parametrize("workers", [0, 2])
def test_every_batch_carries_its_workers_stage_times(corpora, workers):
    """Batch.stage_seconds: the seconds since the worker's previous batch per stage; the sample
    transforms' only when there are any; the link's bytes only off local disk."""
    from wds_pipeline import StreamingLoader
    from wds_pipeline.loader.stages import COLLATE, DECODE, LINK_BYTES, TRANSFORM

    index = train_index(corpora["flac"])[0]
    for transforms in ((), [{"name": "gain", "params": {"min_db": -3.0, "max_db": 3.0}}]):
        loader = StreamingLoader(index, batch_size=4, num_workers=workers, crop_seconds=1.0,
                                 sample_transforms=transforms, persistent_workers=False)
        stages = [b.stage_seconds for b in loader]
        assert len(stages) == len(loader) >= 6 and all(s is not None and len(s) == len(STAGE_FIELDS) for s in stages)
        assert all(s[DECODE] > 0 and s[COLLATE] > 0 and s[LINK_BYTES] == 0 for s in stages)
        assert all((s[TRANSFORM] > 0) == bool(transforms) for s in stages)
