"""Banks of clips held on the training device for the batch transforms: the noise clips
(:class:`NoiseBank`, with each clip's category: MUSAN's ``noise``, ``music``, ``speech``) and
the room impulse responses (:class:`RirBank`, trimmed by :func:`trim_rir`).

A bank is built once from numpy arrays (later, from the noise and RIR shards through the
loader) and handed to the transforms that draw from it with :func:`bind_banks`; the
transforms' params (their config) never hold data.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError
from .batch import INT16_SCALE

RIR_ENERGY_FRACTION = 0.999  # the RIR's tail past 99.9% of its energy (-30 dB) is dropped
# The RIR spectra an RirBank keeps per FFT size, at most (a bank of many long RIRs would need
# several times its own size: past this its picked RIRs are transformed per batch instead).
SPECTRA_BYTES = 256 << 20


def _as_float32(clip: np.ndarray, what: str) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim != 1 or len(clip) == 0:
        raise ConfigError(f"{what}: expected a non-empty 1-D array, got shape {clip.shape}")
    if clip.dtype == np.int16:
        return clip.astype(np.float32) * np.float32(INT16_SCALE)
    if not np.issubdtype(clip.dtype, np.floating):
        raise ConfigError(f"{what}: expected int16 or float samples, got {clip.dtype}")
    return clip.astype(np.float32)


def _padded(clips: Sequence[np.ndarray], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, longest)`` float32, zero past each clip's length, and the ``(N,)`` lengths."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    out = np.zeros((len(clips), int(lengths.max(initial=0))), dtype=np.float32)
    for i, c in enumerate(clips):
        out[i, : len(c)] = c
    return torch.from_numpy(out).to(device), torch.from_numpy(lengths).to(device)


def _zero_padded(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` (R, F) in a new contiguous (R, width) tensor, zero past column F."""
    out = x.new_zeros((x.shape[0], width))
    out[:, : x.shape[1]] = x
    return out


@dataclass(frozen=True)
class NoiseBank:
    """Noise clips on the device: ``clips`` (N, L) float32 in [-1, 1) zero past ``lengths``
    (N,), ``category`` (N,) int64 indices into ``categories``. Clips are grouped by category
    (``start[c]`` is the first of the ``count[c]`` clips of category ``c``) so a uniform pick
    within a category is one multiply-add."""

    clips: torch.Tensor
    lengths: torch.Tensor
    category: torch.Tensor
    categories: tuple[str, ...]
    start: torch.Tensor
    count: torch.Tensor
    sample_rate: int
    # The clips wrapped for windows (see ``windows``): built at the first batch, kept.
    _wrapped: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, clips: Sequence[np.ndarray], categories: Sequence[str], *, sample_rate: int = 16000,
                    device: torch.device | str = "cpu") -> NoiseBank:
        """A bank of ``clips`` (1-D int16 or float arrays), clip ``i`` of category
        ``categories[i]``."""
        if len(clips) != len(categories) or not clips:
            raise ConfigError(f"noise bank: {len(clips)} clips and {len(categories)} categories; "
                              "give one category per clip, and at least one clip")
        names = tuple(sorted(set(categories)))
        order = sorted(range(len(clips)), key=lambda i: (names.index(categories[i]), i))
        ids = np.array([names.index(categories[i]) for i in order], dtype=np.int64)
        data, lengths = _padded([_as_float32(clips[i], f"noise clip {i}") for i in order], device)
        count = np.bincount(ids, minlength=len(names))
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        return cls(data, lengths, torch.from_numpy(ids).to(device), names,
                   torch.from_numpy(start).to(device), torch.from_numpy(count).to(device), sample_rate)

    def windows(self, clips: torch.Tensor, offsets: torch.Tensor, frames: int) -> torch.Tensor:
        """``(U, frames)``: clip ``clips[u]`` from frame ``offsets[u]`` (below its length) on,
        looped where it is shorter than the window. The windows are plain slices of a bank
        in which every clip is followed by its own repetition (``wrapped``): one gather of
        all of them, no index arithmetic per frame."""
        flat = self.wrapped(frames)
        starts = clips * flat.shape[1] + offsets
        return flat.view(-1).unfold(0, frames, 1).index_select(0, starts)

    def wrapped(self, frames: int) -> torch.Tensor:
        """``(N, L + frames)``: each clip repeated over the row (frame ``t`` is ``clip[t mod
        length]``), so a window of up to ``frames`` from any offset below the clip's length is a
        slice. Built for the widest window asked so far, and kept (one more copy of the bank)."""
        have = self._wrapped.get("clips")
        width = self.clips.shape[1] + frames
        if have is not None and have.shape[1] >= width:
            return have
        out = torch.empty((self.clips.shape[0], width), dtype=self.clips.dtype, device=self.clips.device)
        t = torch.arange(width, device=self.clips.device)
        for first in range(0, len(out), 64):  # in slices: the int64 index of a big bank at once is 2x its size
            rows = slice(first, first + 64)
            torch.gather(self.clips[rows], 1, t[None, :] % self.lengths[rows, None], out=out[rows])
        self._wrapped["clips"] = out
        return out

    def category_id(self, name: str, wanted_by: str) -> int:
        """The index of category ``name``; a ConfigError naming ``wanted_by`` and the bank's
        categories when the bank has no clip of it."""
        if name not in self.categories:
            raise ConfigError(f"{wanted_by}: the noise bank has no clips of category {name!r}; it has "
                              + ", ".join(f"{c} ({int(n)})" for c, n in zip(self.categories, self.count.tolist()))
                              + ": add clips of that category or drop it from the transform's kinds")
        return self.categories.index(name)


