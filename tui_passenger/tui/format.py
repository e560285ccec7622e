"""Compact, fixed-width text for numbers: sizes, durations, percentages. No Textual here.

Sizes are binary, as everywhere in tui-passenger: K, M, G are KiB, MiB, GiB (2^10, 2^20, 2^30
bytes, the one-letter form ``ps``, ``top`` and ``htop`` use); prose spells out ``MiB``.
"""

from __future__ import annotations

NONE = "–"


def size(value: int | None) -> str:
    """Bytes as at most six characters: ``512K``, ``12.3M``, ``1.2G`` (binary units)."""
    if value is None:
        return NONE
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= scale:
            amount = value / scale
            return f"{amount:.1f}{unit}" if amount < 100 else f"{amount:.0f}{unit}"
    return f"{value}B"


def mebibytes(value: int | None) -> str:
    """Bytes as ``123.4 MiB`` (for prose)."""
    return NONE if value is None else f"{value / (1 << 20):.1f} MiB"


def duration(seconds: float | None) -> str:
    """Seconds as at most five characters: ``45s``, ``12m05``, ``3h04m``, ``2d05h``."""
    if seconds is None:
        return NONE
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def short_duration(seconds: float) -> str:
    """Seconds as at most three characters: ``7s``, ``59s``, ``5m``, ``2h``, ``3d``."""
    s = int(seconds)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= span:
            return f"{min(s // span, 99)}{unit}"
    return f"{s}s"


def long_duration(seconds: float | None) -> str:
    """Seconds as ``1h 02m 03s`` (for the header)."""
    if seconds is None:
        return NONE
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    return f"{minutes}m {s:02d}s"


def percent(value: float | None) -> str:
    """CPU percent (100 = one core), no decimals from 10 up."""
    if value is None:
        return NONE
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def count(value: int | None) -> str:
    """An integer, with k/M suffixes past six digits."""
    if value is None:
        return NONE
    if value < 1_000_000:
        return str(value)
    if value < 1_000_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1_000_000:.0f}M"
