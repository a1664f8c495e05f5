"""The transform seam (wds_pipeline/transforms, loader/finish.py): transforms registered by
name, configured as {name, params}, each sample's random numbers a pure function of (seed,
epoch, sample id) whatever the worker count, the same samples whether a shard is memory-mapped
or streamed, and a batch stage in the trainer seeded per (seed, epoch, batch)."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
import torch
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline import format as fmt
from wds_pipeline.errors import ConfigError, ResumeMismatch
from wds_pipeline.index import load_index
from wds_pipeline.transforms import TransformSpec
from wds_pipeline.transforms.batch import BATCH_TRANSFORMS, BatchChain, DeviceBatch
from wds_pipeline.transforms.gain import Gain
from wds_pipeline.transforms.sample import SAMPLE_TRANSFORMS, SampleChain, SampleRngs, sample_rng

GAIN = [{"name": "gain", "params": {"min_db": -9.0, "max_db": 3.0}}]
SEED = 7


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("transforms-data")), [9, 7, 8], speakers=3)


def gids(index_path: str) -> dict[str, int]:
    """Every key's global sample id: its position over the index's shards, in order."""
    idx, out = load_index(index_path), {}
    for i in range(len(idx.shards)):
        with fsspec.open(idx.shard_url(i), "rb") as f:
            for key, _ in fmt.iter_samples(f, source=idx.shard_url(i)):
                out[key] = len(out)
    return out


def epoch_waves(index_path: str, epoch: int = 0, **opts) -> dict[str, np.ndarray]:
    """Each key's int16 waveform (its valid frames) in ``epoch``."""
    return read_epoch(index_path, epoch, **opts)[0]


def read_epoch(index_path: str, epoch: int = 0, **opts) -> tuple[dict[str, np.ndarray], StreamingLoader]:
    loader = StreamingLoader(index_path, batch_size=4, last_batch="pad", seed=SEED, waveform_dtype="int16",
                             shuffle_buffer=8, **opts)
    loader.set_epoch(epoch)
    out = {}
    for b in loader:
        for r, (key, pad) in enumerate(zip(b.keys, b.is_padding.tolist())):
            if not pad:
                out[key] = b.waveform[r, : int(b.lengths[r])].numpy().copy()
    return out, loader


def test_registries_name_each_transform_and_refuse_unknown_ones(data):
    assert SAMPLE_TRANSFORMS.names == ["gain", "speed"] and BATCH_TRANSFORMS.names == ["noise", "reverb", "row_gain"]
    assert SAMPLE_TRANSFORMS.build(TransformSpec("gain", {"max_db": 1.0}), "x") == Gain(max_db=1.0)
    with pytest.raises(ConfigError, match=r"loader.sample_transforms\[0\]: unknown sample transform "
                                          r"'gian'; valid names: gain"):
        StreamingLoader(data, num_workers=0, sample_transforms=[{"name": "gian"}])
    with pytest.raises(ConfigError, match=r"\(gain\) params: unknown key 'db'; valid keys: min_db, max_db"):
        StreamingLoader(data, num_workers=0, sample_transforms=[{"name": "gain", "params": {"db": 3}}])
    with pytest.raises(ConfigError, match=r"min_db \(2.0\) must be <= max_db \(1.0\)"):
        SampleChain([{"name": "gain", "params": {"min_db": 2.0, "max_db": 1.0}}], seed=0, sample_rate=16000)
    with pytest.raises(ConfigError, match=r"batch_transforms\[1\]: unknown batch transform 'gain'; "
                                          r"valid names: noise, reverb, row_gain"):
        BatchChain([{"name": "row_gain"}, {"name": "gain"}], seed=0, rank=0, device=torch.device("cpu"))


def test_sample_generators_are_pure_functions_of_seed_epoch_sample_and_position():
    rngs = SampleRngs(SEED)
    draws = {(e, g, p): rngs(e, g, p).random(3) for e in (0, 1) for g in (0, 5, 2**40) for p in (0, 1)}
    assert len({d.tobytes() for d in draws.values()}) == len(draws)  # every stream its own
    for (e, g, p), d in reversed(list(draws.items())):  # any order, a fresh generator: the same
        assert np.array_equal(sample_rng(SEED, e, g, p).random(3), d)


