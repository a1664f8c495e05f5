"""Per-sample decoding inside a worker: tar members -> a held :class:`Sample` (cropped, in the
worker's arena when it fits) or a :class:`Failed` marker, and the options that shape it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import format as fmt
from ..errors import ConfigError, ShardError
from ..features import FbankConfig, num_frames
from ..transforms.sample import TransformError
from .buffers import SampleArena
from .config import ReadConfig
from .finish import SampleFinisher
from .labels import label_problem
from .plan import PlanConfig
from .shards import ShardEntry


class SampleDecodeError(ShardError, ValueError):
    pass


@dataclass
class Sample:
    key: str
    wave: np.ndarray
    label: int
    meta: dict | None
    feats: np.ndarray | None
    dataset: int
    slot: int = -1  # arena slot holding ``wave``, or -1 for a standalone array
    released: bool = False  # no later batch needs it: its arena slot is freed once collated
    gid: int = -1  # the sample's global id in the loader's datasets (Batch.sample_ids)


@dataclass
class Failed:
    key: str
    reason: str


class SampleDecoder:
    """Decodes the samples a worker keeps, finished by ``finisher`` (the crop, seeded per
    sample, not per order, and the sample transforms), which the mapped path shares."""

    def __init__(self, plan_cfg: PlanConfig, read_cfg: ReadConfig, sample_rate: int) -> None:
        self.plan_cfg = plan_cfg
        self.read_cfg = read_cfg
        self.sample_rate = sample_rate
        self.fbank_cfg = FbankConfig(sample_rate=sample_rate)
        # Audio frames per feature frame, as the builder's fbank.npy was computed.
        self.hop = int(round(sample_rate * (self.fbank_cfg.frame_shift_ms * 0.001)))
        if read_cfg.sample_transforms and "fbank" in read_cfg.fields:
            raise ConfigError("loader.sample_transforms change the waveform, not the fbank the builder "
                              "stored; compute features from batch.waveform (drop 'fbank' from fields)")
        self.finisher = SampleFinisher(seed=plan_cfg.seed, crop_frames=plan_cfg.crop_frames,
                                       sample_rate=sample_rate, transforms=read_cfg.sample_transforms)

    def __call__(self, key: str, fields: dict, entry: ShardEntry, idx: int, epoch: int,
                 arena: SampleArena | None, *, copy: bool = True) -> Sample | Failed:
        """``copy=False``: the waveform may stay a view of ``fields`` (a mapped file that
        outlives the batch), instead of a copy that does not pin a reused read block."""
        try:
            return self._decode_sample(key, fields, entry, idx, epoch, arena, copy)
        except TransformError:
            raise  # a broken transform, not damage in this sample: never skipped
        except Exception as e:  # any decoder failure is per-sample data damage
            if self.read_cfg.on_decode_error == "raise":
                raise SampleDecodeError(f"{entry.url}: sample {key!r} does not decode: {e}") from e
            return Failed(key, f"{type(e).__name__}: {e}")

    def _decode_sample(self, key: str, fields: dict, entry: ShardEntry, idx: int, epoch: int,
                       arena: SampleArena | None, copy: bool) -> Sample:
        want = self.read_cfg.fields
        payload = fields.get(entry.audio_field)
        if payload is None:
            raise SampleDecodeError(f"missing {entry.audio_field}")
        wave = fmt.decode_field(entry.audio_field, payload)
        if wave.dtype != np.int16 or wave.ndim != 1:
            raise SampleDecodeError(f"audio must be 1-D int16, got {wave.dtype} {wave.shape}")
        crop = self.plan_cfg.crop_frames
        use_feats = "fbank" in want and entry.has_fbank is not None
        hop = self.hop
        # The fbank crop must start on a feature frame boundary.
        wave, start = self.finisher.finish(wave, 0, len(wave), epoch, entry.first_gid + idx, hop if use_feats else 1)
        slot = -1
        if arena is not None and len(wave) <= arena.width and arena.free:
            slot = arena.put(wave)
            wave = arena.data[slot, : len(wave)]
        elif copy and not wave.flags.owndata:
            wave = wave.copy()  # do not pin the whole read block in the shuffle buffer
        label = -1
        if "label" in want and fmt.CLS in fields:
            label = int(bytes(fields[fmt.CLS]))
            problem = label_problem(label, entry.num_classes)
            if problem is not None:  # it would reach the loss as an out-of-range target
                raise SampleDecodeError(problem)
        meta = None
        if ("text" in want or "meta" in want) and fmt.JSON in fields:
            meta = fmt.decode_field(fmt.JSON, fields[fmt.JSON])
        feats = None
        fbank_field = entry.has_fbank
        if use_feats and fbank_field is not None and fbank_field in fields:
            feats = fmt.decode_field(fbank_field, fields[fbank_field])
            if crop and start:
                feats = feats[start // hop :]
            if crop:
                feats = feats[: num_frames(crop, self.fbank_cfg)]
            feats = feats.copy()
        return Sample(key, wave, label, meta, feats, entry.meta.dataset, slot, gid=entry.first_gid + idx)
