"""ECAPA-TDNN (Desplanques, Thienpondt, Demuynck, Interspeech 2020), over on-device fbank.

As in the paper (Fig. 1): a Conv1D(k=5)+ReLU+BN layer of ``channels``; three SE-Res2Blocks
(k=3, dilations 2, 3, 4, Res2Net scale 8, squeeze-excitation bottleneck 128); multi-layer
feature aggregation (the three blocks' outputs concatenated, a 1x1 Conv1D to 1536 channels,
ReLU: the paper's width for both C; ``mfa_channels`` changes it, and below C=512 it defaults
to 3*C so that small test models stay small); attentive statistics pooling with global context (each frame's attention sees the
utterance's mean and standard deviation too; bottleneck 128) and BN; FC to a 192-d embedding
and BN. ``classifier`` (a linear layer, or the trainer's cosine classifier for AAM-softmax)
is the head, not counted below.

Parameter counts of the embedding network (80 fbank bins, 192-d): published 6.2 M for
``channels=512`` and 14.7 M for ``channels=1024`` (the paper's Table 2; WeSpeaker lists
6.19 M and 14.65 M); this implementation has 6,191,104 and 14,657,472
(``tests/test_sv_models.py`` checks both within 5%).

Padding: every sum over time (the SE squeeze, both poolings) runs over a row's valid frames,
and the input of every convolution wider than one frame is zero past a row's length, so an
utterance's embedding does not depend on the batch it is padded into (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from .models import FbankModel, frame_mask, masked_mean_std


def _conv_relu_bn(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
                         nn.ReLU(), nn.BatchNorm1d(cout))


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask[:, None, :]


class Res2Conv(nn.Module):
    """Res2Net's hierarchical convolution: the channels in ``scale`` groups, each group's
    k=3 dilated convolution taking the previous group's output added to its own input; the
    last group passes through."""

    def __init__(self, channels: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"model.channels must be a multiple of the Res2Net scale {scale}, got {channels}")
        self.width = channels // scale
        self.convs = nn.ModuleList(_conv_relu_bn(self.width, self.width, 3, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        out: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            y = groups[i] if i == 0 else out[-1] + groups[i]
            out.append(conv(_masked(y, mask)))  # zero past the length: the conv reads its neighbours
        return torch.cat([*out, groups[-1]], dim=1)


class SERes2Block(nn.Module):
    """1x1 Conv, Res2 dilated conv, 1x1 Conv (each ReLU+BN), squeeze-excitation, residual."""

    def __init__(self, channels: int, dilation: int, *, scale: int = 8, se_bottleneck: int = 128) -> None:
        super().__init__()
        self.conv_in = _conv_relu_bn(channels, channels)
        self.res2 = Res2Conv(channels, dilation, scale)
        self.conv_out = _conv_relu_bn(channels, channels)
        self.se = nn.Sequential(nn.Linear(channels, se_bottleneck), nn.ReLU(), nn.Linear(se_bottleneck, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.conv_out(self.res2(self.conv_in(x), mask))
        squeeze = h.mean(-1) if mask is None else (h * mask[:, None, :]).sum(-1) / frames[:, None].clamp_min(1)
        return x + h * self.se(squeeze)[..., None]


class AttentiveStatsPooling(nn.Module):
    """Channel- and context-dependent attentive statistics pooling: per channel and frame an
    attention weight from (the frame, the utterance's mean, its standard deviation), softmax
    over the valid frames, then the weighted mean and standard deviation: ``(B, 2C)``."""

    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(3 * channels, bottleneck, 1), nn.Tanh(),
                                       nn.Conv1d(bottleneck, channels, 1))

    def forward(self, h: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 under any autocast: E[h^2] - mean^2 cancels badly in bf16.
        h = h.float()
        length = h.shape[-1]
        context = masked_mean_std(h, frames).unsqueeze(-1).expand(-1, -1, length)  # (B, 2C, T)
        scores = self.attention(torch.cat([h, context], dim=1))
        padding = (torch.arange(length, device=h.device)[None, :] >= frames[:, None])[:, None, :]
        alpha = torch.softmax(scores.float().masked_fill(padding, float("-inf")), dim=-1)
        mean = (alpha * h).sum(-1)
        var = (alpha * h * h).sum(-1) - mean * mean
        return torch.cat([mean, var.clamp_min(1e-5).sqrt()], dim=1)


class ECAPATDNN(FbankModel):
    def __init__(self, num_classes: int, *, sample_rate: int = 16000, num_mel_bins: int = 80,
                 channels: int = 512, embedding_dim: int = 192, mfa_channels: int | None = None,
                 dither: float = 1.0) -> None:
        super().__init__(num_classes, sample_rate=sample_rate, num_mel_bins=num_mel_bins, dither=dither)
        mfa = mfa_channels or 3 * min(channels, 512)
        self.layer1 = _conv_relu_bn(num_mel_bins, channels, 5)
        self.blocks = nn.ModuleList(SERes2Block(channels, d) for d in (2, 3, 4))
        self.aggregate = nn.Sequential(nn.Conv1d(3 * channels, mfa, 1), nn.ReLU())
        self.pooling = AttentiveStatsPooling(mfa)
        self.pooling_bn = nn.BatchNorm1d(2 * mfa)
        self.embedding = nn.Sequential(nn.Linear(2 * mfa, embedding_dim), nn.BatchNorm1d(embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, frames = self.features(waveform, lengths)
        x = feats.transpose(1, 2)  # (B, F, T); fbank frames past a row's length are zero
        # No mask where no row is padded (fixed-length training crops): no extra work.
        mask = frame_mask(frames, x.shape[-1], x.dtype) if bool((frames < x.shape[-1]).any()) else None
        h = self.layer1(x)
        outputs = []
        for block in self.blocks:
            h = block(h, frames, mask)
            outputs.append(h)
        h = self.aggregate(torch.cat(outputs, dim=1))
        return self.embedding(self.pooling_bn(self.pooling(h, frames)))


def ecapa_tdnn(num_classes: int, sample_rate: int = 16000, *, channels: int = 512, embedding_dim: int = 192,
               mfa_channels: int | None = None, num_mel_bins: int = 80, dither: float = 1.0) -> ECAPATDNN:
    """``model.factory: wds_pipeline.train.ecapa:ecapa_tdnn``; ``channels`` 512 (6.2 M
    parameters) or 1024 (14.7 M); any multiple of 8 works (small ones for tests)."""
    return ECAPATDNN(num_classes, sample_rate=sample_rate, num_mel_bins=num_mel_bins, channels=channels,
                     embedding_dim=embedding_dim, mfa_channels=mfa_channels, dither=dither)


__all__ = ["ECAPATDNN", "AttentiveStatsPooling", "SERes2Block", "ecapa_tdnn"]
