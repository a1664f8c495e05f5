"""The one place every sample is finished: speed perturbation where it is configured (before
the crop, where lengths are still free: :mod:`~wds_pipeline.transforms.speed`), its seeded
crop, then the other per-sample transforms (``LoaderConfig.sample_transforms``), whether it
was decoded from a streamed shard (``decode.py``) or sliced from a memory-mapped one
(``dataset.py``'s fast path).

Without transforms, finishing is the crop alone: one call, no other per-sample work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..transforms import TransformSpec, as_specs
from ..transforms.sample import SampleChain
from ..transforms.speed import configured_speed, perturbed_length, perturbed_window, speed_perturb
from .plan import crop_start
from .stages import TRANSFORM, StageClock


class SampleFinisher:
    """``finish(pcm, start, n, epoch, gid, align) -> (wave, offset)``: sample ``gid``, whose
    ``n`` frames lie at ``pcm[start:]``, perturbed, cropped (the offset a multiple of
    ``align``) and transformed; ``offset`` is where the crop starts within the sample."""

    def __init__(self, *, seed: int, crop_frames: int | None, sample_rate: int,
                 transforms: Sequence[TransformSpec] = ()) -> None:
        self.seed = seed
        self.crop = crop_frames
        self.sample_rate = sample_rate
        specs = as_specs(transforms)
        self.speed, at = configured_speed(specs)
        rest = [i for i in range(len(specs)) if i != at]  # each keeps its position's stream
        self.chain = (SampleChain([specs[i] for i in rest], seed=seed, sample_rate=sample_rate, positions=rest)
                      if rest else None)
        # Chosen once: the default (no transform) path is the crop and nothing else.
        self._cut = self._crop if self.speed is None else self._perturb_and_crop
        self._finish = self._cut if self.chain is None else self._cut_and_transform
        self.finish = self._finish if self.speed is None and self.chain is None else self._timed
        # Finishing reads no sample byte, only takes a view of it: the mapped path may then
        # check a batch's samples against their crc32s after finishing and before the gather.
        self.views_only = self.speed is None and self.chain is None
        self.clock: StageClock | None = None  # set by the dataset in each process: the transforms' seconds

    def _timed(self, pcm: np.ndarray, start: int, n: int, epoch: int, gid: int,
               align: int = 1) -> tuple[np.ndarray, int]:
        """The transforms' path, its seconds on the clock's TRANSFORM stage (the input
        doctor's; two clock reads per sample, only when transforms are configured)."""
        t0 = time.perf_counter()
        out = self._finish(pcm, start, n, epoch, gid, align)
        if self.clock is not None:
            self.clock.add(TRANSFORM, time.perf_counter() - t0)
        return out

    def _crop(self, pcm: np.ndarray, start: int, n: int, epoch: int, gid: int,
              align: int = 1) -> tuple[np.ndarray, int]:
        crop = self.crop
        offset = 0
        if crop and n > crop:
            offset = crop_start(self.seed, epoch, gid, n - crop)
            if align > 1:
                offset -= offset % align  # e.g. a crop of fbank frames starts on a frame boundary
            start += offset
            n = crop
        elif start == 0 and n == len(pcm):
            return pcm, 0  # the whole array, not a view of it (which the decoder would copy)
        return pcm[start : start + n], offset

    def _perturb_and_crop(self, pcm: np.ndarray, start: int, n: int, epoch: int, gid: int,
                          align: int = 1) -> tuple[np.ndarray, int]:
        """The perturbed utterance, cropped as :meth:`_crop` crops one (its offset drawn
        over the perturbed length), resampling only the crop's window (see the speed
        module). ``align`` holds at factor 1 only: a stored fbank is refused with sample
        transforms, so no caller needs it with speed."""
        speed = self.speed
        assert speed is not None
        factor = speed.factors[speed.draw(self.seed, epoch, gid)]
        if factor == 1.0:
            return self._crop(pcm, start, n, epoch, gid, align)
        wave, crop = pcm[start : start + n], self.crop
        if not crop:
            return speed.fit(wave, factor, self.sample_rate), 0  # planned at its stored length
        m = perturbed_length(n, factor)
        if m <= crop:
            return speed_perturb(wave, factor, self.sample_rate), 0  # short: padded as any short sample
        return perturbed_window(wave, factor, crop_start(self.seed, epoch, gid, m - crop), crop, self.sample_rate)

    def _cut_and_transform(self, pcm: np.ndarray, start: int, n: int, epoch: int, gid: int,
                           align: int = 1) -> tuple[np.ndarray, int]:
        wave, offset = self._cut(pcm, start, n, epoch, gid, align)
        assert self.chain is not None
        return self.chain(wave, epoch, gid), offset
