"""The crc32 of a sample's bytes (the index's ``sample_crc32``), written by the shard
writer and checked by streamed reads and ``verify``.

ISA-L's crc32 (the ``isal`` package, a dependency) gives zlib's values about 10x faster:
with zlib's, the checksum was a sixth of the time to write a shard of int16 audio.
zlib's is the fallback where ISA-L has no wheel; the values are the same.

``crc32_combine(crc_a, crc_b, len_b)`` is the crc32 of ``a + b`` from those of ``a`` and
``b``: the loader checks a run of consecutive samples with one crc32 of all their bytes
against the combination of their per-sample crc32s (``loader/verifier.py``).
"""

from __future__ import annotations

from collections.abc import Callable

crc32_combine: Callable[[int, int, int], int] | None
try:
    from isal.isal_zlib import crc32, crc32_combine
except ImportError:  # pragma: no cover (a platform without an isal wheel)
    from zlib import crc32

    crc32_combine = None  # Python's zlib does not expose it: checks stay per sample

__all__ = ["crc32", "crc32_combine"]
