"""Normalise raw counts into the input scLong expects."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ..errors import ScLongKeyError
from ..validation import (
    ScLongInputError,
    check_counts,
    check_not_view,
    empty_cells_message,
    row_sums,
)
from ..validation._values import _BLOCK_VALUES, _iter_row_blocks

logger = logging.getLogger(__name__)


def normalize(
    adata: AnnData,
    layer: str | None = None,
    key_added: str = "sclong",
    target_sum: float = 1e4,
    max_value: float = 10.0,
    copy: bool = False,
    inplace_X: bool = False,
    *,
    empty_cells: Literal["error", "zero"] = "error",
    allow_non_integer: bool = False,
) -> AnnData | None:
    """Normalise raw counts the way scLong expects its input.

    Per cell (row): counts are scaled to a total of ``target_sum``, transformed with ``log1p``,
    then rescaled so that the cell's largest value is exactly ``max_value``::

        y = log1p(x * target_sum / sum(x));   out = y / max(y) * max_value

    The input is validated first (:func:`~sclong_scverse.pp.check_counts`): NaN or
    infinite values, negative (scaled) data and data that is already log-normalised are refused
    with a message saying what to pass instead.

    Parameters
    ----------
    adata
        Cells x genes AnnData with raw counts in ``adata.X`` or ``adata.layers[layer]``.
    layer
        Read the counts from ``adata.layers[layer]`` instead of ``adata.X``.
    key_added
        Name of the output layer ``adata.layers[key_added]`` and of the parameter record
        ``adata.uns[key_added]["params"]``.
    target_sum
        Total each cell is scaled to before ``log1p`` (scLong: 1e4).
    max_value
        Largest value of every cell after rescaling (scLong: 10).
    copy
        Work on a copy of ``adata`` and return it; ``adata`` itself is left untouched (a view is
        accepted then; a backed AnnData is copied into memory).
    inplace_X
        Write the result to ``adata.X`` instead of ``adata.layers[key_added]``; the counts in
        ``adata.X`` are then overwritten (keep them in a layer or ``adata.raw`` first). Not for
        backed AnnData (its ``X`` is on disk).
    empty_cells
        What to do with cells without any count: ``"error"`` (default) raises, ``"zero"`` keeps
        them as all-zero rows.
    allow_non_integer
        Accept non-integer counts (e.g. ambient-RNA-corrected counts).

    Returns
    -------
    The normalised copy when ``copy=True``, else ``None``. Writes:

    - ``adata.layers[key_added]`` (or ``adata.X`` with ``inplace_X=True``): float32, CSR sparse
      when the counts are sparse (any scipy format), dense otherwise;
    - ``adata.uns[key_added]["params"]``: ``layer``, ``target_sum``, ``max_value``,
      ``empty_cells``, ``n_empty_cells`` and ``output`` (``"X"`` or ``"layers/<key_added>"``).

    Nothing else in ``adata`` changes. An existing ``adata.layers[key_added]`` (or ``adata.X``
    with ``inplace_X=True``) and ``adata.uns[key_added]["params"]`` are replaced, as scanpy
    does; replacing an existing layer is logged as a warning.

    Raises
    ------
    ValueError
        ``target_sum`` or ``max_value`` is not a positive finite number.
    ScLongInputError
        ``adata`` is a view (without ``copy=True``), or backed with ``inplace_X=True``; the
        counts contain NaN, infinite, negative or (without ``allow_non_integer``) non-integer
        values; some cell has no counts (with ``empty_cells="error"``).
    KeyError
        ``layer`` is not in ``adata.layers``.

    Notes
    -----
    Memory: the output (float32, the same sparsity as the input) plus temporaries for one block
    of rows; the input is never densified. CSC and other sparse formats are converted to CSR
    first (one copy).

    Examples
    --------
    >>> import sclong_scverse as scl
    >>> scl.pp.normalize(adata, layer="counts")  # doctest: +SKIP
    >>> adata.layers["sclong"].max(axis=1)  # doctest: +SKIP
    """
    for name, value in (("target_sum", target_sum), ("max_value", max_value)):
        if not (isinstance(value, int | float | np.number) and np.isfinite(value) and value > 0):
            raise ScLongInputError(f"{name} must be a positive finite number, got {value!r}")
    if empty_cells not in ("error", "zero"):
        raise ScLongInputError(f"empty_cells must be 'error' or 'zero', got {empty_cells!r}")
    if copy:
        # a backed AnnData is copied into memory (its copy() would need a file name)
        adata = adata.to_memory() if adata.isbacked else adata.copy()
    else:
        check_not_view(adata)
        if inplace_X and adata.isbacked:
            raise ScLongInputError(
                "adata is backed (adata.X stays in its h5ad file), so inplace_X=True cannot "
                "replace adata.X. Write a layer instead (the default, inplace_X=False), or load "
                "it first: adata = adata.to_memory()."
            )
    if layer is None:
        X, where = adata.X, "adata.X"
    else:
        if layer not in adata.layers:
            raise ScLongKeyError(
                f"layer {layer!r} not found in adata.layers (available: {list(adata.layers)})"
            )
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    if X is None:
        raise ScLongInputError(f"{where} is empty (None); pass counts with layer=...")

    check_counts(X, where, allow_non_integer=allow_non_integer)
    sums = row_sums(X)
    empty = sums == 0
    n_empty = int(empty.sum())
    if n_empty and empty_cells == "error":
        raise ScLongInputError(
            empty_cells_message(n_empty, adata.n_obs, where, adata.obs_names[empty])
        )

    out = normalize_matrix(X, target_sum=target_sum, max_value=max_value, sums=sums)
    if inplace_X:
        adata.X = out
    else:
        if key_added in adata.layers:
            logger.warning(
                "scl.pp.normalize: replacing the existing adata.layers[%r] (pass key_added=... "
                "to keep it)",
                key_added,
            )
        adata.layers[key_added] = out
    params = {
        "layer": layer,
        "target_sum": float(target_sum),
        "max_value": float(max_value),
        "empty_cells": empty_cells,
        "n_empty_cells": n_empty,
        "output": "X" if inplace_X else f"layers/{key_added}",
    }
    record = adata.uns.get(key_added)
    if not isinstance(record, dict):
        record = {}
    record["params"] = params
    adata.uns[key_added] = record
    return adata if copy else None


def normalize_matrix(
    X: Any,
    *,
    target_sum: float = 1e4,
    max_value: float = 10.0,
    sums: np.ndarray | None = None,
) -> np.ndarray | sp.csr_matrix | sp.csr_array:
    """Normalise a cells x genes count matrix (no validation; see :func:`normalize`).

    Parameters
    ----------
    X
        Counts: dense array, scipy sparse matrix (any format), or an object sliceable by rows.
    target_sum
        Total each cell is scaled to before ``log1p``.
    max_value
        Largest value of every non-empty cell afterwards.
    sums
        Per-cell totals of ``X``, when already computed.

    Returns
    -------
    float32 matrix: CSR (``csr_array`` for sparse-array input) when ``X`` is sparse, else dense.
    All-zero rows stay zero.
    """
    if sums is None:
        sums = row_sums(X)
    factor = np.zeros_like(sums)
    np.divide(target_sum, sums, out=factor, where=sums > 0)

    if isinstance(X, np.ndarray):
        out = np.empty(X.shape, dtype=np.float32)
        for start, block in _iter_row_blocks(np.asarray(X)):
            stop = start + block.shape[0]
            out[start:stop] = _normalize_dense(block, factor[start:stop], max_value)
        return out

    if sp.issparse(X):
        csr = X.tocsr() if X.format != "csr" else X
        n_rows = csr.shape[0]
        data = np.empty(csr.nnz, dtype=np.float32)
        rows_per_block = max(1, int(_BLOCK_VALUES * n_rows // max(1, csr.nnz)))
        for start in range(0, n_rows, rows_per_block):
            stop = min(n_rows, start + rows_per_block)
            lo, hi = csr.indptr[start], csr.indptr[stop]
            data[lo:hi] = _normalize_csr(
                csr.data[lo:hi], csr.indptr[start : stop + 1] - lo, factor[start:stop], max_value
            )
        cls = sp.csr_array if isinstance(X, sp.sparray) else sp.csr_matrix
        out = cls((data, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)
        out.eliminate_zeros()
        return out

    # objects sliceable by rows (h5py dataset, backed sparse dataset, dask array)
    blocks = []
    for start, block in _iter_row_blocks(X):
        f = factor[start : start + block.shape[0]]
        if sp.issparse(block):
            block = block.tocsr()
            block = sp.csr_matrix(
                (
                    _normalize_csr(block.data, block.indptr, f, max_value),
                    block.indices,
                    block.indptr,
                ),
                shape=block.shape,
            )
        else:
            block = _normalize_dense(np.asarray(block), f, max_value)
        blocks.append(block)
    if blocks and sp.issparse(blocks[0]):
        out = sp.vstack(blocks, format="csr")
        out.eliminate_zeros()
        return out
    if not blocks:  # no cells: keep the storage kind (backed sparse datasets name their format)
        if getattr(X, "format", None) in ("csr", "csc"):
            return sp.csr_matrix(X.shape, dtype=np.float32)
        return np.zeros(X.shape, dtype=np.float32)
    return np.concatenate(blocks)


def _normalize_dense(block: np.ndarray, factor: np.ndarray, max_value: float) -> np.ndarray:
    y = np.log1p(np.asarray(block, dtype=np.float64) * factor[:, None])
    top = y.max(axis=1) if y.shape[1] else np.zeros(y.shape[0])
    top[top == 0] = 1.0  # empty cells stay 0
    # y / top is exactly 1 at the maximum, so each cell's maximum is exactly max_value
    return (y / top[:, None] * max_value).astype(np.float32)


def _normalize_csr(
    data: np.ndarray, indptr: np.ndarray, factor: np.ndarray, max_value: float
) -> np.ndarray:
    nnz_per_row = np.diff(indptr)
    y = np.log1p(np.asarray(data, dtype=np.float64) * np.repeat(factor, nnz_per_row))
    top = np.ones(nnz_per_row.size, dtype=np.float64)
    stored = nnz_per_row > 0
    if y.size:
        # segments of the non-empty rows are consecutive in `data`
        top[stored] = np.maximum.reduceat(y, indptr[:-1][stored])
    top[top == 0] = 1.0
    return (y / np.repeat(top, nnz_per_row) * max_value).astype(np.float32)


__all__ = ["normalize", "normalize_matrix"]
