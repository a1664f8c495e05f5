"""The augment block's noise and RIR banks in bounded memory: a corpus over
``augment.bank_bytes`` gives a new subset per (epoch, segment), planned from its index,
every category in each, the same subset when rebuilt from scratch (a resume); a corpus that
fits is read once. On the synthetic MUSAN and RIRS_NOISES shards of ``augment_corpora``."""

from __future__ import annotations

import weakref
from collections import Counter

import numpy as np
import pytest
import torch
from augment_corpora import RIRS_PER_ROOM, build_noise_corpora
from shardgen import make_dataset
from trainer_helpers import small_config

from wds_pipeline.errors import ConfigError
from wds_pipeline.loader import LoaderConfig
from wds_pipeline.sources.musan import SUBSETS
from wds_pipeline.train.augment import AugmentConfig
from wds_pipeline.train.bank_plan import FLOAT32_BYTES, Catalog, plan_subset
from wds_pipeline.train.banks import BankSet
from wds_pipeline.train.config import parse_config
from wds_pipeline.train.stage import DeviceStage
from wds_pipeline.train.trainer import Trainer
from wds_pipeline.transforms.noise import AddNoise
from wds_pipeline.transforms.reverb import Reverb

FRAMES = 8000  # each synthetic MUSAN clip: 0.5 s at 16 kHz
RIR_FRAMES = 4000  # each synthetic RIR: 0.25 s
CLIPS = {c: len(s) for c, s in SUBSETS.items()}  # one clip per MUSAN subset: music 5, noise 2, speech 2


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    return build_noise_corpora(tmp_path_factory.mktemp("bank-corpora"))


def noise_set(corpora, clips: int | None, *, every: int | None = None, seed: int = 3) -> BankSet:
    """The noise banks of a block whose budget holds ``clips`` clips (None: the default)."""
    budget = {} if clips is None else {"bank_bytes": clips * FRAMES * FLOAT32_BYTES}
    a = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(), bank_refresh_batches=every, **budget)
    return BankSet(a, LoaderConfig(), sample_rate=16000, seed=seed, device="cpu")


class Chain:
    """What BankSet binds: a batch chain's ``transforms``."""

    def __init__(self, *transforms) -> None:
        self.transforms = tuple(transforms)


def at(banks: BankSet, chain: Chain, epoch: int, index: int):
    banks.refresh(chain, epoch, index)
    return chain.transforms[0].bank


def same_bank(a, b) -> bool:
    return (a.categories == b.categories and torch.equal(a.clips, b.clips) and torch.equal(a.lengths, b.lengths)
            and torch.equal(a.category, b.category) and torch.equal(a.start, b.start)
            and torch.equal(a.count, b.count))


def rows_in(bank, whole) -> list[int]:
    """Which row of ``whole`` (the bank of every clip) each row of ``bank`` is."""
    return [next(j for j in range(len(whole.lengths)) if torch.equal(whole.clips[j], bank.clips[i]))
            for i in range(len(bank.lengths))]


def test_a_corpus_over_the_budget_gets_a_new_subset_per_segment_with_every_category(corpora):
    whole = noise_set(corpora, None).banks.noise
    banks = noise_set(corpora, 5, every=4)
    chain = Chain(AddNoise())
    banks.bind(chain)
    got = {key: at(banks, chain, *key) for key in [(0, 0), (0, 4), (0, 9), (1, 0), (1, 5), (2, 11)]}
    assert banks.noise is not None and not banks.noise.whole
    for key, bank in got.items():
        assert bank.clips.untyped_storage().nbytes() <= 5 * FRAMES * FLOAT32_BYTES, key  # the device's memory
        # Every category, each in proportion to its clips (5:2:2 of 5 clips), grouped by category
        # in corpus order, each row a whole clip of the corpus.
        assert dict(zip(bank.categories, bank.count.tolist())) == {"music": 3, "noise": 1, "speech": 1}, key
        rows = rows_in(bank, whole)
        assert [whole.category[j].item() for j in rows] == bank.category.tolist() and rows == sorted(rows), key
        assert bank.lengths.tolist() == [FRAMES] * 5
    subsets = {key: tuple(rows_in(bank, whole)) for key, bank in got.items()}
    assert len(set(subsets.values())) >= 4, subsets  # the subset changes with the segment and the epoch
    assert subsets[(0, 4)] != subsets[(0, 0)] and subsets[(1, 0)] != subsets[(0, 0)]
    passes = banks.noise.passes
    for index in (1, 2, 3):  # the same segment: nothing read
        assert at(banks, chain, 2, 8 + index) is got[(2, 11)]
    assert banks.noise.passes == passes