@pytest.mark.parametrize("crop", [None, 0.05])
def test_a_sample_transform_is_the_same_per_sample_whatever_the_worker_count(data, crop):
    plain = epoch_waves(data, epoch=1, num_workers=0, crop_seconds=crop)
    one = epoch_waves(data, epoch=1, num_workers=0, crop_seconds=crop, sample_transforms=GAIN)
    two = epoch_waves(data, epoch=1, num_workers=2, crop_seconds=crop, sample_transforms=GAIN)
    assert plain.keys() == one.keys() == two.keys() and len(plain) == 24
    ids = gids(data)
    for key, wave in plain.items():
        expected = Gain(-9.0, 3.0)(wave, sample_rng(SEED, 1, ids[key], 0), 16000)
        assert np.array_equal(one[key], expected) and np.array_equal(two[key], expected)
    assert sum(not np.array_equal(plain[k], one[k]) for k in plain) > 20  # it did change them
    other_epoch = epoch_waves(data, epoch=2, num_workers=0, crop_seconds=crop, sample_transforms=GAIN)
    assert sum(np.array_equal(other_epoch[k], one[k]) for k in one) < 3  # new numbers each epoch


def test_mapped_and_streamed_shards_give_identical_transformed_samples(data, tmp_path):
    # The same shards served from memory:// are streamed (no file to map): both paths must
    # finish every sample alike, crop and transform included.
    fs = fsspec.filesystem("memory")
    remote = f"memory://transforms-{os.getpid()}"
    fs.put(os.path.dirname(data) + "/", remote + "/", recursive=True)
    opts = dict(num_workers=0, crop_seconds=0.05, sample_transforms=GAIN)
    mapped, via_map = read_epoch(data, **opts)
    streamed, via_stream = read_epoch(remote + "/" + os.path.basename(data), cache_dir=False, **opts)
    assert len(via_map.dataset._tables._tables) == 3 and not via_stream.dataset._tables._tables
    assert mapped.keys() == streamed.keys() and len(mapped) == 24
    assert all(np.array_equal(mapped[k], streamed[k]) for k in mapped)


def test_resuming_with_other_sample_transforms_is_refused(data):
    first = StreamingLoader(data, num_workers=0, batch_size=4, sample_transforms=GAIN)
    next(iter(first))
    state = first.state_dict()
    for other in ([], [{"name": "gain", "params": {"min_db": -9.0, "max_db": 4.0}}]):
        with pytest.raises(ResumeMismatch):
            StreamingLoader(data, num_workers=0, batch_size=4, sample_transforms=other).load_state_dict(state)
    StreamingLoader(data, num_workers=0, batch_size=4, sample_transforms=GAIN).load_state_dict(state)


def test_batch_transforms_are_seeded_per_epoch_and_batch_and_keep_padding_silent():
    wave = torch.zeros(3, 10, dtype=torch.int16)
    wave[:, :6] = 1000
    batch = DeviceBatch(wave, torch.tensor([6, 6, 6]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.bool))
    chain = BatchChain([{"name": "row_gain", "params": {"min_db": -12.0, "max_db": 12.0}}], seed=1, rank=0,
                       device=torch.device("cpu"))
    a = chain(batch, epoch=0, index=3).wave
    assert a.dtype == torch.float32 and torch.equal(a, chain(batch, epoch=0, index=3).wave)
    gains = a[:, 0] / (1000 / 32768)
    assert len(set(gains.tolist())) == 3 and all(10 ** (-12 / 20) - 1e-6 <= g <= 10 ** (12 / 20) + 1e-6
                                                   for g in gains.tolist())
    assert (a[:, 6:] == 0).all() and torch.equal(a[:, :6], a[:, :1].expand(3, 6))
    assert not torch.equal(a, chain(batch, epoch=0, index=4).wave)
    assert not torch.equal(a, chain(batch, epoch=1, index=3).wave)
    other_rank = BatchChain(chain.specs, seed=1, rank=1, device=torch.device("cpu"))
    assert not torch.equal(a, other_rank(batch, epoch=0, index=3).wave)


def test_sample_transforms_with_the_stored_fbank_are_refused(data):
    with pytest.raises(ConfigError, match="drop 'fbank' from fields"):
        StreamingLoader(data, num_workers=0, fields=("waveform", "fbank"), sample_transforms=GAIN)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_sample_ids_are_each_rows_global_id(data, workers, tmp_path):
    """Batch.sample_ids (what per-sample randomness on the device is keyed by): each row's
    global id, padding rows repeating their sample's, the same with 0 and 2 workers, whether
    the shard is memory-mapped or streamed (served from memory://: no file to map)."""
    expected = gids(data)
    remote = f"memory://ids-{workers}"
    fsspec.filesystem("memory").put(os.path.dirname(data), remote, recursive=True)
    for url, opts in ((data, {}), (remote + "/" + os.path.basename(data), {"cache_dir": False})):
        loader = StreamingLoader(url, batch_size=4, last_batch="pad", seed=SEED, shuffle_buffer=8,
                                 num_workers=workers, **opts)
        seen = 0
        for b in loader:
            assert b.sample_ids is not None and b.sample_ids.dtype == torch.int64
            assert b.sample_ids.tolist() == [expected[k] for k in b.keys]
            seen += int((~b.is_padding).sum())
        assert seen == len(expected) == 24
