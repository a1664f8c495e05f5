"""The noise and RIR banks of the ``augment`` block, read from their shards, refreshed as
the epoch goes when a corpus is larger than ``augment.bank_bytes``.

A bank's clips are read through the same loader, read path and storage as the training
data (so a local folder, ``gs://`` and a FUSE mount such as Drive work alike, cached by the
same rules): a :class:`StreamingLoader` over the corpus's index, shuffle off, whole clips,
int16, in index order. Each clip's category is its class name in the index's label map
(``build musan``: noise, music, speech; ``build rirs``: the room size, real, ...); a bank
keeps the categories its transform asks for (``augment.noise``'s kinds,
``augment.rir_categories``), each of which must be in the corpus.

Memory is bounded by ``augment.bank_bytes`` per bank on the device (float32, every clip
padded to the longest, clips cut to ``max_clip_seconds`` first): the bank is allocated
there once at its planned size and filled one clip at a time, so the host holds one clip
in flight. When the corpus fits, it is read once and never again. Otherwise the bank holds
a subset (:func:`.bank_plan.plan_subset`: every category, each in proportion), a new one for
each segment of ``augment.bank_refresh_batches`` batches (None: each epoch), drawn from a
generator keyed by (run seed, epoch, segment): a resumed run, and every rank, holds the
bank the uninterrupted run held at that batch. Planning needs each clip's category, which
the index does not record: one pass reads the labels at start-up; each refresh then streams
the corpus again (a remote one from the local cache) and keeps the planned clips, after the
old bank is dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..loader import LoaderConfig, StreamingLoader
from ..transforms.bank import Banks, NoiseBank, RirBank, bind_banks, trim_rir
from ..transforms.batch import INT16_SCALE
from ..transforms.sample import sample_rng
from .augment import AugmentConfig
from .bank_plan import FLOAT32_BYTES, Catalog, index_frames, max_frames, padded_bytes, plan_subset

__all__ = ["FLOAT32_BYTES", "BankFeed", "BankSet", "load_banks"]

BANK_READ_BATCH = 1  # clips per batch while reading a bank: one clip in flight on the host
STREAM = 1 << 63  # the plans' random streams: sample ids a corpus never has


def bank_reader(index: str, loader: LoaderConfig) -> StreamingLoader:
    """A reader of every sample of ``index`` in index order (int16, whole), with ``loader``'s
    storage and cache options; rank 0 of 1: every rank reads the whole corpus."""
    return StreamingLoader(index, LoaderConfig(
        batch_size=BANK_READ_BATCH, shuffle=False, last_batch="pad", crop_seconds=None,
        waveform_dtype="int16", fields=("waveform", "label"), num_workers=0, persistent_workers=False,
        cache_dir=loader.cache_dir, cache_limit=loader.cache_limit, storage_options=dict(loader.storage_options),
        allow_external_shards=loader.allow_external_shards, on_decode_error=loader.on_decode_error),
        rank=0, world_size=1)


def clips_of(reader: StreamingLoader) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(sample id, clip, category)`` of every sample the reader yields; each clip a view
    valid until the next one."""
    names = reader.label_names
    for batch in reader:
        assert batch.waveform is not None and batch.sample_ids is not None
        wave = batch.waveform.numpy()
        for row, (gid, n, label, pad) in enumerate(zip(batch.sample_ids.tolist(), batch.lengths.tolist(),
                                                       batch.labels.tolist(), batch.is_padding.tolist())):
            if not pad:
                yield gid, wave[row, :n], names[label] if label >= 0 else ""


def permute_rows_(data: torch.Tensor, order: Sequence[int]) -> None:
    """Row ``i`` of ``data`` becomes its row ``order[i]`` (``order``: a permutation of its
    rows), in place with one row of scratch: the bank is never held twice."""
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        scratch = data[start].clone()
        j = start
        while True:
            done[j] = True
            k = order[j]
            if k == start:
                data[j].copy_(scratch)
                break
            data[j].copy_(data[k])
            j = k


