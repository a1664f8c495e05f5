"""The embedding dataset: one vector per utterance, with its key and speaker, on any storage.

Layout of an embeddings folder (local, a Drive/FUSE folder, ``gs://...``)::

    OUT/part-000000.npz    # one part per input shard: keys, speakers, vectors
    OUT/part-000000.json   # its sidecar: count, size, sha256, the run's fingerprint
    ...
    OUT/embeddings.json    # the manifest, written last: every part with its count and sha256

A part is an ``.npz`` of three arrays: ``keys`` (unicode, N), ``speakers`` (unicode, N; ""
for a sample without a class label) and ``vectors`` (float32, N x D), read back with
``np.load(..., allow_pickle=False)`` (no pickle: a part from elsewhere cannot run code).
Every file is committed by rename (one complete upload on object stores), a part before
its sidecar, the manifest after every part: a sidecar vouches for a complete part, and the
manifest for a complete dataset. A reader (:func:`load_embeddings`) takes only what the
manifest lists and checks every part's size, sha256, count and shapes; a damaged or
missing part is an :class:`EmbeddingsError` naming it and the fix.

The vectors are the model's ``embed`` output as computed (not L2-normalised: cosine
scoring normalises, and mean subtraction or PLDA want the raw vectors); the manifest
says so (``normalized: false``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import storage
from ..errors import WdsPipelineError
from ..storage.urls import join_url

__all__ = ["EMBEDDINGS_FORMAT_VERSION", "MANIFEST_NAME", "Embeddings", "EmbeddingsError", "Manifest",
           "PartEntry", "decode_part", "encode_part", "is_embeddings_file", "load_embeddings", "manifest_url",
           "part_index", "part_intact", "part_names", "read_manifest", "read_part_entry", "write_embeddings",
           "write_manifest", "write_part"]

EMBEDDINGS_FORMAT_VERSION = 1
MANIFEST_NAME = "embeddings.json"
_MANIFEST_FORMAT = "wds_pipeline.embeddings"
_PART_FORMAT = "wds_pipeline.embeddings.part"
_ARRAYS = ("keys", "speakers", "vectors")
RERUN = "rerun `wds-pipeline embed` with the same arguments (parts that fail their check are recomputed)"


class EmbeddingsError(WdsPipelineError, ValueError):
    """An embeddings folder, manifest or part that cannot be read as written (missing,
    damaged, another format); the message names the file and the fix."""


@dataclass(frozen=True)
class Embeddings:
    """Utterance embeddings: row i of ``vectors`` is the embedding of ``keys[i]``, spoken by
    ``speakers[i]`` ("" when unknown)."""

    keys: np.ndarray  # (N,) str
    speakers: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N, D) float32

    def __post_init__(self) -> None:
        keys, speakers = np.asarray(self.keys, dtype=str), np.asarray(self.speakers, dtype=str)
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim == 1 and len(vectors) == 0:
            vectors = vectors.reshape(0, 0)
        if keys.ndim != 1 or speakers.shape != keys.shape or vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"Embeddings: keys {keys.shape}, speakers {speakers.shape} and vectors "
                             f"{vectors.shape} must be (N,), (N,) and (N, D)")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "speakers", speakers)
        object.__setattr__(self, "vectors", vectors)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """The row of each of ``keys`` (int64; -1 where a key is not here)."""
        order = np.argsort(self.keys, kind="stable")
        ask = np.asarray(keys, dtype=str)
        if not len(self.keys):
            return np.full(len(ask), -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, ask, sorter=order).clip(0, len(order) - 1)
        found = order[pos]
        return np.where(self.keys[found] == ask, found, -1).astype(np.int64)

    @classmethod
    def concat(cls, parts: Sequence[Embeddings], dim: int = 0) -> Embeddings:
        """The parts one after another (``dim``: the width of an empty result)."""
        if not parts:
            return cls(np.zeros(0, dtype=str), np.zeros(0, dtype=str), np.zeros((0, dim), np.float32))
        return cls(np.concatenate([p.keys for p in parts]), np.concatenate([p.speakers for p in parts]),
                   np.concatenate([p.vectors for p in parts]))


@dataclass(frozen=True)
class PartEntry:
    """One committed part, as its sidecar and the manifest record it."""

    file: str  # part-NNNNNN.npz
    count: int
    size: int
    sha256: str
    dim: int = 0  # of its vectors
    shard: str = ""  # the input shard it embeds (its URL as the index names it)
    shard_digest: str = ""  # that shard's digest in the index (a rebuilt shard is re-embedded)
    fingerprint: str = ""  # of the run that wrote it (see Manifest.fingerprint)

    def to_json(self) -> bytes:
        doc = {"format": _PART_FORMAT, "version": EMBEDDINGS_FORMAT_VERSION, **asdict(self)}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, d: Any, *, source: str) -> PartEntry:
        try:
            return cls(file=str(d["file"]), count=int(d["count"]), size=int(d["size"]), sha256=str(d["sha256"]),
                       dim=int(d.get("dim", 0)), shard=str(d.get("shard", "")), shard_digest=str(d.get("shard_digest", "")),
                       fingerprint=str(d.get("fingerprint", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise EmbeddingsError(f"{source}: malformed part entry ({type(e).__name__}: {e}); {RERUN}") from None


@dataclass(frozen=True)
class Manifest:
    """``embeddings.json``: what the embeddings are of (model, checkpoint, source index) and
    every part, in order."""

    dim: int
    parts: tuple[PartEntry, ...]
    fingerprint: str = ""  # of (checkpoint, index, options): a rerun resumes only the same run
    model: dict[str, Any] = field(default_factory=dict)  # factory, options, checkpoint url/sha256/step
    source_index: str = ""
    sample_rate: int = 0
    chunk_seconds: float | None = None  # None: whole utterances; else the mean over chunks
    normalized: bool = False  # the vectors are raw embed() outputs

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)

    def to_json(self) -> bytes:
        doc = {"format": _MANIFEST_FORMAT, "version": EMBEDDINGS_FORMAT_VERSION, "count": self.count,
               **{k: v for k, v in asdict(self).items() if k != "parts"},
               "parts": [{k: v for k, v in asdict(p).items() if k != "fingerprint"} for p in self.parts]}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> Manifest:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EmbeddingsError(f"{source}: not valid JSON ({e}); was the upload cut? {RERUN}") from None
        if not isinstance(doc, dict) or doc.get("format") != _MANIFEST_FORMAT:
            raise EmbeddingsError(f"{source}: not an embeddings manifest (format {_MANIFEST_FORMAT!r}); "
                                  "give the folder `wds-pipeline embed` wrote")
        if doc.get("version") != EMBEDDINGS_FORMAT_VERSION:
            raise EmbeddingsError(f"{source}: embeddings format version {doc.get('version')!r}; this "
                                  f"wds-pipeline reads version {EMBEDDINGS_FORMAT_VERSION}: upgrade, or embed again")
        try:
            parts = tuple(PartEntry.from_dict(p, source=f"{source} parts[{i}]")
                          for i, p in enumerate(doc["parts"]))
            chunk = doc.get("chunk_seconds")
            return cls(dim=int(doc["dim"]), parts=parts, fingerprint=str(doc.get("fingerprint", "")),
                       model=dict(doc.get("model") or {}), source_index=str(doc.get("source_index", "")),
                       sample_rate=int(doc.get("sample_rate", 0)),
                       chunk_seconds=None if chunk is None else float(chunk),
                       normalized=bool(doc.get("normalized", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise EmbeddingsError(f"{source}: missing or malformed key ({type(e).__name__}: {e}); {RERUN}") from None


_PART_FILE = re.compile(r"^part-(\d{6,})\.(?:npz|json)$")
# storage's atomic writers stage into ".<final name>.tmp-<uuid hex>".
_TEMP_FILE = re.compile(r"^\.(?:part-\d{6,}\.(?:npz|json)|" + re.escape(MANIFEST_NAME) + r")\.tmp-[0-9a-f]{32}$")


def is_embeddings_file(name: str) -> bool:
    """A file name this format writes (parts, sidecars, the manifest, their temp names)."""
    return bool(name == MANIFEST_NAME or _PART_FILE.match(name) or _TEMP_FILE.match(name))


def part_index(name: str) -> int | None:
    """``part-000012.npz`` or its sidecar -> 12; None for any other name."""
    m = _PART_FILE.match(name)
    return int(m.group(1)) if m else None


def part_names(i: int) -> tuple[str, str]:
    """(part file, its sidecar) of the part of input shard ``i``."""
    stem = f"part-{i:06d}"
    return stem + ".npz", stem + ".json"


# ------------------------------------------------------------------------- parts


def encode_part(emb: Embeddings) -> bytes:
    """The ``.npz`` bytes of ``emb`` (uncompressed: float vectors barely compress)."""
    buf = io.BytesIO()
    np.savez(buf, keys=emb.keys, speakers=emb.speakers, vectors=emb.vectors)
    return buf.getvalue()


def decode_part(data: bytes, *, url: str, entry: PartEntry | None = None, dim: int | None = None) -> Embeddings:
    """A part's bytes as :class:`Embeddings`, checked against ``entry`` (size, sha256, count)
    and ``dim``; any mismatch or a file that is not such an ``.npz`` is an
    :class:`EmbeddingsError` naming ``url``."""
    if entry is not None:
        if len(data) != entry.size:
            what = "truncated" if len(data) < entry.size else "wrong size"
            raise EmbeddingsError(f"{url}: {len(data)} bytes, the manifest says {entry.size} ({what}); {RERUN}")
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise EmbeddingsError(f"{url}: sha256 differs from the manifest (the part is damaged); {RERUN}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [a for a in _ARRAYS if a not in z.files]
            if missing:
                raise EmbeddingsError(f"{url}: no array {missing[0]!r} (a part holds {', '.join(_ARRAYS)}); {RERUN}")
            keys, speakers, vectors = (z[a] for a in _ARRAYS)
    except EmbeddingsError:
        raise
    except Exception as e:  # zip, header or pickle refusal: not a part this code wrote
        raise EmbeddingsError(f"{url}: not a readable embeddings part ({type(e).__name__}: {e}); {RERUN}") from None
    if keys.dtype.kind != "U" or speakers.dtype.kind != "U" or vectors.dtype != np.float32 or vectors.ndim != 2:
        raise EmbeddingsError(f"{url}: arrays of dtypes {keys.dtype}, {speakers.dtype}, {vectors.dtype} "
                              f"(vectors {vectors.shape}); expected str, str and float32 (N, D); {RERUN}")
    try:
        emb = Embeddings(keys, speakers, vectors)
    except ValueError as e:
        raise EmbeddingsError(f"{url}: {e}; {RERUN}") from None
    if entry is not None and len(emb) != entry.count:
        raise EmbeddingsError(f"{url}: {len(emb)} embeddings, the manifest says {entry.count}; {RERUN}")
    if dim is not None and len(emb) and emb.dim != dim:
        raise EmbeddingsError(f"{url}: vectors of dimension {emb.dim}, the manifest says {dim}; {RERUN}")
    return emb


def write_part(out_url: str, i: int, emb: Embeddings, *, fingerprint: str = "", shard: str = "",
               shard_digest: str = "", **storage_options: Any) -> PartEntry:
    """Commit the part of input shard ``i`` (by rename), then its sidecar; returns its entry."""
    data = encode_part(emb)
    npz, side = part_names(i)
    entry = PartEntry(file=npz, count=len(emb), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      dim=emb.dim, shard=shard, shard_digest=shard_digest, fingerprint=fingerprint)
    storage.write_bytes_atomic(join_url(out_url, npz), data, **storage_options)
    storage.write_bytes_atomic(join_url(out_url, side), entry.to_json(), **storage_options)
    return entry


def read_part_entry(out_url: str, i: int, **storage_options: Any) -> PartEntry | None:
    """The sidecar of part ``i``; None when it is missing or unreadable (the part is redone)."""
    url = join_url(out_url, part_names(i)[1])
    try:
        doc = json.loads(storage.read_bytes(url, **storage_options))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _PART_FORMAT or doc.get("version") != EMBEDDINGS_FORMAT_VERSION:
        return None
    try:
        return PartEntry.from_dict(doc, source=url)
    except EmbeddingsError:
        return None


def part_intact(out_url: str, entry: PartEntry, **storage_options: Any) -> bool:
    """True when the part file has the size and sha256 its sidecar records (re-hashed: a
    sidecar alone cannot prove the file was not cut or replaced since)."""
    try:
        data = storage.read_bytes(join_url(out_url, entry.file), **storage_options)
    except FileNotFoundError:
        return False
    return len(data) == entry.size and hashlib.sha256(data).hexdigest() == entry.sha256


# ---------------------------------------------------------------------- manifest


def manifest_url(url: str) -> str:
    """``url`` (an embeddings folder or its manifest) -> the manifest's URL."""
    return url if url.endswith(".json") else join_url(url.rstrip("/"), MANIFEST_NAME)


