"""Parsing and formatting of sizes (``8MiB``, ``8MB``, ``8388608``) and durations.

Pure functions; they raise ``ValueError`` and leave the exit code to the caller.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    # A bare K/M/G is read as binary, as rclone and aws-cli do.
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the number of bytes in ``text`` (``8MiB`` binary, ``8MB`` decimal)."""
    match = _NUMBER.match(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {text!r}: use bytes or a unit such as 8MiB, 512KiB, 8MB"
        )
    value = float(match.group(1)) * _SIZE_UNITS[unit]
    if value != int(value):
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def parse_duration(text: str) -> float:
    """Return the seconds in ``text`` (``90s``, ``15m``, ``1h``, ``1d``; bare = seconds)."""
    match = _NUMBER.match(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _DURATION_UNITS:
        raise ValueError(
            f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 15m"
        )
    seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return seconds


def format_size(size_bytes: float) -> str:
    """Format bytes with binary units, e.g. ``8.0 MiB``."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Format seconds in the largest unit ``parse_duration`` reads that keeps them
    readable: ``30d``, ``1.5h``, ``90s`` (never ``2.592e+06s``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.4g}{unit}"
    return f"{seconds:.4g}s"
