"""Numbers with units as text, for the terminal, the report and profile files (imports nothing of the package)."""
from __future__ import annotations

import math
import re


def fmt_bytes(b: float | None) -> str:
    """``b`` bytes to three significant figures in binary units (``"1.5 KiB"``, ``"312 B"``, ``"1023 KiB"``,
    never ``"1.02e+03 KiB"``); ``"-"`` for None."""
    if b is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(b) >= scale:
            v = b / scale
            return f"{v:.3g} {unit}" if abs(v) < 999.5 else f"{v:.0f} {unit}"  # .3g would go to e+03
    return f"{b:.0f} B"


_BYTE_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9, "gb": 10 ** 9,
               "t": 10 ** 12, "tb": 10 ** 12, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_SECONDS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def _number_unit(text: str, units: dict[str, float], what: str) -> float:
    """``text`` as a finite positive number times its unit from ``units``; ValueError naming ``what``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        raise ValueError(f"{what} {text!r}: expected a positive number with a unit, one of: "
                         f"{', '.join(u for u in units if u)} (e.g. {'2GiB' if 'gib' in units else '10m'})")
    value = float(m.group(1)) * units[unit]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} {text!r}: must be a finite positive amount")
    return value


def parse_bytes(text: str) -> int:
    """``"2GiB"``, ``"512 MB"``, ``"1e9"`` (bytes) as a whole number of bytes; ValueError for anything else
    (decimal kB/MB/GB/TB = powers of 1000, KiB/MiB/GiB/TiB = powers of 1024)."""
    return int(_number_unit(text, _BYTE_UNITS, "size"))


def parse_duration(text: str) -> float:
    """``"10m"``, ``"90s"``, ``"1.5h"``, ``"45"`` (seconds) in seconds; ValueError for anything else."""
    return _number_unit(text, _SECONDS, "duration")
