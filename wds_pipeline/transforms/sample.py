"""Per-sample transforms: numpy, run in the loader's workers on every cropped sample
(``speed`` excepted: the loader runs it before the crop, see :mod:`.speed`).

A sample transform is a frozen dataclass (its fields are its ``params``) called as
``transform(wave, rng, sample_rate) -> wave``: ``wave`` is the cropped 1-D int16 waveform,
possibly a read-only view of a memory-mapped shard, so it is never changed in place; the
result is a new 1-D int16 array of the same length (batches are planned from sample
lengths before anything is read). ``rng`` is a ``numpy.random.Generator`` over a Philox
stream keyed by (loader seed, sample id) at counter (epoch, position in the list): the same
numbers for that sample in that epoch whichever worker reads it, in whatever order, after
any resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import WdsPipelineError
from .registry import Registry, TransformSpec, as_specs

SAMPLE_TRANSFORMS = Registry("sample", {
    "gain": "wds_pipeline.transforms.gain:Gain",
    "speed": "wds_pipeline.transforms.speed:Speed",
})

_MASK = (1 << 64) - 1


class SampleTransform(Protocol):
    def __call__(self, wave: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray: ...


class TransformError(WdsPipelineError, RuntimeError):
    """A configured transform failed or broke its contract: raised whatever
    ``on_decode_error`` says, since it is not damage in the data."""


class SampleRngs:
    """Counter-based generators for (seed, epoch, sample id, position): one Philox bit
    generator re-keyed per call (setting its state costs ~5 us; building a new one ~25 us)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed & _MASK
        self._bits = np.random.Philox(0)
        self._rng = np.random.Generator(self._bits)
        self._buffer = np.zeros(4, dtype=np.uint64)

    def __call__(self, epoch: int, gid: int, position: int) -> np.random.Generator:
        """The generator of transform ``position`` for sample ``gid`` in ``epoch``, at the
        start of its stream (valid until the next call)."""
        self._bits.state = {
            "bit_generator": "Philox",
            "state": {"key": np.array([self.seed, gid & _MASK], dtype=np.uint64),
                      "counter": np.array([0, 0, position, epoch & _MASK], dtype=np.uint64)},
            "buffer": self._buffer, "buffer_pos": 4, "has_uint32": 0, "uinteger": 0,
        }
        return self._rng


def sample_rng(seed: int, epoch: int, gid: int, position: int = 0) -> np.random.Generator:
    """A fresh generator with the numbers transform ``position`` draws for sample ``gid``."""
    return np.random.Generator(np.random.Philox(key=np.array([seed & _MASK, gid & _MASK], dtype=np.uint64),
                                                counter=np.array([0, 0, position, epoch & _MASK], dtype=np.uint64)))


class SampleChain:
    """The configured sample transforms, in order, each with its own stream. ``positions``:
    each one's position in ``loader.sample_transforms`` (its stream, and its name in
    messages) when some of the list runs elsewhere (speed, before the crop); by default
    0, 1, ..."""

    def __init__(self, specs: Sequence[TransformSpec | Mapping[str, Any]], *, seed: int, sample_rate: int,
                 positions: Sequence[int] | None = None) -> None:
        self.specs = as_specs(specs)
        self.positions = tuple(range(len(self.specs)) if positions is None else positions)
        self.transforms: tuple[SampleTransform, ...] = tuple(
            SAMPLE_TRANSFORMS.build(s, f"loader.sample_transforms[{p}]") for p, s in zip(self.positions, self.specs))
        self.sample_rate = sample_rate
        self._rngs = SampleRngs(seed)

    def __call__(self, wave: np.ndarray, epoch: int, gid: int) -> np.ndarray:
        for position, spec, transform in zip(self.positions, self.specs, self.transforms):
            try:
                out = transform(wave, self._rngs(epoch, gid, position), self.sample_rate)
            except Exception as e:
                raise TransformError(f"loader.sample_transforms[{position}] ({spec.name}) "
                                     f"failed on sample {gid}: {type(e).__name__}: {e}") from e
            if not (isinstance(out, np.ndarray) and out.dtype == np.int16 and out.shape == wave.shape):
                raise TransformError(
                    f"loader.sample_transforms[{position}] ({spec.name}) must return an "
                    f"int16 array of shape {wave.shape}, got "
                    f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
            wave = out
        return wave

