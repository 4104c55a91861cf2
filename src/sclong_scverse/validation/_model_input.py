"""The one validation path of every value the scLong model reads, and the normalisation it expects.

The model code (``setup_anndata``, queries, training) calls these checks; their messages name the
offending location through the ``where`` argument (``"adata.X"``,
``"adata.layers['sclong']"``) and a few offending cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ScLongKeyError
from ._errors import ScLongInputError
from ._values import SCLONG_MAX_VALUE, ValueSummary, _iter_row_blocks, summarize_values

#: cells read for the per-cell tests of :func:`validate_model_input` (evenly spaced over the data)
N_SAMPLE_CELLS = 2000
# relative tolerance of "this cell's maximum is the expected maximum" (float16 storage included)
_MAX_RTOL = 1e-3
# refuse dtypes that are not numbers (object, str, complex)
_NUMERIC_KINDS = "biuf"


def _cell_examples(rows: np.ndarray, obs_names: Sequence[Any] | None, n_examples: int) -> str:
    """``'c1', 'c7', ...`` (or row numbers when there are no names) for error messages."""
    rows = np.asarray(rows)[:n_examples]
    if obs_names is not None:
        names = np.asarray(obs_names, dtype=object)
        return ", ".join(repr(str(names[i])) for i in rows)
    return ", ".join(f"row {int(i)}" for i in rows)


def _rows_where(X: Any, predicate: Any) -> np.ndarray:
    """Row numbers of ``X`` with at least one stored value where ``predicate(values)`` holds.

    Used on the error path only (the first pass counted the offending values); reads ``X`` one
    block of rows at a time.
    """
    if sp.issparse(X) and X.format != "csr":
        X = X.tocsr()
    found = []
    for start, block in _iter_row_blocks(X):
        if sp.issparse(block):
            block = block.tocsr()
            hit = np.asarray(predicate(block.data), dtype=bool)
            rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))[hit]
            found.append(start + np.unique(rows))
        else:
            values = np.asarray(block)
            if values.size:
                found.append(start + np.flatnonzero(predicate(values).any(axis=1)))
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _sample_rows(X: Any, n_sample: int) -> tuple[np.ndarray, Any]:
    """Up to ``n_sample`` evenly spaced rows of ``X``: ``(row numbers, CSR or dense block)``."""
    n_rows = X.shape[0]
    if n_rows <= n_sample:
        rows = np.arange(n_rows)
    else:
        rows = np.unique(np.linspace(0, n_rows - 1, n_sample).round().astype(np.int64))
    if sp.issparse(X):
        if X.format not in ("csr", "csc"):
            X = X.tocsr()
        block = X if rows.size == n_rows else X[rows]
        return rows, sp.csr_matrix(block)
    if isinstance(X, np.ndarray):
        return rows, np.asarray(X if rows.size == n_rows else X[rows])
    try:  # h5py datasets and anndata's backed sparse datasets take sorted row lists
        block = X[rows] if rows.size < n_rows else X[:]
    except (TypeError, ValueError, IndexError):
        rows = np.arange(min(n_rows, n_sample))
        block = X[: rows.size]
    return rows, sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)


def _row_max(block: Any) -> np.ndarray:
    """Per-row maximum of a non-negative CSR or dense block (0 for empty rows)."""
    if sp.issparse(block):
        csr = block.tocsr()
        out = np.zeros(csr.shape[0], dtype=np.float64)
        stored = np.diff(csr.indptr) > 0
        if csr.data.size:
            out[stored] = np.maximum.reduceat(
                np.asarray(csr.data, dtype=np.float64), csr.indptr[:-1][stored]
            )
        return out
    values = np.asarray(block, dtype=np.float64)
    if values.shape[1] == 0:
        return np.zeros(values.shape[0])
    return values.max(axis=1)


def _nonzero_values(block: Any) -> np.ndarray:
    values = block.data if sp.issparse(block) else np.asarray(block).reshape(-1)
    return values[values != 0]


def validate_model_input(
    X: Any,
    where: str = "adata.X",
    *,
    obs_names: Sequence[Any] | None = None,
    expected_max: float | None = SCLONG_MAX_VALUE,
    normalized: bool = False,
    check_normalization: bool = True,
    n_sample: int = N_SAMPLE_CELLS,
    n_examples: int = 3,
) -> ValueSummary:
    """Check values before the scLong model reads them (registration, queries, training).

    The one validation path of every value the model reads. Always (on every value, one pass):

    - numbers, at least one cell and one gene, not all zero;
    - finite: one NaN makes every output of its cell NaN (and a gene network computed from
      those cells all zero);
    - non-negative: the model reads values <= -1 as mask tokens, so scaled or centred data
      would be read as masked genes.

    With ``check_normalization`` (on up to ``n_sample`` evenly spaced cells, so it stays cheap
    on large data), the values must look like the output of
    :func:`sclong_scverse.pp.normalize` (total 1e4 per cell, ``log1p``, each cell rescaled so
    that its maximum is ``expected_max``):

    - not integer-valued: integer data are raw counts whatever their maximum (shallow data can
      have small counts), unless every non-zero value equals ``expected_max`` (cells whose
      expressed genes all have the same count normalise to exactly that);
    - no value above ``expected_max``;
    - at least one checked cell reaches ``expected_max``: ``log1p(normalize_total)`` output
      (scanpy's usual normalisation) never does with a 1e4 target (its maximum is
      ``log1p(1e4)`` = 9.21) and its per-cell maxima are spread out. For data known to come
      from :func:`~sclong_scverse.pp.normalize` (``normalized=True``: genes may have been
      removed since, lowering some cells' maximum) this only warns; otherwise it is an error,
      and a mix of cells at and below the maximum gives a warning.

    Parameters
    ----------
    X
        Cells x genes values (dense, scipy sparse, or sliceable by rows: h5py and anndata's
        backed datasets); never densified as a whole.
    where
        How to name ``X`` in messages, e.g. ``"adata.layers['sclong']"``.
    obs_names
        Cell names (``adata.obs_names``), to name a few offending cells in messages.
    expected_max
        The per-cell maximum of the normalisation the model expects (scLong: 10; the model
        records the one of its training data). ``None`` skips the per-cell maximum tests.
    normalized
        The values are known to come from :func:`~sclong_scverse.pp.normalize` (its record in
        ``adata.uns``), so cells below the maximum are genes removed after normalising.
    check_normalization
        Run the tests that the values look normalised as scLong expects (``False``: only
        finite and non-negative values are required, for data normalised otherwise on
        purpose).
    n_sample
        Cells read for the per-cell tests.
    n_examples
        Cells named in messages.

    Returns
    -------
    The :class:`ValueSummary` of ``X`` (all values).

    Raises
    ------
    ScLongInputError
        Non-numeric values, no cells or genes, NaN or infinite values, negative values, only
        zeros, and with
        ``check_normalization``: integer-valued data (raw counts), values above
        ``expected_max``, or no checked cell at ``expected_max`` (``log1p`` output without
        scLong's per-cell rescaling). The message names a few cells and says what to run.

    Warns
    -----
    UserWarning
        Some checked cells reach ``expected_max`` and others stay below it, in data not known to
        come from :func:`~sclong_scverse.pp.normalize`; or none reaches it in data recorded as
        its output (replaced since, or most genes removed).
    """
    fix = (
        "Run scl.pp.normalize(adata, layer=<raw counts layer>) and register its output "
        "(SCLONG.setup_anndata(adata, layer='sclong'))."
    )
    if X is None:
        raise ScLongInputError(f"{where} is empty (None). {fix}")
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise ScLongInputError(f"{where} must be a cells x genes matrix, got {type(X).__name__}.")
    dtype = np.dtype(getattr(X, "dtype", np.float64))
    if dtype.kind not in _NUMERIC_KINDS:
        raise ScLongInputError(
            f"{where} holds {dtype} values; scLong needs real numbers (log-normalised "
            f"expression). {fix}"
        )
    if shape[0] == 0:
        raise ScLongInputError(f"{where} has no cells (shape {tuple(shape)}); nothing to read.")
    if shape[1] == 0:
        raise ScLongInputError(
            f"{where} has no genes (shape {tuple(shape)}); select genes that are in the "
            "model's vocabulary."
        )
    s = summarize_values(X)
    if s.n_nan or s.n_inf:
        rows = _rows_where(X, lambda v: ~np.isfinite(v))
        raise ScLongInputError(
            f"{where} contains {s.n_nan} NaN and {s.n_inf} infinite values, in {rows.size} cells "
            f"(e.g. {_cell_examples(rows, obs_names, n_examples)}). scLong needs finite values: "
            "one NaN makes every output of its cell NaN. Remove those cells, or recompute the "
            f"values from raw counts. {fix}"
        )
    if s.n_negative:
        rows = _rows_where(X, lambda v: v < 0)
        raise ScLongInputError(
            f"{where} contains {s.n_negative} negative values (minimum {s.min:.4g}) in "
            f"{rows.size} cells (e.g. {_cell_examples(rows, obs_names, n_examples)}): it looks "
            "scaled or centred (e.g. sc.pp.scale or sc.pp.regress_out output). scLong needs "
            "non-negative log-normalised values: it reads values <= -1 as mask tokens, i.e. as "
            f"genes whose value is hidden. {fix}"
        )
    if not s.max > 0:
        raise ScLongInputError(
            f"{where}: all values are 0, there is no expression to read. Check that this is the "
            f"layer scl.pp.normalize wrote (layer='sclong'). {fix}"
        )
    if not check_normalization:
        return s
    off = (
        "If these values are normalised differently on purpose, pass "
        "check_normalization=False to SCLONG.setup_anndata."
    )
    rows, block = _sample_rows(X, n_sample)
    if s.n_non_integer == 0:
        nonzero = _nonzero_values(block)
        flat = expected_max is not None and bool(
            nonzero.size and np.all(np.abs(nonzero - expected_max) <= _MAX_RTOL * expected_max)
        )
        if not flat:
            kind = "integer dtype" if s.integer_dtype else "all values are whole numbers"
            raise ScLongInputError(
                f"{where} looks like raw counts ({kind}, maximum {s.max:.4g}), but scLong reads "
                f"log-normalised values (each cell scaled to 1e4, log1p, maximum "
                f"{expected_max if expected_max is not None else SCLONG_MAX_VALUE:g} per "
                f"cell). {fix} {off}"
            )
    if expected_max is None:
        return s
    limit = expected_max * (1 + _MAX_RTOL)
    if s.max > limit:
        above = _rows_where(X, lambda v: v > limit)
        raise ScLongInputError(
            f"{where} has values up to {s.max:.4g}, above {expected_max:g}, the per-cell maximum "
            f"of the normalisation the model expects, in {above.size} cells (e.g. "
            f"{_cell_examples(above, obs_names, n_examples)}). It was not normalised by "
            "scl.pp.normalize with this maximum (e.g. log1p of CPM, or not log-transformed). "
            f"{fix} {off}"
        )
    top = _row_max(block)
    expressed = top > 0
    if not expressed.any():
        return s
    at_max = np.abs(top - expected_max) <= _MAX_RTOL * expected_max
    below = expressed & ~at_max
    if not below.any() or (normalized and at_max.any()):
        return s
    examples = _cell_examples(rows[below], obs_names, n_examples)
    spread = f"between {top[below].min():.3g} and {top[below].max():.3g}"
    if not at_max.any() and normalized:
        warnings.warn(
            f"{where}: no checked cell reaches the maximum {expected_max:g} ({spread}, e.g. "
            f"{examples}), although adata.uns records scl.pp.normalize output for these values. "
            "Were they replaced since (e.g. by log1p output), or most genes removed after "
            "normalising? scLong reads values relative to that maximum: rerun "
            "scl.pp.normalize on the raw counts of the genes you keep.",
            UserWarning,
            stacklevel=2,
        )
        return s
    if not at_max.any():
        raise ScLongInputError(
            f"{where} is not rescaled per cell as scLong expects: the maximum of every checked "
            f"cell ({int(expressed.sum())} cells) is below {expected_max:g} ({spread}, e.g. "
            f"{examples}). It looks like log1p(normalize_total) output (scanpy's usual "
            "normalisation), which scLong reads on another scale. "
            f"{fix} If you normalised with scl.pp.normalize and removed genes afterwards, "
            f"normalise after selecting genes. {off}"
        )
    warnings.warn(
        f"{where}: {int(below.sum())} of {int(expressed.sum())} checked cells have a maximum "
        f"below {expected_max:g} ({spread}, e.g. {examples}), while scl.pp.normalize gives every "
        "cell exactly that maximum. Were some cells normalised differently, or genes removed "
        "after normalising? scLong reads values relative to that maximum.",
        UserWarning,
        stacklevel=2,
    )
    return s


def normalization_record(adata: Any, layer: str | None = None) -> dict[str, Any] | None:
    """The parameters that :func:`~sclong_scverse.pp.normalize` recorded for some values.

    Reads ``adata.uns``: the record ``adata.uns[key]["params"]`` written by
    :func:`~sclong_scverse.pp.normalize` next to its output (its ``output`` entry names the
    layer, or ``"X"``); writes nothing. The record survives subsetting and h5ad round trips.

    Parameters
    ----------
    adata
        The AnnData.
    layer
        The layer holding the values (``None``: ``adata.X``).

    Returns
    -------
    A copy of the recorded parameters (``target_sum``, ``max_value``, ...), or ``None`` when no
    record names these values.
    """
    output = "X" if layer is None else f"layers/{layer}"
    keys = ([layer] if layer is not None else []) + [k for k in adata.uns.keys() if k != layer]
    for key in keys:
        record = adata.uns.get(key)
        if not isinstance(record, Mapping):
            continue
        params = record.get("params")
        if isinstance(params, Mapping) and params.get("output") == output:
            if isinstance(params.get("max_value"), int | float | np.number):
                return dict(params)
    return None


def _row_selection(indices: Any, n_obs: int, name: str) -> np.ndarray:
    """Sorted unique row numbers of ``indices`` (ints or a boolean mask), range-checked."""
    selection = np.asarray(indices)
    if selection.dtype == bool:
        if selection.shape != (n_obs,):
            raise ScLongInputError(
                f"a boolean indices mask must have one entry per cell of {name} ({n_obs}), got "
                f"shape {selection.shape}."
            )
        return np.flatnonzero(selection)
    if selection.size and selection.dtype.kind not in "iu":
        raise ScLongInputError(
            f"indices must be integer cell positions or a boolean mask, got {selection.dtype}."
        )
    selection = np.unique(selection.reshape(-1).astype(np.int64))
    if selection.size and (selection[0] < -n_obs or selection[-1] >= n_obs):
        raise ScLongInputError(
            f"indices point outside {name} ({n_obs} cells): range "
            f"{int(selection[0])}..{int(selection[-1])}."
        )
    return np.unique(np.where(selection < 0, selection + n_obs, selection))


def validate_adata_input(
    adata: Any,
    layer: str | None = None,
    *,
    expected_max: float | None = SCLONG_MAX_VALUE,
    check_normalization: bool = True,
    indices: Any = None,
    name: str = "adata",
) -> ValueSummary:
    """:func:`validate_model_input` on the values an AnnData holds for the model.

    Reads ``adata.layers[layer]`` (or ``adata.X``), ``adata.obs_names`` and the record
    :func:`~sclong_scverse.pp.normalize` leaves in ``adata.uns``; writes nothing.

    Parameters
    ----------
    adata
        The AnnData (backed AnnData is read block by block).
    layer
        The layer the model reads (``None``: ``adata.X``).
    expected_max
        The per-cell maximum the model expects (its training data's); ``None``: not tested.
    check_normalization
        See :func:`validate_model_input`.
    indices
        Check only these cells (integer positions or a boolean mask); ``None``: all cells.
    name
        How to name ``adata`` in messages.

    Returns
    -------
    The :class:`ValueSummary` of the checked values.

    Raises
    ------
    ScLongInputError
        See :func:`validate_model_input`; also a ``scl.pp.normalize`` record with another
        ``max_value`` than ``expected_max``, an empty or out-of-range ``indices``.
    KeyError
        ``layer`` is not in ``adata.layers``.
    """
    if layer is not None and layer not in adata.layers:
        raise ScLongKeyError(
            f"Layer {layer!r} not in {name}.layers ({list(adata.layers)}). Run "
            f"`scl.pp.normalize(adata, key_added={layer!r})` on raw counts first."
        )
    values = adata.X if layer is None else adata.layers[layer]
    where = f"{name}.X" if layer is None else f"{name}.layers[{layer!r}]"
    record = normalization_record(adata, layer)
    if record is not None and check_normalization and expected_max is not None:
        recorded = float(record["max_value"])
        if abs(recorded - expected_max) > _MAX_RTOL * expected_max:
            raise ScLongInputError(
                f"{where} was normalised with scl.pp.normalize(max_value={recorded:g}), but the "
                f"model reads values rescaled to a per-cell maximum of {expected_max:g}. Run "
                f"scl.pp.normalize(adata, max_value={expected_max:g}) on the raw counts."
            )
    obs_names = adata.obs_names
    if indices is not None:
        rows = _row_selection(indices, adata.n_obs, name)
        if rows.size == 0:
            raise ScLongInputError(f"no cells selected: indices is empty ({name}).")
        if rows.size < adata.n_obs:
            values = values[rows]
            obs_names = obs_names[rows]
    return validate_model_input(
        values,
        where,
        obs_names=obs_names,
        expected_max=expected_max,
        normalized=record is not None,
        check_normalization=check_normalization,
    )


def model_normalization(
    adata: Any, layer: str | None = None, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The normalisation a model set up on ``adata.layers[layer]`` records (and checks against).

    Reads the record :func:`~sclong_scverse.pp.normalize` leaves in ``adata.uns``; writes
    nothing.

    Parameters
    ----------
    adata
        The AnnData being registered.
    layer
        The layer the model reads (``None``: ``adata.X``).
    given
        What the user (or a saved model's registry) says: a mapping with ``max_value`` and
        optionally ``target_sum`` and ``method``.

    Returns
    -------
    ``{"method", "target_sum", "max_value"}`` with plain Python values: ``given``; else the
    :func:`~sclong_scverse.pp.normalize` record (``method="scl.pp.normalize"``); else scLong's
    preprocessing assumed (``method="unrecorded"``, ``max_value=10``).

    Raises
    ------
    ValueError
        ``given`` is not a mapping with a positive finite ``max_value``.
    """
    if given is not None:
        if not isinstance(given, Mapping) or "max_value" not in given:
            raise ScLongInputError(
                "normalization must be a dict with at least 'max_value' (the per-cell maximum "
                f"of the values, 10 for scl.pp.normalize), got {given!r}."
            )
        max_value = float(given["max_value"])
        if not (np.isfinite(max_value) and max_value > 0):
            raise ScLongInputError(
                f"normalization['max_value'] must be positive, got {max_value!r}."
            )
        target_sum = given.get("target_sum")
        return {
            "method": str(given.get("method", "given")),
            "target_sum": None if target_sum is None else float(target_sum),
            "max_value": max_value,
        }
    record = normalization_record(adata, layer)
    if record is not None:
        target_sum = record.get("target_sum")
        return {
            "method": "scl.pp.normalize",
            "target_sum": None if target_sum is None else float(target_sum),
            "max_value": float(record["max_value"]),
        }
    return {"method": "unrecorded", "target_sum": None, "max_value": SCLONG_MAX_VALUE}
