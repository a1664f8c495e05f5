"""The noise and RIR banks of the ``augment`` block, read from their shards.

A bank's clips are read through the same loader, read path and storage as the training
data (so a local folder, ``gs://`` and a FUSE mount such as Drive work alike, cached by the
same rules): a :class:`StreamingLoader` over the corpus's index, shuffle off, whole clips,
int16, in index order. Each clip's category is its class name in the index's label map
(``build musan``: noise, music, speech; ``build rirs``: the room size, real, ...).

Memory is bounded by ``augment.bank_bytes`` per bank, counted as the bank holds it on the
device (float32, every clip padded to the longest): clips are taken in index order and one
that would take the bank past the bound is skipped, so the same corpus and bound give the
same bank on every rank and after every resume. Clips longer than ``max_clip_seconds`` are
cut to their first seconds first. (Refreshing the bank with other clips as the epoch goes
is not done yet.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import ConfigError
from ..loader import LoaderConfig, StreamingLoader
from ..transforms.bank import Banks, NoiseBank, RirBank
from .augment import AugmentConfig

BANK_READ_BATCH = 16  # clips per batch while reading a bank (once, at start-up)
FLOAT32_BYTES = 4


def read_clips(index: str, loader: LoaderConfig) -> tuple[Iterator[tuple[np.ndarray, str]], int]:
    """``((clip, category), ...)`` of every sample of ``index`` in index order (int16, whole),
    and the corpus's sample rate. ``loader``'s storage and cache options are used."""
    # rank 0 of 1: every rank reads the whole corpus (not its share, as for training data).
    reader = StreamingLoader(index, LoaderConfig(
        batch_size=BANK_READ_BATCH, shuffle=False, last_batch="pad", crop_seconds=None,
        waveform_dtype="int16", fields=("waveform", "label"), num_workers=0, persistent_workers=False,
        cache_dir=loader.cache_dir, cache_limit=loader.cache_limit, storage_options=dict(loader.storage_options),
        allow_external_shards=loader.allow_external_shards, on_decode_error=loader.on_decode_error),
        rank=0, world_size=1)
    names = reader.label_names

    def clips() -> Iterator[tuple[np.ndarray, str]]:
        for batch in reader:
            assert batch.waveform is not None
            wave = batch.waveform.numpy()
            for row, (n, label, pad) in enumerate(zip(batch.lengths.tolist(), batch.labels.tolist(),
                                                      batch.is_padding.tolist())):
                if not pad:
                    yield wave[row, :n].copy(), names[label] if label >= 0 else ""

    return clips(), reader.sample_rate


def within_budget(clips: Iterator[tuple[np.ndarray, str]], budget: int, max_frames: int | None,
                  keep: Callable[[str], bool]) -> list[tuple[np.ndarray, str]]:
    """The clips of a kept category, each cut to ``max_frames``, in order, skipping any that
    would take the padded float32 bank past ``budget`` bytes."""
    taken: list[tuple[np.ndarray, str]] = []
    longest = 0
    for clip, category in clips:
        if not keep(category):
            continue
        clip = clip[:max_frames] if max_frames else clip
        if (len(taken) + 1) * max(longest, len(clip)) * FLOAT32_BYTES > budget:
            continue
        taken.append((clip, category))
        longest = max(longest, len(clip))
    return taken


def load_banks(augment: AugmentConfig, loader: LoaderConfig, *, sample_rate: int,
               device: torch.device | str) -> Banks:
    """The banks ``augment`` needs (None where no transform draws from one), on ``device``."""
    noise = rirs = None
    if augment.noise is not None and augment.noise_index:
        taken = _read(augment, loader, augment.noise_index, "noise_index", sample_rate, lambda c: bool(c))
        noise = NoiseBank.from_arrays([c for c, _ in taken], [cat for _, cat in taken],
                                      sample_rate=sample_rate, device=device)
    if augment.reverb is not None and augment.rir_index:
        wanted = set(augment.rir_categories)
        taken = _read(augment, loader, augment.rir_index, "rir_index", sample_rate, wanted.__contains__)
        rirs = RirBank.from_arrays([c for c, _ in taken], sample_rate=sample_rate, device=device)
    return Banks(noise=noise, rirs=rirs)


def _read(augment: AugmentConfig, loader: LoaderConfig, index: str, key: str, sample_rate: int,
          keep: Callable[[str], bool]) -> list[tuple[np.ndarray, str]]:
    clips, rate = read_clips(index, loader)
    if rate != sample_rate:
        raise ConfigError(f"augment.{key} {index}: its clips are at {rate} Hz, the training data at "
                          f"{sample_rate} Hz; build the corpus with --sample-rate {sample_rate}")
    max_frames = round(augment.max_clip_seconds * sample_rate) if augment.max_clip_seconds else None
    seen: set[str] = set()

    def kept(category: str) -> bool:
        seen.add(category)
        return keep(category)

    taken = within_budget(clips, augment.bank_bytes, max_frames, kept)
    if key == "rir_index" and not any(keep(c) for c in seen):
        raise ConfigError(f"augment.{key} {index}: no clip of categories {list(augment.rir_categories)}; it has "
                          f"{', '.join(sorted(seen)) or 'no clips'}: set augment.rir_categories to some of these")
    if not taken:
        raise ConfigError(f"augment.{key} {index}: no clip fits augment.bank_bytes={augment.bank_bytes}; "
                          "raise bank_bytes or lower max_clip_seconds")
    return taken
