"""StreamingLoader with real DataLoader worker processes on real shards."""

from collections import Counter

import numpy as np
import pytest
import torch
from shardgen import all_keys, clip, make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.format import ShardFormatError


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    # Unequal shards on purpose: 5 shards of 37, 12, 50, 3, 28 samples.
    return make_dataset(str(tmp_path_factory.mktemp("ds")), [37, 12, 50, 3, 28])


def keys_of(batches, padding=False):
    out = []
    for b in batches:
        for k, p in zip(b.keys, b.is_padding.tolist()):
            if p == padding:
                out.append(k)
    return out


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_pad_policy_reads_every_sample_exactly_once(ds, workers):
    loader = StreamingLoader(ds, batch_size=8, num_workers=workers, last_batch="pad", shuffle_buffer=40)
    batches = list(loader)
    assert len(batches) == len(loader.plan(0).ranks[0].order)
    real = keys_of(batches)
    assert Counter(real) == Counter(all_keys(ds))
    assert all(b.waveform.shape[0] == 8 for b in batches)


def test_drop_policy_accounts_for_every_sample(ds):
    loader = StreamingLoader(ds, batch_size=8, num_workers=2, last_batch="drop")
    expected_batches = len(loader)
    dropped = loader.dropped_samples(0)
    batches = list(loader)
    assert len(batches) == expected_batches
    real = keys_of(batches)
    assert len(real) == len(set(real)) == 130 - dropped
    assert set(real) <= all_keys(ds)
    assert not keys_of(batches, padding=True)


def test_fewer_shards_than_workers_does_not_hang_or_raise(tmp_path):
    idx = make_dataset(str(tmp_path), [10])
    loader = StreamingLoader(idx, batch_size=2, num_workers=3, last_batch="pad")
    batches = list(loader)
    assert Counter(keys_of(batches)) == Counter(all_keys(idx))


def test_arrays_labels_and_texts_match_the_source(ds):
    loader = StreamingLoader(ds, batch_size=5, num_workers=2, shuffle=False, last_batch="pad",
                             fields=("waveform", "label", "text"), waveform_dtype="int16")
    for b in loader:
        for row, key in enumerate(b.keys):
            s, u = key.split("-")[1:]
            s, u = int(s[1:]), int(u[1:])
            n = int(b.lengths[row])
            assert np.array_equal(b.waveform[row, :n].numpy(), clip(s, u, n))
            assert (b.waveform[row, n:] == 0).all()
            assert int(b.labels[row]) == (s + u) % 5
            assert b.texts[row] == f"text {s} {u}"


def test_orders_differ_per_epoch_and_reproduce_with_the_seed(ds):
    def epoch_keys(seed, epochs):
        loader = StreamingLoader(ds, batch_size=4, num_workers=2, seed=seed, last_batch="pad")
        return [keys_of(list(loader)) for _ in range(epochs)]

    a0, a1 = epoch_keys(1, 2)
    b0, b1 = epoch_keys(1, 2)
    assert a0 == b0 and a1 == b1
    assert a0 != a1 and Counter(a0) == Counter(a1)
    assert epoch_keys(2, 1)[0] != a0


def test_persistent_workers_follow_epochs(ds):
    loader = StreamingLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, last_batch="pad")
    e0, e1 = keys_of(list(loader)), keys_of(list(loader))
    fresh = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad")
    assert e0 == keys_of(list(fresh)) and e1 == keys_of(list(fresh))


def test_close_stops_persistent_workers_and_the_next_pass_starts_new_ones(ds):
    # Regression: workers ended only when the garbage collector found the loader, and
    # torch's shutdown from there waited its 5 s join per idle worker.
    with StreamingLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, last_batch="pad") as loader:
        e0 = keys_of(list(loader))
        workers = loader.dataloader._iterator._workers
        assert len(workers) == 2 and all(w.is_alive() for w in workers)
        loader.close()
        assert not any(w.is_alive() for w in workers)  # joined by close(), not later
        e1 = keys_of(list(loader))
        again = loader.dataloader._iterator._workers
        assert all(w.is_alive() for w in again) and not set(again) & set(workers)
    assert not any(w.is_alive() for w in again)  # the with block closed it
    fresh = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad")
    assert (e0, e1) == (keys_of(list(fresh)), keys_of(list(fresh)))


