"""Speed perturbation before the crop (the loader's finisher resamples only the crop's
window of the original) and speed-perturbed copies as speaker classes (``as_classes``).

The function-level tone check (1 kHz at 1.1 comes out at 1.1 kHz, n / 1.1 frames) is
test_augment_ops.py's; here, the loader's behaviour."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
import torch
from resume_harness import ResumeCase, stop_points
from shardgen import make_dataset
from test_resume import loader_batches, trainer_case
from test_transforms import gids, read_epoch
from trainer_helpers import small_config

from wds_pipeline import StreamingLoader
from wds_pipeline.errors import ConfigError
from wds_pipeline.loader.finish import SampleFinisher
from wds_pipeline.loader.plan import crop_start
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.trainer import Trainer
from wds_pipeline.transforms.speed import Speed, perturbed_length, perturbed_window, speed_perturb

SR = 16000
SEED = 7  # test_transforms.read_epoch's loader seed
CROP = 1600  # 0.1 s
SPEED = [{"name": "speed"}]


def short_and_long(s: int, i: int) -> int:
    """1200-4000 frames: some shorter than the crop even when slowed, some only when sped up."""
    return 1200 + 200 * ((s * 7 + i * 3) % 15)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("speed-data")), [9, 7, 8], speakers=3, frames=short_and_long)


def originals(index_path: str) -> dict[str, np.ndarray]:
    """Each key's stored waveform (whole, untransformed)."""
    return read_epoch(index_path, num_workers=0)[0]


def expected_crop(whole: np.ndarray, factor: float, epoch: int, gid: int) -> np.ndarray:
    """The perturbed utterance cropped as the loader crops: at the seeded offset over its
    perturbed length (rounded down to a multiple of q = 10 frames at 0.9 and 1.1)."""
    out = speed_perturb(whole, factor, SR)
    if len(out) <= CROP:
        return out
    offset = crop_start(SEED, epoch, gid, len(out) - CROP)
    return out[offset - offset % (10 if factor != 1.0 else 1):][:CROP]


def test_a_crops_window_equals_the_perturbed_utterance_cropped():
    """perturbed_window resamples only the crop's frames of the original (plus the filter's
    margin) and returns exactly the crop: the whole utterance's perturbation cropped there,
    within one int16 step. Why one step: both sides resample the same input frames through
    the same filter, but soxr sums them in other float32 blocks, so values within ~1e-2 of a
    half-integer can round apart (0.04% of frames here); the filter's reach is inside the
    window, so no edge effect shows (it would be hundreds of steps)."""
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(3 * SR) * 3000).astype(np.int16)
    crop = SR
    for factor in (0.9, 1.1, 0.5, 2.0, 0.95):
        whole = speed_perturb(wave, factor, SR)
        m = len(whole)
        assert m == perturbed_length(len(wave), factor) and abs(m - len(wave) / factor) <= 0.5
        q = {0.9: 10, 1.1: 10, 0.5: 2, 2.0: 1, 0.95: 20}[factor]
        for offset in (0, q, m // 3, m - crop - q, (m - crop) // q * q):  # both ends included
            out, start = perturbed_window(wave, factor, offset, crop, SR)
            assert len(out) == crop and out.dtype == np.int16
            o = offset // q * q  # the window starts on a frame of the original
            assert start == o // q * round(q * factor)
            diff = np.abs(out.astype(np.int32) - whole[o : o + crop].astype(np.int32))
            assert diff.max() <= 1 and np.count_nonzero(diff) < crop // 100, (factor, offset)


def test_a_tone_through_the_pre_crop_stage_comes_out_at_that_multiple():
    n = 2 * SR
    tone = (10000 * np.sin(2 * np.pi * 1000 * np.arange(n) / SR)).astype(np.int16)
    out, _ = perturbed_window(tone, 1.1, SR // 4, SR, SR)
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64) * np.hanning(len(out))))
    assert len(out) == SR and abs(np.argmax(spectrum) * SR / len(out) - 1100) < 1.0


