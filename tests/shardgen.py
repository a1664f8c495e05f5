"""Test helper: write small wds_pipeline datasets directly (no builder), with exact control
over shard sizes and clip lengths. Samples are deterministic: sample ``i`` of shard ``s``
holds ``frames`` int16 values that encode (s, i), so tests can check array equality."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from wds_pipeline import format as fmt
from wds_pipeline.index import BuildCounts, DatasetIndex, ShardInfo


def clip(shard: int, i: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng([shard, i])
    return rng.integers(-20000, 20000, size=frames, dtype=np.int16)


def make_dataset(
    root: str,
    shard_sizes: list[int],
    *,
    frames=lambda s, i: 1600 + 160 * ((s * 7 + i * 3) % 20),
    speakers: int = 5,
    name: str = "synthetic",
    corrupt: dict[tuple[int, int], bytes] | None = None,
    sample_rate: int = 16000,
) -> str:
    """Write shards + index.json into ``root``; returns the index path.

    ``corrupt`` maps (shard, sample) to replacement bytes for that sample's audio.npy,
    to produce samples that fail to decode.
    """
    os.makedirs(root, exist_ok=True)
    shards = []
    for s, n in enumerate(shard_sizes):
        name_s = f"shard-{s:06d}.tar"
        path = os.path.join(root, name_s)
        nframes = []
        with open(path, "wb") as f:
            w = fmt.ReproducibleTarWriter(f)
            for i in range(n):
                k = frames(s, i)
                audio = fmt.encode_npy(clip(s, i, k))
                if corrupt and (s, i) in corrupt:
                    audio = corrupt[(s, i)]
                key = f"{name}-s{s}-u{i:04d}"
                w.write_sample(
                    key,
                    {
                        fmt.AUDIO_NPY: audio,
                        fmt.CLS: fmt.encode_cls((s + i) % speakers),
                        fmt.JSON: fmt.encode_json({"id": key, "text": f"text {s} {i}"}),
                    },
                )
                nframes.append(k)
            w.close()
            offsets = list(w.sample_offsets)
        data = open(path, "rb").read()
        shards.append(
            ShardInfo(
                url=name_s,
                nsamples=n,
                filesize=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                duration=sum(nframes) / sample_rate,
                sample_frames=nframes,
                sample_offsets=offsets,
            )
        )
    index = DatasetIndex(
        name=name,
        shards=shards,
        sample_rate=sample_rate,
        fields=[fmt.AUDIO_NPY, fmt.CLS, fmt.JSON],
        audio_field=fmt.AUDIO_NPY,
        label_map={f"spk{j}": j for j in range(speakers)},
        counts=BuildCounts(inputs=sum(shard_sizes), written=sum(shard_sizes), samples=sum(shard_sizes)),
        build_fingerprint=name,
    )
    out = os.path.join(root, "index.json")
    with open(out, "w") as f:
        f.write(index.to_json())
    return out


def all_keys(index_path: str) -> set[str]:
    from wds_pipeline.index import load_index

    idx = load_index(index_path)
    keys = set()
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for key, _ in fmt.iter_samples(f, source=idx.shard_url(i)):
                keys.add(key)
    return keys
