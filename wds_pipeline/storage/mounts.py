"""Which mount holds a path, and whether it is a FUSE/network one (Colab's Drive).

fsspec sees a FUSE mount as plain local paths; only /proc/self/mounts tells that every
open and read there pays a network round trip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .access import is_remote, local_path

__all__ = ["NETWORK_FSTYPES", "MountInfo", "find_mount", "is_fuse_path", "mount_of", "parse_mounts"]

# Filesystem types that behave like Drive: every open and read is a network trip.
NETWORK_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "sshfs",
        "gcsfuse",
        "ceph",
        "glusterfs",
        "afs",
        "davfs",
        "lustre",
        "s3fs",
        "rclone",
    }
)

@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    device: str


def _unescape_mount_field(s: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in s:  # nearly every field: a loader reads the table at every start
        return s
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[MountInfo]:
    """Parse the text of /proc/self/mounts (pure; exposed for tests)."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 3:
            continue
        out.append(
            MountInfo(
                mountpoint=_unescape_mount_field(parts[1]),
                fstype=_unescape_mount_field(parts[2]),
                device=_unescape_mount_field(parts[0]),
            )
        )
    return out


def find_mount(path: str, mounts: list[MountInfo]) -> MountInfo:
    """Longest-prefix mount containing ``path`` (pure). Later entries win ties
    because a later mount on the same point hides the earlier one."""
    best: MountInfo | None = None
    for m in mounts:
        mp = m.mountpoint
        contains = mp == "/" or path == mp or path.startswith(mp.rstrip("/") + "/")
        if contains and (best is None or len(mp) >= len(best.mountpoint)):
            best = m
    if best is None:
        raise ValueError(f"no mount contains {path!r}")
    return best


def mount_of(path: str) -> MountInfo:
    """The mount holding ``path`` (need not exist yet), from /proc/self/mounts."""
    if is_remote(path):
        raise ValueError(f"{path!r} is a remote URL, not a mounted path")
    # realpath (non-strict) resolves symlinks such as /content/drive -> ... but
    # tolerates OSErrors, so a dead mount (ENOTCONN) still resolves.
    p = os.path.realpath(local_path(path))
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        return find_mount(p, parse_mounts(f.read()))


def is_fuse_path(path: str) -> bool:
    """True when ``path`` is on a FUSE or network mount (Colab Drive is ``fuse.drive``),
    where every open and read pays a network round trip. Remote URLs give False."""
    if is_remote(path):
        return False
    try:
        fstype = mount_of(path).fstype
    except (OSError, ValueError):
        return False
    return fstype.startswith("fuse") or fstype in NETWORK_FSTYPES
