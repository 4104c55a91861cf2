"""Preprocessing: prepare AnnData for scLong (scanpy-style functions) and validate input."""

from ..validation import (
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
from ._perturbation import (
    condition_genes,
    condition_label,
    parse_condition,
    perturbation_conditions,
    perturbation_split,
    rank_perturbation_genes,
)

__all__ = [
    "ScLongInputError",
    "ValueSummary",
    "check_counts",
    "check_log_normalized",
    "check_nonempty_cells",
    "check_not_view",
    "check_obs_key",
    "check_unique_var_names",
    "condition_genes",
    "condition_label",
    "normalization_record",
    "normalize",
    "parse_condition",
    "perturbation_conditions",
    "perturbation_split",
    "rank_perturbation_genes",
    "summarize_values",
    "validate_adata_input",
    "validate_model_input",
]
