"""Every stateful piece through the one resume harness, at the same stop points."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from resume_harness import ResumeCase, check_elastic, stop_points
from shardgen import make_dataset
from trainer_helpers import small_config

from wds_pipeline import StreamingLoader
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import Trainer

BATCH = 4
SAMPLES = 48  # 12 batches per epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("resume-data")), [20, 12, 16], speakers=4)


def loader_batches(loader: StreamingLoader, n: int) -> list[tuple]:
    """The next ``n`` batches (keys and waveform bytes), across epochs as needed."""
    out: list[tuple] = []
    while len(out) < n:
        for b in loader:
            out.append((tuple(b.keys), b.waveform.numpy().tobytes(), tuple(b.labels.tolist())))
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumes_exactly_at_every_stop_point(data, num_workers):
    def make() -> StreamingLoader:
        return StreamingLoader(data, batch_size=BATCH, crop_seconds=0.1, num_workers=num_workers,
                               shuffle_buffer=8, seed=3)

    per_epoch = SAMPLES // BATCH
    ResumeCase(make, loader_batches, total=2 * per_epoch + 2).check(stop_points(per_epoch))


@pytest.mark.parametrize("old,new", [(2, 0), (0, 3)])
def test_loader_elastic_resume_covers_the_epoch_once(data, old, new):
    def make(workers: int):
        return lambda: StreamingLoader(data, batch_size=BATCH, num_workers=workers, shuffle_buffer=8,
                                       last_batch="pad", seed=3)

    def epoch_keys(loader):
        return [k for b in loader for k, pad in zip(b.keys, b.is_padding.tolist()) if not pad]

    def consume(loader, k):
        return [k_ for b in itertools.islice(loader, k) for k_, pad in zip(b.keys, b.is_padding.tolist())
                if not pad]

    check_elastic(make(old), make(new), epoch_keys, consume, k=5)


def trainer_case(data: str, tmp_path, **extra) -> ResumeCase:
    """Trainers over ``data`` (``extra``: more top-level config entries), compared by the keys
    of every batch and by their final weights."""
    counter = itertools.count()

    def make() -> Trainer:
        run = tmp_path / f"run{next(counter)}"
        doc = small_config(data, str(run), run={"epochs": 3, "resume": False, "keys_log": str(run / "keys")})
        doc.update(extra)
        os.makedirs(run, exist_ok=True)
        return Trainer(parse_config(doc, "test"))

    def steps(trainer: Trainer, n: int) -> list[str]:
        log = trainer.cfg.run.keys_log
        before = open(log).read().splitlines() if os.path.exists(log) else []
        trainer.cfg = trainer.cfg.with_run(max_steps=trainer.step + n)
        trainer.fit()
        lines = open(log).read().splitlines()[len(before):]
        return [line.split("\t", 2)[2] for line in lines]  # the keys of each batch

    def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
        return trainer.model.state_dict()

    per_epoch = SAMPLES // BATCH
    return ResumeCase(make, steps, total=2 * per_epoch + 3, finish=weights, same=same_weights)


def same_weights(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a == b


def test_trainer_resumes_exactly_at_every_stop_point(data, tmp_path):
    per_epoch = SAMPLES // BATCH
    trainer_case(data, tmp_path).check(stop_points(per_epoch))


# A transform with random numbers in every sample: gains of -12..+6 dB.
GAIN = [{"name": "gain", "params": {"min_db": -12.0, "max_db": 6.0}}]


def test_loader_with_a_sample_transform_resumes_exactly_with_workers(data):
    def make(transforms=GAIN) -> StreamingLoader:
        return StreamingLoader(data, batch_size=BATCH, crop_seconds=0.1, num_workers=2, shuffle_buffer=8,
                               seed=3, waveform_dtype="int16", sample_transforms=transforms)

    per_epoch = SAMPLES // BATCH
    case = ResumeCase(make, loader_batches, total=2 * per_epoch + 2)
    case.check(stop_points(per_epoch))
    changed = loader_batches(make(), per_epoch)
    plain = loader_batches(make([]), per_epoch)
    assert [b[0] for b in changed] == [b[0] for b in plain]  # same samples, same order
    assert all(c[1] != p[1] for c, p in zip(changed, plain))  # every batch's audio transformed


def test_trainer_with_a_batch_transform_resumes_exactly(data, tmp_path):
    per_epoch = SAMPLES // BATCH
    transforms = [{"name": "row_gain", "params": {"min_db": -20.0, "max_db": 10.0}}]
    case = trainer_case(data, tmp_path, batch_transforms=transforms)
    case.check(stop_points(per_epoch))
    plain = trainer_case(data, tmp_path / "plain")
    augmented_weights = case.finish(_fitted(case, per_epoch))
    assert not same_weights(augmented_weights, plain.finish(_fitted(plain, per_epoch)))  # it acted


def _fitted(case: ResumeCase, steps: int) -> Trainer:
    trainer = case.make()
    case.run(trainer, steps)
    return trainer


@pytest.fixture(scope="module")
def noise_corpora(tmp_path_factory) -> dict[str, str]:
    """Noise and RIR shards (synthetic MUSAN and RIRS_NOISES, built): their index URLs."""
    from augment_corpora import build_noise_corpora

    return build_noise_corpora(tmp_path_factory.mktemp("noise-corpora"))


def test_trainer_with_every_augmentation_resumes_exactly(data, noise_corpora, tmp_path):
    """Speed, reverb, noise and SpecAugment on, every probability 1 or near it so each batch
    draws: stopping and resuming anywhere ends with the uninterrupted run's weights, bit for
    bit; and the augmentation changes what is learnt."""
    per_epoch = SAMPLES // BATCH
    augment = {"noise_index": noise_corpora["noise"], "rir_index": noise_corpora["rirs"],
               "speed": {}, "reverb": {"probability": 0.7}, "noise": {"probability": 0.7},
               "spec_augment": {"probability": 1.0}}
    case = trainer_case(data, tmp_path, augment=augment)
    case.check(stop_points(per_epoch))
    plain = trainer_case(data, tmp_path / "plain")
    augmented_weights = case.finish(_fitted(case, per_epoch))
    assert not same_weights(augmented_weights, plain.finish(_fitted(plain, per_epoch)))
