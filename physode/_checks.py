"""Argument checks shared across layers (each names the argument at fault)."""

from __future__ import annotations

import math


def optional_positive_int(name: str, value: object) -> int | None:
    """``value`` if it is ``None`` or a positive integer (not a bool); else a ValueError."""
    if value is None:
        return None
    try:
        return positive_int(name, value)
    except ValueError:
        raise ValueError(f"{name}: must be a positive integer or None, got {value!r}") from None


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive integer (not a bool); else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return value


def finite_float(name: str, value: object, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float that is finite and ``>= minimum`` (``> minimum`` if ``strict``)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < minimum or (strict and x == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name}: must be a finite number {bound}, got {value!r}")
    return x
