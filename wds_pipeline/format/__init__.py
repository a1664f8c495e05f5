"""Shard format v1: sample keys, field codecs, the tar reader and the reproducible writer.

The full specification is in ``docs/format.md``. In short, a shard is a POSIX tar
whose members are ``<key>.<field>``; one sample per utterance; keys contain no dots
(webdataset, wids and HF datasets all end the key at the first dot).

    keys     format version, field names, make_key/validate_key, member names
    codecs   encode/decode of each field (npy, npy+zstd, FLAC, json, cls)
    tar      the one tar header parser; stream and in-memory member readers
    samples  members grouped into samples
    writer   ReproducibleTarWriter (identical input, identical bytes)

Nothing here imports the build side (decoders, resampler): the loader's read path
loads only this package.
"""

from __future__ import annotations

from ..errors import ShardFormatError
from .codecs import (
    decode_field,
    decode_flac,
    decode_npy,
    encode_audio,
    encode_cls,
    encode_flac,
    encode_json,
    encode_npy,
    zstd_compress,
    zstd_decompress,
)
from .keys import (
    AUDIO_FIELDS,
    AUDIO_FLAC,
    AUDIO_NPY,
    AUDIO_NPY_ZST,
    CLS,
    FBANK,
    FBANK_FIELDS,
    FBANK_ZST,
    FORMAT_VERSION,
    JSON,
    MAX_KEY_LENGTH,
    READABLE_FORMAT_VERSIONS,
    AudioCodec,
    Compression,
    Payload,
    audio_field,
    make_key,
    sample_members,
    split_member_name,
    validate_key,
)
from .samples import group_samples, iter_samples
from .tar import (
    BLOCK,
    TarMember,
    buffer_members,
    header_error,
    iter_buffer_members,
    iter_tar_members,
    members_end,
    parse_header,
)
from .writer import TAR_MODE, TAR_MTIME, ReproducibleTarWriter, Sink, member_header

__all__ = [
    "AUDIO_FIELDS",
    "AUDIO_FLAC",
    "AUDIO_NPY",
    "AUDIO_NPY_ZST",
    "BLOCK",
    "CLS",
    "FBANK",
    "FBANK_FIELDS",
    "FBANK_ZST",
    "FORMAT_VERSION",
    "READABLE_FORMAT_VERSIONS",
    "JSON",
    "MAX_KEY_LENGTH",
    "TAR_MODE",
    "TAR_MTIME",
    "AudioCodec",
    "Compression",
    "Payload",
    "ReproducibleTarWriter",
    "ShardFormatError",
    "Sink",
    "TarMember",
    "audio_field",
    "decode_field",
    "decode_flac",
    "decode_npy",
    "encode_audio",
    "encode_cls",
    "encode_flac",
    "encode_json",
    "encode_npy",
    "buffer_members",
    "group_samples",
    "header_error",
    "iter_buffer_members",
    "iter_samples",
    "iter_tar_members",
    "member_header",
    "members_end",
    "make_key",
    "parse_header",
    "sample_members",
    "split_member_name",
    "validate_key",
    "zstd_compress",
    "zstd_decompress",
]
