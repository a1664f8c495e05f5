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

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ..errors import ConfigError
from .bank import Banks, RirBank, bound, with_field
from .batch import ChangesRows, DeviceBatch
from .keyed import RowRandom
from .rows import picked_rows, uniform_index, valid_frames


@lru_cache(maxsize=64)
def fft_size(n: int) -> int:
    """The smallest 2^a 5^b >= ``n``: sizes torch's FFTs are fast on, at most ~25% over ``n``.
    Measured (rfft+irfft of 20 rows, 1 CPU thread, MKL): 40,000 = 2^6 5^4 takes 4.5 ms,
    40,960 = 2^13 5 5.0 ms, 39,366 = 2 3^9 8.4 ms, 38,896 (the exact 2 s + 1.8 k RIR) 10.5 ms;
    powers of 3 and other primes are slow on the CPU, and cuFFT is fast on 2^a 5^b too."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 5
    while p5 < best:
        best = min(best, p5 << max((n - 1) // p5, 0).bit_length())  # times the power of 2 that reaches n
        p5 *= 5
    return best


# Spectra are multiplied in rows padded to a multiple of this many bins: torch's CPU complex
# multiply is vectorised with a scalar tail (the last elements of the tensor) that rounds
# differently (a fused multiply-add), so with odd-length rows (n // 2 + 1 bins) the last row's
# last bins would depend on how many rows the batch has; with whole vectors in every row each
# row's product is the same in any batch. 16 complex64 covers AVX-512 twice over.
SPECTRUM_ALIGN = 16


@dataclass(frozen=True)
class Reverb(ChangesRows):
    probability: float = 0.3
    bank: RirBank | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")

    def bind(self, banks: Banks) -> Reverb:
        if banks.rirs is None:
            raise ConfigError("batch transform 'reverb' needs an RIR bank; none was built")
        return with_field(self, "bank", banks.rirs)

    def draw(self, rng: RowRandom) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, rirs)``: the rows to reverberate (draw 0 of each row) and each one's RIR in
        the bank (draw 1 of the picked rows)."""
        bank = self._bank()
        rows = picked_rows(rng.uniform(1)[:, 0], self.probability)
        u = rng[rows].uniform(1, first=1)[:, 0]
        return rows, uniform_index(u, torch.tensor(len(bank.lengths), device=u.device))

    def changed_rows(self, batch: DeviceBatch, rng: RowRandom) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rows reverberated and their new waves (None: no row picked)."""
        rows, rirs = self.draw(rng)
        if len(rows) == 0:
            return None
        bank = self._bank()
        dry = batch.wave[rows]
        frames = dry.shape[1]
        n = fft_size(frames + bank.rirs.shape[1] - 1)  # no wrap-around into the first frames
        bins = n // 2 + 1
        spectrum = bank.spectra(rirs, n, -(-bins // SPECTRUM_ALIGN) * SPECTRUM_ALIGN)
        spectrum[:, :bins] *= torch.fft.rfft(dry, n)  # a new tensor: the kept spectra stay as they are
        wet = torch.fft.irfft(spectrum[:, :bins], n)[:, :frames]
        lengths = batch.lengths[rows]
        return rows, wet.masked_fill_(~valid_frames(lengths, frames), 0.0) if int(lengths.min()) < frames else wet

    def _bank(self) -> RirBank:
        return bound(self.bank, "reverb", "RIR bank")
