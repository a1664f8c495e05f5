"""Byte sizes written by people ("512MB", "1GiB", "20GB", 1000): the one parser the command
line, YAML configs and the loader share.

Units: B; decimal KB, MB, GB, TB (powers of 1000); binary KiB, MiB, GiB, TiB (powers of 1024);
K, M, G as short for KiB, MiB, GiB. Case and spaces are ignored; a plain number is bytes.
"""

from __future__ import annotations

_UNITS = {
    "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "B": 1,
}


def parse_size(text: str | int) -> int:
    """'20GB' / '512MiB' / '1G' / 1000 -> bytes; ValueError naming the text otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip().upper().replace(" ", "")
    try:
        for unit, mult in _UNITS.items():
            if s.endswith(unit):
                return int(float(s[: -len(unit)]) * mult)
        return int(s)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a size; write bytes or a number with a unit, e.g. 512MB, 1GiB"
        ) from None
