"""The test GCS emulator stores uploaded bytes exactly.

gcp-storage-emulator on its own drops a trailing ``\\r`` from gcsfs's multipart
uploads (see ``tools/gcs_emulator.py``); random test payloads end in ``0x0d`` one
time in 256, which made shard-hash tests fail at random.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tools.gcs_emulator import split_multipart_related

TAILS = [b"\r", b"\n", b"\r\n", b"\n\r", b"\r\r", b"\n--==0==\n", b"\n--==0==--", b""]


@pytest.mark.parametrize("tail", TAILS, ids=repr)
def test_upload_round_trips_every_trailing_byte(gcs_emulator, tail):
    payload = b"x" * 1000 + tail
    path = f"{gcs_emulator.bucket}/tails-{uuid.uuid4().hex}"
    gcs_emulator.fs.pipe(path, payload)  # small objects go up as multipart
    gcs_emulator.fs.invalidate_cache()
    assert gcs_emulator.fs.cat(path) == payload
    assert gcs_emulator.fs.info(path)["size"] == len(payload)


def test_split_multipart_related_with_crlf_delimiters():
    content = b"abc\r\n\r\n"
    body = (
        b"--BOUND\r\nContent-Type: application/json\r\n\r\n"
        b'{"name": "o"}\r\n--BOUND\r\nContent-Type: application/x-tar\r\n\r\n'
        + content
        + b"\r\n--BOUND--"
    )
    got = split_multipart_related(body, 'multipart/related; boundary="BOUND"')
    assert got == {"meta": {"name": "o"}, "content": content, "content-type": "application/x-tar"}
    assert hashlib.sha256(got["content"]).digest() == hashlib.sha256(content).digest()


def test_split_multipart_related_rejects_a_body_without_two_parts():
    with pytest.raises(ValueError, match="1 part, expected 2"):
        split_multipart_related(b"--B\n\n{}\n--B--", "multipart/related; boundary=B")
