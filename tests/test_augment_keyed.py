"""Per-sample keyed randomness of the device augmentation (issue 24, build item 4): every
draw of the batch and feature transforms is keyed by (seed, epoch, position, sample id), so a
sample's augmentation does not depend on the batch it lands in, its row, or the number of
loader workers; the counter-based hash behind it is exact integer arithmetic with uniform
output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from augment_corpora import build_noise_corpora
from shardgen import make_dataset
from test_augment_ops import noise_bank, speech_batch, synthetic_rir

from wds_pipeline import StreamingLoader
from wds_pipeline.loader import LoaderConfig
from wds_pipeline.train.augment import AugmentConfig
from wds_pipeline.train.stage import DeviceStage
from wds_pipeline.transforms import keyed
from wds_pipeline.transforms.bank import Banks, RirBank, bind_banks
from wds_pipeline.transforms.batch import BatchChain, DeviceBatch
from wds_pipeline.transforms.keyed import RowRandom, row_random
from wds_pipeline.transforms.noise import AddNoise
from wds_pipeline.transforms.reverb import Reverb
from wds_pipeline.transforms.row_gain import RowGain
from wds_pipeline.transforms.specaugment import SpecAugment

SR = 16000
CPU = torch.device("cpu")
SPECS = [{"name": "reverb", "params": {"probability": 0.5}}, {"name": "noise", "params": {"probability": 0.6}},
         {"name": "row_gain"}]


def stand_in_fbank(wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, frames, 40) features and their valid frame counts, a function of each row alone."""
    feats = wave.unfold(1, 400, 160).abs().mean(2, keepdim=True).expand(-1, -1, 40) + 1.0
    return feats, ((lengths - 400) // 160 + 1).clamp(min=0)


def chain_of(seed: int) -> BatchChain:
    chain = BatchChain(SPECS, seed=seed, rank=0, device=CPU)
    rirs = RirBank.from_arrays([synthetic_rir(s, 3 * s, 1500 + 500 * s, 0.25) for s in range(4)], sample_rate=SR)
    chain.transforms = bind_banks(chain.transforms, Banks(noise=noise_bank(), rirs=rirs))
    return chain


def augmented_rows(chain: BatchChain, batch: DeviceBatch, epoch: int, index: int) -> dict[int, torch.Tensor]:
    """Each row's augmented wave and SpecAugment'ed features, flattened, by sample id."""
    out = chain(batch, epoch=epoch, index=index)
    feats, frames = stand_in_fbank(out.wave, out.lengths)
    rng = chain.random(out, epoch=epoch, index=index, position=len(chain.transforms))
    feats = SpecAugment(probability=0.8, time_masks=2, freq_masks=2)(feats, frames, rng)
    assert batch.ids is not None
    return {int(i): torch.cat([out.wave[r], feats[r].flatten()]) for r, i in enumerate(batch.ids.tolist())}


def test_a_rows_augmentation_is_the_same_whatever_batch_and_row_it_is_in():
    base = speech_batch(rows=24, frames=6000)
    batch = DeviceBatch(base.wave, base.lengths, base.labels, base.keep, torch.arange(100, 124))
    chain = chain_of(seed=7)
    whole = augmented_rows(chain, batch, epoch=1, index=0)
    assert sum(not torch.equal(whole[100 + r][:6000], base.wave[r]) for r in range(24)) == 24  # gain on all
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    parts = {}
    for part, index in ((perm[:9], 5), (perm[9:], 17)):  # other batches, other rows, other batch indexes
        sub = DeviceBatch(batch.wave[part], batch.lengths[part], batch.labels[part], batch.keep[part], batch.ids[part])
        parts.update(augmented_rows(chain, sub, epoch=1, index=index))
    assert parts.keys() == whole.keys()
    assert all(torch.equal(parts[i], whole[i]) for i in whole)  # bitwise
    assert not any(torch.equal(augmented_rows(chain, batch, epoch=2, index=0)[i], whole[i]) for i in whole)
    other_seed = augmented_rows(chain_of(seed=8), batch, epoch=1, index=0)
    assert not any(torch.equal(other_seed[i], whole[i]) for i in whole)


def test_the_draws_are_keyed_by_sample_id_not_by_row_or_rank():
    ids = torch.tensor([5, 3, 2**40 + 3, -1])
    a = row_random(1, 2, 3, ids, index=0, rank=0, rows=4, device=CPU).uniform(6)
    b = row_random(1, 2, 3, ids.flip(0), index=9, rank=1, rows=4, device=CPU).uniform(6)
    assert torch.equal(a, b.flip(0))
    assert not torch.equal(a[1], a[2])  # ids that share their low 32 bits differ
    for changed in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):  # seed, epoch, position
        assert not torch.equal(a, row_random(*changed, ids, index=0, rank=0, rows=4, device=CPU).uniform(6))
    # Without ids, rows are keyed by where they sit: batch index, rank, row.
    c = row_random(1, 2, 3, None, index=0, rank=0, rows=4, device=CPU).uniform(6)
    assert not torch.equal(c, row_random(1, 2, 3, None, index=1, rank=0, rows=4, device=CPU).uniform(6))
    assert not torch.equal(c, row_random(1, 2, 3, None, index=0, rank=1, rows=4, device=CPU).uniform(6))
    # The picked rows' draws are those rows' draws; later draws continue the same sequence.
    rng = RowRandom.keyed((4,), torch.arange(10))
    rows = torch.tensor([7, 2])
    assert torch.equal(rng[rows].uniform(3, first=2), rng.uniform(5)[rows][:, 2:])


