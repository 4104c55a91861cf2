"""Checks of plain arguments (counts, sizes, thresholds) with the package's one-line errors."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import ScLongInputError, ScLongTypeError


def check_whole(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> Any:
    """``value`` as an ``int`` of at least ``minimum`` (``None`` passes with ``allow_none``).

    Raises
    ------
    ScLongTypeError
        Not a whole number (a bool, a string, a float with a fraction, NaN).
    ScLongInputError
        Below ``minimum``.
    """
    if value is None and allow_none:
        return None
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    if isinstance(value, bool) or not whole:
        raise ScLongTypeError(
            f"{name} must be a whole number of at least {minimum}"
            f"{' (or None)' if allow_none else ''}, got {value!r}."
        )
    if int(value) < minimum:
        raise ScLongInputError(f"{name} must be at least {minimum}, got {value!r}.")
    return int(value)


def check_finite_number(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` as a finite ``float`` (``None`` passes with ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ScLongTypeError(f"{name} must be a finite number, got {value!r}.")
    return float(value)
