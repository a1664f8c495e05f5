"""``reverb``: reverberation with a random room impulse response from a
:class:`~.bank.RirBank`, as a batched FFT convolution on the device.

Each row is picked with ``probability`` and convolved with a uniformly drawn RIR. The bank's
RIRs are aligned on their direct path and trimmed to their energetic part (the rule:
:func:`~.bank.trim_rir`), so row ``i`` becomes ``scipy.signal.fftconvolve(x, h)[:len(x)]``
for its trimmed RIR ``h``: the reverberated speech starts where the dry speech did, labels and
crops stay put. The convolution runs over the row's valid frames only (the padding is zero
and stays zero). Default probability: WeSpeaker's 0.6 for reverb or noise, split evenly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch

from ..errors import ConfigError
from .bank import Banks, RirBank, bound, with_field
from .batch import DeviceBatch
from .rows import picked_rows, uniform_index, valid_frames


@lru_cache(maxsize=64)
def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= ``n``: sizes the FFT libraries (cuFFT, pocketfft) are
    fast on, at most a few percent over ``n``."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 << max((n - 1) // p35, 0).bit_length()  # times the power of 2 that reaches n
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


@dataclass(frozen=True)
class Reverb:
    probability: float = 0.3
    bank: RirBank | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")

    def bind(self, banks: Banks) -> Reverb:
        if banks.rirs is None:
            raise ConfigError("batch transform 'reverb' needs an RIR bank; none was built")
        return with_field(self, "bank", banks.rirs)

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, rirs)``: the rows to reverberate and each one's RIR in the bank (two
        numbers per row whatever is picked)."""
        bank = self._bank()
        u = torch.rand((batch_size, 2), generator=generator, device=bank.rirs.device)
        rows = picked_rows(u[:, 0], self.probability)
        return rows, uniform_index(u[rows, 1], torch.tensor(len(bank.lengths), device=u.device))

    def __call__(self, batch: DeviceBatch, generator: torch.Generator) -> DeviceBatch:
        rows, rirs = self.draw(batch.wave.shape[0], generator)
        if len(rows) == 0:
            return batch
        bank = self._bank()
        dry = batch.wave[rows]
        frames = dry.shape[1]
        n = fft_size(frames + bank.rirs.shape[1] - 1)  # no wrap-around into the first frames
        wet = torch.fft.irfft(torch.fft.rfft(dry, n) * torch.fft.rfft(bank.rirs[rirs], n), n)[:, :frames]
        wave = batch.wave.clone()
        wave[rows] = wet * valid_frames(batch.lengths[rows], frames)
        return replace(batch, wave=wave)

    def _bank(self) -> RirBank:
        return bound(self.bank, "reverb", "RIR bank")
