"""Shard format v2: version, field names, sample keys and member names.

The full specification is in ``docs/format.md``. In short, a shard is a POSIX tar
whose members are ``<key>.<field>``; one sample per utterance; keys contain no dots
(webdataset, wids and HF datasets all end the key at the first dot).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

# 2: shards record an XXH3-128 digest (``xxh3_128``) where 1 recorded ``sha256``; the
# tar layout is the same. Readers take both (the index names the algorithm it used).
FORMAT_VERSION = 2
# 3: format 2 shards, the index's per-sample lists in a sidecar file (index_sidecar.py).
READABLE_FORMAT_VERSIONS = (1, 2, 3)

AUDIO_NPY = "audio.npy"
AUDIO_NPY_ZST = "audio.npy.zst"
AUDIO_FLAC = "audio.flac"
FBANK = "fbank.npy"
FBANK_ZST = "fbank.npy.zst"
JSON = "json"
CLS = "cls"
AUDIO_FIELDS = (AUDIO_NPY, AUDIO_NPY_ZST, AUDIO_FLAC)
FBANK_FIELDS = (FBANK, FBANK_ZST)

# The bytes of one member: encoders return bytes or bytearray, readers memoryviews.
Payload = bytes | bytearray | memoryview

AudioCodec = Literal["npy", "flac"]
Compression = Literal["none", "zstd"]

_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
MAX_KEY_LENGTH = 80  # keeps "<key>.<field>" within a plain ustar name (100 bytes)


def make_key(*parts: str) -> str:
    """Build a sample key from id parts: characters other than [A-Za-z0-9_-] become '_'.

    Dots are the reason this exists: ``spk.utt`` would be split at the dot by every
    webdataset reader and silently merged with other samples.
    """
    key = "-".join(_KEY_BAD_CHARS.sub("_", p) for p in parts if p != "")
    validate_key(key)
    return key


def validate_key(key: str) -> None:
    if not key or not _KEY_OK.match(key):
        raise ValueError(
            f"invalid sample key {key!r}: keys may hold only letters, digits, '_' and '-' "
            "(a dot would split the sample in webdataset/HF readers); build keys with make_key()"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"sample key {key!r} is longer than {MAX_KEY_LENGTH} characters")


def audio_field(codec: AudioCodec, compression: Compression) -> str:
    if codec == "flac":
        if compression != "none":
            raise ValueError("--compress zstd applies to npy audio only; FLAC is already compressed")
        return AUDIO_FLAC
    return AUDIO_NPY_ZST if compression == "zstd" else AUDIO_NPY


def sample_members(key: str, fields: Mapping[str, Payload]) -> list[tuple[str, Payload]]:
    """Order a sample's fields canonically (sorted by field name) as tar members."""
    validate_key(key)
    return [(f"{key}.{name}", fields[name]) for name in sorted(fields)]


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.audio.npy`` -> (``dir/key``, ``audio.npy``): the key ends at the first dot."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]
