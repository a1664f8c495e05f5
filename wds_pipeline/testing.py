"""Synthetic shards with exact control over shard sizes and clip lengths.

For tests and benchmarks of the *reading* side: writes format-v1 shards and an index
directly, without decoding or resampling anything. Sample ``i`` of shard ``s`` holds
``clip(s, i, frames)``, so readers can check array equality.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np

from . import format as fmt
from .index import BuildCounts, DatasetIndex, ShardInfo

_NOISE = np.random.default_rng(0).integers(-20000, 20000, size=1 << 20, dtype=np.int16)


def clip(shard: int, i: int, frames: int) -> np.ndarray:
    """Deterministic int16 content for (shard, sample): a window into a fixed noise table."""
    start = (shard * 7919 + i * 104729) % (len(_NOISE) - frames) if frames < len(_NOISE) else 0
    return np.resize(_NOISE[start : start + frames], frames)


def default_frames(s: int, i: int) -> int:
    return 1600 + 160 * ((s * 7 + i * 3) % 20)


def write_synthetic_dataset(
    root: str,
    shard_sizes: list[int],
    *,
    frames: Callable[[int, int], int] = default_frames,
    speakers: int = 5,
    label: Callable[[int, int], int] | None = None,
    name: str = "synthetic",
    corrupt: dict[tuple[int, int], bytes] | None = None,
    sample_rate: int = 16000,
    fbank: bool = False,
) -> str:
    """Write shards + ``index.json`` into local folder ``root``; returns the index path.

    ``corrupt`` maps (shard, sample) to replacement bytes for that sample's audio, to
    produce samples that fail to decode.
    """
    os.makedirs(root, exist_ok=True)
    label = label or (lambda s, i: (s + i) % speakers)
    shards = []
    for s, n in enumerate(shard_sizes):
        shard_name = f"shard-{s:06d}.tar"
        path = os.path.join(root, shard_name)
        nframes = []
        with open(path, "wb") as f:
            writer = fmt.ReproducibleTarWriter(f)
            for i in range(n):
                k = frames(s, i)
                audio = fmt.encode_npy(clip(s, i, k))
                if corrupt and (s, i) in corrupt:
                    audio = corrupt[(s, i)]
                key = f"{name}-s{s}-u{i:04d}"
                fields = {
                    fmt.AUDIO_NPY: audio,
                    fmt.CLS: fmt.encode_cls(label(s, i)),
                    fmt.JSON: fmt.encode_json({"id": key, "text": f"text {s} {i}"}),
                }
                if fbank:
                    from .features import FbankConfig, fbank_numpy

                    fields[fmt.FBANK] = fmt.encode_npy(fbank_numpy(clip(s, i, k), FbankConfig(sample_rate=sample_rate)))
                writer.write_sample(key, fields)
                nframes.append(k)
            writer.close()
        sha, size = _sha256(path)
        shards.append(
            ShardInfo(
                url=shard_name,
                nsamples=n,
                filesize=size,
                sha256=sha,
                duration=sum(nframes) / sample_rate,
                sample_frames=nframes,
                sample_offsets=list(writer.sample_offsets),
            )
        )
    index = DatasetIndex(
        name=name,
        shards=shards,
        sample_rate=sample_rate,
        fields=[fmt.AUDIO_NPY, fmt.CLS, fmt.JSON] + ([fmt.FBANK] if fbank else []),
        audio_field=fmt.AUDIO_NPY,
        label_map={f"spk{j:04d}": j for j in range(speakers)},
        counts=BuildCounts(inputs=sum(shard_sizes), written=sum(shard_sizes), samples=sum(shard_sizes)),
        build_fingerprint=name,
    )
    out = os.path.join(root, "index.json")
    with open(out, "w") as f:
        f.write(index.to_json())
    return out


def _sha256(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