def test_the_hash_is_exact_32_bit_arithmetic():
    """The int64 tensor path equals the same functions on Python integers (unbounded, so no
    product can wrap): the words are exact, hence equal on every device."""
    words = (2**63 - 1, 7, 11)
    ids = torch.tensor([0, 1, 2**32 - 1, 2**32, 2**62 + 12345, -5])
    got = RowRandom.keyed(words, ids).bits(3, first=4)
    h = 0x5EED0000 + len(words)
    for w in keyed._words(words):
        h = keyed._absorb(h, w)
    for r, i in enumerate(ids.tolist()):
        s = keyed._absorb(keyed._absorb(h, i & keyed.M32), (i >> 32) & keyed.M32)
        assert got[r].tolist() == [keyed._finish(keyed._absorb(s, j)) for j in range(4, 7)]
    assert int(got.min()) >= 0 and int(got.max()) <= keyed.M32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_draws_are_the_same_on_cuda():
    ids = torch.arange(-50, 5000, 7)
    cpu = RowRandom.keyed((3, 1, 2), ids).uniform(9)
    assert torch.equal(RowRandom.keyed((3, 1, 2), ids.cuda()).uniform(9).cpu(), cpu)


def test_the_hash_gives_uniform_values_and_no_two_keys_alike():
    grid = [RowRandom.keyed((seed, epoch, position), torch.arange(1000)).bits(8)
            for seed in (0, 1) for epoch in (0, 1) for position in (0, 1, 2)]
    bits = torch.cat([g.flatten() for g in grid])  # 96,000 keys (seed, epoch, position, id, draw)
    assert len(torch.unique(bits)) >= len(bits) - 2  # 32-bit words: ~1 birthday pair expected
    u = (bits >> 8).double() / 2**24
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    counts = torch.bincount((u * 16).long(), minlength=16).double()
    assert float(((counts - len(u) / 16) ** 2 / (len(u) / 16)).sum()) < 40  # chi-square, 15 dof
    neighbours = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]  # consecutive draws, then ids
    assert abs(float(neighbours)) < 0.02
    uniform = RowRandom.keyed((1,), torch.arange(64)).uniform(100)
    assert uniform.dtype == torch.float32 and float(uniform.min()) >= 0.0 and float(uniform.max()) < 1.0


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    return build_noise_corpora(tmp_path_factory.mktemp("noise"))


def stage_by_sample(index: str, corpora: dict[str, str], workers: int) -> tuple[dict[int, torch.Tensor], set]:
    """Each sample's augmented wave + features through the trainer's device stage (every
    augmentation of the block on the device) over a loader with ``workers`` workers; and where
    each sample sat (batch index, row)."""
    augment = AugmentConfig(noise_index=corpora["noise"], rir_index=corpora["rirs"], reverb=Reverb(0.5),
                            noise=AddNoise(0.5), gain=RowGain(), spec_augment=SpecAugment(0.7))
    stage = DeviceStage(augment, (), loader=LoaderConfig(), sample_rate=SR, seed=5, rank=0, device=CPU)
    loader = StreamingLoader(index, batch_size=5, num_workers=workers, seed=5, crop_seconds=0.1, last_batch="pad")
    out, where = {}, set()
    for epoch in range(2):
        for b in loader:
            assert b.sample_ids is not None and int(b.lengths.min()) == int(b.lengths.max()) == 1600
            d = stage(DeviceBatch(b.waveform, b.lengths, b.labels, ~b.is_padding, b.sample_ids), epoch=b.epoch,
                      index=b.index)
            hook = stage.feature_hook(b.epoch, b.index, d.ids)
            assert hook is not None
            feats = hook(*stand_in_fbank(d.wave, d.lengths))
            for r, i in enumerate(b.sample_ids.tolist()):
                if not b.is_padding[r]:
                    out[(epoch, i)] = torch.cat([d.wave[r], feats[r].flatten()])
                    where.add((epoch, i, b.index, r))
    return out, where


def test_the_same_sample_gets_the_same_augmentation_with_0_and_2_workers(corpora, tmp_path):
    index = make_dataset(str(tmp_path), [7, 6, 8, 5], speakers=3)
    serial, where0 = stage_by_sample(index, corpora, 0)
    parallel, where2 = stage_by_sample(index, corpora, 2)
    assert len(serial) == 2 * 26 and serial.keys() == parallel.keys()
    assert where0 != where2  # the batches differ: workers read other shards in each
    assert all(torch.equal(serial[k], parallel[k]) for k in serial)
    # and the augmentation did something, differently per epoch
    assert sum(not torch.equal(serial[(0, i)], serial[(1, i)]) for i in range(26)) == 26
    waves = np.stack([v[:1600].numpy() for v in serial.values()])
    assert len({w.tobytes() for w in waves}) == len(waves)
