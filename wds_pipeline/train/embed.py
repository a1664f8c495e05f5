"""``wds-pipeline embed``: the embedding of every utterance of an index, written as an
embedding dataset (:mod:`wds_pipeline.sv.embeddings`), resumable like a build.

The model is rebuilt from a training checkpoint (:mod:`.saved_model`) and runs on the
device. The loader streams the shards in index order (any storage, DataLoader workers
reading ahead); the main process holds each input shard's utterances until the shard is
complete, then embeds them, full length, in batches of similar duration (sorted by
length, longest first, each batch at most ``batch_seconds`` of padded audio) and commits
the shard's part. A part's batches are a function of its shard alone, so a part computed
after a resume equals the one an uninterrupted run writes. With ``chunk_seconds`` an
utterance is cut into chunks of that length (evenly spread, the last ending at the end;
one chunk when shorter) and its embedding is the mean of its chunks' embeddings.

Resume: a part whose sidecar carries this run's fingerprint (checkpoint bytes, index,
chunking, precision), names the same input shard and digest, and whose file still hashes
to its sidecar's sha256 is kept; every other part is computed. A folder holding another
run's embeddings is refused unless ``overwrite``. Vectors are written as the model's
``embed`` gives them (not L2-normalised).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from .. import storage
from ..errors import ConfigError, WdsPipelineError
from ..index import DatasetIndex, load_index
from ..loader import StreamingLoader
from ..storage.urls import join_url
from ..sv.embeddings import (
    EMBEDDINGS_FORMAT_VERSION,
    MANIFEST_NAME,
    Embeddings,
    Manifest,
    PartEntry,
    is_embeddings_file,
    part_index,
    part_intact,
    read_manifest,
    read_part_entry,
    write_manifest,
    write_part,
)
from .saved_model import SavedModel, load_saved_model
from .trainer import resolve_device, resolve_precision

__all__ = ["EmbedConflictError", "EmbedOptions", "EmbedResult", "chunk_windows", "embed_index", "embed_waves"]

Precision = Literal["fp32", "bf16", "fp16", "auto"]


class EmbedConflictError(ConfigError):
    """The output folder holds embeddings of another checkpoint, index or setting."""


class EmbedCountError(WdsPipelineError, RuntimeError):
    """An input shard did not give as many utterances as the index lists."""


@dataclass(frozen=True)
class EmbedOptions:
    chunk_seconds: float | None = None  # None: whole utterances; else the mean over chunks of this length
    batch_seconds: float = 200.0  # padded audio seconds per model batch (one longer utterance: alone)
    device: str = "auto"
    precision: Precision = "fp32"
    num_workers: int = 2  # loader workers reading and decoding shards ahead
    overwrite: bool = False  # replace another run's embeddings in the output folder
    progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ConfigError(f"--chunk-seconds must be > 0, got {self.chunk_seconds}")
        if not self.batch_seconds > 0:
            raise ConfigError(f"--batch-seconds must be > 0, got {self.batch_seconds}")
        if self.num_workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.num_workers}")


@dataclass
class EmbedResult:
    out_url: str
    manifest_url: str
    inputs: int  # utterances in the index
    written: int  # embeddings in the output
    dim: int
    parts: int
    skipped: int  # parts already committed (hash verified), not recomputed
    computed: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.inputs} utterances in, {self.written} embeddings written (dim {self.dim}) in "
                f"{self.parts} parts: skipped {self.skipped} parts (already committed, hash verified), "
                f"computed {self.computed}, {self.seconds:.1f} s -> {self.manifest_url}")


def chunk_windows(length: int, chunk: int | None) -> list[tuple[int, int]]:
    """``(start, frames)`` of each chunk of an utterance of ``length`` frames: one window
    of the whole utterance without ``chunk`` or when it is no longer; else
    ``ceil(length / chunk)`` windows of ``chunk`` frames, evenly spread from the start to
    the end (they overlap a little rather than leave a short tail out)."""
    if chunk is None or length <= chunk:
        return [(0, length)]
    n = math.ceil(length / chunk)
    return [(int(s), chunk) for s in np.round(np.linspace(0, length - chunk, n)).astype(np.int64)]


@torch.inference_mode()
def embed_waves(model: torch.nn.Module, waves: Sequence[np.ndarray], *, sample_rate: int,
                chunk_seconds: float | None, batch_seconds: float, device: torch.device,
                amp_dtype: torch.dtype | None) -> np.ndarray:
    """The (N, D) float32 embeddings of ``waves`` (int16 arrays), batched by duration:
    chunks sorted by length, longest first, each batch at most ``batch_seconds`` of padded
    audio; an utterance's embedding is the mean of its chunks'."""
    chunk = int(round(chunk_seconds * sample_rate)) if chunk_seconds else None
    units = [(i, s, n) for i, w in enumerate(waves) for s, n in chunk_windows(len(w), chunk)]
    order = sorted(range(len(units)), key=lambda u: (-units[u][2], u))
    budget = batch_seconds * sample_rate
    sums: np.ndarray | None = None
    counts = np.zeros(len(waves), dtype=np.int64)
    batch: list[int] = []

    def flush() -> None:
        nonlocal sums
        longest = units[batch[0]][2]
        wave = torch.zeros(len(batch), longest, dtype=torch.int16)
        for row, u in enumerate(batch):
            i, s, n = units[u]
            wave[row, :n] = torch.from_numpy(waves[i][s:s + n])
        lengths = torch.tensor([units[u][2] for u in batch], dtype=torch.int64)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model.embed(wave.to(device), lengths.to(device))  # type: ignore[operator]
        emb = out.float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(waves), emb.shape[1]), dtype=np.float64)
        rows = np.array([units[u][0] for u in batch])
        np.add.at(sums, rows, emb)
        np.add.at(counts, rows, 1)
        batch.clear()

    for u in order:
        if batch and (len(batch) + 1) * units[batch[0]][2] > budget:
            flush()
        batch.append(u)
    if batch:
        flush()
    if sums is None:
        return np.zeros((0, 0), dtype=np.float32)
    return (sums / counts[:, None]).astype(np.float32)


def run_fingerprint(saved: SavedModel, index: DatasetIndex, chunk_seconds: float | None,
                    amp_dtype: torch.dtype | None) -> str:
    """What a part's vectors depend on: a rerun keeps only parts of the same fingerprint.
    (Batch size, device and workers change only rounding, not the run.)"""
    doc = {"format": EMBEDDINGS_FORMAT_VERSION, "checkpoint_sha256": saved.sha256,
           "index": [index.name, index.build_fingerprint, index.num_samples],
           "chunk_seconds": chunk_seconds, "precision": str(amp_dtype or torch.float32)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class _Part:
    """One input shard's utterances as they arrive (in any order), until all are in."""

    def __init__(self, n: int) -> None:
        self.keys: list[str] = [""] * n
        self.speakers: list[str] = [""] * n
        self.waves: list[np.ndarray | None] = [None] * n
        self.missing = n

    def put(self, row: int, key: str, speaker: str, wave: np.ndarray) -> None:
        if self.waves[row] is None:
            self.missing -= 1
        self.keys[row], self.speakers[row], self.waves[row] = key, speaker, wave


