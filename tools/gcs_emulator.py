"""gcp-storage-emulator (in memory) in a subprocess on a free local port.

Shared by the test fixtures (``tests/conftest.py``) and the GCS benchmark
(``benchmarks/_common.py``); each sets the environment gcsfs needs around it.
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
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "gcp_storage_emulator"]
    proc = subprocess.Popen(
        cmd + ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
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
