"""Preprocessing: prepare AnnData for scLong (scanpy-style functions) and validate input."""

from ._checks import (
    ScLongInputError,
    ValueSummary,
    check_counts,
    check_log_normalized,
    check_nonempty_cells,
    check_not_view,
    check_unique_var_names,
    summarize_values,
)
from ._normalize import normalize

__all__ = [
    "ScLongInputError",
    "ValueSummary",
    "check_counts",
    "check_log_normalized",
    "check_nonempty_cells",
    "check_not_view",
    "check_unique_var_names",
    "normalize",
    "summarize_values",
]
