"""Summaries of the values of a matrix, and the checks of counts and log-normalised values.

Every function works on dense :class:`numpy.ndarray` and on :mod:`scipy.sparse` matrices (any
format) without densifying the whole matrix: sparse matrices are read through their stored
values, dense ones in blocks of rows. Objects that can only be sliced by rows (``h5py`` datasets
and anndata's backed sparse datasets, dask arrays) are read one block of rows at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ScLongTypeError
from ._errors import ScLongInputError

# values per block when scanning a matrix (a block of rows for dense data, a slice of the stored
# values for sparse data); 4M float64 values = 32 MiB of temporaries at most
_BLOCK_VALUES = 1 << 22

#: non-integer data whose maximum is below this looks log-normalised rather than like counts
LOG_MAX_THRESHOLD = 20.0
#: integer data whose maximum is above this looks like raw counts rather than log values
COUNTS_MAX_THRESHOLD = 50.0
#: the per-cell maximum scLong's preprocessing gives every cell (scl.pp.normalize's max_value)
SCLONG_MAX_VALUE = 10.0


@dataclass(frozen=True)
class ValueSummary:
    """What one pass over a matrix found (implicit zeros of sparse matrices included).

    Attributes
    ----------
    n_values
        Number of values inspected (stored values for sparse matrices).
    n_nan, n_inf
        Number of NaN and of infinite values.
    n_negative
        Number of finite values below 0.
    n_non_integer
        Number of finite values that are not whole numbers.
    min, max
        Smallest and largest finite value (NaN when there is none).
    integer_dtype
        Whether the matrix has an integer or boolean dtype.
    """

    n_values: int
    n_nan: int
    n_inf: int
    n_negative: int
    n_non_integer: int
    min: float
    max: float
    integer_dtype: bool


def _n_rows_per_block(n_cols: int) -> int:
    return max(1, _BLOCK_VALUES // max(1, n_cols))


def _iter_row_blocks(X: Any, rows_per_block: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(start_row, block)`` for consecutive blocks of rows of ``X``."""
    n_rows, n_cols = X.shape
    step = rows_per_block or _n_rows_per_block(n_cols)
    for start in range(0, n_rows, step):
        yield start, X[start : start + step]


def _iter_values(X: Any) -> Iterator[tuple[np.ndarray, bool]]:
    """Yield ``(values, has_implicit_zeros)``: 1-d blocks of the (stored) values of ``X``."""
    if sp.issparse(X):
        if X.format not in ("csr", "csc", "coo"):
            X = X.tocsr()
        implicit = X.nnz < X.shape[0] * X.shape[1]
        data = X.data
        for start in range(0, data.size, _BLOCK_VALUES):
            yield data[start : start + _BLOCK_VALUES], implicit
        if data.size == 0:
            yield data, implicit
        return
    if isinstance(X, np.ndarray):
        X = np.asarray(X)  # np.matrix -> ndarray
        for _, block in _iter_row_blocks(X):
            yield np.asarray(block).reshape(-1), False
        return
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__") or len(X.shape) != 2:
        raise ScLongTypeError(
            f"expected a 2-d numpy array or scipy sparse matrix, got {type(X).__name__}"
        )
    for _, block in _iter_row_blocks(X):  # h5py / backed sparse / dask: read block by block
        if sp.issparse(block):
            yield block.data, block.nnz < block.shape[0] * block.shape[1]
        else:
            yield np.asarray(block).reshape(-1), False


def summarize_values(X: Any) -> ValueSummary:
    """Scan ``X`` once and count NaN, infinite, negative and non-integer values.

    Parameters
    ----------
    X
        Dense array, scipy sparse matrix, or an object sliceable by rows (h5py dataset, backed
        sparse dataset). Never densified as a whole.

    Returns
    -------
    The counts and the finite range, as a :class:`ValueSummary`.
    """
    dtype = np.dtype(X.dtype) if hasattr(X, "dtype") else np.dtype(float)
    integer_dtype = dtype.kind in "biu"
    n_values = n_nan = n_inf = n_negative = n_non_integer = 0
    lo, hi = np.inf, -np.inf
    for values, implicit_zeros in _iter_values(X):
        n_values += values.size
        if implicit_zeros:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if values.size == 0:
            continue
        if not integer_dtype:
            finite = np.isfinite(values)
            if not finite.all():
                nan = int(np.count_nonzero(np.isnan(values)))
                n_nan += nan
                n_inf += values.size - int(np.count_nonzero(finite)) - nan
                values = values[finite]
                if values.size == 0:
                    continue
            n_non_integer += int(np.count_nonzero(values != np.rint(values)))
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        n_negative += int(np.count_nonzero(values < 0))
    if lo > hi:  # nothing finite
        lo = hi = float("nan")
    return ValueSummary(
        n_values=n_values,
        n_nan=n_nan,
        n_inf=n_inf,
        n_negative=n_negative,
        n_non_integer=n_non_integer,
        min=lo,
        max=hi,
        integer_dtype=integer_dtype,
    )