@pytest.mark.parametrize("workers,stop", [(2, 7), (3, 1), (0, 5), (2, 15)])
def test_exact_resume_mid_epoch(ds, workers, stop):
    opts = dict(batch_size=4, num_workers=workers, shuffle_buffer=30, seed=5, crop_seconds=0.1)
    full = StreamingLoader(ds, **opts)
    list(full)  # epoch 0
    reference = [(b.keys, b.waveform.clone()) for b in full]  # epoch 1

    first = StreamingLoader(ds, **opts)
    list(first)
    before = []
    for b in first:
        before.append((b.keys, b.waveform.clone()))
        if len(before) == stop:
            state = first.state_dict()
            break
    del first  # the "crash"

    resumed = StreamingLoader(ds, **opts)
    resumed.load_state_dict(state)
    assert len(resumed) == len(reference) - stop
    after = [(b.keys, b.waveform.clone()) for b in resumed]
    got = before + after
    assert [k for k, _ in got] == [k for k, _ in reference]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(got, reference))
    # and the loader then continues with epoch 2 as the uninterrupted one would
    assert resumed.epoch == 2


def test_state_from_other_settings_is_refused(ds):
    a = StreamingLoader(ds, batch_size=4, num_workers=0)
    b = StreamingLoader(ds, batch_size=8, num_workers=0)
    with pytest.raises(ValueError, match="different dataset or loader configuration"):
        b.load_state_dict(a.state_dict())


def test_undecodable_samples_are_skipped_counted_and_named(tmp_path):
    bad = {(0, 3): b"not an npy payload", (1, 0): b"\x93NUMPY garbage"}
    idx = make_dataset(str(tmp_path), [10, 10], corrupt=bad)
    loader = StreamingLoader(idx, batch_size=4, num_workers=2, last_batch="pad")
    real = keys_of(list(loader))
    assert sorted(loader.skipped) == ["synthetic-s0-u0003", "synthetic-s1-u0000"]
    assert loader.skipped_count == 2
    assert len(real) == 18 and not set(real) & set(loader.skipped)

    strict = StreamingLoader(idx, batch_size=4, num_workers=0, on_decode_error="raise")
    with pytest.raises(ValueError, match="synthetic-s0-u0003|synthetic-s1-u0000"):
        list(strict)


def test_truncated_shard_raises_naming_it_unless_skipping(tmp_path):
    idx = make_dataset(str(tmp_path), [10, 10])
    shard = tmp_path / "shard-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    loader = StreamingLoader(idx, batch_size=4, num_workers=0, shuffle=False)
    with pytest.raises(ShardFormatError, match="shard-000001.tar"):
        list(loader)
    skipping = StreamingLoader(idx, batch_size=4, num_workers=2, on_corrupt_shard="skip", last_batch="pad")
    real = keys_of(list(skipping))
    assert len(real) + skipping.skipped_count == 20
    assert skipping.skipped_count >= 5
    assert all(k.startswith(str(shard)) for k in skipping.skipped)


def test_an_error_out_of_an_epoch_stops_the_workers_at_once(tmp_path):
    # Regression: persistent workers outlived an epoch that raised, until the garbage
    # collector stopped them (waiting torch's 5 s join per worker, during some later code).
    idx = make_dataset(str(tmp_path), [10, 10])
    shard = tmp_path / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:6000])
    loader = StreamingLoader(idx, batch_size=2, num_workers=2, persistent_workers=True, shuffle=False)
    epoch = iter(loader)
    next(epoch)
    workers = loader.dataloader._iterator._workers
    assert all(w.is_alive() for w in workers)
    with pytest.raises(ShardFormatError, match="shard-000001.tar"):
        list(epoch)
    assert not any(w.is_alive() for w in workers)
    assert loader.dataloader._iterator is None  # the next pass starts new workers


