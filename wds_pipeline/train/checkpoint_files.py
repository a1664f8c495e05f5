"""A checkpoint's files: their names in the checkpoint folder (``ckpt-<step>.pt``, its
sidecar ``ckpt-<step>.json``, the temp names of interrupted saves) and the sidecar's record,
:class:`CheckpointInfo` (step, epoch, metrics, the .pt's sha256 and size): the commit marker
:class:`~.checkpoint.CheckpointManager` writes after the .pt and resumes by.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHECKPOINT_FORMAT_VERSION", "CheckpointInfo", "checkpoint_step", "file_names"]

CHECKPOINT_FORMAT_VERSION = 1
FORMAT_NAME = "wds_pipeline.checkpoint"

PT_RE = re.compile(r"^ckpt-(\d{9,})\.pt$")
JSON_RE = re.compile(r"^ckpt-(\d{9,})\.json$")
# storage's atomic writers stage into ".<final name>.tmp-<uuid hex>".
TMP_RE = re.compile(r"^\.ckpt-\d{9,}\.(?:pt|json)\.tmp-[0-9a-f]{32}$")


def checkpoint_step(url: str) -> int | None:
    """The step of a checkpoint file's URL (``.../ckpt-000001200.pt`` -> 1200); None for any
    other name."""
    m = PT_RE.match(url.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def file_names(step: int) -> tuple[str, str]:
    """The checkpoint of ``step``'s two files: ``(ckpt-<step>.pt, ckpt-<step>.json)``."""
    stem = f"ckpt-{step:09d}"
    return stem + ".pt", stem + ".json"


@dataclass(frozen=True)
class CheckpointInfo:
    url: str  # of the .pt file
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    sha256: str = ""
    size: int = 0
    # While a step is saved again: the entry of the bytes being replaced, which this
    # sidecar still vouches for until the new .pt is committed.
    previous: CheckpointInfo | None = None

    def _entry(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics, "sha256": self.sha256,
                "size": self.size}

    def to_sidecar(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": CHECKPOINT_FORMAT_VERSION,
            "file": self.url.rsplit("/", 1)[-1],
            "step": self.step,
            "epoch": self.epoch,
            "metrics": self.metrics,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.previous is not None:
            doc["previous"] = self.previous._entry()
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_sidecar(cls, data: bytes, *, pt_url: str, step: int) -> CheckpointInfo:
        """Parse a sidecar; ``ValueError`` saying what is wrong when it is not one
        this code wrote for ``step``."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError(f"not a {FORMAT_NAME} sidecar")
        if doc.get("version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(
                f"format version {doc.get('version')!r}; this code reads version "
                f"{CHECKPOINT_FORMAT_VERSION}"
            )
        name = pt_url.rsplit("/", 1)[-1]

        def entry(d: Any, previous: CheckpointInfo | None = None) -> CheckpointInfo:
            return cls(url=pt_url, step=int(doc["step"]), epoch=int(d["epoch"]),
                       metrics={str(k): float(v) for k, v in dict(d["metrics"]).items()},
                       sha256=str(d["sha256"]), size=int(d["size"]), previous=previous)

        try:
            prev = entry(doc["previous"]) if doc.get("previous") is not None else None
            info = entry(doc, prev)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"missing or malformed field ({type(exc).__name__}: {exc})") from None
        if info.step != step or doc.get("file") != name:
            raise ValueError(f"describes {doc.get('file')!r} at step {info.step}, not {name!r}")
        return info
