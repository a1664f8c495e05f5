"""Validation: closed-set accuracy on held-out utterances of the training classes, and
equal error rate on the trial lists an index carries (VoxCeleb's ``veri_test2.txt``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..format import make_key
from ..index import load_index
from ..loader import StreamingLoader
from .metrics import equal_error_rate

if TYPE_CHECKING:
    from .config import TrainConfig


def trial_key(path: str) -> str:
    """A trial list's ``id10270/x6uYqmx31kE/00001.wav`` -> the sample key it was built as."""
    return make_key(os.path.splitext(path)[0])


@torch.no_grad()
def validate(model: nn.Module, cfg: TrainConfig, label_names: Sequence[str], device: torch.device,
             amp_dtype: torch.dtype | None) -> dict[str, float]:
    """``valid_accuracy`` over samples whose class the model was trained on, ``valid_eer`` over
    every trial list of the validation indexes (cosine scores of embeddings)."""
    was_training = model.training
    model.eval()
    train_ids = {n: i for i, n in enumerate(label_names)}
    correct = counted = 0
    scores: list[float] = []
    targets: list[int] = []
    lc = cfg.loader
    try:
        for url in cfg.data.valid:
            index = load_index(url, **lc.storage_options)
            longest = max((f for s in index.shards for f in s.sample_frames), default=0)
            limit = cfg.data.valid_max_seconds
            # Crop only where a clip is longer: a crop pads every batch to its length.
            crop = limit if limit and longest > limit * index.sample_rate else None
            loader = StreamingLoader(
                index, batch_size=cfg.data.valid_batch_size, crop_seconds=crop,
                shuffle=False, last_batch="pad", waveform_dtype="int16", fields=("waveform", "label"),
                num_workers=min(lc.num_workers, 1), persistent_workers=False, cache_dir=lc.cache_dir,
                cache_limit=lc.cache_limit, storage_options=lc.storage_options, rank=0, world_size=1,
            )
            to_train = torch.tensor([train_ids.get(n, -1) for n in loader.label_names] or [-1])
            trials = loader.indexes[0].extras.get("trials") or {}
            want_embeddings = any(trials.values()) and hasattr(model, "embed")
            embeddings: dict[str, torch.Tensor] = {}
            for batch in loader:
                assert batch.waveform is not None  # fields include "waveform"
                wave = batch.waveform.to(device)
                lengths = batch.lengths.to(device)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    embed = getattr(model, "embed", None)
                    classifier = getattr(model, "classifier", None)
                    if want_embeddings and callable(embed) and callable(classifier):
                        emb = embed(wave, lengths)
                        logits = classifier(emb)
                    else:
                        logits = model(wave, lengths)
                        emb = embed(wave, lengths) if want_embeddings and callable(embed) else None
                real = ~batch.is_padding
                labels = torch.where(batch.labels >= 0, to_train[batch.labels.clamp_min(0)], -1)
                known = real & (labels >= 0)
                pred = logits.float().argmax(-1).cpu()
                correct += int((pred[known] == labels[known]).sum())
                counted += int(known.sum())
                if emb is not None:
                    emb = F.normalize(emb.float(), dim=-1).cpu()
                    for row, key in enumerate(batch.keys):
                        if real[row]:
                            embeddings[key] = emb[row]
            for lines in trials.values():
                for label, a, b in lines:
                    ea, eb = embeddings.get(trial_key(a)), embeddings.get(trial_key(b))
                    if ea is not None and eb is not None:
                        scores.append(float(ea @ eb))
                        targets.append(int(label))
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    if counted:
        out["valid_accuracy"] = correct / counted
    if targets and 0 < sum(targets) < len(targets):
        out["valid_eer"] = equal_error_rate(np.array(scores), np.array(targets))
        out["valid_trials"] = float(len(targets))
    return out
