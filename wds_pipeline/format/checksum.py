"""The crc32 of a sample's bytes (the index's ``sample_crc32``), written by the shard
writer and checked by streamed reads and ``verify``.

ISA-L's crc32 (the ``isal`` package, a dependency) gives zlib's values about 10x faster:
with zlib's, the checksum was a sixth of the time to write a shard of int16 audio.
zlib's is the fallback where ISA-L has no wheel; the values are the same.
"""

from __future__ import annotations

try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover (a platform without an isal wheel)
    from zlib import crc32

__all__ = ["crc32"]
