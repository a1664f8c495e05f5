"""Voice activity detection backends (``--vad``), in a registry like the corpus sources.

A backend is the module ``wds_pipeline.audio.<name>`` for each name of :data:`VadMethod`
but "none"; it declares ``BACKEND``, a :class:`VadBackend`. Adding a backend means adding
its name to :data:`VadMethod` (which gives the ``--vad`` choices) and its module; nothing
in the builder names a backend. A backend module is imported on first use, so that a
build without it never imports what it needs (torch, for silero).

Each backend keeps the same contract: sample bounds at the clip's rate, ``None`` / ``[]``
for a clip without speech, never a bound outside the clip.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

VadMethod = Literal["none", "energy", "silero"]  # "none": no voice activity detection

BACKENDS: dict[str, str] = {name: f"{__package__}.{name}"
                            for name in typing.get_args(VadMethod) if name != "none"}


@dataclass(frozen=True)
class VadBackend:
    name: str
    # ``(begin, end)`` of the speech in a clip (int16 or float, 1-D) at a rate; None: no speech.
    speech_span: Callable[[np.ndarray, int], tuple[int, int] | None]
    # ``--vad-split-pause``: the ``[begin, end)`` speech regions separated by pauses of at
    # least the given seconds, in order; one region is speech_span's span; [] : no speech.
    split_regions: Callable[[np.ndarray, int, float], list[tuple[int, int]]]
    # The model to record in the index (its version: another finds other bounds, so a new
    # plan), None when there is none; raises ImportError naming what to install.
    require: Callable[[], str | None]


def get_vad(name: str) -> VadBackend:
    """The backend called ``name`` (a :data:`VadMethod` other than "none")."""
    try:
        module_name = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown voice activity detection {name!r}; choose one of "
                         f"{sorted(BACKENDS)}") from None
    backend: VadBackend = importlib.import_module(module_name).BACKEND
    return backend
