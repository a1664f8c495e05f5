"""What a checkpoint file may hold, and the errors of :mod:`.checkpoint`: states are
refused at save time unless they load back with ``torch.load(weights_only=True)``, and a
file that does not load is described in one line (never with torch's advice to retry with
the safe loader switched off: a file it refuses may run code when unpickled).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import WdsPipelineError

__all__ = ["CheckpointError", "CheckpointLockedError", "CheckpointWarning", "load_failure",
           "serialize", "torch_reason"]


class CheckpointError(WdsPipelineError, RuntimeError):
    """Checkpoints exist at the URL but none can be resumed from, or the state
    cannot be stored loadably."""


class CheckpointLockedError(CheckpointError):
    """Another training run holds the checkpoint folder."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or cleaning up old ones failed."""


def torch_reason(exc: BaseException) -> str:
    """The one line of a torch.load error that says what failed ("...GLOBAL os.system..."),
    without torch's advice to retry with weights_only off: that would run the file's code."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
    if found is None:
        found = next((ln for ln in lines if "weights_only" not in ln), "")
    return found.split(" was not an allowed global")[0] or type(exc).__name__


def load_failure(exc: BaseException) -> str:
    reason = torch_reason(exc)
    if "GLOBAL" in reason:
        return (f"refused by the safe loader: {reason}; checkpoints this code writes hold only "
                "tensors and plain values, so this file was not written by it and may run code "
                "when unpickled: delete it, do not load it")
    return f"torch.load failed: {type(exc).__name__}: {reason}"


# -------------------------------------------------------------- serialisation

# Exact types: numpy scalars subclass float/int yet are pickled as numpy objects.
_PLAIN = frozenset({str, int, float, bool, type(None), bytes, torch.dtype, torch.device})


def _first_unplain(obj: Any, path: str = "state") -> str | None:
    """Path of the first value that is not a tensor/plain value, for error messages."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _first_unplain(v, f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_unplain(v, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return None
    return f"{path} ({type(obj).__module__}.{type(obj).__qualname__})"


def serialize(state: dict[str, Any]) -> bytes:
    """``torch.save`` bytes of ``state``, refused unless they load back with
    ``weights_only=True`` (a checkpoint that cannot be resumed is found out now,
    not hours later)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    del buf
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        where = _first_unplain(state)
        reason = torch_reason(exc)  # torch's message is long; its GLOBAL line is the fact
        raise CheckpointError(
            "checkpoint state would not load with torch.load(weights_only=True)"
            + (f": {where} is not a tensor or plain value" if where else "")
            + f" ({type(exc).__name__}: {reason}). "
            "Store tensors, dicts, lists, str, int, float, bool or None (e.g. .item() / "
            ".tolist() / torch.from_numpy for numpy values)."
        ) from exc
    return data