def test_crops_are_fixed_length_and_seeded(ds):
    opts = dict(batch_size=6, num_workers=2, crop_seconds=0.15, seed=9, waveform_dtype="int16")
    a = [b.waveform for b in StreamingLoader(ds, **opts)]
    b = [b.waveform for b in StreamingLoader(ds, **opts)]
    assert all(x.shape == (6, 2400) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bucketing_by_batch_seconds(ds):
    loader = StreamingLoader(ds, batch_size=None, max_batch_seconds=2.0, num_buckets=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(StreamingLoader(ds, batch_size=None, max_batch_seconds=2.0, num_buckets=4, num_workers=2))
    assert Counter(keys_of(batches)) == Counter(all_keys(ds))
    for b in batches:
        assert b.waveform.shape[1] * len(b) <= 2.0 * 16000 or len(b) == 1


def test_pin_memory_and_plain_for_loop(ds):
    loader = StreamingLoader(ds, batch_size=16, num_workers=1, pin_memory=torch.cuda.is_available())
    n = 0
    for batch in loader:
        assert batch.waveform.dtype == torch.float32 and batch.waveform.abs().max() <= 1.0
        assert batch.lengths.shape == (len(batch),)
        n += 1
    assert n == len(loader.plan(0).ranks[0].order)


def test_two_datasets_with_weights(tmp_path):
    a = make_dataset(str(tmp_path / "a"), [10, 10], name="a")
    b = make_dataset(str(tmp_path / "b"), [5, 5, 5, 5], name="b")
    loader = StreamingLoader([a, b], weights=[2.0, 0.5], batch_size=5, num_workers=2, last_batch="pad")
    real = Counter(keys_of(list(loader)))
    assert sum(v for k, v in real.items() if k.startswith("a-")) == 40  # every a-sample twice
    assert all(v == 2 for k, v in real.items() if k.startswith("a-"))
    assert sum(v for k, v in real.items() if k.startswith("b-")) == 10  # half of b's shards


def test_yaml_configs_parse(tmp_path):
    from wds_pipeline.loader import load_yaml_config

    configs = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"
    data, cfg = load_yaml_config(str(configs / "colab.yaml"))
    assert data["train"].endswith("index.json")
    assert cfg.cache_limit == 60 * 10**9 and cfg.cache_dir == "/content/cache"
    data, cfg = load_yaml_config(str(configs / "local.yaml"))
    assert cfg.crop_seconds == 3.0 and cfg.fields == ("waveform", "label")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loader:\n  batch_sise: 3\n")
    with pytest.raises(ValueError, match="batch_sise"):
        load_yaml_config(str(bad))


def test_corrupt_tar_header_is_detected_by_checksum(tmp_path):
    idx = make_dataset(str(tmp_path), [6])
    shard = tmp_path / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    offsets = __import__("json").loads((tmp_path / "index.json").read_text())["shardlist"][0]["sample_offsets"]
    data[offsets[3] + 20] ^= 0x01  # a byte inside the name field of sample 3's first header
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=r"shard-000000.tar.*checksum"):
        list(StreamingLoader(idx, batch_size=2, num_workers=0, shuffle=False))


def _take(loader, n):
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("old,new", [(2, 3), (3, 0), (0, 2)])
def test_elastic_resume_with_another_worker_count(ds, old, new):
    opts = dict(batch_size=4, shuffle_buffer=30, seed=4, last_batch="pad")
    first = StreamingLoader(ds, num_workers=old, **opts)
    before = keys_of(_take(first, 6))
    state = first.state_dict()
    resumed = StreamingLoader(ds, num_workers=new, **opts)
    resumed.load_state_dict(state)
    after = keys_of(list(resumed))
    assert Counter(before + after) == Counter(all_keys(ds))  # every sample once, none twice
    assert resumed.epoch == 1
    assert Counter(keys_of(list(resumed))) == Counter(all_keys(ds))  # next epoch: whole again


def test_elastic_resume_with_another_world_size(ds):
    opts = dict(batch_size=3, num_workers=1, shuffle_buffer=20, seed=8, last_batch="pad")
    old = [StreamingLoader(ds, rank=r, world_size=2, **opts) for r in range(2)]
    before = [k for lo in old for k in keys_of(_take(lo, 5))]  # ranks move in lockstep
    state = old[0].state_dict()
    new = [StreamingLoader(ds, rank=r, world_size=3, **opts) for r in range(3)]
    for lo in new:
        lo.load_state_dict(state)
    assert len({len(lo) for lo in new}) == 1, "equal batch counts on every new rank"
    after = [k for lo in new for k in keys_of(list(lo))]
    assert Counter(before + after) == Counter(all_keys(ds))


def test_elastic_resume_chained_twice(ds):
    opts = dict(batch_size=4, shuffle_buffer=30, seed=6, last_batch="pad")
    a = StreamingLoader(ds, num_workers=2, **opts)
    seen = keys_of(_take(a, 4))
    b = StreamingLoader(ds, num_workers=3, **opts)
    b.load_state_dict(a.state_dict())
    seen += keys_of(_take(b, 5))
    c = StreamingLoader(ds, num_workers=3, **opts)  # same layout as b: exact continuation
    c.load_state_dict(b.state_dict())
    d = StreamingLoader(ds, num_workers=1, **opts)
    d.load_state_dict(c.state_dict())
    seen += keys_of(list(d))
    assert Counter(seen) == Counter(all_keys(ds))


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_batches_kept_by_the_caller_are_never_overwritten(ds, dtype):
    # Worker batch buffers are recycled; holding every batch must still give correct data.
    loader = StreamingLoader(ds, batch_size=4, num_workers=2, waveform_dtype=dtype, last_batch="pad",
                             persistent_workers=True)
    for _ in range(2):
        held = list(loader)
        for b in held:
            for row, key in enumerate(b.keys):
                s, u = (int(x[1:]) for x in key.split("-")[1:])
                n = int(b.lengths[row])
                got = b.waveform[row, :n]
                if dtype == "float32":
                    got = (got * 32768).round().to(torch.int16)
                assert np.array_equal(got.numpy(), clip(s, u, n)), key


def test_recycled_buffers_are_reused_when_batches_are_dropped(ds):
    loader = StreamingLoader(ds, batch_size=4, num_workers=2, waveform_dtype="int16")
    slots = [b.buffer_slot for b in loader]  # each batch dropped before the next
    assert all(s >= 0 for s in slots)
    assert len(set(slots)) < len(slots), "buffers must be recycled"


def test_fbank_computed_in_workers_matches_the_reference(ds):
    from wds_pipeline.features import FbankConfig, fbank, num_frames

    loader = StreamingLoader(ds, batch_size=4, num_workers=2, fields=("waveform", "fbank"),
                             waveform_dtype="int16", shuffle=False, last_batch="pad")
    b = next(iter(loader))
    assert b.fbank.shape[0] == 4 and b.fbank.shape[2] == 80
    for row in range(4):
        n = int(b.lengths[row])
        ref = fbank(b.waveform[row, :n].to(torch.float32), FbankConfig())
        frames = int(b.fbank_lengths[row])
        assert frames == num_frames(n, FbankConfig())
        assert torch.allclose(b.fbank[row, :frames], ref, atol=1e-3)


def test_precomputed_fbank_follows_the_crop(tmp_path):
    from wds_pipeline.features import FbankConfig, fbank_numpy

    idx = make_dataset(str(tmp_path), [6], fbank=True, frames=lambda s, i: 8000 + 160 * i)
    loader = StreamingLoader(idx, batch_size=3, num_workers=0, fields=("waveform", "fbank"),
                             waveform_dtype="int16", crop_seconds=0.2, seed=2)
    for b in loader:
        for row in range(len(b)):
            # the crop starts on a 10 ms hop, so the stored features of the crop equal
            # the features computed from the cropped waveform (up to edge frames)
            wave = b.waveform[row].numpy()
            feats = fbank_numpy(wave, FbankConfig()).astype(np.float32)
            got = b.fbank[row, : len(feats)].numpy()
            assert got.shape == feats.shape
            assert np.abs(got[:-2] - feats[:-2]).max() < 0.05


def test_breaking_out_then_iterating_again_runs_the_next_epoch_whole(ds):
    loader = StreamingLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, last_batch="pad")
    _take(loader, 3)  # abandoned mid-epoch
    assert loader.state_dict()["batches_yielded"] == 3  # the stop position is still known
    again = keys_of(list(loader))  # a new pass is epoch 1, from its start, whole
    assert Counter(again) == Counter(all_keys(ds))
    fresh = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad")
    fresh.set_epoch(1)
    assert again == keys_of(list(fresh))
    assert loader.epoch == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_float32_output_is_the_int16_batch_over_32768_exactly(ds, workers):
    opts = dict(batch_size=8, num_workers=workers, last_batch="pad", seed=4)
    ints = list(StreamingLoader(ds, waveform_dtype="int16", **opts))
    floats = list(StreamingLoader(ds, **opts))  # the default: float32
    assert [b.keys for b in floats] == [b.keys for b in ints]
    for f, i in zip(floats, ints):
        assert f.waveform.dtype == torch.float32
        assert torch.equal(f.waveform, i.waveform.to(torch.float32) / 32768)
        moved = f.to("cpu")  # moved as it is: float32, the same values
        assert moved.waveform.dtype == torch.float32 and torch.equal(moved.waveform, f.waveform)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_the_workers_ship_the_waveform_dtype_asked_for(ds, dtype):
    # waveform_dtype is what the workers write (no conversion after a batch arrives): what
    # crosses from a worker process is already the batch's dtype.
    loader = StreamingLoader(ds, batch_size=8, num_workers=2, last_batch="pad", waveform_dtype=dtype)
    loader.dataset.start(0, 0)
    raw = next(iter(loader.dataloader))
    assert raw.waveform.dtype == getattr(torch, dtype)


