from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import anndata as ad
import pandas as pd

from .._docs import fill_doc
from ..errors import ScLongInputError
from ..model._anndata import MIN_QUERY_COVERAGE
from ..module._module import DEFAULT_POOLING, Pooling
from ..validation import check_not_view

if TYPE_CHECKING:
    from ..model import SCLONG

logger = logging.getLogger(__name__)


def _copy(adata: ad.AnnData) -> ad.AnnData:
    """An in-memory copy (a backed AnnData's ``copy()`` would need a file name)."""
    return adata.to_memory() if adata.isbacked else adata.copy()


def _target(adata: ad.AnnData, copy: bool) -> ad.AnnData:
    """Where a verb writes: an in-memory copy with ``copy``, else ``adata`` (not a view)."""
    if copy:
        return _copy(adata)
    check_not_view(adata)
    return adata


def _gene_table(target: ad.AnnData, model: SCLONG, kind: str, **query) -> pd.DataFrame:
    """The model's gene embeddings (``kind``) for ``target``'s genes (the model's own).

    ``"contextual"`` averages over ``target``'s cells (``query``: batch size, progress bar,
    precision).
    """
    _check_same_genes(target, model)
    cells = target if kind == "contextual" else None
    return model.get_gene_embeddings(kind=kind, adata=cells, **query)


def _warn_replacing(where: str, key: str, function: str) -> None:
    """Log that an existing result is replaced (scanpy replaces silently; we say so)."""
    logger.warning(
        "%s: replacing the existing adata.%s[%r] (pass key_added=... to keep it)",
        function,
        where,
        key,
    )


@fill_doc
def embed(
    adata: ad.AnnData,
    model: SCLONG,
    *,
    pooling: Pooling = DEFAULT_POOLING,
    batch_size: int | None = None,
    key_added: str = "X_sclong",
    copy: bool = False,
    progress_bar: bool | None = None,
    precision: Literal["32", "bf16", "16"] | None = None,
    min_coverage: float = MIN_QUERY_COVERAGE,
) -> ad.AnnData | None:
    """Cell embeddings from scLong, as ``sc.tl.pca`` writes ``X_pca``.

    Reads the values the model was set up with (``adata.layers[layer]`` or ``adata.X``) and
    ``adata.var_names``; writes ``adata.obsm[key_added]`` and ``adata.uns[key_added]``. The
    values are checked first as :meth:`~sclong_scverse.model.SCLONG.setup_anndata` checks
    them (finite, non-negative, normalised as the model's training data): raw counts, scaled
    data or NaN give a :class:`~sclong_scverse.pp.ScLongInputError`, never silent embeddings.

    Parameters
    ----------
    adata
        AnnData with the values the model reads (the layer given to
        :meth:`~sclong_scverse.model.SCLONG.setup_anndata`); its genes may be in another order
        or partly missing (aligned, with a report).
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    pooling
        Pooling of the merged decodings, one of
        :data:`~sclong_scverse.module._module.POOLINGS`: ``"max"``, ``"mean"`` or ``"sum"``
        over genes (``dim`` values per cell); ``"max+mean"`` (max and mean, each scaled to
        unit norm per cell, concatenated: ``2 * dim`` values); ``"feature_sum"`` (the original
        scLong's zero-shot embedding: each gene's decoding summed over its features plus its
        predicted value, one value per gene). Default:
        :data:`~sclong_scverse.module._module.DEFAULT_POOLING`, chosen on integration bio
        conservation and a cross-batch linear probe (``docs/pooling.md``). A model without the
        low-expression branch pools each cell's decoded top genes only.
    batch_size
        Cells per forward pass.
    key_added
        ``adata.obsm`` key of the result.
    {verb_copy_progress_precision}
    min_coverage
        Fewest of the model's genes (fraction, default 0.5) that ``adata`` must hold when its
        genes differ from the model's; below it ``adata`` is refused (lower it knowingly: the
        missing genes enter as 0 and dominate the embedding).

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.obsm[key_added]``: ``(n_cells, width)`` float32 cell embeddings (the width of
      the pooling, see :func:`~sclong_scverse.module._module.pooled_dim`);
    - ``adata.uns[key_added]["params"]``: the parameters.

    {verb_replaced}

    Raises
    ------
    ScLongInputError
        ``adata`` is a view (pass ``copy=True`` or copy it), has no cells, values the model
        cannot read (the message names cells and says what to run), or fewer than
        ``min_coverage`` of the model's genes.
    """
    target = _target(adata, copy)
    latent = model.get_latent_representation(
        target,
        pooling=pooling,
        batch_size=batch_size,
        progress_bar=progress_bar,
        precision=precision,
        min_coverage=min_coverage,
    )
    if key_added in target.obsm:
        _warn_replacing("obsm", key_added, "scl.tl.embed")
    target.obsm[key_added] = latent
    params = {"pooling": pooling, "model": model._model_summary_string}
    params["precision"] = str(precision or "32")
    target.uns[key_added] = {"params": params}
    return target if copy else None


@fill_doc
def gene_embeddings(
    adata: ad.AnnData,
    model: SCLONG,
    *,
    kind: Literal["static", "contextual"] = "static",
    batch_size: int | None = None,
    key_added: str = "sclong",
    copy: bool = False,
    progress_bar: bool | None = None,
    precision: Literal["32", "bf16", "16"] | None = None,
) -> ad.AnnData | None:
    """Gene embeddings from scLong for the genes of ``adata``.

    Reads ``adata.var_names`` (and, for ``"contextual"``, the values the model was set up with);
    writes ``adata.varm[key_added]`` and ``adata.uns[f"{key_added}_gene_embeddings"]``.

    Parameters
    ----------
    adata
        AnnData whose genes are the model's registered genes (for ``"contextual"``, its cells
        are the context).
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    kind
        ``"static"`` (identity + GO-GCN embedding) or ``"contextual"`` (per-gene decodings
        averaged over the cells of ``adata``; for a model without the low-expression branch,
        over the cells where the gene is among the decoded top genes, NaN rows for genes that
        never are).
    batch_size
        Cells per forward pass (``"contextual"``).
    key_added
        ``adata.varm`` key of the result.
    {verb_copy_progress_precision}

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.varm[key_added]``: ``(n_vars, dim)`` float32 (NaN rows: genes outside the
      vocabulary);
    - ``adata.uns[f"{key_added}_gene_embeddings"]["params"]``: the parameters.

    Nothing else in ``adata`` changes. An existing ``adata.varm[key_added]`` is replaced, as
    scanpy does, and the replacement logged as a warning.
    """
    target = _target(adata, copy)
    table = _gene_table(
        target, model, kind, batch_size=batch_size, progress_bar=progress_bar, precision=precision
    )
    if key_added in target.varm:
        _warn_replacing("varm", key_added, "scl.tl.gene_embeddings")
    target.varm[key_added] = table.to_numpy()
    target.uns[f"{key_added}_gene_embeddings"] = {"params": {"kind": kind}}
    return target if copy else None


def _check_same_genes(adata: ad.AnnData, model: SCLONG) -> None:
    registered = model.adata.var_names
    if not adata.var_names.equals(registered):
        raise ScLongInputError(
            "adata.var_names differ from the genes the model was set up with; gene-level results "
            "are written for the model's genes. Use the registered AnnData or "
            "adata[:, model.adata.var_names].copy()."
        )
