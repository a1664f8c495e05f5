"""The training loss of the ``loss`` block (:class:`.config.LossConfig`): cross-entropy on the
model's logits (the default, as before the block existed), or AAM-softmax.

AAM-softmax (ArcFace, Deng et al. 2019; WeSpeaker's ``ArcMarginProduct``): the model's
linear ``classifier`` is replaced by a :class:`CosineClassifier` (normalised embedding times
normalised class weights: cosines), so ``forward`` gives cosines, validation's argmax still
picks the nearest class, and the head's weights are the ``classifier.weight`` entry of the
model's state dict (checkpointed and resumed with the rest). The loss turns each row's target
cosine cos(theta) into cos(theta + m), scales every cosine by s and takes cross-entropy.
Where theta + m would pass pi (cos(theta) <= cos(pi - m)), cos(theta + m) would grow again;
there the target gets cos(theta) - (1 + cos(pi - m)) instead, WeSpeaker's continuous fallback
(equal to -1 = cos(pi) at the threshold; the original ArcFace subtracts m sin(m), which jumps),
or, with ``easy_margin``, keeps cos(theta) wherever cos(theta) <= 0.

The margin's warm-up (:func:`margin_at`) is a pure function of (epoch, fraction of the
epoch), so a resumed run uses the margins the uninterrupted one used, with nothing saved.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import LossConfig

__all__ = ["CosineClassifier", "Criterion", "aam_logits", "margin_at"]

# WeSpeaker's exponential increase ends at 1 - 1e-3 of the way, then the margin is fixed.
_EXP_FINAL = 1e-3


def margin_at(cfg: LossConfig, epoch: int, fraction: float) -> float:
    """The AAM margin at ``fraction`` (0 <= fraction < 1, batches done / batches of the
    epoch) through ``epoch`` (0-based): 0 for ``margin_hold_epochs``, then rising to
    ``margin`` over ``margin_warmup_epochs`` (linearly, or ``exp``: 1 - 1e-3 ** progress,
    WeSpeaker's curve), then ``margin``."""
    t = epoch + fraction - cfg.margin_hold_epochs
    if t < 0:
        return 0.0
    if t >= cfg.margin_warmup_epochs:
        return cfg.margin
    progress = t / cfg.margin_warmup_epochs
    if cfg.margin_increase == "exp":
        progress = 1.0 - math.exp(progress * math.log(_EXP_FINAL))
    return cfg.margin * progress


def aam_logits(cosine: torch.Tensor, labels: torch.Tensor, *, scale: float, margin: float,
               easy_margin: bool = False) -> torch.Tensor:
    """``scale * cosine`` with each row's target column (``labels``) given the additive angular
    margin (see the module's docstring); computed in float32."""
    cosine = cosine.float().clamp(-1.0, 1.0)
    target = cosine.gather(1, labels[:, None])
    # Floored above 0: sqrt's gradient at exactly |cos| = 1 would be infinite.
    sine = (1.0 - target * target).clamp_min(1e-12).sqrt()
    phi = target * math.cos(margin) - sine * math.sin(margin)  # cos(theta + m)
    if easy_margin:
        phi = torch.where(target > 0, phi, target)
    else:
        threshold = math.cos(math.pi - margin)
        phi = torch.where(target > threshold, phi, target - (1.0 + threshold))
    return scale * cosine.scatter(1, labels[:, None], phi)


class CosineClassifier(nn.Module):
    """Cosines between the embeddings and one learnt weight vector per class (both
    normalised), in float32 whatever the autocast: the margin acts on differences of cosines."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            return F.linear(F.normalize(embedding.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))


class Criterion:
    """The ``loss`` block's loss: ``criterion(outputs, labels, epoch=, fraction=)`` on the rows
    to learn from; ``adapt(model, factory)`` gives the model the head the loss needs."""

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def adapt(self, model: nn.Module, factory: str) -> nn.Module:
        """For ``aam``: the model with its linear ``classifier`` replaced by a cosine one (same
        sizes); for ``ce``: the model as built."""
        if self.cfg.name == "ce":
            return model
        head = getattr(model, "classifier", None)
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"loss.name=aam: the model of {factory} has no linear `classifier` on its embedding "
                              "to make a cosine classifier of; use loss.name=ce, or a model built on "
                              "wds_pipeline.train.models.FbankModel")
        model.classifier = CosineClassifier(head.in_features, head.out_features).to(head.weight.device)
        return model

    def margin(self, epoch: int, fraction: float) -> float:
        return margin_at(self.cfg, epoch, fraction)

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor, *, epoch: int, fraction: float) -> torch.Tensor:
        if self.cfg.name == "ce":
            return F.cross_entropy(outputs.float(), labels)
        logits = aam_logits(outputs, labels, scale=self.cfg.scale, margin=self.margin(epoch, fraction),
                            easy_margin=self.cfg.easy_margin)
        return F.cross_entropy(logits, labels)

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """For the epoch's metrics record: ``aam_margin``, the margin reached at its end."""
        return {} if self.cfg.name == "ce" else {"aam_margin": self.margin(epoch, 1.0)}