def row_sums(X: Any) -> np.ndarray:
    """Per-row sums of ``X`` in float64, computed block by block for dense data.

    Parameters
    ----------
    X
        Cells x genes matrix (dense, scipy sparse, or sliceable by rows).

    Returns
    -------
    A 1-d float64 array of length ``X.shape[0]``.
    """
    if sp.issparse(X):
        return np.asarray(X.sum(axis=1, dtype=np.float64)).reshape(-1)
    out = np.empty(X.shape[0], dtype=np.float64)
    for start, block in _iter_row_blocks(X):
        if sp.issparse(block):
            sums = np.asarray(block.sum(axis=1, dtype=np.float64)).reshape(-1)
        else:
            sums = np.asarray(block, dtype=np.float64).sum(axis=1)
        out[start : start + sums.shape[0]] = sums
    return out


def to_memory(X: Any) -> Any:
    """``X`` as an in-memory numpy array or scipy sparse matrix (backed datasets are read).

    Parameters
    ----------
    X
        Dense or sparse matrix, h5py dataset or anndata backed sparse dataset.

    Returns
    -------
    ``X`` itself when already in memory, else its values read into memory.
    """
    if isinstance(X, np.ndarray) or sp.issparse(X):
        return X
    if hasattr(X, "to_memory"):
        return X.to_memory()
    values = X[()] if hasattr(X, "id") else X[:]  # h5py datasets take [()]
    return values if sp.issparse(values) else np.asarray(values)


def _check_finite(summary: ValueSummary, where: str, fix: str) -> None:
    if summary.n_nan or summary.n_inf:
        raise ScLongInputError(
            f"{where} contains {summary.n_nan} NaN and {summary.n_inf} infinite values; scLong "
            f"needs finite values. {fix}"
        )


def check_counts(
    X: Any,
    where: str = "adata.X",
    *,
    allow_non_integer: bool = False,
    summary: ValueSummary | None = None,
) -> ValueSummary:
    """Check that ``X`` holds raw counts (the input of :func:`sclong_scverse.pp.normalize`).

    Parameters
    ----------
    X
        Cells x genes matrix (dense, scipy sparse, or sliceable by rows).
    where
        How to name ``X`` in error messages, e.g. ``"adata.layers['counts']"``.
    allow_non_integer
        Accept non-integer values (e.g. ambient-RNA-corrected counts from SoupX, CellBender or
        DecontX). Values that look log-normalised then only give a warning.
    summary
        A :class:`ValueSummary` of ``X`` computed before (skips the scan).

    Returns
    -------
    The :class:`ValueSummary` of ``X``.

    Raises
    ------
    ScLongInputError
        NaN or infinite values; negative values (scaled or centred data, e.g. ``sc.pp.scale``
        output); non-integer values (data that looks log-normalised already, or other
        non-count values) unless ``allow_non_integer``.
    """
    s = summarize_values(X) if summary is None else summary
    _check_finite(
        s, where, "Pass raw counts (a counts layer with layer=..., or adata.raw if it holds them)."
    )
    if s.n_negative:
        raise ScLongInputError(
            f"{where} contains {s.n_negative} negative values (minimum {s.min:.4g}): it looks "
            "scaled or centred (e.g. the output of sc.pp.scale or sc.pp.regress_out), but raw "
            "counts are needed here. Pass the raw counts instead: a layer that holds them "
            "(layer='counts'), or adata.raw if it holds counts (adata.raw.to_adata())."
        )
    if s.n_non_integer == 0:
        return s
    looks_log = s.max < LOG_MAX_THRESHOLD
    fraction = s.n_non_integer / max(1, s.n_values)
    log_message = (
        f"{where} looks log-normalised already: {fraction:.0%} of its stored values are not "
        f"integers and its maximum is {s.max:.4g}. scl.pp.normalize needs raw counts: pass a "
        "layer that holds them (scl.pp.normalize(adata, layer='counts')), or, if counts are "
        "lost and this is the output of sc.pp.normalize_total followed by sc.pp.log1p, pass "
        "np.expm1 of it with allow_non_integer=True (scLong normalises each cell again, so the "
        "result is the same). Data already normalised as scLong expects (total 1e4 per cell, "
        "log1p, maximum 10 per cell) needs no scl.pp.normalize at all."
    )
    if allow_non_integer:
        if looks_log:
            warnings.warn(log_message, UserWarning, stacklevel=2)
        return s
    if looks_log:
        raise ScLongInputError(log_message)
    raise ScLongInputError(
        f"{where} contains {s.n_non_integer} non-integer values ({fraction:.0%} of its stored "
        f"values, maximum {s.max:.4g}), but raw counts are needed here. If these are corrected "
        "counts (e.g. ambient-RNA removal by SoupX/CellBender), pass allow_non_integer=True. If "
        "they are normalised (e.g. sc.pp.normalize_total output), pass the raw counts instead "
        "(layer='counts' or adata.raw)."
    )


