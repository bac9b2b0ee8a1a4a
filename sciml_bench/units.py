"""Numbers with units as text, for the terminal, the report and profile files (imports nothing of the package)."""
from __future__ import annotations


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
