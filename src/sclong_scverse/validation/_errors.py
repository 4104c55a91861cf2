"""The error every check raises: data that scLong cannot use as it is (see :mod:`..errors`)."""

from __future__ import annotations

from ..errors import ScLongInputError

__all__ = ["ScLongInputError"]
