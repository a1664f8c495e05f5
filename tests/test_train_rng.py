"""RNG capture/restore: every generator replays exactly, also through a weights_only checkpoint."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from wds_pipeline.train.rng import capture_rng_state, restore_rng_state


def _draw() -> tuple:
    return (
        [random.random() for _ in range(5)],
        random.gauss(0, 1),  # leaves a cached gauss_next behind
        np.random.rand(5).tolist(),
        float(np.random.randn()),  # numpy also caches a gaussian
        torch.rand(5).tolist(),
        torch.randint(0, 1 << 30, (3,)).tolist(),
    )


def _weights_only_round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("through_checkpoint", [False, True])
def test_restore_replays_every_generator(through_checkpoint):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()  # mid-stream, with cached gaussians pending
    random.gauss(0, 1)
    np.random.randn()
    state = capture_rng_state()
    if through_checkpoint:
        state = _weights_only_round_trip(state)
    first = _draw()
    _draw()  # move every generator elsewhere
    restore_rng_state(state)
    assert _draw() == first


def test_captured_state_has_only_plain_values():
    state = capture_rng_state()
    assert set(state) == {"version", "python", "numpy", "torch", "cuda"}
    assert isinstance(state["python"]["state"], torch.Tensor)
    assert state["python"]["state"].shape == (625,)
    assert state["numpy"]["keys"].shape == (624,)
    # The numpy keys are uint32 words: stored widened, restored without loss.
    np.random.seed(2**32 - 1)
    keys = np.random.get_state()[1].copy()
    restore_rng_state(_weights_only_round_trip(capture_rng_state()))
    assert np.array_equal(np.random.get_state()[1], keys)


def test_unknown_version_is_refused():
    state = capture_rng_state()
    state["version"] = 99
    with pytest.raises(ValueError, match="RNG state version 99 is not supported"):
        restore_rng_state(state)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks resuming a GPU run on a CPU machine")
def test_gpu_states_on_a_cpu_machine_warn_and_restore_the_rest():
    state = capture_rng_state()
    assert state["cuda"] == []
    state["cuda"] = [torch.get_rng_state()]  # stands for one saved device's state
    first = _draw()
    with pytest.warns(UserWarning, match=r"states for 1 CUDA device\(s\) but this machine has 0"):
        restore_rng_state(state)
    assert _draw() == first