def embed_index(checkpoint: str, index_url: str, out_url: str, options: EmbedOptions = EmbedOptions(), *,
                log: Callable[[str], None] | None = None, **storage_options: Any) -> EmbedResult:
    """Embed every utterance of ``index_url`` with the model of ``checkpoint`` into the
    embeddings folder ``out_url`` (see the module's docstring); ``storage_options`` go to
    every URL (the index, its shards, the checkpoint, the output)."""
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    so = storage_options
    out_url = out_url.rstrip("/") or out_url
    index = load_index(index_url, arrays=True, **so)
    device = resolve_device(options.device)
    amp = resolve_precision(options.precision, device)
    saved = load_saved_model(checkpoint, device=device, sample_rate=index.sample_rate, **so)
    fingerprint = run_fingerprint(saved, index, options.chunk_seconds, amp)
    done, notes = _committed_parts(out_url, index, fingerprint, options.overwrite, so)
    for note in notes:
        say(note)
    pending = [i for i in range(len(index.shards)) if i not in done]
    if done:
        say(f"skipped {len(done)} parts (already committed, hash verified)")
    storage.makedirs(out_url, **so)
    if pending:
        done.update(_compute(saved, index, pending, out_url, fingerprint, options, device, amp, so))
    entries = tuple(done[i] for i in range(len(index.shards)))
    dim = next((e.dim for e in entries if e.count), 0)
    manifest = Manifest(dim=dim, parts=entries, fingerprint=fingerprint, model=saved.identity(),
                        source_index=index_url, sample_rate=index.sample_rate, chunk_seconds=options.chunk_seconds)
    if manifest.count != index.num_samples:  # each part was checked against its shard
        raise EmbedCountError(f"{out_url}: {manifest.count} embeddings for {index.num_samples} utterances")
    murl = write_manifest(out_url, manifest, **so)
    _remove_leftovers(out_url, so)
    return EmbedResult(out_url=out_url, manifest_url=murl, inputs=index.num_samples, written=manifest.count,
                       dim=dim, parts=len(entries), skipped=len(index.shards) - len(pending),
                       computed=len(pending), seconds=time.perf_counter() - t0, notes=notes)