def test_the_loaders_crop_at_a_speed_is_the_perturbed_utterance_cropped(data):
    whole, ids = originals(data), gids(data)
    speed = Speed()
    for epoch in (0, 1):
        got, loader = read_epoch(data, epoch, num_workers=0, crop_seconds=CROP / SR, sample_transforms=SPEED)
        assert got.keys() == whole.keys() and len(got) == 24
        drawn = set()
        for key, wave in got.items():
            factor = speed.factors[speed.draw(SEED, epoch, ids[key])]
            drawn.add(factor)
            expected = expected_crop(whole[key], factor, epoch, ids[key])
            assert len(wave) == min(CROP, perturbed_length(len(whole[key]), factor))
            assert np.abs(wave.astype(np.int32) - expected.astype(np.int32)).max() <= 1, key
            if factor == 1.0 or len(expected) < CROP:  # the crop alone, or perturbed whole: no window
                assert np.array_equal(wave, expected)
        assert drawn == {0.9, 1.0, 1.1}
    short = [k for k in whole if perturbed_length(len(whole[k]), 1.1) < CROP]
    assert short and any(perturbed_length(len(whole[k]), 0.9) > CROP for k in short)  # both cases ran


def test_without_a_crop_a_perturbed_sample_keeps_its_stored_length(data):
    """Batches are planned from the stored lengths: a whole sample is fitted back to its."""
    whole, ids = originals(data), gids(data)
    got, _ = read_epoch(data, 0, num_workers=0, sample_transforms=SPEED)
    speed = Speed()
    for key, wave in got.items():
        factor = speed.factors[speed.draw(SEED, 0, ids[key])]
        assert np.array_equal(wave, Speed.fit(whole[key], factor, SR))


def test_speed_is_the_same_with_0_and_2_workers_and_mapped_or_streamed(data):
    opts = {"crop_seconds": CROP / SR, "sample_transforms": SPEED + [{"name": "gain"}]}
    mapped, via_map = read_epoch(data, 1, num_workers=0, **opts)
    two, _ = read_epoch(data, 1, num_workers=2, **opts)
    remote = f"memory://speed-{os.getpid()}"
    fsspec.filesystem("memory").put(os.path.dirname(data) + "/", remote + "/", recursive=True)
    streamed, via_stream = read_epoch(remote + "/" + os.path.basename(data), 1, num_workers=2, cache_dir=False,
                                      **opts)
    assert via_map.dataset._tables._tables and not via_stream.dataset._tables._tables
    assert mapped.keys() == two.keys() == streamed.keys() and len(mapped) == 24
    assert all(np.array_equal(mapped[k], two[k]) and np.array_equal(mapped[k], streamed[k]) for k in mapped)


def test_speed_resumes_exactly_with_workers(data):
    def make() -> StreamingLoader:
        return StreamingLoader(data, batch_size=4, crop_seconds=CROP / SR, num_workers=2, shuffle_buffer=8,
                               seed=3, waveform_dtype="int16",
                               sample_transforms=[{"name": "speed", "params": {"as_classes": True}}])

    ResumeCase(make, loader_batches, total=2 * 6 + 2).check(stop_points(6))


def test_the_default_path_is_the_crop_alone_and_speed_is_given_once():
    plain = SampleFinisher(seed=1, crop_frames=CROP, sample_rate=SR)
    assert plain.finish == plain._crop and plain.speed is None and plain.chain is None
    speed = SampleFinisher(seed=1, crop_frames=CROP, sample_rate=SR, transforms=SPEED)
    # Timed for the input doctor (the transforms' seconds), around the perturbation and crop.
    assert speed.finish == speed._timed and speed._finish == speed._perturb_and_crop and speed.chain is None
    with pytest.raises(ConfigError, match=r"loader.sample_transforms: speed is given 2 times \(at \[0, 2\]\)"):
        SampleFinisher(seed=1, crop_frames=CROP, sample_rate=SR, transforms=SPEED + [{"name": "gain"}] + SPEED)
    with pytest.raises(ConfigError, match=r"ratios p/q with q <= 100 .* got \[0.9123\]"):
        SampleFinisher(seed=1, crop_frames=CROP, sample_rate=SR,
                       transforms=[{"name": "speed", "params": {"factors": [0.9, 2.0 / 3, 0.9123]}}])


