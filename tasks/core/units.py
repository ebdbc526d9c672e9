"""Units as people read them in reports: durations, sizes and shares."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """90061 -> '1 d 1 h'; 125 -> '2 min 5 s'; 0.25 -> '250 ms'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"


def exact_duration(seconds: float) -> str:
    """Whole seconds, every non-zero unit: 900 -> '15 min'; 3661 -> '1 h 1 min 1 s'; 0 -> '0 s'.

    Fractions of a second are dropped (59.9 -> '59 s'); a negative duration gets a minus sign.
    """
    whole = int(abs(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count} {unit}")
    text = " ".join(parts) or "0 s"
    return f"-{text}" if seconds <= -1 else text


def percent(part: float, whole: float) -> float:
    """The share ``part / whole`` as a ratio (0.25, not 25); 0.0 when ``whole`` is 0."""
    return part / whole if whole else 0.0


def human_bytes(size: float) -> str:
    """A size in bytes in binary units: 512 -> '512 B'; 1536 -> '1.5 KiB' (up to TiB)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.0f} B" if units[0] == "B" else f"{size:.1f} {units[0]}"
