"""Validation of the data handed to scLong, with errors that say what to do.

The package's lowest level of input checks: the model code (``setup_anndata``, queries,
training), the corpora (``data``), the drug featurisers (``chem``), the data set readers
(``datasets``) and the tools (``tl``) all validate through it. Users reach the public functions
as ``scl.pp.check_counts``, ``scl.pp.validate_model_input`` and so on
(:mod:`sclong_scverse.pp` re-exports them).

Every check works on dense :class:`numpy.ndarray` and on :mod:`scipy.sparse` matrices (any
format) without densifying the whole matrix, and on objects that can only be sliced by rows
(``h5py`` datasets, anndata's backed sparse datasets, dask arrays). Messages name the offending
location through the ``where`` argument (``"adata.X"``, ``"adata.layers['counts']"``).

Modules, lowest first: ``_errors`` (:class:`ScLongInputError`), ``_arguments`` (plain
arguments: whole numbers, finite numbers), ``_values`` (value summaries,
count and log-normalised checks, block reading), ``_anndata`` (AnnData structure: views, gene
names, ``obs`` columns), ``_model_input`` (the model's input and the normalisation it expects).
"""

from ._anndata import check_not_view, check_obs_key, check_unique_var_names
from ._arguments import check_finite_number, check_whole
from ._errors import ScLongInputError
from ._model_input import (
    N_SAMPLE_CELLS,
    model_normalization,
    normalization_record,
    validate_adata_input,
    validate_model_input,
)
from ._values import (
    COUNTS_MAX_THRESHOLD,
    LOG_MAX_THRESHOLD,
    SCLONG_MAX_VALUE,
    ValueSummary,
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
    "check_finite_number",
    "check_log_normalized",
    "check_nonempty_cells",
    "check_not_view",
    "check_obs_key",
    "check_unique_var_names",
    "check_whole",
    "empty_cells_message",
    "model_normalization",
    "normalization_record",
    "row_sums",
    "summarize_values",
    "to_memory",
    "validate_adata_input",
    "validate_model_input",
]