def test_a_transform_after_speed_keeps_its_own_stream(data):
    """Speed leaves the list for the pre-crop stage: the gain after it still draws from its
    position's stream, so adding speed does not change which gain a sample gets."""
    gain = [{"name": "gain", "params": {"min_db": -9.0, "max_db": 3.0}}]
    chain = SampleFinisher(seed=1, crop_frames=None, sample_rate=SR, transforms=SPEED + gain).chain
    assert chain is not None and chain.positions == (1,)


def test_speed_copies_as_classes(tmp_path):
    """Two datasets (their label maps differ: the union is remapped first), speed copies as
    classes: every name once per factor, each sample's label in the block of the factor its
    waveform shows, in range."""
    a = make_dataset(str(tmp_path / "a"), [6, 6], speakers=3, name="a")
    b = make_dataset(str(tmp_path / "b"), [6], speakers=5, name="b")
    crop = {"batch_size": 4, "crop_seconds": CROP / SR, "num_workers": 2, "waveform_dtype": "int16", "seed": 5}
    plain = StreamingLoader([a, b], **crop)
    loader = StreamingLoader([a, b], sample_transforms=[{"name": "speed", "params": {"as_classes": True}}], **crop)
    base = [f"spk{j:04d}" for j in range(5)]
    assert plain.label_names == base
    assert loader.label_names == base + [f"{n}@sp0.9" for n in base] + [f"{n}@sp1.1" for n in base]
    assert loader.num_classes == 3 * plain.num_classes == 15
    plain_rows = {k: (int(label), w) for batch in plain for k, label, w in zip(batch.keys, batch.labels, batch.waveform)}
    blocks = set()
    for batch in loader:
        assert batch.labels.dtype == torch.int64 and ((batch.labels >= 0) & (batch.labels < 15)).all()
        for key, label, wave in zip(batch.keys, batch.labels.tolist(), batch.waveform):
            original, plain_wave = plain_rows[key]
            name = loader.label_names[label]
            assert label % 5 == original and name.split("@")[0] == plain.label_names[original]
            blocks.add(label // 5)
            assert (label // 5 == 0) == torch.equal(wave, plain_wave)  # unperturbed iff the identity block
    assert blocks == {0, 1, 2}
    # Without as_classes the labels stay the speakers'.
    same = StreamingLoader([a, b], sample_transforms=SPEED, **crop)
    assert same.label_names == base and all(((b.labels >= 0) & (b.labels < 5)).all() for b in same)


def test_a_trainer_with_speed_classes_sizes_its_model_trains_and_resumes(tmp_path):
    """augment.speed: {as_classes: true}: the model's classifier has num_classes * 3 outputs
    (4 speakers), training runs, and stopping and resuming gives the uninterrupted weights."""
    data = make_dataset(str(tmp_path / "data"), [20, 12, 16], speakers=4)  # test_resume's shape
    augment = {"speed": {"as_classes": True}}
    case = trainer_case(data, tmp_path / "runs", augment=augment)
    trainer = case.make()
    assert trainer.model.classifier.out_features == 12 and len(trainer.loader.label_names) == 12
    assert "spk0003@sp1.1" in trainer.loader.label_names
    case.check({"mid-epoch": 6})
    # Validation reads its own loader (no sample transforms), each clip under its speaker's
    # unperturbed class.
    doc = {**small_config(data, str(tmp_path / "valid"), data={"valid": [data]}), "augment": augment}
    assert 0.0 <= Trainer(parse_config(doc, "test")).validate()["valid_accuracy"] <= 1.0
