"""Preflight's embedding check: the model's ``embed`` on a real batch of the data, on the
device, in eval mode as validation and ``wds-pipeline embed`` call it, gives a finite
(B, D) result (a model that fails there would train for hours and then give no EER)."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .preflight_report import PreflightReport

NAME = "embedding"


def check_embedding(r: PreflightReport, cfg: TrainConfig, model: nn.Module, device: torch.device,
                    amp: torch.dtype | None) -> None:
    """One check: ``embed`` on two utterances of the first validation index (else of the
    training data), cropped to ``data.valid_max_seconds`` as validation crops them."""
    from ..index import load_index
    from ..loader import StreamingLoader
    from .validate import valid_crop_seconds

    embed = getattr(model, "embed", None)
    if not callable(embed):
        r.add(NAME, "warn", f"{cfg.model.factory} has no embed(waveform, lengths): validation gives no EER or "
              "minDCF, and `wds-pipeline embed` cannot use it",
              "give the model an embed(waveform, lengths) returning (B, D) embeddings (see train/models.py)")
        return
    role, url = ("validation", cfg.data.valid[0]) if cfg.data.valid else ("training", cfg.data.train[0])
    lc = cfg.loader
    was_training = model.training
    try:
        index = load_index(url, arrays=True, **lc.storage_options)
        loader = StreamingLoader(index, batch_size=2, shuffle=False, last_batch="pad",
                                 crop_seconds=valid_crop_seconds(index, cfg.data.valid_max_seconds),
                                 waveform_dtype="int16",
                                 fields=("waveform", "label"), num_workers=0, persistent_workers=False,
                                 cache_dir=lc.cache_dir, cache_limit=lc.cache_limit,
                                 storage_options=lc.storage_options, rank=0, world_size=1)
        batch = next(iter(loader))
        assert batch.waveform is not None  # fields include "waveform"
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            emb = embed(batch.waveform.to(device), batch.lengths.to(device))
    except Exception as e:  # report, don't crash: this is the check
        r.add(NAME, "fail", f"embed on a {role} batch: {type(e).__name__}: {e}",
              f"fix the model's embed() ({cfg.model.factory}) before training")
        return
    finally:
        model.train(was_training)
    rows = len(batch.keys)
    shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != rows:
        r.add(NAME, "fail", f"embed gave {shape} for a batch of {rows}: expected ({rows}, D)",
              f"make {cfg.model.factory}'s embed() return one vector per utterance")
    elif not bool(torch.isfinite(emb.float()).all()):
        r.add(NAME, "fail", f"embed gave non-finite values on a {role} batch on {device}",
              "check the model's pooling for empty or silent inputs (a division by a zero count or std)")
    else:
        r.add(NAME, "pass", f"embed on {rows} {role} utterances on {device}: {shape}, finite")
