"""Whether FUSE tests run or skip, and why; `make test`'s installer of system packages.

This machine has FUSE, and other sessions use it, so a missing library or device is
simulated: the finders of ``fuse_unavailable_reason`` are parameters (a stub finder
that finds nothing; real paths that do not exist, which ctypes really fails to load),
and the installer script runs with stub ``ldconfig``/``apt-get``/``id`` commands first
on PATH. A fresh machine without fuse3 is checked by running `make test` on one.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
from pathlib import Path

from tools.slowfs import fuse_unavailable_reason

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "ensure_system_deps.sh"


def _reason(tmp_path: Path, **overrides):
    dev = tmp_path / "fuse"
    dev.write_bytes(b"")
    opts = dict(dev_fuse=str(dev), find_library=lambda name: "libc.so.6",
                load_library=ctypes.CDLL, find_spec=lambda name: object(),
                which=lambda name: "/bin/" + name, environ={})
    opts.update(overrides)
    return fuse_unavailable_reason(**opts)


def test_everything_present_means_no_reason(tmp_path):
    assert _reason(tmp_path) is None


def test_missing_fuse_device(tmp_path):
    assert _reason(tmp_path, dev_fuse=str(tmp_path / "nope")) == (
        f"{tmp_path / 'nope'} is absent: FUSE needs the kernel's FUSE device")


def test_missing_libfuse3(tmp_path):
    asked = []
    reason = _reason(tmp_path, find_library=lambda name: asked.append(name))
    assert asked == ["fuse", "fuse3"]  # the names mfusepy looks for
    assert reason == ("libfuse3 is not installed: apt-get install fuse3 libfuse3-3 "
                      "(`make test` does this when run as root)")


def test_libfuse_that_does_not_load(tmp_path):
    missing = str(tmp_path / "libfuse3.so.3")
    reason = _reason(tmp_path, find_library=lambda name: None,
                     environ={"FUSE_LIBRARY_PATH": missing})
    assert reason.startswith(f"libfuse ({missing}) does not load: ")
    assert reason.endswith("apt-get install fuse3 libfuse3-3 (`make test` does this when run as root)")


def test_missing_mfusepy_and_unmount_command(tmp_path):
    assert _reason(tmp_path, find_spec=lambda name: None) == (
        "mfusepy is not installed (pip install mfusepy)")
    assert _reason(tmp_path, which=lambda name: None).startswith(
        "neither fusermount3 nor umount is available to unmount")


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_script(tmp_path: Path, *, ldconfig_lists: str, uid: int, apt_exit: int):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    _stub(stubs, "ldconfig", f"printf '{ldconfig_lists}'")
    _stub(stubs, "id", f"echo {uid}")
    _stub(stubs, "apt-get", f'echo "$@" >> {tmp_path}/apt.log; exit {apt_exit}')
    env = dict(os.environ, PATH=f"{stubs}:/usr/bin:/bin")
    p = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    log = tmp_path / "apt.log"
    return p, log.read_text().splitlines() if log.exists() else []


def test_installer_is_silent_when_libfuse3_is_there(tmp_path):
    p, apt = _run_script(tmp_path, uid=0, apt_exit=0, ldconfig_lists=(
        "\\tlibfuse3.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfuse3.so.3\\n"))
    assert (p.returncode, p.stdout, p.stderr, apt) == (0, "", "", [])


def test_installer_installs_as_root_and_is_not_fatal_when_apt_fails(tmp_path):
    p, apt = _run_script(tmp_path, uid=0, apt_exit=100, ldconfig_lists="")
    assert p.returncode == 0
    assert apt == ["install -y -q fuse3 libfuse3-3", "update -q"]  # update, then no retry
    assert "apt-get could not install fuse3 libfuse3-3; FUSE tests will be skipped" in p.stderr


def test_installer_installs_as_root(tmp_path):
    p, apt = _run_script(tmp_path, uid=0, apt_exit=0, ldconfig_lists="")
    assert p.returncode == 0 and apt == ["install -y -q fuse3 libfuse3-3"]
    assert "installing fuse3 and libfuse3-3" in p.stderr


def test_installer_leaves_a_non_root_user_alone(tmp_path):
    p, apt = _run_script(tmp_path, uid=1000, apt_exit=0, ldconfig_lists="")
    assert p.returncode == 0 and apt == []
    assert "libfuse3 is missing and this is not root; FUSE tests will be skipped" in p.stderr


def test_make_test_runs_the_installer_and_ci_runs_make_test():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "tools/ensure_system_deps.sh" in recipe.split("pytest")[0]
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == "make test" and not any("apt-get" in ln for ln in ci)
