"""Plots of the integration and GRN benchmarks (:mod:`sclong_scverse.tl` benchmark results)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from .._docs import fill_doc
from .._optional import import_optional
from ..errors import ScLongKeyError
from ._plots import _axes, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_AGGREGATE = "Aggregate score"
#: scib-metrics' aggregate columns, drawn in this order as bars at the right of the table
_AGGREGATES = ("Bio conservation", "Batch correction", "Total")


def _results(adata_or_table: ad.AnnData | pd.DataFrame, key: str) -> tuple[pd.DataFrame, dict]:
    if isinstance(adata_or_table, pd.DataFrame):
        return adata_or_table, {}
    if key not in adata_or_table.uns or "results" not in adata_or_table.uns[key]:
        raise ScLongKeyError(
            f"adata.uns[{key!r}]['results'] not found; run the benchmark first "
            "(scl.tl.benchmark_integration / scl.tl.benchmark_grn) or pass key=..."
        )
    entry = adata_or_table.uns[key]
    return pd.DataFrame(entry["results"]), dict(entry.get("metric_type", {}))


@fill_doc
def benchmark(
    adata_or_table: ad.AnnData | pd.DataFrame,
    *,
    key: str = "sclong_integration",
    sort_by: str = "Total",
    min_max_scale: bool = False,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """Draw the integration benchmark as scib-metrics' results table (circles and bars).

    Rows are embeddings sorted by ``sort_by`` (the total score by default); circles show each
    metric, coloured within its column; bars show the aggregate scores side by side: bio
    conservation (do the cell types survive?), batch correction and the total. Columns are
    grouped by metric type (bio conservation, batch correction, not aggregated).

    Parameters
    ----------
    adata_or_table
        AnnData with ``adata.uns[key]`` from :func:`sclong_scverse.tl.benchmark_integration`
        (reads ``results`` and ``metric_type``), or its results table.
    key
        ``adata.uns`` key of the results.
    sort_by
        Column that orders the rows (highest first), e.g. ``"Bio conservation"``.
    min_max_scale
        Scale each metric to [0, 1] across embeddings before drawing (as scib-metrics offers).
    {plot_show_save}

    Returns
    -------
    The :class:`plottable.Table`, or ``None`` when shown.

    Raises
    ------
    ImportError
        ``plottable`` (installed with scib-metrics) is missing.
    KeyError
        ``sort_by`` is not a column of the results.
    """
    import_optional(  # plottable imports matplotlib too
        "plottable.cmap",
        "plottable.plots",
        message="scl.pl.benchmark draws with plottable, installed with scib-metrics: "
        "pip install 'sclong-scverse[scib]'",
    )
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from plottable import ColumnDefinition, Table
    from plottable.cmap import normed_cmap
    from plottable.plots import bar

    table, metric_type = _results(adata_or_table, key)
    table = table.astype(np.float64)
    if not metric_type:  # a bare table: aggregates are the known names
        metric_type = {c: _AGGREGATE if c in _AGGREGATES else "Metric" for c in table.columns}
    if min_max_scale:
        spread = (table.max() - table.min()).replace(0, 1)
        table = (table - table.min()) / spread
    if sort_by not in table:
        if sort_by != "Total" or not len(table.columns):
            raise ScLongKeyError(
                f"sort_by={sort_by!r} is not a column of the results; columns: "
                f"{list(table.columns)}"
            )
        sort_by = table.columns[-1]
    plot_df = table.sort_values(by=sort_by, ascending=False).copy()
    plot_df["Method"] = plot_df.index.astype(str)
    metrics = [c for c in table.columns if metric_type.get(c) != _AGGREGATE]
    scores = [c for c in table.columns if metric_type.get(c) == _AGGREGATE]
    scores = [c for c in _AGGREGATES if c in scores] + [c for c in scores if c not in _AGGREGATES]

    def cmap(values: pd.Series) -> Any:
        return normed_cmap(values, cmap=mpl.cm.PRGn, num_stds=2.5)

    definitions = [
        ColumnDefinition("Method", width=1.6, textprops={"ha": "left", "weight": "bold"})
    ]
    definitions += [
        ColumnDefinition(
            column,
            title=column.replace(" ", "\n", 1),
            width=1,
            textprops={"ha": "center", "bbox": {"boxstyle": "circle", "pad": 0.25}},
            cmap=cmap(plot_df[column]),
            group=metric_type.get(column, "Metric"),
            formatter="{:.2f}",
        )
        for column in metrics
    ]
    definitions += [
        ColumnDefinition(
            column,
            title=column.replace(" ", "\n", 1),
            width=1,
            plot_fn=bar,
            plot_kw={
                "cmap": mpl.cm.YlGnBu,
                "plot_bg_bar": False,
                "annotate": True,
                "height": 0.9,
                "formatter": "{:.2f}",
            },
            group=_AGGREGATE,
            border="left" if i == 0 else None,
        )
        for i, column in enumerate(scores)
    ]
    fig, ax = plt.subplots(figsize=(len(table.columns) * 1.25 + 2, 3 + 0.4 * len(plot_df)))
    drawn = Table(
        plot_df[["Method", *metrics, *scores]],
        cell_kw={"linewidth": 0, "edgecolor": "k"},
        column_definitions=definitions,
        ax=ax,
        row_dividers=True,
        footer_divider=True,
        textprops={"fontsize": 10, "ha": "center"},
        row_divider_kw={"linewidth": 1, "linestyle": (0, (1, 5))},
        col_label_divider_kw={"linewidth": 1, "linestyle": "-"},
        column_border_kw={"linewidth": 1, "linestyle": "-"},
        index_col="Method",
    ).autoset_fontcolors(colnames=[*metrics, *scores])
    return _finish(ax, show, save, drawn=drawn)


@fill_doc
def grn_benchmark(
    adata_or_table: ad.AnnData | pd.DataFrame,
    *,
    key: str = "sclong_grn_benchmark",
    metric: str = "aupr_ratio",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """Bar chart of a GRN benchmark: one group per ground truth, one bar per method.

    A dashed line marks 1, the level of a random predictor (AUPR ratio and EPR).

    Parameters
    ----------
    adata_or_table
        AnnData with ``adata.uns[key]["results"]`` from :func:`sclong_scverse.tl.benchmark_grn`,
        or that table.
    key
        ``adata.uns`` key of the results.
    metric
        Column to draw: ``"aupr_ratio"`` (default), ``"epr"`` or ``"aupr"``.
    ax
        Axes to draw into.
    {plot_show_save}

    Returns
    -------
    The axes, or ``None`` when shown.
    """
    table, _ = _results(adata_or_table, key)
    if metric not in table:
        raise ScLongKeyError(f"no column {metric!r} in the results; columns: {list(table.columns)}")
    wide = table.pivot(index="ground_truth", columns="method", values=metric)
    wide = wide[[m for m in pd.unique(table["method"])]]  # keep the order of the table
    wide = wide.loc[list(pd.unique(table["ground_truth"]))]
    ax = _axes(ax, (2.0 + 0.45 * wide.size, 3.5))
    wide.plot.bar(ax=ax, rot=0, width=0.8)
    if metric != "aupr":
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="_random level")
    ax.set_xlabel("")
    ax.set_ylabel({"aupr_ratio": "AUPR ratio", "epr": "EPR", "aupr": "AUPR"}.get(metric, metric))
    ax.legend(frameon=False, fontsize=8, ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _finish(ax, show, save)
