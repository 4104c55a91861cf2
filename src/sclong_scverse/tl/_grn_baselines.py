"""Baseline gene regulatory networks from expression alone: co-expression and GENIE3-like trees.

They score the same genes and cells as :func:`sclong_scverse.tl.grn`, so that
:func:`sclong_scverse.tl.benchmark_grn` compares them over the same candidate pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata
from tqdm.auto import tqdm

from ..errors import ScLongKeyError
from ..validation import ScLongInputError, check_not_view, check_whole, summarize_values

_DENSE_LIMIT = 20_000
_COUNTS_MAX = 50.0

logger = logging.getLogger(__name__)


#: ``adata.obs`` columns read as per-cell totals over all genes (scanpy's QC metrics,
#: ``sc.pp.filter_cells``, Seurat, this package's CellBench loader), in this order.
TOTAL_COUNTS_KEYS = ("total_counts", "n_counts", "nCount_RNA", "n_counts_original")

TotalCounts = str | Sequence[float] | np.ndarray | bool | None


def _library_sizes(
    adata: ad.AnnData, own: np.ndarray, total_counts: TotalCounts, where: str
) -> tuple[np.ndarray, str]:
    """Per-cell totals to normalise by, and where they come from (for ``params``)."""
    n_genes = f"the {adata.n_vars} given genes"
    if total_counts is False:
        return own, n_genes
    if total_counts is None or total_counts is True:
        for key in TOTAL_COUNTS_KEYS:
            if key not in adata.obs:
                continue
            values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(np.float64)
            if np.isfinite(values).all() and (values > 0).all() and (values >= own * 0.999).all():
                return values, f"obs[{key!r}]"
            logger.warning(
                "adata.obs[%r] is not a total over a superset of %s (missing, non-positive or "
                "below the counts of these genes in some cells): not used",
                key,
                n_genes,
            )
        logger.info(
            "normalising %s by their totals over %s: if adata is a gene subset (e.g. highly "
            "variable genes), pass total_counts= with the totals over all genes, or store them "
            "in adata.obs['total_counts'] before subsetting",
            where,
            n_genes,
        )
        return own, n_genes
    if isinstance(total_counts, str):
        if total_counts not in adata.obs:
            raise ScLongKeyError(
                f"adata.obs[{total_counts!r}] not found (columns: {list(adata.obs.columns)}); "
                "pass the column with each cell's total counts over all genes"
            )
        values = pd.to_numeric(adata.obs[total_counts], errors="coerce").to_numpy(np.float64)
        source = f"obs[{total_counts!r}]"
    else:
        values = np.asarray(total_counts, dtype=np.float64).ravel()
        source = "the given total_counts"
        if values.shape != (adata.n_obs,):
            raise ScLongInputError(
                f"total_counts has {values.size} values; give one per cell ({adata.n_obs})"
            )
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise ScLongInputError(
            f"{source} has {int(bad.sum())} missing, non-finite or non-positive totals; give "
            "every cell's total counts over all genes (> 0)"
        )
    return values, source


def _expression(
    adata: ad.AnnData, layer: str | None, total_counts: TotalCounts = None
) -> tuple[Any, bool]:
    """The expression matrix, log-normalised (``normalize_total(1e4)`` + ``log1p``) if counts.

    Returns the matrix and whether it was normalised (see :func:`_normalized_expression`).
    """
    X, normalized_over = _normalized_expression(adata, layer, total_counts)
    return X, normalized_over is not None


def _normalized_expression(
    adata: ad.AnnData, layer: str | None, total_counts: TotalCounts = None
) -> tuple[Any, str | None]:
    """The expression matrix, log-normalised (``normalize_total(1e4)`` + ``log1p``) if counts.

    Counts are divided by each cell's total over all genes when known (see
    :func:`_library_sizes`). Returns the matrix and what it was normalised over (``None``: not
    counts, used as given).
    """
    if layer is not None and layer not in adata.layers:
        raise ScLongKeyError(f"adata.layers[{layer!r}] not found (available: {list(adata.layers)})")
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise ScLongInputError("adata.X is empty; pass layer=... with the expression values")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    summary = summarize_values(X)
    if summary.n_nan or summary.n_inf:
        raise ScLongInputError(
            f"{where} contains {summary.n_nan} NaN and {summary.n_inf} infinite values; "
            "pass finite expression values"
        )
    is_counts = summary.n_non_integer == 0 and summary.n_negative == 0 and summary.max > _COUNTS_MAX
    if not is_counts:
        return X, None
    X = sparse.csr_matrix(X, dtype=np.float64) if sparse.issparse(X) else np.asarray(X, float)
    own = np.asarray(X.sum(axis=1)).ravel()
    totals, source = _library_sizes(adata, own, total_counts, where)
    if (totals == 0).any():
        raise ScLongInputError(
            f"{where} has {int((totals == 0).sum())} cells without counts; remove them first "
            "(sc.pp.filter_cells(adata, min_counts=1))"
        )
    scale = 1e4 / totals
    if sparse.issparse(X):
        X = sparse.diags(scale) @ X
        X.data = np.log1p(X.data)
    else:
        X = np.log1p(X * scale[:, None])
    return X, source


def _dense_columns(X: Any, columns: np.ndarray) -> np.ndarray:
    block = X[:, columns]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float32, copy=False)


def _store(
    adata: ad.AnnData, copy: bool, key_added: str, matrix: Any, params: dict[str, Any]
) -> ad.AnnData | None:
    target = adata.copy() if copy else adata
    target.varp[key_added] = matrix
    target.uns[key_added] = {"params": params}
    return target if copy else None


def coexpression_grn(
    adata: ad.AnnData,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    layer: str | None = None,
    total_counts: TotalCounts = None,
    absolute: bool = True,
    key_added: str | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Co-expression network: the correlation of every gene pair across cells (a GRN baseline).

    Raw counts are log-normalised first (``normalize_total(1e4)`` + ``log1p``, on a copy) with
    each cell's total over all genes when known (``total_counts``), then restricted to the
    AnnData's genes; non-integer data are taken as already normalised. Genes constant across the
    cells get no edges (score 0).

    Parameters
    ----------
    adata
        Cells x genes AnnData. Reads ``adata.X`` or ``adata.layers[layer]``.
    method
        ``"pearson"``, or ``"spearman"`` (Pearson correlation of per-gene ranks, ties averaged).
    layer
        Layer with the expression (raw counts or log-normalised).
    total_counts
        Each cell's total counts **over all genes**, to normalise raw counts by, as co-expression
        and GENIE3 are run in BEELINE and by their authors (normalise the whole transcriptome,
        then keep the genes to score): an ``adata.obs`` column name or one value per cell.
        Default: the first of ``adata.obs`` ``"total_counts"`` (scanpy's QC metrics),
        ``"n_counts"``, ``"nCount_RNA"`` or ``"n_counts_original"`` that is at least the counts
        of the given genes in every cell, else the totals over the given genes (logged; on a
        subset of 2,000 PBMC genes this lowers abs. Pearson's AUPR ratio against TRRUST from 3.18
        to 2.56). ``False``: the totals over the given genes. Ignored for data that are not raw
        counts (used as given).
    absolute
        Score by the absolute correlation (default; repression counts like activation), as
        regulatory-network benchmarks rank edges.
    key_added
        ``adata.varp`` / ``adata.uns`` key; default ``f"{method}_grn"``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.varp[key_added]``: ``(n_vars, n_vars)`` float32 correlations, diagonal 0;
    - ``adata.uns[key_added]["params"]``: the parameters (``log_normalized``: whether counts
      were normalised first; ``normalized_over``: the totals used, e.g. ``"obs['total_counts']"``
      or ``"the 2000 given genes"``, ``"as given"`` for data that are not counts).

    Raises
    ------
    ValueError
        More than 20,000 genes (the dense matrix would take gigabytes: subset the genes first).
    KeyError
        ``total_counts`` names a missing ``adata.obs`` column.
    ScLongInputError
        NaN or infinite values, cells without counts, non-positive ``total_counts``.
    """
    if method not in ("pearson", "spearman"):
        raise ScLongInputError(f"method must be 'pearson' or 'spearman', not {method!r}")
    check_not_view(adata)
    if adata.n_vars > _DENSE_LIMIT:
        raise ScLongInputError(
            f"a dense {adata.n_vars} x {adata.n_vars} correlation matrix would need "
            f"{adata.n_vars**2 * 4 / 2**30:.1f} GiB; subset the genes first (e.g. to highly "
            "variable genes or to the genes of the ground truth)"
        )
    X, normalized_over = _normalized_expression(adata, layer, total_counts)
    values = _dense_columns(X, np.arange(adata.n_vars)).astype(np.float64)
    if method == "spearman":
        values = rankdata(values, axis=0)
    values -= values.mean(axis=0)
    norms = np.linalg.norm(values, axis=0)
    values = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    correlation = (values.T @ values).astype(np.float32)
    np.clip(correlation, -1.0, 1.0, out=correlation)
    if absolute:
        np.abs(correlation, out=correlation)
    np.fill_diagonal(correlation, 0.0)
    params = {
        "method": method,
        "absolute": absolute,
        "log_normalized": normalized_over is not None,
        "normalized_over": normalized_over or "as given",
    }
    return _store(adata, copy, key_added or f"{method}_grn", correlation, params)


