from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..pp._checks import check_not_view
from ._embed import _check_same_genes, _copy, _warn_replacing

if TYPE_CHECKING:
    from ..model import SCLONG

_DENSE_LIMIT = 20_000


def _check_top_k(top_k: int | None) -> int | None:
    """``top_k`` as an int, or ``None`` (dense); refuse anything else with a clear message."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(
            f"top_k must be a positive integer (partners kept per gene), or None for the dense "
            f"matrix of all pairs; got {top_k!r}."
        )
    return int(top_k)


def cosine_similarity_graph(
    embeddings: np.ndarray,
    top_k: int | None = None,
    block_size: int = 2048,
    *,
    center: bool = False,
) -> np.ndarray | sparse.csr_matrix:
    """Cosine similarity between rows, without self pairs.

    Parameters
    ----------
    embeddings
        ``(n_genes, dim)``; NaN rows (genes without an embedding) get no edges.
    center
        Subtract the mean embedding (over the genes that have one) before the cosine. Gene
        embeddings share a large common component, which puts the plain cosine of most pairs
        near 1; centring scores what differs between genes. ``False`` is the scLong
        article's plain cosine.
    top_k
        Keep the ``top_k`` most similar genes per row (sparse CSR result; at most
        ``n_genes - 1``); ``None``: dense.
    block_size
        Rows per block (memory is ``block_size x n_genes``, never more, when ``top_k`` is set).

    Returns
    -------
    ``(n_genes, n_genes)`` similarities, diagonal 0.

    Raises
    ------
    ValueError
        ``top_k`` is not a positive integer or ``None``; ``embeddings`` is not 2-d; a row has
        infinite values.
    """
    top_k = _check_top_k(top_k)
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be (n_genes, dim), got shape {values.shape}.")
    if np.isinf(values).any():
        raise ValueError("embeddings contain infinite values; a gene's row must be finite or NaN.")
    missing = np.isnan(values).any(axis=1)
    values = np.where(missing[:, None], 0.0, values).astype(np.float32, copy=False)
    if center and (~missing).any():
        values = values - values[~missing].mean(axis=0)
        values[missing] = 0.0  # genes without an embedding keep no edges
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    unit = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    n = unit.shape[0]
    if top_k is None:
        result = unit @ unit.T
        np.fill_diagonal(result, 0.0)
        return result
    top_k = min(top_k, n - 1)
    if top_k < 1:  # a single gene: no pair
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols, data = [], [], []
    for start in range(0, n, block_size):
        block = unit[start : start + block_size] @ unit.T
        index = np.arange(block.shape[0])
        block[index, start + index] = -np.inf
        best = np.argpartition(-block, top_k - 1, axis=1)[:, :top_k]
        scores = np.take_along_axis(block, best, axis=1)
        keep = np.isfinite(scores) & (scores != 0)
        rows.append(np.repeat(start + index, top_k)[keep.ravel()])
        cols.append(best.ravel()[keep.ravel()])
        data.append(scores.ravel()[keep.ravel()])
    return sparse.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def grn(
    adata: ad.AnnData,
    model: SCLONG,
    *,
    method: Literal["cosine"] = "cosine",
    kind: Literal["static", "contextual"] = "contextual",
    center: bool = False,
    top_k: int | None = None,
    batch_size: int | None = None,
    key_added: str = "sclong_grn",
    copy: bool = False,
    progress_bar: bool | None = None,
) -> ad.AnnData | None:
    """Gene-regulatory network from scLong gene embeddings (gene-gene similarity).

    As in the scLong article, genes are scored by the cosine similarity of their embeddings.
    ``center=True`` (not in the article) removes the embedding component all genes share
    first; on models pretrained here it mostly scores known regulatory pairs better (see the
    benchmark page of the documentation), while the default keeps the article's plain cosine.

    Reads ``adata.var_names`` (and, for ``"contextual"``, the values the model was set up with,
    checked first as :meth:`~sclong_scverse.model.SCLONG.setup_anndata` checks them: one NaN
    or negative value gives a :class:`~sclong_scverse.pp.ScLongInputError` naming the cells,
    never an empty network); writes ``adata.varp[key_added]`` and ``adata.uns[key_added]``.

    Parameters
    ----------
    adata
        AnnData whose genes are the model's registered genes (its cells are the context of
        ``"contextual"`` embeddings).
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    method
        ``"cosine"``: cosine similarity of gene embeddings.
    kind
        ``"contextual"`` (decodings averaged over the cells) or ``"static"`` gene embeddings.
    center
        Subtract the mean gene embedding before the cosine (see
        :func:`cosine_similarity_graph`); ``False``: the article's plain cosine.
    top_k
        Keep the ``top_k`` strongest partners per gene (a positive integer), sparse; ``None``:
        dense (refused above 20,000 genes: the dense matrix would take gigabytes; give
        ``top_k``).
    batch_size
        Cells per forward pass.
    key_added
        ``adata.varp`` key of the result.
    copy
        Return a new AnnData instead of writing into ``adata`` (in memory, also for a backed
        ``adata``).
    progress_bar
        Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the
        call reads at least 10 million cell x gene values.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.varp[key_added]``: ``(n_vars, n_vars)`` scores (dense float32, or CSR with
      ``top_k``), diagonal 0, genes outside the vocabulary without edges;
    - ``adata.uns[key_added]["params"]``: the parameters.

    Nothing else in ``adata`` changes. An existing ``adata.varp[key_added]`` and
    ``adata.uns[key_added]`` are replaced, as scanpy does; replacing ``varp[key_added]`` is
    logged as a warning.

    Raises
    ------
    ValueError
        Unknown ``method`` or ``kind``; ``top_k`` not a positive integer or ``None``; genes
        other than the model's; a dense network above 20,000 genes.
    ScLongInputError
        ``adata`` is a view (without ``copy=True``); ``"contextual"`` on cells whose values the
        model cannot read, or on no cells.
    """
    if method != "cosine":
        raise ValueError(f"method must be 'cosine', not {method!r}.")
    if kind not in ("static", "contextual"):
        raise ValueError(f"kind must be 'static' or 'contextual', not {kind!r}.")
    top_k = _check_top_k(top_k)
    if top_k is None and adata.n_vars > _DENSE_LIMIT:
        raise ValueError(
            f"A dense {adata.n_vars} x {adata.n_vars} GRN would need "
            f"{adata.n_vars**2 * 4 / 2**30:.1f} GiB; give top_k (e.g. top_k=50)."
        )
    if not copy:
        check_not_view(adata)
    target = _copy(adata) if copy else adata
    _check_same_genes(target, model)
    cells = target if kind == "contextual" else None
    table = model.get_gene_embeddings(
        kind=kind, adata=cells, batch_size=batch_size, progress_bar=progress_bar
    )
    network = cosine_similarity_graph(table.to_numpy(), top_k=top_k, center=center)
    if key_added in target.varp:
        _warn_replacing("varp", key_added, "scl.tl.grn")
    target.varp[key_added] = network
    target.uns[key_added] = {
        "params": {"method": method, "kind": kind, "center": center, "top_k": top_k}
    }
    return target if copy else None


def grn_edges(
    adata: ad.AnnData,
    *,
    key: str = "sclong_grn",
    tfs: Sequence[str] | None = None,
    n_top: int | None = None,
    min_score: float | None = None,
) -> pd.DataFrame:
    """Ranked edges of a GRN stored in ``adata.varp[key]``.

    Reads ``adata.varp[key]`` and ``adata.var_names``; writes nothing.

    Parameters
    ----------
    adata
        AnnData with ``varp[key]`` (from :func:`grn`).
    key
        ``adata.varp`` key.
    tfs
        Keep edges whose source is one of these genes (e.g. a TF list); genes not in
        ``adata.var_names`` are ignored.
    n_top
        Keep the ``n_top`` highest-scoring edges.
    min_score
        Keep edges scoring at least this.

    Returns
    -------
    DataFrame with columns ``source``, ``target``, ``weight`` and ``score`` (the same values:
    ``weight`` is decoupler's name, see :func:`tf_activities`; ``score`` stays for one release),
    highest first (self pairs excluded).
    """
    if key not in adata.varp:
        raise KeyError(f"adata.varp[{key!r}] not found; run scl.tl.grn(adata, model) first.")
    matrix = sparse.coo_matrix(adata.varp[key])
    names = np.asarray(adata.var_names)
    keep = matrix.row != matrix.col
    if tfs is not None:
        tf_positions = adata.var_names.get_indexer(pd.Index(tfs))
        keep &= np.isin(matrix.row, tf_positions[tf_positions >= 0])
    if min_score is not None:
        keep &= matrix.data >= min_score
    rows, cols, scores = matrix.row[keep], matrix.col[keep], matrix.data[keep]
    order = np.argsort(-scores, kind="stable")
    if n_top is not None:
        order = order[:n_top]
    return pd.DataFrame(
        {
            "source": names[rows[order]],
            "target": names[cols[order]],
            "weight": scores[order],
            "score": scores[order],
        }
    )