def check_log_normalized(
    X: Any, where: str = "adata.X", *, summary: ValueSummary | None = None
) -> ValueSummary:
    """Check that ``X`` holds log-normalised values (finite, non-negative, not counts).

    A quick check of any log-normalised data. The model itself is stricter:
    :func:`validate_model_input` also refuses small integer counts and values not rescaled per
    cell as :func:`~sclong_scverse.pp.normalize` does.

    Parameters
    ----------
    X
        Cells x genes matrix (dense, scipy sparse, or sliceable by rows).
    where
        How to name ``X`` in error messages, e.g. ``"adata.layers['sclong']"``.
    summary
        A :class:`ValueSummary` of ``X`` computed before (skips the scan).

    Returns
    -------
    The :class:`ValueSummary` of ``X``.

    Raises
    ------
    ScLongInputError
        NaN or infinite values; negative values (scaled data; scLong reads values <= -1 as mask
        tokens); integer data with a maximum above 50 (raw counts: run
        :func:`sclong_scverse.pp.normalize` first).

    Warns
    -----
    UserWarning
        Non-integer values above 50 (normalised but apparently not log-transformed).
    """
    s = summarize_values(X) if summary is None else summary
    fix = "Run scl.pp.normalize(adata) on raw counts and use its layer (adata.layers['sclong'])."
    _check_finite(s, where, fix)
    if s.n_negative:
        raise ScLongInputError(
            f"{where} contains {s.n_negative} negative values (minimum {s.min:.4g}): it looks "
            "scaled or centred (e.g. sc.pp.scale output). scLong needs non-negative "
            "log-normalised values (it reads values <= -1 as mask tokens). " + fix
        )
    if s.n_non_integer == 0 and s.max > COUNTS_MAX_THRESHOLD:
        raise ScLongInputError(
            f"{where} looks like raw counts (all values are integers, maximum {s.max:.4g}), but "
            "log-normalised values are needed here. " + fix
        )
    if s.max > COUNTS_MAX_THRESHOLD:
        warnings.warn(
            f"{where} has values up to {s.max:.4g}, high for log-normalised data "
            "(scl.pp.normalize gives at most 10); was log1p applied?",
            UserWarning,
            stacklevel=2,
        )
    return s


def empty_cells_message(
    n_empty: int, n_cells: int, where: str, obs_names: Sequence[str] | None = None
) -> str:
    """The error message for cells without counts (shared by the checks and normalisation)."""
    examples = ""
    if obs_names is not None and n_empty:
        examples = f" (e.g. {', '.join(repr(str(n)) for n in list(obs_names)[:3])})"
    return (
        f"{n_empty} of {n_cells} cells in {where} have no counts (all values are 0){examples}; "
        "they cannot be normalised. Remove them first, e.g. sc.pp.filter_cells(adata, "
        "min_counts=1), or pass empty_cells='zero' to keep them as all-zero rows."
    )


def check_nonempty_cells(
    X: Any, where: str = "adata.X", *, obs_names: Sequence[str] | None = None
) -> np.ndarray:
    """Refuse cells (rows) whose values are all zero.

    Assumes non-negative values (run :func:`check_counts` or :func:`check_log_normalized`
    first): a row counts as empty when its sum is 0.

    Parameters
    ----------
    X
        Cells x genes matrix (dense, scipy sparse, or sliceable by rows).
    where
        How to name ``X`` in error messages.
    obs_names
        Cell names, to list a few empty cells in the message (e.g. ``adata.obs_names``).

    Returns
    -------
    The per-cell sums (float64), for reuse.

    Raises
    ------
    ScLongInputError
        Some cell has no counts.
    """
    sums = row_sums(X)
    empty = sums == 0
    if empty.any():
        names = None if obs_names is None else np.asarray(obs_names)[empty]
        raise ScLongInputError(empty_cells_message(int(empty.sum()), sums.size, where, names))
    return sums