@pytest.mark.parametrize("workers", [0, 2])
def test_float32_batches_are_written_by_the_workers_exactly(ds, workers):
    # Every batch, the first included, is float32 as it arrives, scaled in the workers' gather
    # (or the in-process collator); its values are exactly the int16 batch over 32768.
    opts = dict(batch_size=4, num_workers=workers, last_batch="pad", seed=3,
                persistent_workers=workers > 0)
    int_loader = StreamingLoader(ds, waveform_dtype="int16", **opts)
    ints = [b for _ in range(2) for b in int_loader]  # epochs 0 and 1
    loader = StreamingLoader(ds, **opts)
    floats = [b.waveform.clone() for _ in range(2) for b in loader]
    assert len(floats) == len(ints)
    for f, i in zip(floats, ints):
        assert f.dtype == torch.float32
        assert torch.equal(f, i.waveform.to(torch.float32) / 32768)


def test_int16_batches_stay_int16_when_moved(ds):
    loader = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad", waveform_dtype="int16")
    for b in loader:
        assert b.waveform.dtype == torch.int16
        assert b.to("cpu").waveform.dtype == torch.int16


def test_float32_batches_and_rows_kept_by_the_caller_are_never_overwritten(ds):
    import copy
    import pickle

    loader = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad", seed=1)
    expected = {}
    rows = []  # one row view per batch, kept while its batch is dropped
    for b in loader:
        wave = b.waveform
        for r, key in enumerate(b.keys):
            expected[key] = wave[r, : int(b.lengths[r])].clone()
        rows.append((b.keys[0], wave[0, : int(b.lengths[0])]))
    for key, row in rows:
        assert torch.equal(row, expected[key]), key
    again = list(StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad", seed=1))
    for b in again[:3]:  # copies and pickles carry float32, scaled
        for c in (copy.copy(b), pickle.loads(pickle.dumps(b))):
            assert c.waveform.dtype == torch.float32
            assert torch.equal(c.waveform[0, : int(c.lengths[0])], expected[c.keys[0]])


def test_float32_buffers_are_recycled_when_batches_are_dropped(ds):
    from wds_pipeline.loader.buffers import BUFFERS_PER_WORKER, RecycledArrays

    loader = StreamingLoader(ds, batch_size=4, num_workers=2, last_batch="pad")
    slots = [b.buffer_slot for _ in range(2) for b in loader]  # each dropped at once
    # Workers write float32 into their recycled buffers: every batch arrives in one of the
    # workers' pool slots (-1 would be fresh memory), and there are never more than the
    # pools hold. The slot, not the tensor's address in this process: a dropped buffer's
    # mapping can come back at another address (failed once under load).
    assert len(slots) > 2 * BUFFERS_PER_WORKER + RecycledArrays.SIZE
    assert min(slots) >= 0, "a batch arrived in fresh memory: buffers must be recycled"
    assert set(slots) <= set(range(2 * BUFFERS_PER_WORKER)), slots


def test_the_loader_imports_what_its_workers_need_before_they_fork(ds):
    # Forked workers inherit the parent's modules; whatever the parent has not imported,
    # every fresh worker imports again, every epoch without persistent workers.
    import subprocess
    import sys

    code = ("import sys; from wds_pipeline import StreamingLoader; "
            f"StreamingLoader({ds!r}, batch_size=4); "
            "print(sorted(m for m in ('wds_pipeline.readpath.reader', 'wds_pipeline.readpath.cache', 'filelock') "
            "if m not in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_workers_persist_across_epochs_by_default(ds):
    from wds_pipeline import LoaderConfig

    assert LoaderConfig().persistent_workers is True
    loader = StreamingLoader(ds, batch_size=8, last_batch="pad")
    assert loader.dataloader.persistent_workers
    for _ in range(2):
        assert Counter(keys_of(list(loader))) == Counter(all_keys(ds))


def test_the_batch_buffer_shelf_keeps_at_most_max_bytes_of_free_buffers(monkeypatch):
    """A process that once read long padded batches must not keep six of their buffers
    resident for good; buffers a caller still holds are never dropped nor reused."""
    from wds_pipeline.loader.buffers import RecycledArrays

    monkeypatch.setattr(RecycledArrays, "_shelves", {})
    monkeypatch.setattr(RecycledArrays, "MAX_BYTES", 10 << 20)
    pool = RecycledArrays(np.float32)
    shelf = RecycledArrays._shelves[np.dtype(np.float32)]
    held = [pool.take((1, 1 << 20)) for _ in range(3)]  # 5 MB each with headroom, all in use
    for i, t in enumerate(held):
        t.fill_(float(i))
    assert len(shelf) == 3  # over MAX_BYTES, but every buffer is held
    assert [float(t[0, 0]) for t in held] == [0.0, 1.0, 2.0]
    del held, t
    again = pool.take((1, 1 << 20))  # reuses one; the free rest is trimmed to MAX_BYTES
    assert len(shelf) == 2 and sum(a.nbytes for a in shelf) <= 10 << 20
    assert any(again.data_ptr() == a.ctypes.data for a in shelf)


def test_other_workers_leave_the_link_to_the_first_batch(slowfs_factory, tmp_path):
    """On a FUSE mount with a cold cache, worker 1 opens no shard before worker 0 has built
    the epoch's first batch (dataset.FIRST_BATCH_WAIT_S): here that batch needs worker 0's
    first two shards, so both are opened before any of worker 1's. Every key once."""
    m = slowfs_factory("link", latency_ms=50, bandwidth_mbps=200)
    index = make_dataset(m.source, [10] * 6)
    opts = dict(batch_size=16, num_workers=2, last_batch="pad", shuffle_buffer=8,
                cache_dir=str(tmp_path / "cache"), shard_prefetch=0)
    loader = StreamingLoader(f"{m.mountpoint}/index.json", **opts)
    plan = loader.plan(0)
    first = [[loader.dataset.table[plan.slots[s]].url.rsplit("/", 1)[1] for s in dict.fromkeys(w.read_slots.tolist())]
             for w in plan.ranks[0].workers]
    batches = list(loader)
    assert Counter(keys_of(batches)) == Counter(all_keys(index))
    opens = [line.split()[-1].lstrip("/") for line in m.log_lines() if line.startswith("open ") and ".tar" in line]
    assert set(opens[:2]) == set(first[0][:2])  # worker 0's first two shards, before worker 1's
    assert sorted(opens) == sorted(f"shard-{i:06d}.tar" for i in range(6))
