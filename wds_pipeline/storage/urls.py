"""Folder URLs joined and split keeping their scheme (``gs://b/x`` + ``y``): pure string
work, no filesystem access, so that the index, the planner and the trainer share one
spelling of "a name inside a folder" whatever the storage."""

from __future__ import annotations

import posixpath


def join_url(base: str, name: str) -> str:
    """Join a folder URL and a relative name, keeping the scheme (``gs://b/x`` + ``y``)."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, name)}"
    return posixpath.join(base, name)


def dirname_url(url: str) -> str:
    """The folder of ``url``, keeping the scheme."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return posixpath.dirname(url)
