"""Kaldi-compatible log-mel filterbank in plain torch (STUB: being implemented by the audio helper).

    @dataclass(frozen=True) class FbankConfig: sample_rate=16000, num_mel_bins=80, frame_length_ms=25.0,
        frame_shift_ms=10.0, dither=0.0, preemphasis=0.97, remove_dc_offset=True, window="povey",
        low_freq=20.0, high_freq=0.0, snip_edges=True, energy_floor=0.0; to_dict()
    num_frames(num_samples: int, cfg) -> int
    fbank(waveform: torch.Tensor, cfg=FbankConfig(), *, lengths=None, generator=None)
        (T,) -> (frames, bins); (B, T) -> (B, frames, bins); waveform in int16 scale
    class Fbank(torch.nn.Module)  # device-resident window/mel matrix, forward(wave, lengths) -> (feats, frame_lengths)
    fbank_numpy(pcm_int16: np.ndarray, cfg) -> np.ndarray float16 (frames, bins)   # builder's precomputed features
"""
