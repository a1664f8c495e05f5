"""The typed batch the loader yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

ToFloat = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Batch:
    """A padded batch of utterances.

    ``waveform`` is (B, T) zero-padded; ``lengths`` holds each row's real length in
    frames. Rows with ``is_padding`` True repeat real samples only to keep batch
    shapes or per-rank batch counts equal: mask them out of losses and metrics.

    A float32 ``waveform`` (the default ``waveform_dtype``) arrives as int16 and is scaled
    on first use: reading ``batch.waveform`` scales it on the CPU in one pass into a
    recycled buffer; ``batch.to(device)`` moves the int16 (half the bytes) and scales it
    on the device. Either way the values are exactly ``int16 / 32768``.
    """

    waveform: torch.Tensor | None  # (B, T) int16 or float32
    lengths: torch.Tensor  # (B,) int64, frames
    labels: torch.Tensor  # (B,) int64, -1 when the sample has no class label
    keys: list[str]
    is_padding: torch.Tensor  # (B,) bool
    dataset_ids: torch.Tensor  # (B,) int64: which of the loader's datasets
    texts: list[str] | None = None
    fbank: torch.Tensor | None = None  # (B, frames, bins)
    fbank_lengths: torch.Tensor | None = None
    meta: list[dict[str, Any]] | None = None
    epoch: int = 0
    index: int = 0  # position of this batch in its rank's epoch
    skipped: list[str] = field(default_factory=list)  # keys that failed to decode since the last batch
    # Internal: which recycled shared-memory buffer of its worker holds ``waveform``
    # (-1: none). See ``BatchBufferPool``.
    buffer_slot: int = -1

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def size(self) -> int:
        return len(self.keys)

    def defer_float32(self, to_float: ToFloat) -> Batch:
        """Internal (the loader): the int16 ``waveform`` becomes float32 on first use."""
        pcm = self.__dict__["_waveform"]
        if pcm is not None:
            self.__dict__.update(_waveform=None, _pcm=pcm, _to_float=to_float)
        return self

    @property
    def _pending(self) -> torch.Tensor | None:
        """The int16 waveform not yet scaled to float32, if any."""
        return self.__dict__.get("_pcm")

    def pin_memory(self) -> Batch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return self.materialize()._map(lambda t: t.pin_memory())

    def materialize(self) -> Batch:
        """Turn small numpy fields into tensors.

        Workers send per-row fields (lengths, labels, ...) as numpy arrays: those are
        pickled inline, while every tensor costs a shared-memory segment and a file
        descriptor hand-off, which dominated the transfer cost of small fields.
        """
        changes: dict[str, Any] = {
            name: torch.from_numpy(v) for name, v in self._values() if isinstance(v, np.ndarray)
        }
        return self._replace(changes) if changes else self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def scale(pcm: torch.Tensor) -> torch.Tensor:
            # int16 crosses to the device; the scaling runs there (exact: a power of two).
            return pcm.to(device, non_blocking=non_blocking).to(torch.float32).mul_(1.0 / 32768.0)

        return self._map(lambda t: t.to(device, non_blocking=non_blocking), scale)

    def _values(self) -> list[tuple[str, Any]]:
        # Field values without scaling a pending waveform (which is never numpy).
        return [(f.name, self.__dict__["_waveform"] if f.name == "waveform" else getattr(self, f.name))
                for f in fields(self)]

    def _replace(self, changes: dict[str, Any]) -> Batch:
        """``dataclasses.replace`` that carries a pending waveform over unscaled."""
        pcm = self._pending
        if pcm is None or "waveform" in changes:
            return replace(self, **changes)
        return replace(self, waveform=pcm, **changes).defer_float32(self.__dict__["_to_float"])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], scale: ToFloat | None = None) -> Batch:
        changes: dict[str, Any] = {name: fn(v) for name, v in self._values() if isinstance(v, torch.Tensor)}
        pcm = self._pending
        if pcm is None:
            return replace(self, **changes)
        if scale is not None:
            return replace(self, waveform=scale(pcm), **changes)
        return replace(self, waveform=fn(pcm), **changes).defer_float32(self.__dict__["_to_float"])

    def __getstate__(self) -> dict[str, Any]:
        # A pickled or copied batch carries its float32 waveform, not the loader's buffers.
        self.waveform  # noqa: B018 (scales a pending waveform)
        return {k: v for k, v in self.__dict__.items() if k not in ("_pcm", "_to_float")}


def _get_waveform(self: Batch) -> torch.Tensor | None:
    d = self.__dict__
    if d.get("_pcm") is not None:
        d["_waveform"] = d["_to_float"](d["_pcm"])
        d["_pcm"] = d["_to_float"] = None
    return d["_waveform"]


def _set_waveform(self: Batch, value: torch.Tensor | None) -> None:
    self.__dict__.update(_waveform=value, _pcm=None, _to_float=None)


# After the dataclass is built, so that ``waveform`` stays an ordinary required field of
# __init__, replace() and fields(), read and written through this property.
Batch.waveform = property(_get_waveform, _set_waveform)  # type: ignore[assignment]
