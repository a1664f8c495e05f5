"""Samples from tar members: consecutive members sharing a key form one sample."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from .keys import split_member_name
from .tar import iter_tar_members

__all__ = ["group_samples", "iter_samples"]


def group_samples(
    members: Iterator[tuple[str, memoryview]],
) -> Iterator[tuple[str, dict[str, memoryview]]]:
    """Group consecutive ``(name, payload)`` members by key into samples."""
    key: str | None = None
    fields: dict[str, memoryview] = {}
    for name, payload in members:
        k, field = split_member_name(name)
        if k != key:
            if key is not None:
                yield key, fields
            key, fields = k, {}
        fields[field] = payload
    if key is not None:
        yield key, fields


def iter_samples(
    f: BinaryIO, *, start: int = 0, source: str = "<stream>", limit: int | None = None
) -> Iterator[tuple[str, dict[str, memoryview]]]:
    """Read ``(key, {field: payload})`` samples from a tar stream, at most ``limit``."""
    members = ((m.name, p) for m, p in iter_tar_members(f, start=start, source=source))
    for n, sample in enumerate(group_samples(members)):  # type: ignore[arg-type]
        if limit is not None and n >= limit:
            return
        yield sample
