"""The seekable, read-only raw stream both read-path streams are: one that keeps its own
position (a retried remote read, a shard read while it downloads) instead of a file's."""

from __future__ import annotations

import io

__all__ = ["PositionedStream"]


class PositionedStream(io.RawIOBase):
    """A raw stream whose position is ``_pos``; subclasses give the size for ``SEEK_END``
    (:meth:`_end`) and may react to a move (:meth:`_moved`), and implement ``readinto``."""

    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += self._end()
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        moved, self._pos = offset != self._pos, offset
        if moved:
            self._moved(offset)
        return self._pos

    def _end(self) -> int:
        raise NotImplementedError

    def _moved(self, offset: int) -> None:
        """Called when a seek changed the position (now ``offset``)."""
