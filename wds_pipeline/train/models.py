"""A compact speaker/keyword model over on-device log-mel fbank, and what the speaker models share.

``speaker_tdnn`` is the default ``model.factory``: 80-bin Kaldi fbank computed from the
waveform batch on the model's device (``features.Fbank``, mean-normalised), a small
x-vector style TDNN, masked statistics pooling, an embedding layer and a linear classifier.
Any factory with the same call signature can replace it; the speaker-verification models
``wds_pipeline.train.ecapa:ecapa_tdnn`` and ``wds_pipeline.train.resnet:resnet34`` do, on
the same base (:class:`FbankModel`: the fbank front end, ``embed``, ``classifier``).

The feature hook: a model that computes fbank on the device may run the trainer's feature
transforms (SpecAugment) on it by calling its ``feature_hook`` (an attribute, ``None`` when
no feature transform is configured; the trainer sets it per training batch) on
``(features, frames)`` while training, as :meth:`SpeakerTDNN.features` does. A model without
the attribute cannot take ``augment.spec_augment`` (the trainer says so).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..features import Fbank, FbankConfig

INT16_SCALE = 32768.0

# (features (B, T, F), frames (B,)) -> features: the trainer's feature transforms of one batch.
FeatureHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FbankModel(nn.Module):
    """The base of the speaker models: the waveform batch -> mean-normalised Kaldi fbank on the
    model's device (with the feature hook), ``embed`` (each model's) and a ``classifier`` on the
    embedding, so ``forward`` gives logits (or cosines, once the trainer puts a cosine
    classifier there for AAM-softmax, see :mod:`.losses`)."""

    classifier: nn.Module

    def __init__(self, num_classes: int, *, sample_rate: int, num_mel_bins: int, dither: float) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}; does the index have labels?")
        self.fbank = Fbank(FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins, dither=dither),
                           mean_norm=True)
        self.feature_hook: FeatureHook | None = None  # see the module's docstring

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fbank (B, T, F), frames (B,))``; frames past a row's length are zero."""
        # Fbank wants int16-scale samples; the loader gives int16 or float32 in [-1, 1].
        x = waveform.float()
        if waveform.is_floating_point():
            x = x * INT16_SCALE
        # Log-mel in float32 whatever the autocast context: log of small energies.
        with torch.autocast(device_type=x.device.type, enabled=False):
            feats, frames = self.fbank(x, lengths)
            if self.training and self.feature_hook is not None:
                feats = self.feature_hook(feats, frames)
            return feats, frames

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(waveform, lengths))


def frame_mask(frames: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, length)``: 1 on each row's first ``frames`` frames, 0 on its padding."""
    return (torch.arange(length, device=frames.device)[None, :] < frames[:, None]).to(dtype)


def masked_mean_std(h: torch.Tensor, frames: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Statistics pooling over the last (time) axis of ``h`` ``(B, C, T)``, over each row's
    valid frames only: ``(B, 2C)`` = mean and standard deviation (variance floored at ``eps``),
    so a row's statistics do not depend on how far its batch is padded."""
    valid = frame_mask(frames, h.shape[-1], h.dtype)
    count = valid.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (h * valid[:, None, :]).sum(-1) / count
    var = (((h - mean[..., None]) ** 2) * valid[:, None, :]).sum(-1) / count
    return torch.cat([mean, var.clamp_min(eps).sqrt()], dim=1)


class SpeakerTDNN(FbankModel):
    def __init__(self, num_classes: int, *, sample_rate: int = 16000, num_mel_bins: int = 80,
                 channels: int = 256, embed_dim: int = 128, dither: float = 1.0) -> None:
        super().__init__(num_classes, sample_rate=sample_rate, num_mel_bins=num_mel_bins, dither=dither)

        def block(cin: int, cout: int, k: int, d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2),
                                 nn.ReLU(), nn.BatchNorm1d(cout))

        self.encoder = nn.Sequential(block(num_mel_bins, channels, 5, 1), block(channels, channels, 3, 2),
                                     block(channels, channels, 3, 3), block(channels, 2 * channels, 1, 1))
        self.embedding = nn.Sequential(nn.Linear(4 * channels, embed_dim), nn.BatchNorm1d(embed_dim))
        self.classifier = nn.Linear(embed_dim, num_classes)

    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, frames = self.features(waveform, lengths)
        h = self.encoder(feats.transpose(1, 2))  # (B, C, F)
        return self.embedding(masked_mean_std(h, frames))


