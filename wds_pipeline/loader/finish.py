"""The one place every sample is finished: its seeded crop, then the per-sample transforms
(``LoaderConfig.sample_transforms``), whether it was decoded from a streamed shard
(``decode.py``) or sliced from a memory-mapped one (``dataset.py``'s fast path).

Without transforms, finishing is the crop alone: one call, no other per-sample work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..transforms import TransformSpec
from ..transforms.sample import SampleChain
from .plan import crop_start


class SampleFinisher:
    """``finish(pcm, start, n, epoch, gid, align) -> (wave, offset)``: sample ``gid``, whose
    ``n`` frames lie at ``pcm[start:]``, cropped (the offset a multiple of ``align``) and
    transformed; ``offset`` is where the crop starts within the sample."""

    def __init__(self, *, seed: int, crop_frames: int | None, sample_rate: int,
                 transforms: Sequence[TransformSpec] = ()) -> None:
        self.seed = seed
        self.crop = crop_frames
        self.chain = SampleChain(transforms, seed=seed, sample_rate=sample_rate) if transforms else None
        # Chosen once: the default (no transform) path is the crop and nothing else.
        self.finish = self._crop if self.chain is None else self._crop_and_transform

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

    def _crop_and_transform(self, pcm: np.ndarray, start: int, n: int, epoch: int, gid: int,
                            align: int = 1) -> tuple[np.ndarray, int]:
        wave, offset = self._crop(pcm, start, n, epoch, gid, align)
        assert self.chain is not None
        return self.chain(wave, epoch, gid), offset
