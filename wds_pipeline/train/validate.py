"""Validation: closed-set accuracy on held-out utterances of the training classes, and the
speaker-verification figures (EER, minDCF at each of :data:`..sv.score.P_TARGETS`, 0.01 and
0.05), computed by :func:`..sv.score.figures` as ``wds-pipeline score`` computes them, on the
trial lists an index carries (VoxCeleb's ``veri_test2.txt``, ``list_test_hard2.txt``).

Names: ``valid_eer``, ``valid_min_dcf_0.01``, ``valid_min_dcf_0.05`` and ``valid_trials`` over
every trial of every list (the one list's figures when there is one); with more than one
list, each list's own as ``valid_eer/<list>`` etc. (``<index name>/<list>`` when two indexes
carry a list of one name). ``checkpoint.metric`` may name any of them (mode min)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..index import DatasetIndex, load_index
from ..loader import Batch, StreamingLoader
from ..sv.score import figures
from ..sv.trials import trial_key
from ..transforms.batch import DeviceBatch

if TYPE_CHECKING:
    from .config import TrainConfig
    from .stage import DeviceStage

# The seed of data.valid_noisy's draws (per sample): the same noisy copy for every run.
VALID_NOISY_SEED = 0


def speed_copy_of(name: str) -> str:
    """``id10001@sp0.9`` (a speed copy as a class) -> ``id10001``; any other name -> itself."""
    base, sep, factor = name.rpartition("@sp")
    try:
        float(factor)
    except ValueError:
        return name
    return base if sep and base else name


def valid_crop_seconds(index: DatasetIndex, limit: float | None) -> float | None:
    """The crop of validation batches: ``limit`` (``data.valid_max_seconds``) only where a clip
    of ``index`` is longer (a crop pads every batch to its length)."""
    # One numpy max per shard over its frame counts (the int64 arrays of an index loaded with
    # arrays=True, a sidecar's included): no Python int per sample at 1.1 M samples.
    longest = max((int(np.max(s.sample_frames, initial=0)) for s in index.shards), default=0)
    return limit if limit and longest > limit * index.sample_rate else None


class _Scores:
    """What one view of the validation data (clean, or its noisy copy) adds up."""

    def __init__(self) -> None:
        self.correct = self.counted = 0
        self.embeddings: dict[str, torch.Tensor] = {}
        self.lists: dict[str, tuple[list[float], list[int]]] = {}  # list name -> (scores, targets)

    def metrics(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.counted:
            out[f"{prefix}_accuracy"] = self.correct / self.counted
        out.update(trial_metrics(prefix, self.lists))
        return out


def trial_metrics(prefix: str, lists: dict[str, tuple[list[float], list[int]]]) -> dict[str, float]:
    """EER, minDCF and trial count over every trial of ``lists`` pooled (``<prefix>_eer``, ...),
    and with more than one list each list's own (``<prefix>_eer/<list>``, ...); a set without
    both target and non-target trials has no figures."""
    sets = {"": ([s for v in lists.values() for s in v[0]], [t for v in lists.values() for t in v[1]])}
    if len(lists) > 1:
        sets.update({f"/{name}": v for name, v in lists.items()})
    out: dict[str, float] = {}
    for suffix, (scores, targets) in sets.items():
        if not 0 < sum(targets) < len(targets):
            continue
        values, _det = figures(np.array(scores), np.array(targets))  # wds-pipeline score's figures
        out.update({f"{prefix}_{name}{suffix}": v for name, v in values.items()})
        out[f"{prefix}_trials{suffix}"] = float(len(targets))
    return out


@torch.no_grad()
def validate(model: nn.Module, cfg: TrainConfig, label_names: Sequence[str], device: torch.device,
             amp_dtype: torch.dtype | None, noisy: DeviceStage | None = None) -> dict[str, float]:
    """``valid_accuracy`` over samples whose class the model was trained on, ``valid_eer`` and
    ``valid_min_dcf_*`` over the trial lists of the validation indexes (cosine scores of
    embeddings; per list too, see the module's docstring); with ``noisy`` (the stage of
    ``data.valid_noisy``), the same on the noisy copy of every batch, as
    ``valid_noisy_accuracy``, ``valid_noisy_eer``, ... (each batch read once, scored twice)."""
    was_training = model.training
    model.eval()
    train_ids = {n: i for i, n in enumerate(label_names)}
    # Speed copies as classes (augment.speed.as_classes: ``spk@sp0.9``): a prediction of a
    # copy of the right speaker is right; every class folds to its speaker's.
    fold = torch.tensor([train_ids.get(speed_copy_of(n), i) for i, n in enumerate(label_names)] or [0])
    views: dict[str, _Scores] = {"valid": _Scores()}
    if noisy is not None:
        views["valid_noisy"] = _Scores()
    lc = cfg.loader
    try:
        for url in cfg.data.valid:
            index = load_index(url, arrays=True, **lc.storage_options)  # as the loader reads one
            crop = valid_crop_seconds(index, cfg.data.valid_max_seconds)
            loader = StreamingLoader(
                index, batch_size=cfg.data.valid_batch_size, crop_seconds=crop,
                shuffle=False, last_batch="pad", waveform_dtype="int16", fields=("waveform", "label"),
                num_workers=min(lc.num_workers, 1), persistent_workers=False, cache_dir=lc.cache_dir,
                cache_limit=lc.cache_limit, storage_options=lc.storage_options, rank=0, world_size=1,
            )
            to_train = torch.tensor([train_ids.get(n, -1) for n in loader.label_names] or [-1])
            trials = loader.indexes[0].extras.get("trials") or {}
            want_embeddings = any(trials.values()) and hasattr(model, "embed")
            for view in views.values():
                view.embeddings = {}
            for batch in loader:
                assert batch.waveform is not None  # fields include "waveform"
                real = ~batch.is_padding
                labels = torch.where(batch.labels >= 0, to_train[batch.labels.clamp_min(0)], -1)
                known = real & (labels >= 0)
                wave = batch.waveform.to(device)
                lengths = batch.lengths.to(device)
                for name, view in views.items():
                    if name == "valid_noisy":
                        assert noisy is not None
                        wave = noisy(device_batch(batch, device), epoch=0, index=batch.index).wave
                    logits, emb = _forward(model, wave, lengths, want_embeddings, device, amp_dtype)
                    pred = fold[logits.float().argmax(-1).cpu()]
                    view.correct += int((pred[known] == labels[known]).sum())
                    view.counted += int(known.sum())
                    if emb is not None:
                        emb = F.normalize(emb.float(), dim=-1).cpu()
                        for row, key in enumerate(batch.keys):
                            if real[row]:
                                view.embeddings[key] = emb[row]
            for view in views.values():
                for list_name, lines in trials.items():
                    # Two indexes carrying a list of one name: the second is told apart by its index.
                    name = f"{index.name}/{list_name}" if list_name in view.lists else list_name
                    scores, targets = view.lists.setdefault(name, ([], []))
                    for label, a, b in lines:
                        ea, eb = view.embeddings.get(trial_key(a)), view.embeddings.get(trial_key(b))
                        if ea is not None and eb is not None:
                            scores.append(float(ea @ eb))
                            targets.append(int(label))
    finally:
        model.train(was_training)
    return {k: v for name, view in views.items() for k, v in view.metrics(name).items()}


def _forward(model: nn.Module, wave: torch.Tensor, lengths: torch.Tensor, want_embeddings: bool,
             device: torch.device, amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, embeddings or None)`` of one batch."""
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        embed = getattr(model, "embed", None)
        classifier = getattr(model, "classifier", None)
        if want_embeddings and callable(embed) and callable(classifier):
            emb = embed(wave, lengths)
            return classifier(emb), emb
        logits = model(wave, lengths)
        return logits, (embed(wave, lengths) if want_embeddings and callable(embed) else None)


def device_batch(batch: Batch, device: torch.device) -> DeviceBatch:
    """A loader batch as the device stage takes it."""
    assert batch.waveform is not None
    ids = batch.sample_ids.to(device) if batch.sample_ids is not None else None
    return DeviceBatch(batch.waveform.to(device), batch.lengths.to(device), batch.labels.to(device),
                       (~batch.is_padding).to(device), ids)