def speaker_tdnn(num_classes: int, sample_rate: int = 16000, *, num_mel_bins: int = 80,
                 channels: int = 256, embed_dim: int = 128, dither: float = 1.0) -> SpeakerTDNN:
    """The default ``model.factory``. Its options are named here, not passed on as
    ``**options``, so a misspelt ``model.chanels`` is refused with the valid names."""
    return SpeakerTDNN(num_classes, sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                       channels=channels, embed_dim=embed_dim, dither=dither)


# The arguments the trainer passes itself: no model option may set them.
FACTORY_ARGUMENTS = ("num_classes", "sample_rate")


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """``"package.module:function"`` -> the function; a ConfigError naming model.factory."""
    from ..errors import ConfigError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.factory {spec!r} cannot be loaded ({e}); give 'package.module:function'") \
            from None
    if not callable(fn):
        raise ConfigError(f"model.factory {spec!r} is not callable")
    return fn


def unknown_model_option(fn: Callable[..., Any], options: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The first option ``fn`` does not take and the names it does, or None (all taken, or
    ``fn`` takes ``**kwargs`` and only calling it can tell)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    valid = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)
             and p.name not in FACTORY_ARGUMENTS]
    unknown = sorted(k for k in options if k not in valid or k in FACTORY_ARGUMENTS)
    return (unknown[0], valid) if unknown else None


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def build_model(spec: str, options: dict[str, Any], *, num_classes: int, sample_rate: int,
                where: str = "") -> nn.Module:
    """Call the factory; an option it does not take is a ConfigError naming ``model.<key>``
    (and ``where``, the config file), not a TypeError traceback from inside the model."""
    from ..errors import ConfigError

    fn = load_factory(spec)
    prefix = f"{where}: " if where else ""
    bad = unknown_model_option(fn, options)
    if bad is not None:
        raise ConfigError(f"{prefix}model.{bad[0]}: not an option of {spec}; valid options: "
                          + (", ".join(bad[1]) or "none"))
    try:
        return fn(num_classes=num_classes, sample_rate=sample_rate, **options)
    except TypeError as e:  # a factory taking **kwargs passes them on to a class that refuses one
        m = _UNEXPECTED.search(str(e))
        if m is None or m.group(1) not in options:
            raise
        raise ConfigError(f"{prefix}model.{m.group(1)}: not an option of {spec} ({e})") from None




def state_dict_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why weights ``saved`` cannot be loaded where ``current`` is (other names or shapes),
    or None when they can."""
    missing, extra = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing or extra:
        return (f"{len(missing)} missing and {len(extra)} unexpected parameters, e.g. "
                f"{(missing or extra)[0]!r}")
    for name, tensor in current.items():
        old = tuple(getattr(saved[name], "shape", ()))
        if old != tuple(tensor.shape):
            return f"{name} has shape {list(old)} in the checkpoint, {list(tensor.shape)} here"
    return None


def unloadable_weights(saved: dict[str, Any], current: dict[str, Any], *, where: str,
                       classes: tuple[int, int]) -> str | None:
    """A one-line error when checkpoint weights ``saved`` (from ``where``) cannot be loaded into
    a model whose state is ``current``; ``classes``: (the checkpoint's, the data's) counts."""
    problem = state_dict_mismatch(saved, current)
    if problem is None:
        return None
    old, new = classes
    if old != new:
        return (f"{where}: the checkpoint's model has {old} classes but the training data has {new}: "
                "its weights cannot be loaded, even with --force; point checkpoint.dir elsewhere to "
                "train a new model")
    return (f"{where}: the checkpoint's weights do not fit this model ({problem}); resume with the "
            "model options it was trained with, or point checkpoint.dir elsewhere")