def trim_rir(rir: np.ndarray, energy_fraction: float = RIR_ENERGY_FRACTION) -> np.ndarray:
    """``rir`` aligned on its direct path and trimmed to its energetic part, as float32.

    The rule: the direct path is the peak (the largest ``|h|``); everything before it is
    dropped (the propagation delay, which would only shift the signal: without it the
    reverberated signal stays aligned with the dry one, so labels and crops stay put); the
    tail is cut after the shortest prefix (from the peak) holding ``energy_fraction`` of the
    energy from the peak on (the default, 0.999, keeps all but the last -30 dB, about half an
    RT60 of an exponential decay: the FFTs then cost less; 1.0 keeps it all); the result is divided by the
    peak's value, so the direct sound keeps the dry signal's level and sign.
    """
    if not 0.0 < energy_fraction <= 1.0:
        raise ConfigError(f"RIR energy_fraction must be in (0, 1], got {energy_fraction}")
    h = _as_float32(rir, "RIR").astype(np.float64)
    peak = int(np.argmax(np.abs(h)))
    if h[peak] == 0.0:
        raise ConfigError("RIR: all samples are zero")
    tail = h[peak:]
    if energy_fraction == 1.0:  # all of it, up to the last non-zero sample
        keep = int(np.flatnonzero(tail)[-1]) + 1
    else:
        energy = np.cumsum(tail * tail)
        keep = int(np.searchsorted(energy, energy_fraction * energy[-1])) + 1
    return (tail[:keep] / tail[0]).astype(np.float32)


@dataclass(frozen=True)
class RirBank:
    """Room impulse responses on the device, each trimmed by :func:`trim_rir` (its direct
    path at frame 0, value 1.0): ``rirs`` (N, L) float32 zero past ``lengths`` (N,)."""

    rirs: torch.Tensor
    lengths: torch.Tensor
    sample_rate: int
    _spectra: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, rirs: Sequence[np.ndarray], *, sample_rate: int = 16000,
                    energy_fraction: float = RIR_ENERGY_FRACTION, device: torch.device | str = "cpu") -> RirBank:
        if not rirs:
            raise ConfigError("RIR bank: no RIRs given")
        data, lengths = _padded([trim_rir(r, energy_fraction) for r in rirs], device)
        return cls(data, lengths, sample_rate)

    def spectra(self, picked: torch.Tensor, n: int, width: int) -> torch.Tensor:
        """``(R, width)`` complex64: the ``n``-point rfft of the RIRs ``picked`` (``n // 2 + 1``
        bins), zero past it. The whole bank's spectra are computed once per ``n`` and kept when
        they fit ``SPECTRA_BYTES``; otherwise the picked ones are transformed on each call."""
        whole = self._spectra.get(n)
        if whole is None:
            if len(self.rirs) * width * 8 > SPECTRA_BYTES:
                return _zero_padded(torch.fft.rfft(self.rirs[picked], n), width)
            whole = self._spectra[n] = _zero_padded(torch.fft.rfft(self.rirs, n), width)
        return whole[picked]


@dataclass(frozen=True)
class Banks:
    """The banks the configured transforms may draw from (None: not built)."""

    noise: NoiseBank | None = None
    rirs: RirBank | None = None


@runtime_checkable
class UsesBanks(Protocol):
    """A transform that draws clips from a bank: ``bind`` returns a copy holding it (or a
    ConfigError when the bank it needs is missing or lacks what its params ask for)."""

    def bind(self, banks: Banks) -> Any: ...


T = TypeVar("T")
B = TypeVar("B", NoiseBank, RirBank)


def with_field(obj: T, name: str, value: Any) -> T:
    """A copy of the frozen dataclass ``obj`` with its ``init=False`` field ``name`` set
    (the bank a transform holds is not one of its params)."""
    out = copy.copy(obj)
    object.__setattr__(out, name, value)
    return out


def bound(bank: B | None, transform: str, what: str) -> B:
    """The bank a transform holds; a ConfigError when it was never bound."""
    if bank is None:
        raise ConfigError(f"batch transform {transform!r} has no {what}: bind one first "
                          "(transforms.bank.bind_banks)")
    return bank


def bind_banks(transforms: Sequence[T], banks: Banks) -> tuple[T, ...]:
    """``transforms`` with every one that uses a bank bound to ``banks``."""
    return tuple(t.bind(banks) if isinstance(t, UsesBanks) else t for t in transforms)
