"""Kaldi fbank in torch: parity with kaldi-native-fbank, framing rules, batching, the module."""

from __future__ import annotations

import dataclasses
import json

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from wds_pipeline.features import Fbank, FbankConfig, fbank, fbank_numpy, mel_banks, num_frames

SR = 16000
# Measured max |ours - knf| on the log-mels below is 3.3e-4 (float32 rounding in low-energy
# bins); 1e-3 leaves room for other BLAS/FFT builds while still catching any framing, window,
# pre-emphasis or mel-scale mistake (those show up as errors of 0.1 or more).
PARITY_ATOL = 1e-3


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    """int16-scale float32: a gliding harmonic 'voice' with formant-like weights, syllable-rate
    envelope, fricative noise bursts and a stretch of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(
        np.exp(-(((k * 130 - 700) / 600.0) ** 2)) * np.sin(k * phase)
        + 0.3 * np.sin(k * phase + k) / k
        for k in range(1, 30)
    )
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x = 4000 * voiced * envelope + 300 * rng.standard_normal(num_samples)
    x[(t > 0.6) & (t < 0.75)] = 0.0  # digital silence hits Kaldi's log floor
    return np.round(np.clip(x, -32768, 32767)).astype(np.float32)


def kaldi_reference(x: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = cfg.sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.frame_opts.window_type = cfg.window
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.preemph_coeff = cfg.preemphasis
    opts.frame_opts.remove_dc_offset = cfg.remove_dc_offset
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    opts.use_energy = cfg.use_energy
    opts.energy_floor = cfg.energy_floor
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(cfg.sample_rate, x.astype(np.float32))
    fb.input_finished()
    frames = [fb.get_frame(i) for i in range(fb.num_frames_ready)]
    return np.array(frames, dtype=np.float32).reshape(len(frames), cfg.num_features)


@pytest.mark.parametrize(
    "cfg",
    [
        FbankConfig(),
        FbankConfig(snip_edges=False),
        FbankConfig(window="hamming", num_mel_bins=40, low_freq=40.0, high_freq=-400.0),
        FbankConfig(use_energy=True, energy_floor=1.0, preemphasis=0.0, remove_dc_offset=False),
        FbankConfig(sample_rate=8000, num_mel_bins=23, frame_length_ms=20.0),
    ],
    ids=["default", "no-snip", "hamming-40", "energy", "8k"],
)
@pytest.mark.parametrize("seconds", [0.025, 0.0251, 1.0077, 2.0])
def test_matches_kaldi_native_fbank(cfg: FbankConfig, seconds: float) -> None:
    # 1.0077 s = 16123 samples: not a multiple of the 160-sample hop.
    x = speech_like(round(seconds * cfg.sample_rate))
    ours = fbank(torch.from_numpy(x), cfg).numpy()
    ref = kaldi_reference(x, cfg)
    assert ours.shape == ref.shape == (num_frames(len(x), cfg), cfg.num_features)
    assert ours.shape[0] > 0
    assert np.abs(ours - ref).max() < PARITY_ATOL


@pytest.mark.parametrize("samples", [81, 150, 399])
def test_reflected_edges_of_clips_shorter_than_a_window_match_kaldi(samples: int) -> None:
    # With snip_edges=False a 400-sample window over < 400 samples reflects more than once.
    cfg = FbankConfig(snip_edges=False)
    x = speech_like(samples, seed=samples)
    ours = fbank(torch.from_numpy(x), cfg).numpy()
    ref = kaldi_reference(x, cfg)
    assert ours.shape == ref.shape == (num_frames(samples, cfg), 80)
    assert np.abs(ours - ref).max() < PARITY_ATOL


def test_silence_hits_the_log_floor_like_kaldi() -> None:
    x = np.zeros(800, np.float32)
    ours = fbank(torch.from_numpy(x))
    assert torch.equal(ours, torch.full((3, 80), float(np.log(np.finfo(np.float32).eps))))
    assert np.array_equal(ours.numpy(), kaldi_reference(x, FbankConfig()))


def test_mel_energies_without_log() -> None:
    x = speech_like(8000)
    log_mel = fbank(torch.from_numpy(x)).double()
    mel = fbank(torch.from_numpy(x), FbankConfig(use_log=False)).double()
    assert mel.min() >= 0
    loud = mel > 1.0
    assert torch.allclose(mel[loud].log(), log_mel[loud], atol=1e-5)


@pytest.mark.parametrize(
    ("samples", "snip", "expected"),
    [
        (0, True, 0),
        (399, True, 0),
        (400, True, 1),
        (559, True, 1),
        (560, True, 2),
        (16000, True, 98),
        (0, False, 0),
        (79, False, 0),
        (80, False, 1),
        (16000, False, 100),
        (16123, False, 101),
    ],
)
def test_num_frames_follows_kaldi(samples: int, snip: bool, expected: int) -> None:
    cfg = FbankConfig(snip_edges=snip)
    assert num_frames(samples, cfg) == expected
    x = speech_like(samples) if samples else np.zeros(0, np.float32)
    assert kaldi_reference(x, cfg).shape[0] == expected
    assert fbank(torch.from_numpy(x), cfg).shape == (expected, 80)


@pytest.mark.parametrize("snip", [True, False])
def test_batched_with_lengths_equals_unbatched(snip: bool) -> None:
    cfg = FbankConfig(snip_edges=snip)
    lengths = [16000, 9123, 300, 0]
    width = max(lengths)
    items = [speech_like(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(items), width)
    for i, item in enumerate(items):
        # Garbage (not zeros) past each length proves padding never leaks into valid frames.
        batch[i, len(item) :] = 12345.0
        batch[i, : len(item)] = torch.from_numpy(item)

    feats = fbank(batch, cfg, lengths=torch.tensor(lengths))
    assert feats.shape == (4, num_frames(width, cfg), 80)
    for i, item in enumerate(items):
        n = num_frames(len(item), cfg)
        single = fbank(torch.from_numpy(item), cfg)
        assert single.shape[0] == n
        torch.testing.assert_close(feats[i, :n], single, atol=2e-5, rtol=0)
        assert torch.count_nonzero(feats[i, n:]) == 0


def test_batched_without_lengths_is_per_row() -> None:
    x = torch.from_numpy(np.stack([speech_like(4000, seed=1), speech_like(4000, seed=2)]))
    feats = fbank(x)
    assert feats.shape == (2, 23, 80)
    torch.testing.assert_close(feats[1], fbank(x[1]), atol=2e-5, rtol=0)


def test_int16_tensor_input_equals_float_input() -> None:
    x = speech_like(5000)
    as_int = fbank(torch.from_numpy(x.astype(np.int16)))
    assert torch.equal(as_int, fbank(torch.from_numpy(x)))


def test_dither_is_driven_by_the_generator() -> None:
    cfg = FbankConfig(dither=1.0)
    x = torch.from_numpy(speech_like(4000))
    a = fbank(x, cfg, generator=torch.Generator().manual_seed(7))
    b = fbank(x, cfg, generator=torch.Generator().manual_seed(7))
    c = fbank(x, cfg, generator=torch.Generator().manual_seed(8))
    clean = fbank(x, FbankConfig())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Dither of 1 LSB barely moves loud bins but does move them.
    assert 0 < (a - clean).abs().max() < 0.5


def test_fbank_module_lengths_buffers_and_mean_norm() -> None:
    cfg = FbankConfig(dither=1.0)
    module = Fbank(cfg, mean_norm=True)
    assert module.state_dict() == {}  # window/mel are derived from cfg, not weights
    assert module.window.shape == (400,) and module.banks.shape == (256, 80)
    torch.testing.assert_close(module.banks, mel_banks(cfg))

    lengths = torch.tensor([8000, 5000])
    batch = torch.zeros(2, 8000)
    batch[0] = torch.from_numpy(speech_like(8000, seed=3))
    batch[1, :5000] = torch.from_numpy(speech_like(5000, seed=4))

    module.eval()
    feats, frame_lengths = module(batch, lengths)
    assert frame_lengths.tolist() == [48, 29]
    assert feats.shape == (2, 48, 80)
    assert torch.count_nonzero(feats[1, 29:]) == 0
    plain = fbank(batch[1, :5000], FbankConfig())
    torch.testing.assert_close(feats[1, :29], plain - plain.mean(dim=0), atol=5e-5, rtol=0)
    torch.testing.assert_close(feats[0].mean(dim=0), torch.zeros(80), atol=1e-5, rtol=0)

    # eval() disables dither; train() applies it, reproducibly with a generator.
    again, _ = module(batch, lengths)
    assert torch.equal(feats, again)
    module.train()
    t1, _ = module(batch, lengths, generator=torch.Generator().manual_seed(0))
    t2, _ = module(batch, lengths, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t1, t2) and not torch.equal(t1, feats)

    single, n = module.eval()(batch[1, :5000])
    assert n.dim() == 0 and int(n) == 29
    torch.testing.assert_close(single, feats[1, :29], atol=2e-5, rtol=0)


def test_fbank_module_follows_dtype_and_device_moves() -> None:
    module = Fbank().double()
    assert module.window.dtype == torch.float64 and module.banks.dtype == torch.float64
    x = speech_like(3000)
    feats, _ = module(torch.from_numpy(x).double())
    assert feats.dtype == torch.float64
    torch.testing.assert_close(feats.float(), fbank(torch.from_numpy(x)), atol=PARITY_ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.from_numpy(np.stack([speech_like(16000, seed=5), speech_like(16000, seed=6)]))
    lengths = torch.tensor([16000, 12000])
    module = Fbank().to("cuda")
    feats, frame_lengths = module(x.cuda(), lengths.cuda())
    assert feats.device.type == "cuda" and frame_lengths.device.type == "cuda"
    torch.testing.assert_close(feats.cpu(), fbank(x, lengths=lengths), atol=1e-3, rtol=0)
    gen = torch.Generator(device="cuda").manual_seed(1)
    dithered = fbank(x.cuda(), FbankConfig(dither=1.0), generator=gen)
    assert dithered.shape == (2, 98, 80)


def test_fbank_numpy_is_float16_features_for_shards() -> None:
    pcm = speech_like(16123).astype(np.int16)
    feats = fbank_numpy(pcm, FbankConfig())
    assert feats.dtype == np.float16 and feats.shape == (99, 80)
    ref = kaldi_reference(pcm.astype(np.float32), FbankConfig())
    # float16 spacing is 2**-6 = 0.0156 between 16 and 32, so rounding costs at most 0.0079.
    assert np.abs(feats.astype(np.float32) - ref).max() < 0.0079 + PARITY_ATOL


def test_input_errors_say_what_to_fix() -> None:
    with pytest.raises(
        ValueError, match=r"every length must be in \[0, 1000\] \(the padded width\)"
    ):
        fbank(torch.zeros(2, 1000), lengths=torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match=r"\(T,\) or \(B, T\)"):
        fbank(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="only for batched"):
        fbank(torch.zeros(1000), lengths=torch.tensor([1000]))
    with pytest.raises(ValueError, match="downmix first"):
        fbank_numpy(np.zeros((1000, 2), np.int16))
    with pytest.raises(ValueError, match="window must be one of"):
        FbankConfig(window="hann")
    with pytest.raises(ValueError, match="high_freq <= nyquist"):
        FbankConfig(high_freq=9000.0)


def test_config_to_dict_is_json_and_round_trips() -> None:
    cfg = FbankConfig(num_mel_bins=64, snip_edges=False)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert FbankConfig(**d) == cfg
    assert d["num_mel_bins"] == 64 and d["window"] == "povey" and d["dither"] == 0.0
    assert set(d) == {f.name for f in dataclasses.fields(FbankConfig)}
