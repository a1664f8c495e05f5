"""A large index's per-sample lists in a binary file beside ``index.json``.

A VoxCeleb2-sized split (1.1 M samples) has 3.3 M per-sample numbers (``sample_frames``,
``sample_offsets``, ``sample_crc32``): as JSON text they are ~43 of the index's 44 MB, 2.2 s
over a 20 MB/s Drive link before a loader can plan. As one ``.npy`` of uint32 rows they
are 12 bytes a sample (13 MB), read with ``np.load`` (no pickle) in milliseconds.

The builder writes this sidecar only for splits of :data:`SIDECAR_MIN_SAMPLES` or more
(smaller indexes keep their exact bytes), before ``index.json``; the index then says
``format_version`` 3 (shards exactly as format 2) and records the sidecar's name, size and
sha256 in ``wds_pipeline.sample_lists``, and its shard entries carry no per-sample lists.
wids, webdataset and ``datasets`` read the shard list as before; a wds_pipeline that
predates version 3 refuses the index with its version error instead of misreading it.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from .errors import WdsPipelineError

SIDECAR_NAME = "index-samples.npy"
SIDECAR_MIN_SAMPLES = 100_000  # splits this large get a sidecar (a 100k index: ~4 MB of lists)
SIDECAR_FORMAT_VERSION = 3  # an index whose per-sample lists are in the sidecar
LISTS = ("sample_frames", "sample_offsets", "sample_crc32")  # the sidecar's rows, in order


class SidecarError(WdsPipelineError, ValueError):
    """What is wrong with a sidecar (the index module names the files and the fix)."""


def pack(nsamples: list[int], lists: list[tuple[Any, Any, Any]]) -> bytes | None:
    """The sidecar's bytes: one ``.npy`` array of shape (rows, samples), uint32 when every
    number fits (int64 otherwise), every shard's lists concatenated in shard order; rows
    frames, offsets and crc32 (no crc32 row when no shard has crc32s). None when the lists
    cannot be packed (a shard lists some but not all, or a count differs from ``nsamples``):
    the index then keeps them inline."""
    with_crc = [len(c) > 0 for _, _, c in lists]
    if any(with_crc) and not all(with_crc):
        return None
    rows = 3 if all(with_crc) and lists else 2
    for n, per in zip(nsamples, lists):
        if any(len(v) != n for v in per[:rows]):
            return None
    total = sum(nsamples)
    out = np.empty((rows, total), dtype=np.int64)
    at = 0
    for n, per in zip(nsamples, lists):
        for r in range(rows):
            out[r, at : at + n] = per[r]
        at += n
    if total and (out.min() < 0):
        return None
    if not total or out.max() < 2**32:
        out = out.astype(np.uint32)
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    return buf.getvalue()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(data: bytes) -> dict[str, Any]:
    """What ``index.json`` records of its sidecar (``wds_pipeline.sample_lists``)."""
    return {"file": SIDECAR_NAME, "bytes": len(data), "sha256": digest(data)}


def unpack(data: bytes, record: dict[str, Any], nsamples: list[int]) -> list[list[np.ndarray]]:
    """Per shard, [frames, offsets, crc32] as int64 arrays (views of one array; crc32
    empty when the sidecar has no crc32 row). :class:`SidecarError` when the bytes are not
    the ones the index records or do not hold its shards' counts."""
    if len(data) != record["bytes"] or digest(data) != record["sha256"]:
        raise SidecarError(
            f"{len(data)} bytes with sha256 {digest(data)[:16]}..., the index records "
            f"{record['bytes']} bytes with sha256 {str(record['sha256'])[:16]}...: the sidecar is "
            "damaged or from another build than index.json")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # the digest matched: written wrong, not damaged on the way
        raise SidecarError(f"not a readable .npy array ({e})") from None
    total = sum(nsamples)
    if arr.ndim != 2 or arr.shape[0] not in (2, 3) or arr.shape[1] != total or arr.dtype.kind not in "iu":
        raise SidecarError(f"holds an array of shape {arr.shape} and dtype {arr.dtype}, expected "
                           f"(2 or 3, {total}) whole numbers (the index's {len(nsamples)} shards)")
    arr = arr.astype(np.int64)
    if total and arr.min() < 0:
        raise SidecarError("holds negative numbers")
    cuts = np.cumsum(nsamples)[:-1] if nsamples else np.zeros(0, dtype=np.int64)
    rows = [np.split(arr[r], cuts) for r in range(arr.shape[0])]
    empty = np.zeros(0, dtype=np.int64)
    return [[rows[0][i], rows[1][i], rows[2][i] if len(rows) == 3 else empty]
            for i in range(len(nsamples))]
