"""One scLong vector per cell line or sample (the cell-line branch of drug-response models)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import ScLongKeyError
from ..module._module import HEAD_POOLING, Pooling
from ..validation import ScLongInputError, check_not_view

if TYPE_CHECKING:
    from ..model import SCLONG

logger = logging.getLogger(__name__)


def cell_line_embedding(
    adata: ad.AnnData,
    model: SCLONG,
    groupby: str,
    *,
    pooling: Literal["mean", "pseudobulk"] = "mean",
    cell_pooling: Pooling = HEAD_POOLING,
    counts_layer: str | None = None,
    batch_size: int | None = None,
    key_added: str = "sclong_cell_lines",
) -> pd.DataFrame:
    """One scLong vector per cell line (or sample, donor, ...): the input of drug-response heads.

    Two ways to summarise the cells of a group:

    - ``"mean"``: embed every cell (:meth:`~sclong_scverse.model.SCLONG.get_latent_representation`,
      genes pooled by ``cell_pooling``) and average the cell embeddings of the group;
    - ``"pseudobulk"``: sum the group's raw counts into one profile, normalise it as scLong
      expects (:func:`~sclong_scverse.pp.normalize`, with the model's ``max_value``) and embed
      that profile once.

    Reads ``adata.obs[groupby]``, the values the model reads (``"mean"``: the layer given to
    :meth:`~sclong_scverse.model.SCLONG.setup_anndata`) or the raw counts (``"pseudobulk"``:
    ``adata.layers[counts_layer]`` or ``adata.X``). Writes ``adata.uns[key_added]`` =
    ``{"embedding": DataFrame (groups x dim), "n_cells": Series, "params": {...}}``.

    Parameters
    ----------
    adata
        Cells x genes AnnData with the model's genes.
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    groupby
        ``adata.obs`` column naming each cell's cell line or sample (cells with a missing value
        are left out, with a count in the log).
    pooling
        ``"mean"`` (average of cell embeddings) or ``"pseudobulk"`` (one embedded profile).
    cell_pooling
        How a cell's (or profile's) gene decodings are pooled into a vector: one of
        :data:`~sclong_scverse.module._module.POOLINGS` (``"max"``, ``"mean"``, ``"sum"``,
        ``"max+mean"``, ``"feature_sum"``, see :func:`~sclong_scverse.tl.embed`); default
        :data:`~sclong_scverse.module._module.HEAD_POOLING` (``"max"``: compact features for
        the drug heads, which fit a layer on them).
    counts_layer
        Raw counts for ``"pseudobulk"`` (``None``: ``adata.X``).
    batch_size
        Cells per forward pass.
    key_added
        ``adata.uns`` key of the result.

    Returns
    -------
    ``(n_groups, width)`` float32 DataFrame (the width of ``cell_pooling``), groups (sorted)
    as index.

    Raises
    ------
    KeyError
        ``groupby`` or ``counts_layer`` not found.
    ScLongInputError
        ``adata`` is a view, or no cell has a group; for ``"pseudobulk"``, values that are not
        counts.
    """
    from ..pp import normalize

    check_not_view(adata)
    if groupby not in adata.obs.columns:
        raise ScLongKeyError(
            f"groupby={groupby!r} is not a column of adata.obs ({list(adata.obs)})."
        )
    if pooling not in ("mean", "pseudobulk"):
        raise ScLongInputError(f"pooling must be 'mean' or 'pseudobulk', not {pooling!r}.")
    labels = adata.obs[groupby]
    keep = labels.notna().to_numpy()
    if not keep.any():
        raise ScLongInputError(f"No cell has a value in adata.obs[{groupby!r}].")
    if not keep.all():
        logger.info("cell_line_embedding: %d cells without a %s left out", (~keep).sum(), groupby)
    names = labels.astype(str).to_numpy()
    groups = sorted(set(names[keep]))
    rows = {g: np.flatnonzero(keep & (names == g)) for g in groups}
    if pooling == "mean":
        latent = model.get_latent_representation(adata, batch_size=batch_size, pooling=cell_pooling)
        table = np.stack([latent[rows[g]].mean(axis=0) for g in groups])
    else:
        if counts_layer is not None and counts_layer not in adata.layers:
            raise ScLongKeyError(
                f"counts_layer {counts_layer!r} not in adata.layers ({list(adata.layers)})."
            )
        counts = adata.X if counts_layer is None else adata.layers[counts_layer]
        summed = np.vstack([np.asarray(counts[rows[g]].sum(axis=0)).reshape(1, -1) for g in groups])
        setup = model.adata_manager._get_setup_method_args()["setup_args"]
        layer = setup.get("layer")
        max_value = float((setup.get("normalization") or {}).get("max_value", 10.0))
        target_sum = float((setup.get("normalization") or {}).get("target_sum") or 1e4)
        bulk = ad.AnnData(
            X=sparse.csr_matrix(summed.astype(np.float32)),
            obs=pd.DataFrame(index=groups),
            var=pd.DataFrame(index=adata.var_names.copy()),
        )
        normalize(
            bulk,
            key_added=layer or "sclong",
            inplace_X=layer is None,
            target_sum=target_sum,
            max_value=max_value,
            allow_non_integer=True,
        )
        table = model.get_latent_representation(bulk, batch_size=batch_size, pooling=cell_pooling)
    frame = pd.DataFrame(np.asarray(table, dtype=np.float32), index=pd.Index(groups, name=groupby))
    frame.columns = [f"sclong_{i}" for i in range(frame.shape[1])]
    adata.uns[key_added] = {
        "embedding": frame,
        "n_cells": pd.Series({g: len(rows[g]) for g in groups}, name="n_cells"),
        "params": {
            "groupby": groupby,
            "pooling": pooling,
            "cell_pooling": cell_pooling,
            "counts_layer": counts_layer,
            "model": model._model_summary_string,
        },
    }
    return frame
