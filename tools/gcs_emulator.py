"""gcp-storage-emulator (in memory) in a subprocess on a free local port.

Shared by the test fixtures (``tests/conftest.py``) and the GCS benchmark
(``benchmarks/_common.py``); each sets the environment gcsfs needs around it.

The subprocess is this file run as a script: it starts the emulator with one
fix to its multipart-upload parser. gcsfs separates multipart parts with a
bare ``\n``; the emulator parses the body with :mod:`email`, which treats a
``\r`` at the end of the object's bytes plus that ``\n`` as one CRLF line
break and drops the ``\r``. An upload whose last byte is ``0x0d`` (1 in 256
random payloads) then came back one byte short and failed our sha256 check.
The fix splits the body at the declared boundary and removes exactly the one
line break that precedes each delimiter, using the line-break style the part
headers use.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll the emulator at ``url`` until it answers; fail if ``proc`` exits or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/storage/v1/b?project=test", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gcp-storage-emulator did not answer at {url} within {timeout} s"
                ) from None
            time.sleep(0.1)


@contextlib.contextmanager
def run_emulator(timeout: float = 30.0) -> Iterator[tuple[int, str]]:
    """Start the emulator, wait until it answers, yield ``(port, url)``; stop it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(url, proc, timeout)
        yield port, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def split_multipart_related(body: bytes, content_type: str) -> dict:
    """Parse a ``multipart/related`` upload body (a JSON metadata part, then the
    object's bytes) byte-exactly; returns the emulator's ``{meta, content,
    content-type}`` request data.

    The object's bytes run from the end of the second part's headers to the
    closing delimiter at the very end of the body, so an object that itself
    contains the boundary string still comes back whole."""
    import base64
    import json
    import re

    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError(f"multipart upload without a boundary: {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    first = body.find(delimiter)
    if first < 0:
        raise ValueError("multipart upload body has no delimiter")
    after_first = first + len(delimiter)
    newline = b"\r\n" if body.startswith(b"\r\n", after_first) else b"\n"

    def read_part(start: int) -> tuple[dict[str, str], int]:
        if body.startswith(newline, start):  # a part with no headers
            return {}, start + len(newline)
        header_end = body.find(newline + newline, start)
        if header_end < 0:
            raise ValueError("multipart part without a blank line after its headers")
        headers = {}
        for line in body[start:header_end].split(newline):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        return headers, header_end + 2 * len(newline)

    _, meta_start = read_part(after_first + len(newline))
    meta_end = body.find(newline + delimiter, meta_start)
    second = meta_end + len(newline + delimiter)
    if meta_end < 0 or body.startswith(b"--", second):
        raise ValueError("multipart upload has 1 part, expected 2 (metadata, then media)")
    media_headers, content_start = read_part(second + len(newline))
    closing = newline + delimiter + b"--"
    content_end = body.rfind(closing)
    if content_end < content_start:
        raise ValueError("multipart upload without a closing delimiter")
    content = body[content_start:content_end]
    if media_headers.get("content-transfer-encoding", "").lower() == "base64":
        content = base64.b64decode(content)
    return {
        "meta": json.loads(body[meta_start:meta_end]),
        "content": content,
        "content-type": media_headers.get("content-type", "application/octet-stream"),
    }


def _serve(argv: list[str]) -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.__main__ import main

    original_read_data = server._read_data

    def read_data(request_handler, query):
        content_type = request_handler.headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/related"):
            return original_read_data(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        return split_multipart_related(raw, content_type) if raw else None

    server._read_data = read_data
    main(argv)


if __name__ == "__main__":
    _serve(sys.argv[1:])