def _compute(saved: SavedModel, index: DatasetIndex, pending: list[int], out_url: str, fingerprint: str,
             options: EmbedOptions, device: torch.device, amp: torch.dtype | None,
             so: dict[str, Any]) -> dict[int, PartEntry]:
    """Read the pending shards, embed each once it is complete, commit its part."""
    sub = replace(index, shards=[index.shards[i] for i in pending])
    starts = np.cumsum([0] + [s.nsamples for s in sub.shards])
    # Full length, in index order, every sample or an error (a decode failure is not skipped:
    # every utterance must end in the output); a one-pass read needs no local shard cache.
    loader = StreamingLoader(sub, batch_size=8, shuffle=False, last_batch="pad", crop_seconds=None,
                             waveform_dtype="int16", fields=("waveform", "label"), on_decode_error="raise",
                             num_workers=options.num_workers, persistent_workers=False, cache_dir=False,
                             sample_transforms=(), storage_options=so, rank=0, world_size=1)
    names = loader.label_names
    held: dict[int, _Part] = {}
    written: dict[int, PartEntry] = {}
    bar = _progress(int(starts[-1]), options.progress)
    try:
        for batch in loader:
            assert batch.waveform is not None and batch.sample_ids is not None  # fields include waveform
            wave, lengths = batch.waveform.numpy(), batch.lengths.tolist()
            gids, labels = batch.sample_ids.tolist(), batch.labels.tolist()
            for r, pad in enumerate(batch.is_padding.tolist()):
                if pad:
                    continue
                p = int(np.searchsorted(starts, gids[r], side="right")) - 1
                part = held.setdefault(p, _Part(sub.shards[p].nsamples))
                part.put(gids[r] - int(starts[p]), batch.keys[r], names[labels[r]] if labels[r] >= 0 else "",
                         wave[r, :lengths[r]].copy())  # copied: the batch buffer is recycled
                if part.missing == 0:
                    written[pending[p]] = _commit(saved, held.pop(p), pending[p], index, out_url, fingerprint,
                                                  options, device, amp, so)
            if bar is not None:
                bar.update(int((~batch.is_padding).sum()))
    finally:
        if bar is not None:
            bar.close()
    if held:
        p = min(held)
        raise EmbedCountError(f"{index.shard_url(pending[p])}: the loader gave {sub.shards[p].nsamples - held[p].missing} "
                              f"of its {sub.shards[p].nsamples} utterances; run `wds-pipeline verify` on the dataset")
    return written


