"""The decoding error every audio backend raises, and the input type they accept."""

from __future__ import annotations

import os

from ..errors import WdsPipelineError

Source = str | os.PathLike | bytes | bytearray | memoryview


class AudioDecodeError(WdsPipelineError, ValueError):
    """A file that cannot be decoded into audio. ``str(err)`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
