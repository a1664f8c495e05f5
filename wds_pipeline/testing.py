"""Synthetic shards with exact control over shard sizes and clip lengths.

For tests and benchmarks of the *reading* side: writes format-v1 shards and an index
through the builder's shard writer (:class:`~wds_pipeline.shard_writer.ShardWriter`)
without decoding or resampling anything. Sample ``i`` of shard ``s`` holds
``clip(s, i, frames)``, so readers can check array equality.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np

from . import format as fmt
from . import storage
from .index import INDEX_NAME, BuildCounts, DatasetIndex
from .shard_writer import ShardWriter


@functools.cache
def _noise() -> np.ndarray:
    # 2 MB, built on first use rather than at import.
    return np.random.default_rng(0).integers(-20000, 20000, size=1 << 20, dtype=np.int16)


def clip(shard: int, i: int, frames: int) -> np.ndarray:
    """Deterministic int16 content for (shard, sample): a window into a fixed noise table."""
    noise = _noise()
    start = (shard * 7919 + i * 104729) % (len(noise) - frames) if frames < len(noise) else 0
    return np.resize(noise[start : start + frames], frames)


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
        # Written as the builder writes: a temp file (every byte through storage.write_all)
        # renamed into place, so a full disk fails here instead of leaving a short shard.
        tmp = os.path.join(root, f".{shard_name}.partial")
        try:
            with open(tmp, "wb", buffering=0) as f:
                writer = ShardWriter(f)
                for i in range(n):
                    k = frames(s, i)
                    key = f"{name}-s{s}-u{i:04d}"
                    writer.write_sample(key, _fields(s, i, k, key, label, corrupt, sample_rate, fbank), k)
                writer.close()
            storage.commit_file(tmp, os.path.join(root, shard_name), durable=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        shards.append(writer.info(shard_name, sample_rate))
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
    out = os.path.join(root, INDEX_NAME)
    storage.write_bytes_atomic(out, index.to_json().encode("utf-8"))
    return out


def _fields(s: int, i: int, k: int, key: str, label: Callable[[int, int], int],
            corrupt: dict[tuple[int, int], bytes] | None, sample_rate: int,
            fbank: bool) -> dict[str, fmt.Payload]:
    audio: fmt.Payload = fmt.encode_npy(clip(s, i, k))
    if corrupt and (s, i) in corrupt:
        audio = corrupt[(s, i)]
    fields: dict[str, fmt.Payload] = {
        fmt.AUDIO_NPY: audio,
        fmt.CLS: fmt.encode_cls(label(s, i)),
        fmt.JSON: fmt.encode_json({"id": key, "text": f"text {s} {i}"}),
    }
    if fbank:
        from .features import FbankConfig, fbank_numpy

        feats = fbank_numpy(clip(s, i, k), FbankConfig(sample_rate=sample_rate))
        fields[fmt.FBANK] = fmt.encode_npy(feats)
    return fields
