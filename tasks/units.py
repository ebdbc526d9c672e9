"""Durations as people read them in reports (sizes: ``tasks.checking.human_bytes``)."""

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
