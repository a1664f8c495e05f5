"""Capture and restore every global random number generator a training step uses.

    capture_rng_state() -> dict      # python, numpy (global), torch CPU, CUDA devices
    restore_rng_state(state) -> None

The captured dict holds only tensors, ints, floats, strs, None, lists and dicts, so
a checkpoint carrying it loads with ``torch.load(..., weights_only=True)``: nothing
is pickled as a Python object.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["RNG_STATE_VERSION", "capture_rng_state", "restore_rng_state"]

RNG_STATE_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """The state of python's ``random``, numpy's global RNG, torch's CPU generator
    and (when CUDA is available) every CUDA device's generator."""
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    return {
        "version": RNG_STATE_VERSION,
        # 625 words of 32 bits each (624 Mersenne Twister words + index): int64 holds them.
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_words, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured (also after a
    ``torch.save``/``torch.load(weights_only=True)`` round trip).

    CUDA states are restored for as many devices as both the checkpoint and this
    machine have; a mismatch (resuming a GPU run on CPU, or on fewer GPUs) warns,
    since GPU-side randomness then differs from the uninterrupted run.
    """
    version = state.get("version")
    if version != RNG_STATE_VERSION:
        raise ValueError(
            f"RNG state version {version!r} is not supported (this code reads version "
            f"{RNG_STATE_VERSION}); resume with the wds_pipeline version that wrote it"
        )
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    saved_cuda = state["cuda"]
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved_cuda and have:
        for device, cuda_state in enumerate(saved_cuda[:have]):
            torch.cuda.set_rng_state(cuda_state, device)
    if len(saved_cuda) != have and saved_cuda:
        warnings.warn(
            f"the checkpoint holds RNG states for {len(saved_cuda)} CUDA device(s) but this "
            f"machine has {have}: restored {min(have, len(saved_cuda))}; GPU-side random "
            "draws will differ from the uninterrupted run",
            stacklevel=2,
        )
