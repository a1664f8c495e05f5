"""Kaldi-compatible log-mel filterbank in plain torch (no torchaudio).

Public API (the builder and the loader call these; keep names and signatures):

    @dataclass(frozen=True) class FbankConfig  (Kaldi option names; to_dict())
    num_frames(num_samples, cfg) -> int
    fbank(waveform, cfg=FbankConfig(), *, lengths=None, generator=None) -> Tensor
    class Fbank(torch.nn.Module):
        forward(wave, lengths=None, *, generator=None) -> (feats, frame_lengths)
    fbank_numpy(pcm_int16, cfg=FbankConfig()) -> np.ndarray float16 (frames, bins)

The computation follows Kaldi's ``compute-fbank-feats`` (``feature-window.cc``,
``mel-computations.cc``) step by step: frame extraction (snip_edges or reflected edges), dither,
DC removal, raw log-energy, pre-emphasis, window, zero-pad to a power of two, power spectrum,
triangular mel banks on the Kaldi mel scale (1127 ln(1 + f/700), Nyquist bin excluded), log
floored at FLT_EPSILON. The waveform is expected in int16 scale, like Kaldi: pass the int16 PCM
from ``audio.to_int16`` (float audio in [-1, 1] would give log-mels ~20.8 lower, and quiet
stretches would sit on the log floor).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "FEATURE_BYTES",
    "FRAME_SHIFT_MS",
    "NUM_MEL_BINS",
    "Fbank",
    "FbankConfig",
    "fbank_bytes_per_audio_frame",
    "fbank",
    "fbank_numpy",
    "feature_window",
    "mel_banks",
    "num_frames",
]

# The project's fbank layout, named once: every place that sizes features uses these.
NUM_MEL_BINS = 80  # mel bins of the shards' fbank.npy and the loader's on-the-fly fbank
FRAME_SHIFT_MS = 10.0  # hop between feature frames
FEATURE_BYTES = 2  # shards store features as float16


def fbank_bytes_per_audio_frame(sample_rate: int) -> float:
    """Bytes of stored (float16) features per audio sample, for memory estimates."""
    return NUM_MEL_BINS * FEATURE_BYTES / (sample_rate * (FRAME_SHIFT_MS * 0.001))


# Kaldi floors energies at std::numeric_limits<float>::epsilon() before the log.
_FLT_EPSILON = float(np.finfo(np.float32).eps)
_WINDOWS = ("povey", "hamming", "hanning", "rectangular", "sine", "blackman")


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank options (same names and defaults as Kaldi, except num_mel_bins=80, dither=0).

    high_freq <= 0 means ``nyquist + high_freq`` (Kaldi's convention). ``energy_floor`` only
    matters with ``use_energy=True``, which prepends Kaldi's raw log-energy as column 0 (so the
    output then has ``num_mel_bins + 1`` columns). ``use_log=False`` returns mel energies.
    """

    sample_rate: int = 16000
    num_mel_bins: int = NUM_MEL_BINS
    frame_length_ms: float = 25.0
    frame_shift_ms: float = FRAME_SHIFT_MS
    dither: float = 0.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0
    snip_edges: bool = True
    energy_floor: float = 0.0
    round_to_power_of_two: bool = True
    use_log: bool = True
    use_energy: bool = False
    blackman_coeff: float = 0.42

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"FbankConfig.sample_rate must be > 0, got {self.sample_rate}")
        if self.num_mel_bins < 3:
            raise ValueError(
                f"FbankConfig.num_mel_bins must be >= 3 (Kaldi's minimum), got {self.num_mel_bins}"
            )
        if self.window not in _WINDOWS:
            raise ValueError(f"FbankConfig.window must be one of {_WINDOWS}, got {self.window!r}")
        if self.frame_length < 2 or self.frame_shift < 1:
            raise ValueError(
                f"FbankConfig: frame_length_ms={self.frame_length_ms} / "
                f"frame_shift_ms={self.frame_shift_ms} give {self.frame_length} / "
                f"{self.frame_shift} samples at {self.sample_rate} Hz; need >= 2 / >= 1"
            )
        nyquist = 0.5 * self.sample_rate
        high = self.effective_high_freq
        if not (0.0 <= self.low_freq < nyquist and self.low_freq < high <= nyquist):
            raise ValueError(
                f"FbankConfig: need 0 <= low_freq < high_freq <= nyquist ({nyquist} Hz); "
                f"got low_freq={self.low_freq}, high_freq={self.high_freq} (effective {high})"
            )
        if self.dither < 0:
            raise ValueError(f"FbankConfig.dither must be >= 0, got {self.dither}")

    @property
    def frame_length(self) -> int:
        """Window length in samples (Kaldi truncates ms * rate)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_length(self) -> int:
        n = self.frame_length
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    @property
    def effective_high_freq(self) -> float:
        return self.high_freq if self.high_freq > 0 else 0.5 * self.sample_rate + self.high_freq

    @property
    def num_features(self) -> int:
        return self.num_mel_bins + (1 if self.use_energy else 0)

    def to_dict(self) -> dict:
        return asdict(self)


def num_frames(num_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Frames Kaldi produces for ``num_samples`` samples (``NumFrames`` in feature-window.cc)."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    length, shift = cfg.frame_length, cfg.frame_shift
    if cfg.snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    return (num_samples + shift // 2) // shift


def _num_frames_tensor(lengths: torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    length, shift = cfg.frame_length, cfg.frame_shift
    if cfg.snip_edges:
        return torch.where(
            lengths < length,
            torch.zeros_like(lengths),
            1 + (lengths - length).div(shift, rounding_mode="floor"),
        )
    return (lengths + shift // 2).div(shift, rounding_mode="floor")


def feature_window(
    cfg: FbankConfig, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Kaldi's analysis window (``FeatureWindowFunction``), computed in float64."""
    n = cfg.frame_length
    i = torch.arange(n, dtype=torch.float64)
    a = 2 * math.pi / (n - 1)
    if cfg.window == "hanning":
        w = 0.5 - 0.5 * torch.cos(a * i)
    elif cfg.window == "sine":
        w = torch.sin(0.5 * a * i)
    elif cfg.window == "hamming":
        w = 0.54 - 0.46 * torch.cos(a * i)
    elif cfg.window == "povey":
        w = (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    elif cfg.window == "rectangular":
        w = torch.ones(n, dtype=torch.float64)
    else:  # blackman
        b = cfg.blackman_coeff
        w = b - 0.5 * torch.cos(a * i) + (0.5 - b) * torch.cos(2 * a * i)
    return w.to(dtype=dtype, device=device)


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def mel_banks(cfg: FbankConfig, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Kaldi's triangular mel filters as a ``(padded_length // 2, num_mel_bins)`` matrix.

    Kaldi builds the triangles on the mel axis over FFT bins 0 .. padded/2 - 1 (the Nyquist bin is
    never used), so the power spectrum is cut to that many bins before the matmul.
    """
    n_fft_bins = cfg.padded_length // 2
    bin_width = cfg.sample_rate / cfg.padded_length
    mel_low = _mel(torch.tensor(cfg.low_freq, dtype=torch.float64))
    mel_high = _mel(torch.tensor(cfg.effective_high_freq, dtype=torch.float64))
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    b = torch.arange(cfg.num_mel_bins, dtype=torch.float64)[None, :]
    left = mel_low + b * delta
    center = mel_low + (b + 1) * delta
    right = mel_low + (b + 2) * delta
    mel = _mel(bin_width * torch.arange(n_fft_bins, dtype=torch.float64))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = torch.where(mel <= center, up, down)
    w = torch.where((mel > left) & (mel < right), w, torch.zeros_like(w))
    return w.to(dtype=dtype, device=device)


def _frame_indices(lengths: torch.Tensor, n_frames: int, cfg: FbankConfig) -> torch.Tensor:
    """Sample index of every (item, frame, tap) for snip_edges=False, reflected at each item's
    own edges the way Kaldi's ``ExtractWindow`` does."""
    length, shift = cfg.frame_length, cfg.frame_shift
    device = lengths.device
    f = torch.arange(n_frames, device=device)
    first = f * shift + shift // 2 - length // 2
    idx = first[:, None] + torch.arange(length, device=device)[None, :]  # (F, L)
    # Clamp to 1 so zero-length items (whose frames are all masked) still index in range.
    n = lengths.clamp_min(1)[:, None, None]
    # Kaldi reflects one edge at a time (s < 0 -> -s-1; s >= n -> 2n-1-s) until in range; that
    # mirror image is periodic with period 2n, so one modulo gives the same index in O(1).
    m = torch.remainder(idx[None], 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _extract_frames(
    wave: torch.Tensor, lengths: torch.Tensor | None, n_frames: int, cfg: FbankConfig
) -> torch.Tensor:
    """(B, T) -> (B, F, L); F may be 0."""
    batch, total = wave.shape
    length = cfg.frame_length
    if cfg.snip_edges:
        # Frames past an item's own length read padding, but those frames are zeroed afterwards
        # and a valid frame (f*shift + L <= length) never touches padding.
        return wave.unfold(-1, length, cfg.frame_shift)[:, :n_frames]
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long, device=wave.device)
    idx = _frame_indices(lengths, n_frames, cfg)
    return torch.gather(wave, 1, idx.reshape(batch, -1)).reshape(batch, n_frames, length)


def _compute(
    wave: torch.Tensor,
    cfg: FbankConfig,
    window: torch.Tensor,
    banks: torch.Tensor,
    lengths: torch.Tensor | None,
    generator: torch.Generator | None,
    dither: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core: wave (B, T) -> (feats (B, F, D), frame_lengths (B,))."""
    batch, total = wave.shape
    n_frames = num_frames(total, cfg)
    if n_frames == 0:
        # MKL's FFT rejects empty batches, and there is nothing to compute anyway.
        frame_lengths = torch.zeros(batch, dtype=torch.long, device=wave.device)
        return wave.new_zeros(batch, 0, cfg.num_features), frame_lengths
    frames = _extract_frames(wave, lengths, n_frames, cfg)
    if dither > 0:
        noise = torch.randn(
            frames.shape, generator=generator, dtype=frames.dtype, device=frames.device
        )
        frames = frames + dither * noise
    if cfg.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if cfg.use_energy:
        # Kaldi's raw energy: after DC removal, before pre-emphasis and windowing.
        log_energy = frames.pow(2).sum(dim=-1).clamp_min(_FLT_EPSILON).log()
        if cfg.energy_floor > 0:
            log_energy = log_energy.clamp_min(math.log(cfg.energy_floor))
    if cfg.preemphasis != 0.0:
        # Kaldi: x[i] -= c * x[i-1] for i > 0 and x[0] -= c * x[0].
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - cfg.preemphasis * previous
    frames = frames * window
    spectrum = torch.fft.rfft(frames, n=cfg.padded_length, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square()
    feats = torch.matmul(power[..., : banks.shape[0]], banks)
    if cfg.use_log:
        feats = feats.clamp_min(_FLT_EPSILON).log()
    if cfg.use_energy:
        feats = torch.cat([log_energy.unsqueeze(-1), feats], dim=-1)

    if lengths is None:
        frame_lengths = torch.full((batch,), n_frames, dtype=torch.long, device=wave.device)
    else:
        frame_lengths = _num_frames_tensor(lengths, cfg)
        valid = torch.arange(n_frames, device=wave.device)[None, :] < frame_lengths[:, None]
        feats = feats * valid.unsqueeze(-1).to(feats.dtype)
    return feats, frame_lengths


def _prepare(waveform: torch.Tensor, lengths) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(
            f"fbank expects a torch.Tensor waveform, got {type(waveform).__name__}; "
            "use fbank_numpy for numpy arrays"
        )
    if waveform.dim() not in (1, 2):
        raise ValueError(
            f"fbank expects a (T,) or (B, T) waveform, got shape {tuple(waveform.shape)}"
        )
    unbatched = waveform.dim() == 1
    wave = waveform.unsqueeze(0) if unbatched else waveform
    if not wave.is_floating_point():
        wave = wave.float()
    if lengths is not None:
        if unbatched:
            raise ValueError(
                "fbank: lengths is only for batched (B, T) input; slice a 1-D waveform instead"
            )
        lengths = torch.as_tensor(lengths, device=wave.device).long()
        if lengths.shape != (wave.shape[0],):
            raise ValueError(
                f"fbank: lengths must have shape ({wave.shape[0]},), got {tuple(lengths.shape)}"
            )
        if bool(((lengths < 0) | (lengths > wave.shape[1])).any()):
            raise ValueError(
                f"fbank: every length must be in [0, {wave.shape[1]}] (the padded width), "
                f"got {lengths.tolist()}"
            )
    return wave, lengths, unbatched


def fbank(
    waveform: torch.Tensor,
    cfg: FbankConfig = FbankConfig(),
    *,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi fbank of an int16-scale waveform.

    ``(T,) -> (frames, D)``, ``(B, T) -> (B, frames, D)``.

    ``frames = num_frames(T, cfg)`` depends only on the input width, so batched output shapes are
    static; with ``lengths`` (B,), frames at or past ``num_frames(lengths[b])`` are zero. Computed
    in the waveform's float dtype (float32 for integer input) on the waveform's device.
    ``generator`` drives the dither noise (must live on the same device).
    """
    wave, lengths, unbatched = _prepare(waveform, lengths)
    window = feature_window(cfg, wave.dtype, wave.device)
    banks = mel_banks(cfg, wave.dtype, wave.device)
    feats, _ = _compute(wave, cfg, window, banks, lengths, generator, cfg.dither)
    return feats[0] if unbatched else feats


class Fbank(torch.nn.Module):
    """Fbank as a module, with the window and mel matrix as (non-persistent) buffers so that
    ``.to(device)`` moves them and ``state_dict`` stays free of derived constants.

    Dither (``cfg.dither``) is applied in training mode only, like dropout: ``.eval()`` gives
    deterministic features. ``mean_norm=True`` subtracts each utterance's mean over its valid
    frames (padding frames stay zero) — the CMN used by WeSpeaker/SpeechBrain speaker models.
    """

    window: torch.Tensor
    banks: torch.Tensor

    def __init__(self, cfg: FbankConfig = FbankConfig(), *, mean_norm: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.mean_norm = mean_norm
        self.register_buffer("window", feature_window(cfg), persistent=False)
        self.register_buffer("banks", mel_banks(cfg), persistent=False)

    def forward(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T,) -> ((F, D), frame_lengths ())``; ``(B, T) -> ((B, F, D), frame_lengths (B,))``."""
        x, lengths, unbatched = _prepare(wave, lengths)
        x = x.to(self.window.device)
        if lengths is not None:
            lengths = lengths.to(self.window.device)
        window = self.window.to(x.dtype)
        banks = self.banks.to(x.dtype)
        dither = self.cfg.dither if self.training else 0.0
        feats, frame_lengths = _compute(x, self.cfg, window, banks, lengths, generator, dither)
        if self.mean_norm:
            feats = _masked_mean_norm(feats, frame_lengths)
        if unbatched:
            return feats[0], frame_lengths[0]
        return feats, frame_lengths

    def extra_repr(self) -> str:
        cfg = self.cfg
        return f"num_mel_bins={cfg.num_mel_bins}, sample_rate={cfg.sample_rate}, " + (
            f"mean_norm={self.mean_norm}"
        )


def _masked_mean_norm(feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    valid = (
        torch.arange(feats.shape[1], device=feats.device)[None, :] < frame_lengths[:, None]
    ).unsqueeze(-1)
    valid = valid.to(feats.dtype)
    count = frame_lengths.clamp_min(1).to(feats.dtype)[:, None, None]
    mean = (feats * valid).sum(dim=1, keepdim=True) / count
    return (feats - mean) * valid


def fbank_numpy(pcm_int16: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Features for shards: int16 (or int16-scale float) 1-D PCM -> float16 ``(frames, D)``.

    float16 keeps ~3 significant digits; log-mels lie in about [-16, 35], so the storage error is
    at most ~0.016 (half an ulp at 32), well under the dither noise used in training.
    """
    x = np.asarray(pcm_int16)
    if x.ndim != 1:
        raise ValueError(
            f"fbank_numpy expects 1-D mono PCM, got shape {x.shape}; "
            "downmix first (audio.preprocess)"
        )
    wave = torch.from_numpy(x.astype(np.float32, copy=False))
    with torch.no_grad():
        feats = fbank(wave, cfg)
    return feats.numpy().astype(np.float16)
