"""Shared fixtures: real storage backends for tests.

* ``gcs_emulator`` (session): a gcp-storage-emulator subprocess on a free port,
  with a bucket created; sets STORAGE_EMULATOR_HOST and
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false for the session (restored after).
  Yields :class:`GcsEmulator` (``.port``, ``.url``, ``.fs``, ``.bucket``,
  ``.storage_options``, ``.gs(path)``). Skips if the emulator is not installed.
* ``fault_proxy``: a :class:`tools.faultproxy.FaultProxy` in front of the emulator
  (no faults until a test sets them). gcsfs goes through it with
  ``gcs_emulator.storage_options_via(fault_proxy)``.
* ``slow_fuse_mount``: a slowfs mount (100 ms per open, 20 MB/s, access log) of
  ``tmp_path/"src"`` at ``tmp_path/"mnt"``; yields :class:`tools.slowfs.SlowMount`.
  ``slowfs_factory(**opts)`` mounts with other options. Both skip, with the reason,
  without /dev/fuse, libfuse3, mfusepy or an unmount command.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `tools` is a top-level package of the repo, not installed
    sys.path.insert(0, REPO_ROOT)

from tools.gcs_emulator import run_emulator  # noqa: E402 - needs the sys.path entry above

# gcsfs reads this flag when it is *imported* (it then swaps GCSFileSystem for a
# gRPC-probing subclass that stalls ~60 s per filesystem against the emulator), so
# it must be set before any test module imports gcsfs, not inside the fixture.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

EMULATOR_ENV = {
    # gcsfs talks to this host instead of storage.googleapis.com.
    "STORAGE_EMULATOR_HOST": None,  # filled with the emulator URL
    # Without this, gcsfs probes gRPC/zonal buckets and stalls ~60 s per filesystem.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


@dataclass
class GcsEmulator:
    port: int
    url: str
    fs: Any  # gcsfs.GCSFileSystem talking straight to the emulator
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def gs(self, path: str) -> str:
        """gs:// URL of ``path`` inside the test bucket."""
        return f"gs://{self.bucket}/{path.lstrip('/')}"

    def storage_options_via(self, proxy: Any) -> dict[str, Any]:
        """Storage options that route gcsfs through ``proxy`` (a FaultProxy)."""
        return dict(self.storage_options, endpoint_url=proxy.url)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is not installed (pip install gcsfs)")
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.fail(
            "gcsfs was imported with GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT enabled and will stall "
            "probing gRPC; set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before importing gcsfs"
        )
    saved = {k: os.environ.get(k) for k in EMULATOR_ENV}
    # A generous start-up limit: a loaded 2-core CI machine can take many seconds to start
    # a Python server, and the tests behind this fixture would all error.
    with run_emulator(timeout=120) as (port, url):
        try:
            os.environ["STORAGE_EMULATOR_HOST"] = url
            os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
            gcsfs.GCSFileSystem.clear_instance_cache()
            so = {"token": "anon", "project": "test"}
            fs = gcsfs.GCSFileSystem(skip_instance_cache=True, **so)
            bucket = "test-bucket"
            fs.mkdir(bucket)
            yield GcsEmulator(port=port, url=url, fs=fs, bucket=bucket, storage_options=so)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture
def fault_proxy(gcs_emulator: GcsEmulator) -> Iterator[Any]:
    from tools.faultproxy import FaultProxy

    with FaultProxy("127.0.0.1", gcs_emulator.port) as proxy:
        yield proxy


def _fuse_skip_reason() -> str | None:
    """Why FUSE tests skip here (None: they run). Every test that mounts slowfs goes
    through ``slowfs_factory``, so a machine without FUSE skips them with this reason."""
    from tools.slowfs import fuse_unavailable_reason

    reason = fuse_unavailable_reason()
    return f"FUSE is unavailable: {reason}" if reason else None


@pytest.fixture
def slowfs_factory(tmp_path) -> Iterator[Callable[..., Any]]:
    """``slowfs_factory(name="m", **mount_slowfs_opts)`` -> SlowMount of
    ``tmp_path/<name>-src`` at ``tmp_path/<name>-mnt``; all unmounted at teardown."""
    reason = _fuse_skip_reason()
    if reason:
        pytest.skip(reason)
    import contextlib

    from tools.slowfs import mount_slowfs

    with contextlib.ExitStack() as stack:

        def make(name: str = "m", **opts: Any):
            src = tmp_path / f"{name}-src"
            mnt = tmp_path / f"{name}-mnt"
            src.mkdir(exist_ok=True)
            opts.setdefault("access_log", str(tmp_path / f"{name}-access.log"))
            opts.setdefault("start_timeout", 120.0)  # a loaded CI machine starts Python slowly
            return stack.enter_context(mount_slowfs(str(src), str(mnt), **opts))

        yield make


@pytest.fixture
def slow_fuse_mount(slowfs_factory) -> Any:
    """Drive stand-in: 100 ms per open, 20 MB/s shared; ``.source`` is the backing dir."""
    return slowfs_factory("drive", latency_ms=100, bandwidth_mbps=20)


def _mount_tmpfs(path: str, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; the reason it cannot, or None."""
    import subprocess

    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"mount -t tmpfs failed: {e}"
    return None if r.returncode == 0 else f"mount -t tmpfs failed: {r.stderr.strip()}"


@pytest.fixture
def tmpfs_factory(tmp_path) -> Iterator[Callable[..., str]]:
    """``tmpfs_factory(size="256k", name="full")`` -> the path of a fresh tmpfs mount of
    that size under ``tmp_path`` (a real small disk that fills up: ENOSPC on writes past
    ``size``); every mount is unmounted at teardown. Skips, with the reason, where
    tmpfs cannot be mounted (not root)."""
    import subprocess

    mounted: list[str] = []

    def make(size: str = "256k", name: str = "full") -> str:
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        reason = _mount_tmpfs(str(path), size)
        if reason:
            pytest.skip(reason)
        mounted.append(str(path))
        return str(path)

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
