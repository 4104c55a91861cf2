from __future__ import annotations

import os
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from .._docs import fill_doc
from ..errors import ScLongKeyError
from ._plots import _axes, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@fill_doc
def confusion_matrix(
    adata: ad.AnnData,
    true_key: str,
    pred_key: str = "sclong_label",
    *,
    normalize: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """Heatmap of true labels (rows) against predicted labels (columns), e.g. after annotation.

    Reads ``adata.obs[true_key]`` and ``adata.obs[pred_key]`` (written by
    :func:`sclong_scverse.tl.annotate`); writes nothing.

    Parameters
    ----------
    adata
        Annotated AnnData.
    true_key
        ``adata.obs`` column of the true labels.
    pred_key
        ``adata.obs`` column of the predicted labels.
    normalize
        Show the fraction of each true label's cells (rows sum to 1); else counts.
    ax
        Axes to draw into (default: a new figure).
    {plot_show_save}

    Returns
    -------
    The axes when not shown, else ``None``.
    """
    for key in (true_key, pred_key):
        if key not in adata.obs:
            raise ScLongKeyError(
                f"{key!r} is not a column of adata.obs (run scl.tl.annotate first?)."
            )
    table = pd.crosstab(
        adata.obs[true_key].astype(str).rename("true"),
        adata.obs[pred_key].astype(str).rename("predicted"),
    )
    values = table.to_numpy().astype(float)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n_rows, n_cols = values.shape
    ax = _axes(ax, (1.0 + 0.7 * n_cols, 1.0 + 0.6 * n_rows))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            dark = values[i, j] > 0.6 * (values.max() or 1)
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
            )
    ax.set_xticks(range(n_cols), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), table.index)
    ax.set_xlabel(f"predicted ({pred_key})")
    ax.set_ylabel(f"true ({true_key})")
    ax.figure.colorbar(image, ax=ax, label="fraction of row" if normalize else "cells")
    return _finish(ax, show, save)
