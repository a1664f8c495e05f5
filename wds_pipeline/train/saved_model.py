"""A trained model as a checkpoint holds it, rebuilt for inference (``wds-pipeline embed``;
``wds-pipeline average`` writes what this reads).

A checkpoint carries the run's config (``model.factory`` and its options) and the class
list, so the model is rebuilt by the same factory call the trainer made and its weights
loaded; every file is read with ``torch.load(weights_only=True)``. Three kinds of URL:

- a checkpoint folder (``checkpoint.dir``): its newest valid checkpoint, as a resume picks;
- one ``ckpt-NNNNNNNNN.pt`` of such a folder: checked against its sidecar (size, sha256);
- any other ``.pt`` file (an average of checkpoints): read as is.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import storage
from ..errors import ConfigError
from ..storage.urls import dirname_url
from .checkpoint import CheckpointManager, checkpoint_step
from .checkpoint_io import CheckpointError, load_failure
from .models import build_model, state_dict_mismatch

__all__ = ["SavedModel", "load_saved_model", "read_checkpoint"]

# The classification head: a trainer may replace it (a cosine head for AAM-softmax), and
# embed() never uses it, so weights that differ only there still give the embeddings.
HEAD_PREFIX = "classifier."


@dataclass(frozen=True)
class SavedModel:
    model: nn.Module  # in eval mode, on the device asked for
    state: dict[str, Any]  # the checkpoint as loaded
    url: str  # the .pt file read
    sha256: str  # of its bytes
    sample_rate: int

    @property
    def factory(self) -> str:
        return str(self.state["config"]["model"]["factory"])

    def identity(self) -> dict[str, Any]:
        """What the embeddings were made with (for their manifest)."""
        model = self.state["config"]["model"]
        out = {"checkpoint": self.url, "sha256": self.sha256, "step": int(self.state.get("step", -1)),
               "factory": model["factory"], "options": dict(model.get("options") or {}),
               "classes": len(self.state.get("label_names") or [])}
        if self.state.get("averaged"):
            out["averaged"] = self.state["averaged"]
        return out


def read_checkpoint(url: str, **storage_options: Any) -> tuple[dict[str, Any], str, str]:
    """``(state, url of the .pt read, its sha256)`` for a checkpoint folder, one of its
    checkpoints, or another ``.pt`` file (see the module's docstring)."""
    step = checkpoint_step(url)
    if step is not None:
        mgr = CheckpointManager(dirname_url(url), storage_options=storage_options)
        state, info = mgr.load(step)
        return state, info.url, info.sha256
    if url.endswith(".pt"):
        try:
            data = storage.read_bytes(url, **storage_options)
        except FileNotFoundError:
            raise CheckpointError(f"{url}: no such checkpoint file") from None
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # a file that does not load: described in one line
            raise CheckpointError(f"{url}: {load_failure(exc)}") from None
        return state, url, hashlib.sha256(data).hexdigest()
    loaded = CheckpointManager(url, storage_options=storage_options).load_latest()
    if loaded is None:
        raise CheckpointError(f"{url}: no checkpoint there; give a checkpoint folder (checkpoint.dir of a "
                              "run), one of its ckpt-*.pt files, or a file `wds-pipeline average` wrote")
    return loaded[0], loaded[1].url, loaded[1].sha256


def _model_block(state: Any, url: str) -> dict[str, Any]:
    model = state.get("config", {}).get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or not model.get("factory") or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{url}: not a wds-pipeline training checkpoint (no model weights and "
                              "config.model.factory); give one `wds-pipeline train` or `average` wrote")
    return model


def load_saved_model(url: str, *, device: torch.device | str = "cpu", sample_rate: int | None = None,
                     **storage_options: Any) -> SavedModel:
    """The checkpoint's model, weights loaded, in eval mode on ``device``. ``sample_rate``:
    the data's; it must equal the rate the model was trained at where the checkpoint
    records one."""
    state, pt_url, sha = read_checkpoint(url, **storage_options)
    block = _model_block(state, pt_url)
    saved_rate = int(state.get("sample_rate") or 0)
    if sample_rate and saved_rate and sample_rate != saved_rate:
        raise ConfigError(f"{pt_url}: the model was trained on {saved_rate} Hz audio, the data is "
                          f"{sample_rate} Hz; rebuild the data at {saved_rate} Hz")
    rate = saved_rate or sample_rate
    if not rate:
        raise ConfigError(f"{pt_url}: the checkpoint records no sample rate; give the data's")
    classes = max(1, len(state.get("label_names") or []))
    model = build_model(str(block["factory"]), dict(block.get("options") or {}), num_classes=classes,
                        sample_rate=rate, where=pt_url)
    _load_weights(model, state["model"], pt_url, str(block["factory"]))
    if not callable(getattr(model, "embed", None)):
        raise ConfigError(f"{pt_url}: the model of {block['factory']} has no embed(waveform, lengths); "
                          "embeddings need one (see train/models.py)")
    model.eval().to(device)
    return SavedModel(model=model, state=state, url=pt_url, sha256=sha, sample_rate=rate)


def _load_weights(model: nn.Module, weights: dict[str, Any], url: str, factory: str) -> None:
    current = model.state_dict()
    problem = state_dict_mismatch(weights, current)
    if problem is None:
        model.load_state_dict(weights)
        return
    body = {k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIX)}
    if state_dict_mismatch(body, {k: v for k, v in current.items() if not k.startswith(HEAD_PREFIX)}) is None:
        model.load_state_dict(body, strict=False)  # only the classification head differs
        return
    raise CheckpointError(f"{url}: its weights do not fit the model {factory} rebuilds from its config "
                          f"({problem}); was it written by another version of the model?")