def genie3_grn(
    adata: ad.AnnData,
    *,
    regulators: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    layer: str | None = None,
    total_counts: TotalCounts = None,
    tree_method: Literal["random_forest", "extra_trees"] = "random_forest",
    n_estimators: int = 100,
    max_features: str | float | int = "sqrt",
    min_samples_leaf: int = 1,
    n_jobs: int | None = None,
    random_state: int = 0,
    key_added: str = "genie3_grn",
    copy: bool = False,
    progress_bar: bool = True,
) -> ad.AnnData | None:
    """Tree-ensemble regulatory network in the spirit of GENIE3 (Huynh-Thu et al. 2010).

    Each target gene's expression is regressed on the regulators' expression (the target itself
    excluded) with a scikit-learn random forest (or extra-trees) ensemble; the impurity-based
    importance of regulator ``r`` for target ``t`` is the score of the edge ``r -> t``. As in
    GENIE3, every gene is scaled to unit variance first, and importances sum to 1 per target.
    Raw counts are log-normalised first (``normalize_total(1e4)`` + ``log1p``, on a copy), with
    each cell's total over all genes when known (``total_counts``).

    Time grows with ``n_targets x n_estimators`` (one forest per target): restrict
    ``regulators`` to transcription factors and ``targets`` to the genes you evaluate.

    Parameters
    ----------
    adata
        Cells x genes AnnData. Reads ``adata.X`` or ``adata.layers[layer]``.
    regulators
        Candidate regulators (e.g. TFs); default: all genes. Names not in ``adata.var_names``
        are ignored.
    targets
        Target genes; default: all genes. Names not in ``adata.var_names`` are ignored.
    layer
        Layer with the expression (raw counts or log-normalised).
    total_counts
        Each cell's total counts over all genes, to normalise raw counts by, as in
        :func:`coexpression_grn` (the same default).
    tree_method
        ``"random_forest"`` (GENIE3's default) or ``"extra_trees"``.
    n_estimators
        Trees per target.
    max_features
        Regulators tried per split (``"sqrt"`` as in GENIE3).
    min_samples_leaf
        Minimum cells per leaf.
    n_jobs
        Parallel jobs per forest (scikit-learn).
    random_state
        Seed of the forests.
    key_added
        ``adata.varp`` / ``adata.uns`` key.
    copy
        Return a new AnnData instead of writing into ``adata``.
    progress_bar
        Show a progress bar over the targets.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.varp[key_added]``: ``(n_vars, n_vars)`` CSR matrix, row = regulator, column =
      target, importance (rows of non-regulators and columns of non-targets are empty);
    - ``adata.uns[key_added]["params"]``: the parameters (``normalized_over`` as in
      :func:`coexpression_grn`).

    Raises
    ------
    ValueError
        Fewer than two regulators, or no target among ``adata.var_names``.
    KeyError
        ``total_counts`` names a missing ``adata.obs`` column.
    """
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    check_not_view(adata)
    check_whole("n_estimators", n_estimators)
    check_whole("min_samples_leaf", min_samples_leaf)
    if tree_method not in ("random_forest", "extra_trees"):
        raise ScLongInputError(
            f"tree_method must be 'random_forest' or 'extra_trees', not {tree_method!r}"
        )
    names = adata.var_names

    def positions(genes: Sequence[str] | None) -> np.ndarray:
        if genes is None:
            return np.arange(adata.n_vars)
        found = names.get_indexer(pd.Index(np.asarray(list(genes), dtype=str)).unique())
        return np.sort(found[found >= 0])

    regulator_pos, target_pos = positions(regulators), positions(targets)
    if len(regulator_pos) < 2:
        raise ScLongInputError(
            f"{len(regulator_pos)} of the given regulators are in adata.var_names (e.g. "
            f"{list(names[:3])}); at least two are needed (check the gene naming)"
        )
    if len(target_pos) == 0:
        raise ScLongInputError(
            "none of the given targets is in adata.var_names (check the gene naming)"
        )

    X, normalized_over = _normalized_expression(adata, layer, total_counts)
    wanted = np.union1d(regulator_pos, target_pos)
    values = _dense_columns(X, wanted)
    std = values.std(axis=0)
    values = np.divide(values, std, out=np.zeros_like(values), where=std > 0)
    column = {int(g): i for i, g in enumerate(wanted)}
    inputs = values[:, [column[int(r)] for r in regulator_pos]]

    forest_class = RandomForestRegressor if tree_method == "random_forest" else ExtraTreesRegressor
    rows, cols, data = [], [], []
    iterator = tqdm(target_pos, desc="GENIE3 targets", disable=not progress_bar)
    for target in iterator:
        y = values[:, column[int(target)]]
        if std[column[int(target)]] == 0:
            continue  # constant target: nothing to explain
        keep = regulator_pos != target
        forest = forest_class(
            n_estimators=n_estimators,
            max_features=max_features,
            min_samples_leaf=min_samples_leaf,
            n_jobs=n_jobs,
            random_state=random_state,
        )
        forest.fit(inputs[:, keep], y)
        importance = forest.feature_importances_
        total = importance.sum()
        if total <= 0:
            continue
        nonzero = importance > 0
        rows.append(regulator_pos[keep][nonzero])
        cols.append(np.full(int(nonzero.sum()), target))
        data.append((importance[nonzero] / total).astype(np.float32))
    if rows:
        matrix = sparse.csr_matrix(
            (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
            shape=(adata.n_vars, adata.n_vars),
        )
    else:
        matrix = sparse.csr_matrix((adata.n_vars, adata.n_vars), dtype=np.float32)
    params = {
        "tree_method": tree_method,
        "n_estimators": n_estimators,
        "max_features": max_features,
        "min_samples_leaf": min_samples_leaf,
        "n_regulators": len(regulator_pos),
        "n_targets": len(target_pos),
        "random_state": random_state,
        "log_normalized": normalized_over is not None,
        "normalized_over": normalized_over or "as given",
    }
    return _store(adata, copy, key_added, matrix, params)
