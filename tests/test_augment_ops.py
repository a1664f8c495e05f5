"""The augmentation operations of issue 24 on the transform seam: additive noise at a drawn
SNR from a noise bank, reverberation by FFT convolution with a bank's RIR (aligned on its
direct path), speed perturbation, SpecAugment masks, and the batch stage's determinism per
(seed, epoch, batch index) with all of them on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from shardgen import make_dataset

from wds_pipeline import StreamingLoader
from wds_pipeline.errors import ConfigError
from wds_pipeline.transforms import batch as stage
from wds_pipeline.transforms.bank import Banks, NoiseBank, RirBank, bind_banks, trim_rir
from wds_pipeline.transforms.batch import BatchChain, DeviceBatch
from wds_pipeline.transforms.keyed import RowRandom
from wds_pipeline.transforms.noise import RECIPE_KINDS, AddNoise
from wds_pipeline.transforms.reverb import Reverb
from wds_pipeline.transforms.sample import SampleChain, sample_rng
from wds_pipeline.transforms.specaugment import SpecAugment
from wds_pipeline.transforms.speed import Speed, speed_perturb

SR = 16000
CPU = torch.device("cpu")


def generator(seed: int, rows: int) -> RowRandom:
    """Keyed draws for ``rows`` rows (sample ids 0..rows-1) under ``seed``."""
    return RowRandom.keyed((seed,), torch.arange(rows))


def noise_bank(categories=("noise", "music", "speech")) -> NoiseBank:
    """Clips of each category, some shorter than the rows they are mixed into (looped)."""
    rng = np.random.default_rng(0)
    clips, cats = [], []
    for cat in categories:
        for i in range(4):
            n = int(rng.integers(2000, 9000))
            if cat == "music":
                clip = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * np.arange(n) / SR)
            else:
                clip = np.cumsum(rng.standard_normal(n)) * 0.01 if cat == "noise" else rng.standard_normal(n) * 0.1
            clips.append((clip * 32767 / max(1.0, np.abs(clip).max() * 1.01)).astype(np.int16) if i % 2
                         else clip.astype(np.float32))
            cats.append(cat)
    return NoiseBank.from_arrays(clips, cats, sample_rate=SR)


def synthetic_rir(seed: int, delay: int, length: int, rt60: float) -> np.ndarray:
    """A direct path after ``delay`` zeros, then exponentially decaying noise (``rt60`` s)."""
    rng = np.random.default_rng(seed)
    h = np.zeros(delay + length)
    t = np.arange(length - 1) / SR
    h[delay] = 0.8 if seed % 2 else -0.8  # either sign: the direct path is the largest |h|
    h[delay + 1 :] = 0.3 * rng.standard_normal(length - 1).clip(-2, 2) * np.exp(-6.9 * t / rt60)
    return h


def speech_batch(rows: int = 12, frames: int = 24000, seed: int = 1) -> DeviceBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(frames // 4, frames + 1, rows)
    lengths[0] = frames
    wave = np.zeros((rows, frames), dtype=np.float32)
    for r, n in enumerate(lengths):
        wave[r, :n] = rng.standard_normal(n) * 0.05 * (1 + r)
    return DeviceBatch(torch.from_numpy(wave), torch.from_numpy(lengths), torch.arange(rows),
                       torch.ones(rows, dtype=torch.bool))


def test_the_registries_name_the_augmentations_and_build_them_with_recipe_defaults():
    assert {"noise", "reverb"} <= set(stage.BATCH_TRANSFORMS.names) and stage.FEATURE_TRANSFORMS.names == ["spec_augment"]
    from wds_pipeline.transforms import TransformSpec
    built = stage.BATCH_TRANSFORMS.build(TransformSpec("noise", {"probability": 0.5, "kinds": [
        {"category": "noise", "min_snr_db": 0, "max_snr_db": 15}]}), "x")
    assert built.probability == 0.5 and built.kinds[0].max_clips == 1 and built.bank is None
    assert [(k.category, k.min_snr_db, k.max_snr_db, k.min_clips, k.max_clips) for k in RECIPE_KINDS] == [
        ("noise", 0.0, 15.0, 1, 1), ("music", 5.0, 15.0, 1, 1), ("speech", 13.0, 20.0, 3, 7)]
    assert stage.FEATURE_TRANSFORMS.build(TransformSpec("spec_augment", {}), "x") == SpecAugment(0.6, 1, 10, 1, 8)
    with pytest.raises(ConfigError, match=r"\(noise\) params: unknown key 'bank'"):
        stage.BATCH_TRANSFORMS.build(TransformSpec("noise", {"bank": "x"}), "x")  # data is bound, never configured
    with pytest.raises(ConfigError, match=r"min_clips \(3\) <= max_clips \(2\)"):
        stage.BATCH_TRANSFORMS.build(TransformSpec("noise", {"kinds": [
            {"category": "speech", "min_snr_db": 13, "max_snr_db": 20, "min_clips": 3, "max_clips": 2}]}), "x")


def test_each_noisy_row_has_exactly_the_drawn_snr_and_clips_of_its_kinds_category():
    bank = noise_bank()
    add = AddNoise(probability=0.7).bind(Banks(noise=bank))
    batch = speech_batch(rows=48)
    out = add(batch, generator(5, 48))
    d = add.draw(generator(5, 48))  # the same numbers the call drew
    assert 20 < len(d.rows) < 48 and sorted(set(d.kind.tolist())) == [0, 1, 2]
    picked = set(d.rows.tolist())
    for r in range(48):
        n = int(batch.lengths[r])
        assert (out.wave[r, n:] == 0).all()
        if r not in picked:
            assert torch.equal(out.wave[r], batch.wave[r])
    for i, r in enumerate(d.rows.tolist()):
        n = int(batch.lengths[r])
        clean, added = batch.wave[r, :n].double(), (out.wave[r, :n] - batch.wave[r, :n]).double()
        measured = 10 * torch.log10(clean.square().mean() / added.square().mean())
        kind = RECIPE_KINDS[int(d.kind[i])]
        assert abs(float(measured) - float(d.snr_db[i])) < 0.1
        assert kind.min_snr_db <= float(d.snr_db[i]) <= kind.max_snr_db
        assert kind.min_clips <= int(d.used[i].sum()) <= kind.max_clips
        used = d.clips[i][d.used[i]]
        assert {bank.categories[c] for c in bank.category[used].tolist()} == {kind.category}
        assert (d.offsets[i] < bank.lengths[d.clips[i]]).all()


def test_a_noise_bank_without_a_requested_category_is_a_clear_error():
    bank = noise_bank(categories=("noise", "speech"))
    with pytest.raises(ConfigError, match=r"batch transform 'noise': the noise bank has no clips of category "
                                          r"'music'; it has noise \(4\), speech \(4\)"):
        AddNoise().bind(Banks(noise=bank))
    AddNoise(kinds=RECIPE_KINDS[::2]).bind(Banks(noise=bank))  # without music: fine
    with pytest.raises(ConfigError, match="needs a noise bank; none was built"):
        AddNoise().bind(Banks())
    with pytest.raises(ConfigError, match=r"'noise' has no noise bank: bind one first"):
        AddNoise()(speech_batch(), generator(0, 12))


def test_trim_rir_aligns_on_the_direct_path_and_keeps_the_energetic_part():
    h = synthetic_rir(seed=1, delay=37, length=8000, rt60=0.3)
    full = trim_rir(h, energy_fraction=1.0)
    assert full[0] == 1.0 and np.allclose(full, (h[37:] / h[37]).astype(np.float32))
    short = trim_rir(h)  # 0.999 of the energy from the peak on
    energy = np.cumsum(h[37:] ** 2)
    assert len(short) == np.searchsorted(energy, 0.999 * energy[-1]) + 1 < len(full) // 2
    assert np.array_equal(short, full[: len(short)])
    negative = trim_rir(synthetic_rir(seed=2, delay=5, length=100, rt60=0.3))
    assert negative[0] == 1.0  # divided by the signed peak: the direct sound keeps its sign


@pytest.mark.parametrize("energy_fraction", [1.0, 0.999])
def test_reverberation_equals_an_fftconvolve_reference_after_the_alignment(energy_fraction):
    raw = [synthetic_rir(seed=s, delay=10 * s, length=3000 + 1500 * s, rt60=0.2 + 0.1 * s) for s in range(4)]
    bank = RirBank.from_arrays(raw, sample_rate=SR, energy_fraction=energy_fraction)
    reverb = Reverb(probability=0.8).bind(Banks(rirs=bank))
    batch = speech_batch(rows=10)
    out = reverb(batch, generator(3, 10))
    rows, rirs = reverb.draw(generator(3, 10))
    assert 4 < len(rows) < 10 and len(set(rirs.tolist())) > 1
    for r, k in zip(rows.tolist(), rirs.tolist()):
        n, x, h = int(batch.lengths[r]), batch.wave[r, : int(batch.lengths[r])].double().numpy(), raw[k]
        peak = int(np.argmax(np.abs(h)))
        if energy_fraction == 1.0:  # the documented alignment on the raw RIR: start at its peak
            expected = fftconvolve(x, h)[peak : peak + n] / h[peak]
        else:
            expected = fftconvolve(x, trim_rir(h, energy_fraction).astype(np.float64))[:n]
        assert np.abs(out.wave[r, :n].double().numpy() - expected).max() < 1e-4
        assert (out.wave[r, n:] == 0).all()
    for r in set(range(10)) - set(rows.tolist()):
        assert torch.equal(out.wave[r], batch.wave[r])


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_a_1khz_tone_at_a_speed_comes_out_at_that_multiple_and_length(factor):
    n = 2 * SR
    tone = (10000 * np.sin(2 * np.pi * 1000 * np.arange(n) / SR)).astype(np.int16)
    out = speed_perturb(tone, factor, SR)
    assert out.dtype == np.int16 and abs(len(out) - n / factor) <= 1
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64) * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * SR / len(out) - 1000 * factor) < 1.0
    assert np.array_equal(speed_perturb(tone, 1.0, SR), tone)


def test_the_speed_transform_keeps_the_crops_length_and_is_a_function_of_its_generator():
    wave = (10000 * np.sin(2 * np.pi * 440 * np.arange(8000) / SR)).astype(np.int16)
    speed = Speed()
    outs = {}
    for gid in range(12):
        out = speed(wave, sample_rng(3, 0, gid), SR)
        assert out.dtype == np.int16 and out.shape == wave.shape
        assert np.array_equal(out, speed(wave, sample_rng(3, 0, gid), SR))
        outs[out.tobytes()] = out
    assert len(outs) == 3  # 0.9, 1.0 and 1.1 all drawn
    fast = speed_perturb(wave, 1.1, SR)  # shorter than the crop: repeated from its start
    assert np.array_equal(np.resize(fast, len(wave)), Speed((1.1,))(wave, sample_rng(0, 0, 0), SR))
    chain = SampleChain([{"name": "speed"}], seed=3, sample_rate=SR)
    assert np.array_equal(chain(wave, 0, 5), speed(wave, sample_rng(3, 0, 5, 0), SR))


def test_the_speed_transform_runs_in_the_loader(tmp_path):
    data = make_dataset(str(tmp_path), [6, 5], speakers=2)
    loader = StreamingLoader(data, batch_size=4, num_workers=0, seed=3, crop_seconds=0.05,
                             waveform_dtype="int16", sample_transforms=[{"name": "speed"}])
    plain = StreamingLoader(data, batch_size=4, num_workers=0, seed=3, crop_seconds=0.05, waveform_dtype="int16")
    changed = 0
    for a, b in zip(loader, plain):
        assert a.keys == b.keys and torch.equal(a.lengths, b.lengths)
        changed += int(not torch.equal(a.waveform, b.waveform))
    assert changed > 0


def test_spec_augment_masks_stay_inside_their_bounds():
    spec = SpecAugment(probability=0.75, time_masks=2, max_time_width=10, freq_masks=2, max_freq_width=8)
    lengths = torch.tensor([200, 150, 7, 0, 120, 200, 90, 3] * 4)
    feats = torch.randn(len(lengths), 200, 80) + 5.0  # no zero anywhere before masking
    out = spec(feats, lengths, generator(9, len(lengths)))
    d = spec.draw(lengths, 80, generator(9, len(lengths)))
    assert 16 < int(d.picked.sum()) < 32
    for r, n in enumerate(lengths.tolist()):
        assert torch.equal(out[r, n:], feats[r, n:])  # padding frames untouched
        if not d.picked[r]:
            assert torch.equal(out[r], feats[r]) and (d.time_width[r] == 0).all() and (d.freq_width[r] == 0).all()
            continue
        assert ((d.time_width[r] >= min(1, n)) & (d.time_width[r] <= min(10, n))).all()
        assert ((d.freq_width[r] >= 1) & (d.freq_width[r] <= 8)).all()
        assert (d.time_start[r] >= 0).all() and (d.time_start[r] + d.time_width[r] <= n).all()
        assert (d.freq_start[r] >= 0).all() and (d.freq_start[r] + d.freq_width[r] <= 80).all()
        expected = torch.zeros(200, 80, dtype=torch.bool)
        for s, w in zip(d.time_start[r].tolist(), d.time_width[r].tolist()):
            expected[s : s + w, :] = True
        for s, w in zip(d.freq_start[r].tolist(), d.freq_width[r].tolist()):
            expected[:n, s : s + w] = True
        assert torch.equal(out[r] == 0, expected)
        assert torch.equal(out[r][~expected], feats[r][~expected])


def test_the_augmented_batch_is_a_pure_function_of_seed_epoch_and_batch_index():
    rirs = RirBank.from_arrays([synthetic_rir(s, 3 * s, 2000, 0.25) for s in range(3)], sample_rate=SR)
    specs = [{"name": "reverb", "params": {"probability": 0.5}}, {"name": "noise", "params": {"probability": 0.6}},
             {"name": "row_gain"}]
    batch = speech_batch(rows=16, frames=8000)

    def run(epoch: int, index: int) -> torch.Tensor:
        chain = BatchChain(specs, seed=11, rank=0, device=CPU)
        chain.transforms = bind_banks(chain.transforms, Banks(noise=noise_bank(), rirs=rirs))
        wave = chain(batch, epoch=epoch, index=index).wave
        feats = wave.unfold(1, 400, 160).abs().mean(2, keepdim=True).expand(-1, -1, 40)  # stand-in fbank
        frames = ((batch.lengths - 400) // 160 + 1).clamp(min=0)
        g = chain.random(batch, epoch=epoch, index=index, position=len(specs))
        return torch.cat([wave.flatten(), SpecAugment(probability=0.8)(feats, frames, g).flatten()])

    a = run(2, 5)
    assert torch.equal(a, run(2, 5))  # bitwise, rebuilt from scratch
    assert not torch.equal(a, run(2, 6)) and not torch.equal(a, run(3, 5))
    assert not torch.equal(a[: batch.wave.numel()], batch.wave.flatten())