def _commit(saved: SavedModel, part: _Part, i: int, index: DatasetIndex, out_url: str, fingerprint: str,
            options: EmbedOptions, device: torch.device, amp: torch.dtype | None, so: dict[str, Any]) -> PartEntry:
    waves = [w for w in part.waves if w is not None]
    vectors = embed_waves(saved.model, waves, sample_rate=saved.sample_rate, chunk_seconds=options.chunk_seconds,
                          batch_seconds=options.batch_seconds, device=device, amp_dtype=amp)
    shard = index.shards[i]
    return write_part(out_url, i, Embeddings(np.array(part.keys), np.array(part.speakers), vectors),
                      fingerprint=fingerprint, shard=shard.url, shard_digest=shard.digest.hex, **so)


def _committed_parts(out_url: str, index: DatasetIndex, fingerprint: str, overwrite: bool,
                     so: dict[str, Any]) -> tuple[dict[int, PartEntry], list[str]]:
    """The parts of this run already committed and intact, and notes on those redone; another
    run's files are a conflict (removed with ``overwrite``)."""
    try:
        names = storage.listdir(out_url, fresh=True, **so)
    except (FileNotFoundError, NotADirectoryError):
        return {}, []
    conflicts: list[str] = []
    entries: dict[int, PartEntry] = {}
    if MANIFEST_NAME in names:
        try:
            if read_manifest(out_url, **so).fingerprint != fingerprint:
                conflicts.append(f"{join_url(out_url, MANIFEST_NAME)} holds embeddings of another checkpoint, "
                                 "index or setting")
        except WdsPipelineError as e:
            conflicts.append(str(e))
    for name in names:
        i = part_index(name)
        if i is None or not name.endswith(".json"):
            continue
        entry = read_part_entry(out_url, i, **so)
        if entry is None:
            continue  # unreadable sidecar: the part is redone
        if entry.fingerprint != fingerprint or i >= len(index.shards):
            conflicts.append(f"{join_url(out_url, name)} belongs to another run (checkpoint, index or setting)")
        else:
            entries[i] = entry
    if conflicts and not overwrite:
        more = f" (+{len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise EmbedConflictError(f"{conflicts[0]}{more}: embed into another folder, or pass --overwrite to "
                                 f"replace them")
    if conflicts:
        _remove_ours(out_url, names, so)
        return {}, [f"--overwrite: removed the embeddings in {out_url}"]
    done: dict[int, PartEntry] = {}
    notes = []
    for i, entry in sorted(entries.items()):
        shard = index.shards[i]
        if (entry.shard, entry.shard_digest, entry.count) != (shard.url, shard.digest.hex, shard.nsamples):
            notes.append(f"{entry.file}: made from another version of {shard.url}; computing it again")
        elif not part_intact(out_url, entry, **so):
            notes.append(f"{entry.file}: missing or damaged (size or sha256 differs from its sidecar); "
                         "computing it again")
        else:
            done[i] = entry
    return done, notes


def _remove_ours(out_url: str, names: list[str], so: dict[str, Any]) -> None:
    """Only files this format writes; the manifest first (it vouches for the parts)."""
    for name in sorted(names, key=lambda n: n != MANIFEST_NAME):
        if is_embeddings_file(name):
            storage.remove(join_url(out_url, name), **so)


def _remove_leftovers(out_url: str, so: dict[str, Any]) -> None:
    """Temp files of interrupted commits (parts are renamed into place; a kill leaves these)."""
    for name in storage.listdir(out_url, fresh=True, **so):
        if is_embeddings_file(name) and name.startswith("."):
            try:
                storage.remove(join_url(out_url, name), **so)
            except FileNotFoundError:
                pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embed", unit="utt", file=sys.stderr, dynamic_ncols=True)