def test_the_bank_of_a_segment_is_the_same_when_rebuilt_from_scratch(corpora):
    run = noise_set(corpora, 5, every=3)
    chain = Chain(AddNoise())
    run.bind(chain)
    for epoch, index in [(0, 1), (0, 4), (1, 2), (1, 7)]:
        uninterrupted = at(run, chain, epoch, index)
        resumed = noise_set(corpora, 5, every=3)  # a fresh process resuming at this batch
        fresh = Chain(AddNoise())
        resumed.bind(fresh)
        assert same_bank(at(resumed, fresh, epoch, index), uninterrupted)
    other_seed = noise_set(corpora, 5, every=3, seed=4)
    other = Chain(AddNoise())
    other_seed.bind(other)
    assert any(not same_bank(at(other_seed, other, 0, i), at(run, chain, 0, i)) for i in (0, 3, 6, 9))


def test_per_epoch_refresh_and_a_corpus_that_fits_is_read_once(corpora):
    per_epoch = noise_set(corpora, 5)  # bank_refresh_batches None: a new subset at each epoch start
    chain = Chain(AddNoise())
    per_epoch.bind(chain)
    first = at(per_epoch, chain, 0, 0)
    assert at(per_epoch, chain, 0, 1000) is first and at(per_epoch, chain, 1, 0) is not first
    fits = noise_set(corpora, None, every=1)
    chain = Chain(AddNoise())
    fits.bind(chain)
    bank = chain.transforms[0].bank
    assert dict(zip(bank.categories, bank.count.tolist())) == CLIPS
    for epoch in range(3):
        for index in range(4):
            assert at(fits, chain, epoch, index) is bank
    assert fits.noise is not None and fits.noise.whole and fits.noise.passes == 1  # no label pass, no re-read


def test_an_rir_corpus_over_the_budget_keeps_one_rir_of_each_wanted_room_size(corpora):
    a = AugmentConfig(rir_index=corpora["rirs"], reverb=Reverb(), bank_bytes=2 * RIR_FRAMES * FLOAT32_BYTES,
                      bank_refresh_batches=1)
    banks = BankSet(a, LoaderConfig(), sample_rate=16000, seed=0, device="cpu")
    chain = Chain(Reverb())
    banks.bind(chain)
    seen = set()
    for index in range(6):
        bank = at(banks, chain, 0, index)
        assert len(bank.lengths) == 2 and torch.all(bank.rirs[:, 0] == 1.0)  # trimmed, aligned on the direct path
        assert bank.rirs.untyped_storage().nbytes() <= a.bank_bytes
        seen.add(tuple(float(bank.rirs[i, 1]) for i in range(2)))
    assert len(seen) > 1 and banks.rirs is not None and banks.rirs.passes == 1 + 6  # the label pass, then 6 reads
    # 2 RIRs per room, small and medium: one of each in every bank (the order within is random)
    every = BankSet(AugmentConfig(rir_index=corpora["rirs"], reverb=Reverb()), LoaderConfig(), sample_rate=16000,
                    seed=0, device="cpu").banks.rirs
    assert every is not None and len(every.lengths) == 2 * RIRS_PER_ROOM


