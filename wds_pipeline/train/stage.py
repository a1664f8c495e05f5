"""The trainer's device stage: the batch transforms (the ``augment`` block's, then
``batch_transforms``) with their banks bound, and the feature transforms the model runs on
its fbank through its ``feature_hook`` (:mod:`.models`).

Every random number is a counter-based draw keyed per row by (run seed, epoch, position,
the row's global sample id) (:mod:`..transforms.keyed`): the batch transforms take positions
0..n-1 (``BatchChain``), the feature transforms the positions after them, so a sample gets the
same augmentation with any number of loader workers, after a resume and on any rank, and no
state is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..loader import LoaderConfig
from ..transforms import TransformSpec
from ..transforms.batch import FEATURE_TRANSFORMS, BatchChain, DeviceBatch
from ..transforms.keyed import RowRandom, row_random
from .augment import AugmentConfig
from .banks import BankSet
from .models import FeatureHook

FeatureTransform = Callable[[torch.Tensor, torch.Tensor, RowRandom], torch.Tensor]


class DeviceStage:
    """``stage(batch, epoch=, index=)`` runs the batch transforms; ``stage.feature_hook(epoch,
    index, ids)`` is the hook through which the model's forward runs the feature transforms."""

    def __init__(self, augment: AugmentConfig | None, batch_transforms: tuple[TransformSpec, ...], *,
                 loader: LoaderConfig, sample_rate: int, seed: int, rank: int, device: torch.device) -> None:
        specs = augment.specs() if augment is not None else None
        batch_specs = (specs.batch if specs else ()) + tuple(batch_transforms)
        self.chain = (BatchChain(batch_specs, seed=seed, rank=rank, device=device) if batch_specs else None)
        self.banks = (BankSet(augment, loader, sample_rate=sample_rate, seed=seed, device=device)
                      if self.chain is not None and augment is not None else None)
        if self.banks is not None:
            self.banks.bind(self.chain)
        feature_specs = specs.feature if specs else ()
        self.feature_transforms: tuple[FeatureTransform, ...] = FEATURE_TRANSFORMS.build_all(
            feature_specs, "augment")
        self.first_feature_position = len(batch_specs)
        self.seed, self.rank = seed, rank

    def __call__(self, batch: DeviceBatch, *, epoch: int, index: int) -> DeviceBatch:
        return batch if self.chain is None else self.chain(batch, epoch=epoch, index=index)

    def refresh(self, epoch: int, index: int) -> None:
        """Before batch ``index`` of ``epoch``: the banks that batch uses (a corpus larger than
        ``augment.bank_bytes`` holds a new subset per segment, see :mod:`.banks`)."""
        if self.banks is not None:
            self.banks.refresh(self.chain, epoch, index)

    def check_model(self, model: nn.Module, factory: str) -> None:
        if self.feature_transforms and not hasattr(model, "feature_hook"):
            raise ConfigError(f"augment.spec_augment: the model of {factory} has no feature_hook, so the fbank it "
                              "computes cannot be augmented; drop spec_augment or give the model a feature_hook "
                              "(see wds_pipeline.train.models)")

    def feature_hook(self, epoch: int, index: int, ids: torch.Tensor | None = None) -> FeatureHook | None:
        """The feature transforms of batch ``index`` of ``epoch``, whose rows are the samples
        ``ids`` (``DeviceBatch.ids``), as a model's hook."""
        if not self.feature_transforms:
            return None

        def hook(features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
            for i, transform in enumerate(self.feature_transforms):
                rng = row_random(self.seed, epoch, self.first_feature_position + i, ids, index=index,
                                 rank=self.rank, rows=features.shape[0], device=features.device)
                features = transform(features, frames, rng)
            return features

        return hook


def set_feature_hook(model: Any, hook: FeatureHook | None) -> None:
    """Set (or clear, with None) the model's hook, when it has one."""
    if hasattr(model, "feature_hook"):
        model.feature_hook = hook
