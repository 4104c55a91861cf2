"""Plots of perturbation predictions and of :func:`sclong_scverse.tl.benchmark_perturbation`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import ScLongKeyError
from ..pp._perturbation import CONTROL
from ._plots import _axes, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def perturbation(
    predicted: ad.AnnData,
    adata: ad.AnnData,
    conditions: Sequence[str] | None = None,
    *,
    condition_key: str = "condition",
    layer: str | None = None,
    de_only: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """Predicted vs observed change (vs control) of chosen conditions, one colour each.

    Reads ``predicted.layers["delta"]`` (:meth:`~sclong_scverse.model.SCLONGPerturbation.predict`),
    ``adata.obs[condition_key]``, the values of ``layer`` and, with ``de_only``,
    ``adata.uns["rank_genes_groups_cov_all"]``; writes nothing.

    Parameters
    ----------
    predicted
        One row per condition with ``layers["delta"]``.
    adata
        The screen (observed cells).
    conditions
        Conditions to draw (default: all rows of ``predicted``).
    condition_key
        ``adata.obs`` column of GEARS labels.
    layer
        Observed values (``None``: ``adata.X``); the values the model predicts.
    de_only
        Only the top DE genes of each condition (else all genes).
    ax, show, save
        Matplotlib axes; show the figure; save it to this file.

    Returns
    -------
    The axes (unless shown).
    """
    conditions = list(predicted.obs_names if conditions is None else conditions)
    values = adata.X if layer is None else adata.layers[layer]
    labels = adata.obs[condition_key].astype(str).to_numpy()
    control = np.asarray(values[labels == CONTROL].mean(axis=0)).ravel()
    genes = pd.Index(adata.var_names)
    ax = _axes(ax, (4.5, 4.5))
    lows, highs = [], []
    for condition in conditions:
        rows = np.flatnonzero(labels == condition)
        if not len(rows):
            raise ScLongKeyError(f"No cells of {condition!r} in adata.obs[{condition_key!r}].")
        observed = np.asarray(values[rows].mean(axis=0)).ravel() - control
        delta = predicted[condition, genes].layers["delta"]
        delta = np.asarray(delta.toarray() if sparse.issparse(delta) else delta).ravel()
        keep = np.arange(len(genes))
        if de_only:
            de = adata.uns["rank_genes_groups_cov_all"][condition]
            keep = genes.get_indexer(list(np.asarray(de).astype(str)))
            keep = keep[keep >= 0]
        ax.scatter(observed[keep], delta[keep], s=12, label=condition)
        lows.append(min(observed[keep].min(), delta[keep].min()))
        highs.append(max(observed[keep].max(), delta[keep].max()))
    low, high = min(lows), max(highs)
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("observed change vs control")
    ax.set_ylabel("predicted change vs control")
    ax.legend(fontsize=7, frameon=False)
    return _finish(ax, show, save)


def perturbation_benchmark(
    table: pd.DataFrame,
    metric: str = "pearson_delta",
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """Bars of one metric of :func:`~sclong_scverse.tl.benchmark_perturbation` per method.

    Parameters
    ----------
    table
        The benchmark's DataFrame (one row per condition and method).
    metric
        The metric column (mean over conditions; the dots are the conditions).
    ax, show, save
        Matplotlib axes; show the figure; save it to this file.

    Returns
    -------
    The axes (unless shown).
    """
    if metric not in table.columns:
        raise ScLongKeyError(f"{metric!r} is not a column of the table ({list(table.columns)}).")
    methods = list(dict.fromkeys(table["method"]))
    ax = _axes(ax, (1.0 + 0.7 * len(methods), 3.5))
    means = table.groupby("method", sort=False)[metric].mean().reindex(methods)
    ax.bar(range(len(methods)), means.to_numpy(), color="#9ab", edgecolor="#345")
    for i, method in enumerate(methods):
        points = table.loc[table["method"] == method, metric].to_numpy(dtype=float)
        ax.scatter(np.full(len(points), i), points, s=8, color="#234", zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
    ax.set_ylabel(metric)
    return _finish(ax, show, save)
