"""Tiny noise and RIR corpora as shards for the trainer's augmentation tests: synthetic
MUSAN and RIRS_NOISES (``wds_pipeline.synth``) built with ``build_dataset``."""

from __future__ import annotations

from pathlib import Path

from wds_pipeline import synth
from wds_pipeline.builder import BuildOptions, build_dataset

# Per MUSAN category (noise, music, speech): subsets x clips; per room size: rooms x RIRs.
MUSAN_CLIPS = 1
RIRS_PER_ROOM = 2


def build_noise_corpora(root: Path, *, noise_seconds: float = 0.5) -> dict[str, str]:
    """``{"noise": index URL, "rirs": index URL}`` of the built corpora under ``root``."""
    synth.synth_musan(str(root / "musan"), clips_per_subset=MUSAN_CLIPS, seconds=noise_seconds, seed=1)
    synth.synth_rirs(str(root / "RIRS_NOISES"), rooms_per_size=1, rirs_per_room=RIRS_PER_ROOM, real_rirs=1,
                     isotropic_noises=1, pointsource_noises=1, rir_seconds=0.25, noise_seconds=0.5, seed=1)
    options = BuildOptions(workers=1, progress=False, min_duration=0)
    out = {}
    for name, src in (("noise", "musan"), ("rirs", "RIRS_NOISES")):
        build_dataset("musan" if name == "noise" else "rirs", str(root / src), str(root / f"{name}-shards"),
                      options=options, log=lambda _: None)
        out[name] = str(root / f"{name}-shards" / "train" / "index.json")
    return out
