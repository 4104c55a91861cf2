"""The error every check raises: data that scLong cannot use as it is."""

from __future__ import annotations


class ScLongInputError(ValueError):
    """The data handed to scLong cannot be used as it is; the message says what to do."""
