"""Argument checks shared across layers (each names the argument at fault)."""

from __future__ import annotations


def optional_positive_int(name: str, value: object) -> int | None:
    """``value`` if it is ``None`` or a positive integer (not a bool); else a ValueError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
    return value
