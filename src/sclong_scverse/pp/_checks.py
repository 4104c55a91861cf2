"""Deprecated location of the input validators: they live in :mod:`sclong_scverse.validation`.

A re-export kept while code still imports ``pp._checks``; import from
``sclong_scverse.validation`` (or the public names from ``sclong_scverse.pp``) instead.
"""

from ..validation._anndata import check_not_view, check_obs_key, check_unique_var_names
from ..validation._errors import ScLongInputError
from ..validation._model_input import (
    _MAX_RTOL,
    _NUMERIC_KINDS,
    N_SAMPLE_CELLS,
    _cell_examples,
    _nonzero_values,
    _row_max,
    _row_selection,
    _rows_where,
    _sample_rows,
    model_normalization,
    normalization_record,
    validate_adata_input,
    validate_model_input,
)
from ..validation._values import (
    _BLOCK_VALUES,
    COUNTS_MAX_THRESHOLD,
    LOG_MAX_THRESHOLD,
    SCLONG_MAX_VALUE,
    ValueSummary,
    _check_finite,
    _iter_row_blocks,
    _iter_values,
    _n_rows_per_block,
    check_counts,
    check_log_normalized,
    check_nonempty_cells,
    empty_cells_message,
    row_sums,
    summarize_values,
    to_memory,
)

__all__ = [
    "COUNTS_MAX_THRESHOLD",
    "LOG_MAX_THRESHOLD",
    "N_SAMPLE_CELLS",
    "SCLONG_MAX_VALUE",
    "ScLongInputError",
    "ValueSummary",
    "check_counts",
    "check_log_normalized",
    "check_nonempty_cells",
    "check_not_view",
    "check_obs_key",
    "check_unique_var_names",
    "empty_cells_message",
    "model_normalization",
    "normalization_record",
    "row_sums",
    "summarize_values",
    "to_memory",
    "validate_adata_input",
    "validate_model_input",
    "_BLOCK_VALUES",
    "_MAX_RTOL",
    "_NUMERIC_KINDS",
    "_cell_examples",
    "_check_finite",
    "_iter_row_blocks",
    "_iter_values",
    "_n_rows_per_block",
    "_nonzero_values",
    "_row_max",
    "_row_selection",
    "_rows_where",
    "_sample_rows",
]