def write_manifest(out_url: str, manifest: Manifest, **storage_options: Any) -> str:
    url = manifest_url(out_url)
    storage.write_bytes_atomic(url, manifest.to_json(), **storage_options)
    return url


def read_manifest(url: str, **storage_options: Any) -> Manifest:
    """The manifest of an embeddings folder (or the ``embeddings.json`` URL itself)."""
    murl = manifest_url(url)
    try:
        data = storage.read_bytes(murl, **storage_options)
    except FileNotFoundError:
        raise EmbeddingsError(f"{murl}: no embeddings manifest; run `wds-pipeline embed` into "
                              f"{murl.rsplit('/', 1)[0]} (or let an interrupted run finish: the manifest "
                              "is written last)") from None
    return Manifest.from_json(data, source=murl)


def load_embeddings(url: str, **storage_options: Any) -> Embeddings:
    """Every embedding of the folder ``url`` (or its ``embeddings.json``), in part order,
    each part checked against the manifest (size, sha256, count, dimension)."""
    murl = manifest_url(url)
    manifest = read_manifest(murl, **storage_options)
    folder = murl.rsplit("/", 1)[0]
    parts = []
    for entry in manifest.parts:
        purl = join_url(folder, entry.file)
        try:
            data = storage.read_bytes(purl, **storage_options)
        except FileNotFoundError:
            raise EmbeddingsError(f"{purl}: missing (the manifest lists it); {RERUN}") from None
        parts.append(decode_part(data, url=purl, entry=entry, dim=manifest.dim))
    return Embeddings.concat(parts, manifest.dim)


def write_embeddings(url: str, emb: Embeddings, *, model: Mapping[str, Any] | None = None,
                     source_index: str = "", sample_rate: int = 0, chunk_seconds: float | None = None,
                     **storage_options: Any) -> Manifest:
    """``emb`` as an embeddings folder of one part (embeddings made elsewhere, tests)."""
    entry = write_part(url, 0, emb, **storage_options)
    manifest = Manifest(dim=emb.dim, parts=(entry,), model=dict(model or {}), source_index=source_index,
                        sample_rate=sample_rate, chunk_seconds=chunk_seconds)
    write_manifest(url, manifest, **storage_options)
    return manifest
