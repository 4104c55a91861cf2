"""Preprocessing: prepare AnnData for scLong (scanpy-style functions) and validate input."""

from ._checks import (
    ScLongInputError,
    ValueSummary,
    check_counts,
    check_log_normalized,
    check_nonempty_cells,
    check_not_view,
    check_obs_key,
    check_unique_var_names,
    normalization_record,
    summarize_values,
    validate_adata_input,
    validate_model_input,
)
from ._normalize import normalize

__all__ = [
    "ScLongInputError",
    "ValueSummary",
    "check_counts",
    "check_log_normalized",
    "check_nonempty_cells",
    "check_not_view",
    "check_obs_key",
    "check_unique_var_names",
    "normalization_record",
    "normalize",
    "summarize_values",
    "validate_adata_input",
    "validate_model_input",
]
