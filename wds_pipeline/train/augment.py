"""The trainer's ``augment`` block: which augmentations run, with which parameters, and the
noise and RIR corpora they draw from.

Each augmentation is a field holding the transform's own dataclass (its params), so its
defaults are declared once, in the transform's module (the Kaldi/WeSpeaker VoxCeleb
recipe's): an augmentation runs when its key is in the block, and ``{}`` gives the recipe's
parameters::

    augment:
      noise_index: runs/musan/train/index.json   # built by `wds-pipeline build musan`
      rir_index: runs/rirs/train/index.json      # built by `wds-pipeline build rirs`
      reverb: {}                                 # probability 0.3, a random RIR
      noise: {}                                  # noise 0-15 dB, music 5-15 dB, babble 13-20 dB
      spec_augment: {}                           # one time and one frequency mask, p=0.6
      # gain: {min_db: -6, max_db: 6}            # a per-row gain (row_gain)
      # speed: {}                                # 0.9/1.0/1.1 before the crop, in the loader's workers
      # speed: {as_classes: true}                # each perturbed copy a class: id10001@sp0.9, ...
      # bank_bytes: 512MB                        # per bank on the device; a larger corpus is held a
      # bank_refresh_batches: 2000               # subset at a time, a new one every 2000 batches (default: each epoch)

The block compiles (:meth:`AugmentConfig.specs`) to the transform specs of the seam: speed
to a sample transform (first in ``loader.sample_transforms``), reverb, noise and gain to
batch transforms (before ``batch_transforms``; reverb first, as Kaldi reverberates the
clean signal before adding noise), spec_augment to a feature transform the model runs on
its fbank. The banks are read from the two indexes by :mod:`.banks`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..loader.plan import ByteSize
from ..transforms import TransformSpec
from ..transforms.noise import AddNoise
from ..transforms.reverb import Reverb
from ..transforms.row_gain import RowGain
from ..transforms.specaugment import SpecAugment
from ..transforms.speed import Speed
from ..typedconfig import at_least, check_options, to_mapping

# The Kaldi VoxCeleb recipe reverberates with the small and medium simulated rooms.
RECIPE_RIR_CATEGORIES: tuple[str, ...] = ("smallroom", "mediumroom")


def transform_params(transform: Any) -> dict[str, Any]:
    """A transform dataclass as the ``params`` of its spec: its init fields only (a bank it
    holds is not a param), nested dataclasses as mappings."""
    return {f.name: to_mapping(getattr(transform, f.name)) for f in dataclasses.fields(transform) if f.init}


@dataclass(frozen=True)
class AugmentSpecs:
    """What the block compiles to, per stage of the seam."""

    sample: tuple[TransformSpec, ...]
    batch: tuple[TransformSpec, ...]
    feature: tuple[TransformSpec, ...]


@dataclass(frozen=True)
class AugmentConfig:
    noise_index: str | None = None  # index.json URL of a noise corpus (`build musan`, or a manifest's category column)
    rir_index: str | None = None  # index.json URL of an RIR corpus (`build rirs`)
    rir_categories: tuple[str, ...] = RECIPE_RIR_CATEGORIES  # which of the RIR corpus's categories are RIRs to use
    bank_bytes: ByteSize = at_least(1, 512 << 20)  # per bank, on the device; a larger corpus: a subset at a time
    bank_refresh_batches: int | None = at_least(1, None)  # a new subset every N batches (None: each epoch)
    max_clip_seconds: float | None = 30.0  # longer clips are cut to their first seconds (music tracks)
    # Speed perturbation before the crop (loader workers); as_classes: perturbed copies are
    # classes of their own and the model has num_classes * (1 + factors other than 1.0) outputs.
    speed: Speed | None = None
    reverb: Reverb | None = None
    noise: AddNoise | None = None
    gain: RowGain | None = None
    spec_augment: SpecAugment | None = None

    def __post_init__(self) -> None:
        check_options(self)
        if self.noise is not None and not self.noise_index:
            raise ValueError("noise needs noise_index: the index.json of a noise corpus "
                             "(wds-pipeline build musan ...)")
        if self.reverb is not None and not self.rir_index:
            raise ValueError("reverb needs rir_index: the index.json of an RIR corpus (wds-pipeline build rirs ...)")
        if self.reverb is not None and not self.rir_categories:
            raise ValueError("rir_categories: name at least one category of the RIR corpus")
        if self.max_clip_seconds is not None and not self.max_clip_seconds > 0:
            raise ValueError(f"max_clip_seconds must be > 0 (or null: whole clips), got {self.max_clip_seconds}")

    @classmethod
    def recipe(cls, noise_index: str, rir_index: str, **changes: Any) -> AugmentConfig:
        """Every augmentation of the VoxCeleb recipe on, with the transforms' defaults."""
        options: dict[str, Any] = {"speed": Speed(), "reverb": Reverb(), "noise": AddNoise(),
                                   "spec_augment": SpecAugment(), **changes}
        return cls(noise_index=noise_index, rir_index=rir_index, **options)

    def specs(self) -> AugmentSpecs:
        def spec(name: str, transform: Any) -> tuple[TransformSpec, ...]:
            return () if transform is None else (TransformSpec(name, transform_params(transform)),)

        return AugmentSpecs(
            sample=spec("speed", self.speed),
            batch=spec("reverb", self.reverb) + spec("noise", self.noise) + spec("row_gain", self.gain),
            feature=spec("spec_augment", self.spec_augment),
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match: every option (the banks' URLs and bounds included)."""
        return {f.name: (transform_params(v) if dataclasses.is_dataclass(v) else to_mapping(v))
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

