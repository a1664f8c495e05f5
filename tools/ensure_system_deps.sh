#!/bin/sh
# System packages the test suite needs, installed when missing and we are root:
# libfuse3 (mfusepy loads it with ctypes) and fuse3 (fusermount3) for the FUSE-mount
# tests. Never fatal: without them the FUSE tests skip and say why.
# Called by `make test`; quiet when there is nothing to do.

if ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so'; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "note: libfuse3 is missing and this is not root; FUSE tests will be skipped" \
       "(install it with: sudo apt-get install fuse3 libfuse3-3)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: libfuse3 is missing and there is no apt-get; FUSE tests will be skipped" >&2
  exit 0
fi
echo "installing fuse3 and libfuse3-3 for the FUSE tests (apt-get)..." >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine: update once if the first try fails.
apt-get install -y -q fuse3 libfuse3-3 >/dev/null 2>&1 || {
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fuse3 libfuse3-3 >/dev/null 2>&1
} || echo "note: apt-get could not install fuse3 libfuse3-3; FUSE tests will be skipped" >&2
exit 0
