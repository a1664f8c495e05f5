"""slowfs: a passthrough FUSE filesystem that behaves like Google Drive on Colab.

Every open/create pays a fixed latency (Drive: 50-200 ms per open) and all reads
and writes share one bandwidth budget (Drive: 5-20 MB/s). Optionally every Nth
open/read/write/create/rename/fsync fails with EIO or ENOTCONN ("Transport
endpoint is not connected"), the errors Colab users see, at most ``fail_limit``
times (a link that drops and comes back). ``fail_path`` narrows the faults to paths
containing that text (``metrics.jsonl``: only that file's operations are counted and
failed), so a test can break one file's writes while everything else works. Read-write: the builder writes shards
into it (create/write/rename/unlink/mkdir/truncate/fsync/release).

CLI::

    python -m tools.slowfs SOURCE MOUNTPOINT --latency-ms 100 --bandwidth-mbps 20 \
        [--fail-every N --fail-on open,read --fail-errno ENOTCONN --fail-limit K] \
        [--fail-path TEXT] \
        [--access-log FILE]

From Python (tests, benchmarks)::

    with mount_slowfs(src, mnt, latency_ms=100, bandwidth_mbps=20) as m:
        ...  # m.mountpoint shows up as fstype "fuse.slowfs"

The mount runs in a subprocess so a crash or hang cannot take the caller with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

FSTYPE = "fuse.slowfs"
INSTALL_HINT = "apt-get install fuse3 libfuse3-3 (`make test` does this when run as root)"


def fuse_unavailable_reason(
    *,
    dev_fuse: str = "/dev/fuse",
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
    load_library: Callable[[str], Any] = ctypes.CDLL,
    find_spec: Callable[[str], Any] = importlib.util.find_spec,
    which: Callable[[str], str | None] = shutil.which,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """Why slowfs cannot mount here, or None when it can.

    Checks what a mount needs, in the order a fresh machine lacks it: the kernel's FUSE
    device, the libfuse shared library (mfusepy loads it with ctypes: FUSE_LIBRARY_PATH,
    else libfuse, else libfuse3), mfusepy, and a command to unmount. The finders are
    parameters so the checks can be tested on a machine that has everything.
    """
    if not os.path.exists(dev_fuse):
        return f"{dev_fuse} is absent: FUSE needs the kernel's FUSE device"
    if not os.access(dev_fuse, os.R_OK | os.W_OK):
        return f"{dev_fuse} is not readable and writable by this user"
    lib = environ.get("FUSE_LIBRARY_PATH") or find_library("fuse") or find_library("fuse3")
    if not lib:
        return f"libfuse3 is not installed: {INSTALL_HINT}"
    try:
        load_library(lib)
    except OSError as e:
        return f"libfuse ({lib}) does not load: {e}; {INSTALL_HINT}"
    if find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install mfusepy)"
    if which("fusermount3") is None and which("umount") is None:
        return f"neither fusermount3 nor umount is available to unmount: {INSTALL_HINT}"
    return None


# ---------------------------------------------------------------- pacing/faults


class Pacer:
    """A shared link of fixed bandwidth: transfers queue behind one another.

    Each transfer of n bytes reserves the next n/rate seconds of the link and
    sleeps until its slot ends, so concurrent readers together never exceed the
    rate (a token bucket with no burst).
    """

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._free_at = 0.0

    def pace(self, nbytes: int) -> None:
        if not self.rate or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + nbytes / self.rate
            wait = self._free_at - now
        if wait > 0:
            time.sleep(wait)


FAULT_OPS = frozenset({"open", "read", "write", "create", "rename", "fsync"})


@dataclass
class FaultPlan:
    every: int = 0  # fail every Nth operation counted below (0: never)
    on: frozenset[str] = frozenset({"open", "read"})
    code: int = errno.EIO
    limit: int = 0  # inject at most this many faults (0: no limit)
    path: str = ""  # only operations on paths containing this text count ("": every path)

    def __post_init__(self) -> None:
        unknown = self.on - FAULT_OPS
        if unknown:
            raise ValueError(f"unknown fault operations {sorted(unknown)}; use {sorted(FAULT_OPS)}")
        self._n = 0
        self._failed = 0
        self._lock = threading.Lock()

    def check(self, *ops: str, path: str = "") -> None:
        """Count one operation known by any of ``ops`` (a create is also an "open",
        counted once) on ``path`` and fail it when its turn comes."""
        if not self.every or self.on.isdisjoint(ops):
            return
        if self.path and self.path not in path:
            return
        with self._lock:
            if self.limit and self._failed >= self.limit:
                return
            self._n += 1
            fail = self._n % self.every == 0
            self._failed += fail
        if fail:
            from mfusepy import FuseOSError

            raise FuseOSError(self.code)


# --------------------------------------------------------------------- the fs


def make_operations(
    source: str,
    *,
    latency_s: float,
    pacer: Pacer,
    faults: FaultPlan,
    access_log: str | None = None,
):
    import mfusepy as fuse

    root = os.path.realpath(source)
    log_lock = threading.Lock()

    class SlowFS(fuse.Operations):
        use_ns = True  # timestamps as int nanoseconds (mfusepy >= 3)

        def _full(self, path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        def _log(self, what: str, path: str) -> None:
            if access_log:
                with log_lock, open(access_log, "a", encoding="utf-8") as f:
                    f.write(f"{what} {path}\n")

        def _latency(self) -> None:
            if latency_s > 0:
                time.sleep(latency_s)

        # -- metadata
        def access(self, path, amode):
            if not os.access(self._full(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path, fh=None):
            try:
                st = os.lstat(self._full(path))
            except OSError as e:
                raise fuse.FuseOSError(e.errno) from None
            d = {
                k: getattr(st, k)
                for k in ("st_gid", "st_mode", "st_nlink", "st_size", "st_uid", "st_ino")
            }
            d["st_atime"] = st.st_atime_ns
            d["st_mtime"] = st.st_mtime_ns
            d["st_ctime"] = st.st_ctime_ns
            return d

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(self._full(path))

        def statfs(self, path):
            sv = os.statvfs(self._full(path))
            return {
                k: getattr(sv, k)
                for k in (
                    "f_bavail",
                    "f_bfree",
                    "f_blocks",
                    "f_bsize",
                    "f_favail",
                    "f_ffree",
                    "f_files",
                    "f_flag",
                    "f_frsize",
                    "f_namemax",
                )
            }

        def chmod(self, path, mode):
            os.chmod(self._full(path), mode)
            return 0

        def chown(self, path, uid, gid):
            os.chown(self._full(path), uid, gid)
            return 0

        def utimens(self, path, times=None):
            os.utime(self._full(path), ns=times) if times else os.utime(self._full(path))
            return 0

        def mkdir(self, path, mode):
            os.mkdir(self._full(path), mode)
            return 0

        def rmdir(self, path):
            os.rmdir(self._full(path))
            return 0

        def unlink(self, path):
            os.unlink(self._full(path))
            return 0

        def rename(self, old, new):
            faults.check("rename", path=f"{old} {new}")
            os.rename(self._full(old), self._full(new))
            return 0

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._full(path), length)
            return 0

        # -- data
        def open(self, path, flags):
            self._latency()
            faults.check("open", path=path)
            self._log("open", path)
            return os.open(self._full(path), flags & ~(os.O_CREAT | os.O_EXCL))

        def create(self, path, mode, fi=None):
            self._latency()
            faults.check("open", "create", path=path)
            self._log("create", path)
            return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        def read(self, path, size, offset, fh):
            faults.check("read", path=path)
            data = os.pread(fh, size, offset)
            pacer.pace(len(data))
            return data

        def write(self, path, data, offset, fh):
            faults.check("write", path=path)
            pacer.pace(len(data))
            return os.pwrite(fh, data, offset)

        def flush(self, path, fh):
            return 0

        def fsync(self, path, datasync, fh):
            faults.check("fsync", path=path)
            os.fdatasync(fh) if datasync else os.fsync(fh)
            return 0

        def release(self, path, fh):
            os.close(fh)
            return 0

    return SlowFS()


def serve(
    source: str,
    mountpoint: str,
    *,
    latency_ms: float = 100.0,
    bandwidth_mbps: float | None = 20.0,
    fail_every: int = 0,
    fail_on: str = "open,read",
    fail_errno: str = "EIO",
    fail_limit: int = 0,
    access_log: str | None = None,
    fail_path: str = "",
) -> None:
    """Mount and serve in the foreground until unmounted."""
    import mfusepy as fuse

    ops = make_operations(
        source,
        latency_s=latency_ms / 1000.0,
        pacer=Pacer(bandwidth_mbps * 1e6 if bandwidth_mbps else None),
        faults=FaultPlan(
            every=fail_every,
            on=frozenset(s.strip() for s in fail_on.split(",") if s.strip()),
            code=getattr(errno, fail_errno),
            limit=fail_limit,
            path=fail_path,
        ),
        access_log=access_log,
    )
    # fsname/subtype make /proc/self/mounts show "slowfs:<src> <mnt> fuse.slowfs".
    fuse.FUSE(
        ops,
        mountpoint,
        foreground=True,
        nothreads=False,
        fsname=f"slowfs:{os.path.realpath(source)}",
        subtype="slowfs",
    )


# ------------------------------------------------------------- mount helper


@dataclass
class SlowMount:
    source: str
    mountpoint: str
    process: subprocess.Popen
    access_log: str | None = None

    def log_lines(self) -> list[str]:
        """Lines of the access log ("open /x.tar", "create /y"), if one was asked for."""
        if not self.access_log or not os.path.exists(self.access_log):
            return []
        with open(self.access_log, encoding="utf-8") as f:
            return f.read().splitlines()


def _mounted(mountpoint: str) -> bool:
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(" ")
            if len(parts) >= 3 and parts[2] == FSTYPE:
                mp = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
                if mp == real:
                    return True
    return False


def unmount(mountpoint: str) -> None:
    for cmd in (["fusermount3", "-u", mountpoint], ["umount", "-l", mountpoint]):
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 or not _mounted(mountpoint):
            return


@contextlib.contextmanager
def mount_slowfs(
    source: str,
    mountpoint: str,
    *,
    latency_ms: float = 100.0,
    bandwidth_mbps: float | None = 20.0,
    fail_every: int = 0,
    fail_on: str = "open,read",
    fail_errno: str = "EIO",
    fail_limit: int = 0,
    access_log: str | None = None,
    start_timeout: float = 30.0,
    fail_path: str = "",
) -> Iterator[SlowMount]:
    """Mount ``source`` at ``mountpoint`` via slowfs in a subprocess; unmount on exit."""
    reason = fuse_unavailable_reason()
    if reason:
        raise RuntimeError(f"slowfs cannot mount on this machine: {reason}")
    os.makedirs(mountpoint, exist_ok=True)
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = repo_root + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    cmd = [
        sys.executable,
        "-m",
        "tools.slowfs",
        source,
        mountpoint,
        "--latency-ms",
        str(latency_ms),
        "--bandwidth-mbps",
        str(bandwidth_mbps or 0),
        "--fail-every",
        str(fail_every),
        "--fail-on",
        fail_on,
        "--fail-errno",
        fail_errno,
        "--fail-limit",
        str(fail_limit),
    ]
    if access_log:
        cmd += ["--access-log", access_log]
    if fail_path:
        cmd += ["--fail-path", fail_path]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while not _mounted(mountpoint):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(
                    f"slowfs exited with {proc.returncode} before mounting {mountpoint}: {out}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"slowfs did not mount {mountpoint} within {start_timeout} s")
            time.sleep(0.05)
        yield SlowMount(source, mountpoint, proc, access_log)
    finally:
        if _mounted(mountpoint):
            unmount(mountpoint)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.slowfs", description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument(
        "--latency-ms", type=float, default=100.0, help="sleep per open/create (default 100)"
    )
    p.add_argument(
        "--bandwidth-mbps",
        type=float,
        default=20.0,
        help="shared read+write cap in MB/s, 0 = none (default 20)",
    )
    p.add_argument(
        "--fail-every", type=int, default=0, help="fail every Nth counted operation (0 = never)"
    )
    p.add_argument(
        "--fail-on",
        default="open,read",
        help="operations counted: open,read,write,create,rename,fsync (default open,read;"
        " a create also counts as an open)",
    )
    p.add_argument(
        "--fail-errno", default="EIO", choices=["EIO", "ENOTCONN", "ETIMEDOUT", "EHOSTDOWN"]
    )
    p.add_argument(
        "--fail-limit", type=int, default=0, help="inject at most K faults (0 = no limit)"
    )
    p.add_argument(
        "--fail-path",
        default="",
        help="count and fail only operations on paths containing this text (default: all)",
    )
    p.add_argument(
        "--access-log", default=None, help="append 'open PATH' / 'create PATH' lines here"
    )
    a = p.parse_args(argv)
    serve(
        a.source,
        a.mountpoint,
        latency_ms=a.latency_ms,
        bandwidth_mbps=a.bandwidth_mbps or None,
        fail_every=a.fail_every,
        fail_on=a.fail_on,
        fail_errno=a.fail_errno,
        fail_limit=a.fail_limit,
        access_log=a.access_log,
        fail_path=a.fail_path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