class BankFeed:
    """One bank of the block (noise or RIRs): the corpus's plan, and its bank at a batch.

    ``passes`` counts the reads of the corpus (the label pass included)."""

    key = ""  # the block's key naming the corpus
    stream = STREAM

    def __init__(self, url: str, wanted: Sequence[str], augment: AugmentConfig, loader: LoaderConfig, *,
                 sample_rate: int, seed: int, device: torch.device | str) -> None:
        self.where = f"augment.{self.key} {url}"
        self.wanted = tuple(sorted(set(wanted)))
        self.reader = bank_reader(url, loader)
        if self.reader.sample_rate != sample_rate:
            raise ConfigError(f"{self.where}: its clips are at {self.reader.sample_rate} Hz, the training data at "
                              f"{sample_rate} Hz; build the corpus with --sample-rate {sample_rate}")
        self.budget, self.every = augment.bank_bytes, augment.bank_refresh_batches
        self.cut = max_frames(augment.max_clip_seconds, sample_rate)
        self.sample_rate, self.seed, self.device = sample_rate, seed, device
        self.passes = 0
        frames = index_frames(self.reader.indexes[0], self.cut)
        fits = frames is not None and padded_bytes(len(frames), int(frames.max(initial=0))) <= self.budget
        # The whole corpus fits: read it once, keeping the wanted categories as they come.
        self.all_frames = frames if fits else None
        self.catalog = None if fits else self._catalog()
        self.whole = self.catalog is None or self.catalog.fits(self.budget)
        self.held: tuple[int, int] | None = None  # the (epoch, segment) of the bank last read

    def segment(self, epoch: int, index: int) -> tuple[int, int]:
        """The (epoch, segment) whose bank batch ``index`` of ``epoch`` uses."""
        if self.whole:
            return (0, 0)
        return (epoch, index // self.every if self.every else 0)

    def read(self, epoch: int, index: int) -> Any:
        """The bank of batch ``index`` of ``epoch``, read now (drop the one held before: the
        device holds one at a time)."""
        epoch, segment = self.held = self.segment(epoch, index)
        if self.catalog is None:
            assert self.all_frames is not None
            return self._read(None, len(self.all_frames), int(self.all_frames.max(initial=0)))
        plan = plan_subset(self.catalog, self.budget, sample_rng(self.seed, epoch, self.stream, segment),
                           where=self.where)
        return self._read(set(self.catalog.ids[plan].tolist()), len(plan), int(self.catalog.frames[plan].max()))

    def _catalog(self) -> Catalog:
        """Each clip's id, frames and category: one pass over the labels."""
        self.passes += 1
        ids, frames, categories = [], [], []
        for gid, clip, category in clips_of(self.reader):
            ids.append(gid)
            frames.append(min(len(clip), self.cut or len(clip)))
            categories.append(category)
        self._check(Counter(categories))
        keep = [i for i, c in enumerate(categories) if c in self.wanted]
        return Catalog(np.asarray(ids, dtype=np.int64)[keep], np.asarray(frames, dtype=np.int64)[keep],
                       np.asarray([self.wanted.index(categories[i]) for i in keep], dtype=np.int64), self.wanted)

    def _read(self, ids: set[int] | None, rows: int, width: int) -> Any:
        """The bank of the clips ``ids`` (None: every clip of a wanted category), at most
        ``rows`` clips of at most ``width`` frames, filled in on the device."""
        self.passes += 1
        data = torch.zeros((rows, width), dtype=torch.float32, device=self.device)
        lengths: list[int] = []
        categories: list[str] = []
        seen: Counter[str] = Counter()
        for gid, clip, category in clips_of(self.reader):
            seen[category] += 1
            if category not in self.wanted or (ids is not None and gid not in ids):
                continue
            row = self._clip(clip[: self.cut] if self.cut else clip)
            data[len(lengths), : len(row)] = torch.from_numpy(row).to(self.device)
            lengths.append(len(row))
            categories.append(category)
        self._check(seen if ids is None else Counter(categories))
        return self._bank(data[: len(lengths), : max(lengths)], lengths, categories)

    def _check(self, seen: Counter[str]) -> None:
        missing = [c for c in self.wanted if not seen[c]]
        if missing:
            raise ConfigError(self._missing(missing, seen))

    def _clip(self, clip: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _bank(self, data: torch.Tensor, lengths: list[int], categories: list[str]) -> Any:
        raise NotImplementedError

    def _missing(self, missing: list[str], seen: Counter[str]) -> str:
        raise NotImplementedError


class NoiseFeed(BankFeed):
    key = "noise_index"
    stream = STREAM + 1

    def _clip(self, clip: np.ndarray) -> np.ndarray:
        return clip.astype(np.float32) * np.float32(INT16_SCALE)

    def _bank(self, data: torch.Tensor, lengths: list[int], categories: list[str]) -> NoiseBank:
        # Grouped by category, in corpus order within each (see NoiseBank).
        names = tuple(sorted(set(categories)))
        order = sorted(range(len(lengths)), key=lambda i: (names.index(categories[i]), i))
        permute_rows_(data, order)
        ids = np.array([names.index(categories[i]) for i in order], dtype=np.int64)
        count = np.bincount(ids, minlength=len(names))
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        dev = data.device
        return NoiseBank(data, torch.tensor([lengths[i] for i in order], device=dev), torch.from_numpy(ids).to(dev),
                         names, torch.from_numpy(start).to(dev), torch.from_numpy(count).to(dev), self.sample_rate)

    def _missing(self, missing: list[str], seen: Counter[str]) -> str:
        return (f"{self.where}: no clips of category {missing[0]!r}; it has "
                + ", ".join(f"{c} ({n})" for c, n in sorted(seen.items()) if c)
                + ": add clips of that category to the corpus or drop it from augment.noise.kinds")


class RirFeed(BankFeed):
    key = "rir_index"
    stream = STREAM + 2

    def _clip(self, clip: np.ndarray) -> np.ndarray:
        return trim_rir(clip)

    def _bank(self, data: torch.Tensor, lengths: list[int], categories: list[str]) -> RirBank:
        return RirBank(data, torch.tensor(lengths, device=data.device), self.sample_rate)

    def _missing(self, missing: list[str], seen: Counter[str]) -> str:
        return (f"{self.where}: no clip of categories {missing}; it has "
                f"{', '.join(sorted(c for c in seen if c)) or 'no clips'}: set augment.rir_categories to some of these")


class BankSet:
    """The banks of an ``augment`` block, bound to a batch chain's transforms: ``bind(chain)``
    once, then ``refresh(chain, epoch, index)`` before each batch."""

    def __init__(self, augment: AugmentConfig, loader: LoaderConfig, *, sample_rate: int, seed: int,
                 device: torch.device | str) -> None:
        options: dict[str, Any] = dict(sample_rate=sample_rate, seed=seed, device=device)
        self.noise: NoiseFeed | None = None
        self.rirs: RirFeed | None = None
        if augment.noise is not None and augment.noise_index:
            wanted = [k.category for k in augment.noise.kinds]
            self.noise = NoiseFeed(augment.noise_index, wanted, augment, loader, **options)
        if augment.reverb is not None and augment.rir_index:
            self.rirs = RirFeed(augment.rir_index, augment.rir_categories, augment, loader, **options)
        self.banks = Banks(noise=self.noise.read(0, 0) if self.noise else None,
                           rirs=self.rirs.read(0, 0) if self.rirs else None)
        self.unbound: tuple[Any, ...] = ()

    def bind(self, chain: Any) -> None:
        """Bind ``chain.transforms`` (a :class:`BatchChain`'s) to the banks."""
        self.unbound = tuple(chain.transforms)
        chain.transforms = bind_banks(self.unbound, self.banks)

    def refresh(self, chain: Any, epoch: int, index: int) -> None:
        """Before batch ``index`` of ``epoch``: rebind ``chain`` when a bank's segment changed,
        after the old bank's last reference is dropped."""
        stale = [f for f in (self.noise, self.rirs) if f is not None and f.held != f.segment(epoch, index)]
        if not stale:
            return
        chain.transforms = self.unbound
        held: dict[str, Any] = {"noise": self.banks.noise, "rirs": self.banks.rirs}
        self.banks = Banks()  # the old banks' last references are in held now
        for name, feed in (("noise", self.noise), ("rirs", self.rirs)):
            if feed is not None and feed in stale:
                held[name] = None  # dropped before its successor is read
                held[name] = feed.read(epoch, index)
        self.banks = Banks(**held)
        chain.transforms = bind_banks(self.unbound, self.banks)


def load_banks(augment: AugmentConfig, loader: LoaderConfig, *, sample_rate: int, device: torch.device | str,
               seed: int = 0) -> Banks:
    """The banks ``augment`` needs at the start of a run (None where no transform draws
    from one), on ``device``."""
    return BankSet(augment, loader, sample_rate=sample_rate, seed=seed, device=device).banks
