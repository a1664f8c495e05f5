"""A compact speaker/keyword model over on-device log-mel fbank.

``speaker_tdnn`` is the default ``model.factory``: 80-bin Kaldi fbank computed from the
waveform batch on the model's device (``features.Fbank``, mean-normalised), a small
x-vector style TDNN, masked statistics pooling, an embedding layer and a linear classifier.
Any factory with the same call signature can replace it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..features import Fbank, FbankConfig

INT16_SCALE = 32768.0


class SpeakerTDNN(nn.Module):
    def __init__(self, num_classes: int, *, sample_rate: int = 16000, num_mel_bins: int = 80,
                 channels: int = 256, embed_dim: int = 128, dither: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}; does the index have labels?")
        self.fbank = Fbank(FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins, dither=dither),
                           mean_norm=True)

        def block(cin: int, cout: int, k: int, d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2),
                                 nn.ReLU(), nn.BatchNorm1d(cout))

        self.encoder = nn.Sequential(block(num_mel_bins, channels, 5, 1), block(channels, channels, 3, 2),
                                     block(channels, channels, 3, 3), block(channels, 2 * channels, 1, 1))
        self.embedding = nn.Sequential(nn.Linear(4 * channels, embed_dim), nn.BatchNorm1d(embed_dim))
        self.classifier = nn.Linear(embed_dim, num_classes)

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Fbank wants int16-scale samples; the loader gives int16 or float32 in [-1, 1].
        x = waveform.float()
        if waveform.is_floating_point():
            x = x * INT16_SCALE
        # Log-mel in float32 whatever the autocast context: log of small energies.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.fbank(x, lengths)

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, frames = self.features(waveform, lengths)
        h = self.encoder(feats.transpose(1, 2))  # (B, C, F)
        valid = (torch.arange(h.shape[-1], device=h.device)[None, :] < frames[:, None]).to(h.dtype)
        count = valid.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (h * valid[:, None, :]).sum(-1) / count
        var = (((h - mean[..., None]) ** 2) * valid[:, None, :]).sum(-1) / count
        stats = torch.cat([mean, var.clamp_min(1e-5).sqrt()], dim=1)
        return self.embedding(stats)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(waveform, lengths))


def speaker_tdnn(num_classes: int, sample_rate: int = 16000, **options) -> SpeakerTDNN:
    """The default ``model.factory``; options: num_mel_bins, channels, embed_dim, dither."""
    return SpeakerTDNN(num_classes, sample_rate=sample_rate, **options)