def test_a_budget_without_room_for_one_clip_of_each_category_names_the_fix(corpora):
    a = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(), bank_bytes=2 * FRAMES * FLOAT32_BYTES)
    with pytest.raises(ConfigError, match=r"augment.noise_index .*index.json: no clip fits augment.bank_bytes=64000 "
                                          r"with one clip of each of its 3 categories \(music, noise, speech\): the "
                                          "shortest music clip has 8000 frames, at most 5333 fit; raise bank_bytes"):
        BankSet(a, LoaderConfig(), sample_rate=16000, seed=0, device="cpu")
    # the same budget holds one clip of each with clips cut to a third of a second
    cut = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(), bank_bytes=2 * FRAMES * FLOAT32_BYTES,
                        max_clip_seconds=1 / 3)
    bank = BankSet(cut, LoaderConfig(), sample_rate=16000, seed=0, device="cpu").banks.noise
    assert bank is not None and bank.lengths.tolist() == [5333] * 3


def test_the_stage_rebinds_its_transforms_to_each_segments_bank(corpora):
    a = AugmentConfig(noise_index=corpora["noise"], noise=AddNoise(probability=1.0),
                      bank_bytes=5 * FRAMES * FLOAT32_BYTES, bank_refresh_batches=2)
    stage = DeviceStage(a, (), loader=LoaderConfig(), sample_rate=16000, seed=0, rank=0, device=torch.device("cpu"))
    assert stage.chain is not None
    first = stage.chain.transforms[0].bank
    stage.refresh(0, 1)
    assert stage.chain.transforms[0].bank is first
    stage.refresh(0, 2)
    assert stage.chain.transforms[0].bank is not first and stage.chain.transforms[0].probability == 1.0


def test_plan_subset_takes_each_category_in_proportion_within_the_budget():
    rng = np.random.default_rng(0)
    sizes = {0: 600, 1: 300, 2: 100}
    category = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    frames = rng.integers(100, 1000, len(category))
    catalog = Catalog(np.arange(len(category)) * 2, frames, category, ("a", "b", "c"))
    budget = 200 * 1000 * FLOAT32_BYTES
    plans = [plan_subset(catalog, budget, np.random.default_rng(s), where="w") for s in range(3)]
    for plan in plans:
        assert len(plan) * int(frames[plan].max()) * FLOAT32_BYTES <= budget
        counts = Counter(category[plan].tolist())
        assert set(counts) == {0, 1, 2}
        for c, n in sizes.items():  # each category's share of the bank is its share of the corpus
            assert abs(counts[c] / len(plan) - n / len(category)) < 0.02, (counts, len(plan))
        assert plan.tolist() == sorted(set(plan.tolist()))
    assert not np.array_equal(plans[0], plans[1])
    assert np.array_equal(plan_subset(catalog, budget, np.random.default_rng(1), where="w"), plans[1])
    assert np.array_equal(plan_subset(catalog, 10**9, np.random.default_rng(1), where="w"), np.arange(1000))


def test_a_refresh_drops_the_old_bank_before_reading_the_next(corpora):
    banks = noise_set(corpora, 5, every=1)
    chain = Chain(AddNoise())
    banks.bind(chain)
    assert banks.noise is not None
    old = weakref.ref(chain.transforms[0].bank)
    read = banks.noise.read
    dropped = []

    def checked(epoch: int, index: int):
        dropped.append(old() is None)  # the device never holds two banks of this corpus
        return read(epoch, index)

    banks.noise.read = checked  # type: ignore[method-assign]
    assert at(banks, chain, 0, 1) is not None and dropped == [True]


def test_the_trainer_refreshes_the_banks_before_each_segment(corpora, tmp_path):
    data = make_dataset(str(tmp_path / "speech"), [8, 8], speakers=2)  # 4 batches an epoch
    doc = small_config(data, str(tmp_path / "run"))
    doc["augment"] = {"noise_index": corpora["noise"], "noise": {}, "bank_bytes": 5 * FRAMES * FLOAT32_BYTES,
                      "bank_refresh_batches": 3}
    trainer = Trainer(parse_config(doc, "t.yaml"))
    trainer.fit()
    feed = trainer.batch_stage.banks.noise
    # the label pass, (0, 0) at start-up, then (0, 1), (1, 0), (1, 1): batches 3 and 0 of each epoch
    assert (feed.held, feed.passes) == ((1, 1), 5)
