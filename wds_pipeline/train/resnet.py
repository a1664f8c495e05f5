"""ResNet34 speaker model in WeSpeaker's configuration, over on-device fbank.

The fbank (80 bins x T frames) as a one-channel image: a 3x3 Conv2D of 32 channels (BN,
ReLU), then four stages of BasicBlocks (two 3x3 convolutions each, residual; a 1x1
projection where the shape changes) with [3, 4, 6, 3] blocks of 32, 64, 128 and 256 channels,
stride 2 (frequency and time) at the start of stages 2-4; no max-pooling. Statistics pooling:
the last stage (256 channels x 10 bins) flattened over frequency, its mean and standard
deviation over time (5120 values), then one linear layer to the 256-d embedding.
``classifier`` (linear, or the trainer's cosine classifier for AAM-softmax) is the head.

Parameter count of the embedding network (80 bins, 256-d): published 6.63 M (WeSpeaker's
VoxCeleb v2 results, ResNet34-TSTP-emb256); this implementation has 6,634,336
(``tests/test_sv_models.py`` checks it within 5%).

Padding: the input of every 3x3 convolution is zero past a row's length (at each stage's
time resolution) and the pooling runs over the valid frames, so an utterance's embedding does
not depend on the batch it is padded into (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import FbankModel, frame_mask, masked_mean_std


def _halved(frames: torch.Tensor) -> torch.Tensor:
    """Valid frames after a stride-2 3x3 convolution padded by 1: ceil(frames / 2)."""
    return (frames + 1) // 2


def _masked(x: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
    """``x`` (B, C, F, T) with the time frames past each row's length zeroed; ``frames`` None:
    no row is padded, ``x`` as it is."""
    return x if frames is None else x * frame_mask(frames, x.shape[-1], x.dtype)[:, None, None, :]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.stride = stride

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, frames)`` -> the block's output and its valid frames (None: no row padded)."""
        out_frames = _halved(frames) if self.stride == 2 and frames is not None else frames
        h = F.relu(self.bn1(self.conv1(_masked(x, frames))))
        h = self.bn2(self.conv2(_masked(h, out_frames)))
        # The 1x1 shortcut reads frame 2t for output t: valid wherever t is.
        return F.relu(h + self.shortcut(x)), out_frames


class ResNetSpeaker(FbankModel):
    def __init__(self, num_classes: int, *, layers: tuple[int, ...] = (3, 4, 6, 3), sample_rate: int = 16000,
                 num_mel_bins: int = 80, base_channels: int = 32, embedding_dim: int = 256,
                 dither: float = 1.0) -> None:
        super().__init__(num_classes, sample_rate=sample_rate, num_mel_bins=num_mel_bins, dither=dither)
        self.conv1 = nn.Conv2d(1, base_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        blocks: list[BasicBlock] = []
        cin = base_channels
        for stage, count in enumerate(layers):
            cout = base_channels * 2 ** stage
            for i in range(count):
                blocks.append(BasicBlock(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        bins = num_mel_bins
        for _ in layers[1:]:
            bins = (bins + 1) // 2  # frequency halves with time at each strided stage
        self.embedding = nn.Linear(2 * cin * bins, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, frames = self.features(waveform, lengths)
        # (B, 1, F, T); fbank frames past a row's length are already zero.
        h = F.relu(self.bn1(self.conv1(feats.transpose(1, 2).unsqueeze(1))))
        # One check (a device sync) per batch; none of the masks where no row is padded
        # (fixed-length training crops).
        valid: torch.Tensor | None = frames if bool((frames < feats.shape[1]).any()) else None
        for block in self.blocks:
            h, valid = block(h, valid)
        stats = masked_mean_std(h.flatten(1, 2).float(),  # float32 statistics under any autocast
                                valid if valid is not None else torch.full_like(frames, h.shape[-1]))
        return self.embedding(stats)


def resnet34(num_classes: int, sample_rate: int = 16000, *, base_channels: int = 32, embedding_dim: int = 256,
             num_mel_bins: int = 80, dither: float = 1.0) -> ResNetSpeaker:
    """``model.factory: wds_pipeline.train.resnet:resnet34``: WeSpeaker's ResNet34 (6.6 M
    parameters at ``base_channels=32``; smaller widths for tests)."""
    return ResNetSpeaker(num_classes, layers=(3, 4, 6, 3), sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                         base_channels=base_channels, embedding_dim=embedding_dim, dither=dither)


__all__ = ["BasicBlock", "ResNetSpeaker", "resnet34"]
