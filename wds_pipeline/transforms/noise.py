"""``noise``: additive noise from a :class:`~.bank.NoiseBank` at a drawn SNR, batched on the
device.

Each row is picked with ``probability``; a picked row gets one of ``kinds`` (relative
``weight``), ``min_clips``-``max_clips`` clips of that kind's bank category, each from a
random start and looped to the row's length, scaled to equal power and summed, then the sum
scaled so that the row's power over its valid length divided by the noise's is exactly the
drawn SNR. Frames past a row's length stay zero. The defaults are the Kaldi VoxCeleb
recipe's as ECAPA-TDNN reimplementations draw them (noise 0-15 dB one clip, music 5-15 dB,
babble 13-20 dB from 3-7 speech clips) and WeSpeaker's probability (0.6 for reverb or noise,
split evenly: 0.3 each; here the two are independent). The mix is not clipped: float
samples may exceed [-1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .bank import Banks, NoiseBank, bound, with_field
from .batch import ChangesRows, DeviceBatch
from .keyed import RowRandom
from .rows import picked_rows, row_power, uniform_index, valid_frames


@dataclass(frozen=True)
class NoiseKind:
    """Clips of bank ``category``, ``min_clips``-``max_clips`` of them summed, at an SNR
    uniform in [min_snr_db, max_snr_db]; picked with relative ``weight``."""

    category: str
    min_snr_db: float
    max_snr_db: float
    min_clips: int = 1
    max_clips: int = 1
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.min_snr_db <= self.max_snr_db:
            raise ValueError(f"min_snr_db ({self.min_snr_db}) must be <= max_snr_db ({self.max_snr_db})")
        if not 1 <= self.min_clips <= self.max_clips:
            raise ValueError(f"need 1 <= min_clips ({self.min_clips}) <= max_clips ({self.max_clips})")
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


RECIPE_KINDS = (
    NoiseKind("noise", 0.0, 15.0),
    NoiseKind("music", 5.0, 15.0),
    NoiseKind("speech", 13.0, 20.0, min_clips=3, max_clips=7),  # babble
)


@dataclass(frozen=True)
class NoiseDraws:
    """What one batch drew: the ``rows`` (R,) that get noise and, per such row, its kind
    (R,), SNR in dB (R,), bank clip ids (R, K), which of the K clips are mixed (R, K) and
    where in each clip the mix starts (R, K)."""

    rows: torch.Tensor
    kind: torch.Tensor
    snr_db: torch.Tensor
    clips: torch.Tensor
    used: torch.Tensor
    offsets: torch.Tensor


@dataclass(frozen=True)
class AddNoise(ChangesRows):
    probability: float = 0.3
    kinds: tuple[NoiseKind, ...] = RECIPE_KINDS
    bank: NoiseBank | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not self.kinds:
            raise ValueError("kinds: give at least one kind of noise")

    def bind(self, banks: Banks) -> AddNoise:
        if banks.noise is None:
            raise ConfigError("batch transform 'noise' needs a noise bank; none was built")
        for kind in self.kinds:
            banks.noise.category_id(kind.category, "batch transform 'noise'")
        return with_field(self, "bank", banks.noise)

    def draw(self, rng: RowRandom) -> NoiseDraws:
        """Every random number of one batch, keyed per row: draw 0 picks the row; a picked row
        draws its kind, SNR, clip count, then each clip and its offset (draws 1..3+2K)."""
        bank = self._bank()
        dev = bank.clips.device
        k = max(kind.max_clips for kind in self.kinds)
        rows = picked_rows(rng.uniform(1)[:, 0], self.probability)
        u = rng[rows].uniform(4 + 2 * k)  # column 0: the pick, drawn again
        weights = torch.tensor([kind.weight for kind in self.kinds], dtype=torch.float64)
        bounds = (torch.cumsum(weights, 0) / weights.sum()).to(dev, torch.float32)
        kind = torch.searchsorted(bounds, u[:, 1].contiguous(), right=True).clamp(max=len(self.kinds) - 1)

        def per_kind(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, device=dev)[kind]

        low = per_kind([x.min_snr_db for x in self.kinds])
        snr = low + (per_kind([x.max_snr_db for x in self.kinds]) - low) * u[:, 2]
        fewest = per_kind([float(x.min_clips) for x in self.kinds])
        n_clips = fewest + uniform_index(u[:, 3], per_kind([float(x.max_clips - x.min_clips + 1)
                                                            for x in self.kinds]))
        cat = torch.tensor([bank.categories.index(x.category) for x in self.kinds], device=dev)[kind]
        clips = bank.start[cat][:, None] + uniform_index(u[:, 4 : 4 + k], bank.count[cat][:, None])
        offsets = uniform_index(u[:, 4 + k :], bank.lengths[clips])
        used = torch.arange(k, device=dev)[None, :] < n_clips[:, None]
        return NoiseDraws(rows, kind, snr, clips, used, offsets)

    def noise(self, draws: NoiseDraws, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """``(R, frames)``: the drawn clips, looped from their offsets, each at unit power over
        the row's valid length, summed over the used ones, zero past the length.

        The used clips only (``used``: 2.3 of 7 on average with the recipe's kinds) are taken,
        in one gather of windows from the bank (``NoiseBank.windows``); each row's are summed in
        clip order, one pass per clip slot over the rows that have that many (no atomics: the
        same sums on any device)."""
        bank = self._bank()
        row, slot = draws.used.nonzero().unbind(1)  # row-major: each row's clips in slot order
        pieces = bank.windows(draws.clips[row, slot], draws.offsets[row, slot], frames)
        if int(lengths.min()) < frames:  # rows shorter than the batch (crops are all full)
            pieces.masked_fill_(~valid_frames(lengths[row], frames), 0.0)  # in place: no float copy of the mask
        power = row_power(pieces, lengths[row])
        pieces *= torch.where(power > 0, power.clamp(min=1e-30).rsqrt(), 0.0).to(pieces.dtype)[:, None]
        n_clips = draws.used.sum(1)
        first = torch.cumsum(n_clips, 0) - n_clips  # where each row's pieces start
        out = pieces[first]
        for k in range(1, draws.used.shape[1]):
            more = torch.nonzero(n_clips > k).squeeze(1)
            if len(more) == 0:
                break
            out[more] += pieces[first[more] + k]
        return out

    def changed_rows(self, batch: DeviceBatch, rng: RowRandom) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rows given noise and their new waves (None: no row picked)."""
        draws = self.draw(rng)
        if len(draws.rows) == 0:
            return None
        clean, lengths = batch.wave[draws.rows], batch.lengths[draws.rows]
        noise = self.noise(draws, lengths, clean.shape[1])
        signal_power, noise_power = row_power(clean, lengths), row_power(noise, lengths)
        # power ratio signal/(gain^2 * noise) = 10^(snr/10): the gain that makes it exact
        # (in float64, rounded once: the same gain for a row whatever batch it is in).
        snr = torch.pow(10.0, draws.snr_db.double() / 10)
        gain = torch.where(noise_power > 0, (signal_power / (noise_power.clamp(min=1e-30) * snr)).sqrt(), 0.0)
        return draws.rows, noise.mul_(gain.to(noise.dtype)[:, None]).add_(clean)

    def _bank(self) -> NoiseBank:
        return bound(self.bank, "noise", "noise bank")
