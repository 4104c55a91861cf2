"""Training-free in-silico perturbation with scLong (Geneformer's bar): delete / overexpress."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..pp._checks import ScLongInputError, check_not_view

if TYPE_CHECKING:
    from ..model import SCLONG

logger = logging.getLogger(__name__)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (FDR), monotone, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def in_silico_perturb(
    adata: ad.AnnData,
    model: SCLONG,
    genes: Sequence[str],
    mode: Literal["delete", "overexpress"] = "delete",
    *,
    indices: Sequence[int] | None = None,
    n_null: int = 20,
    n_bins: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    key_added: str = "sclong_in_silico",
) -> pd.DataFrame:
    """Shift of scLong's cell embeddings and predictions when genes are deleted or overexpressed.

    As Geneformer's in-silico perturbation: each gene's input value is set to 0 in every cell
    (``"delete"``) or to the cell's maximum (``"overexpress"``; Geneformer moves the gene to the
    front of its rank encoding); the cell embeddings (max-pooled decodings) are computed again
    and the shift per cell is ``1 - cosine(original, perturbed)``. The mean shift is compared
    with a null of random genes in the same expression bin (quantiles of the mean value),
    perturbed the same way: empirical p-value, Benjamini-Hochberg FDR over the tested genes.
    The change of the model's predicted expression of every gene is kept too.

    Reads the values the model was set up with (``adata.layers[layer]`` or ``adata.X``) and
    ``adata.var_names``; writes ``adata.uns[key_added]``: ``params``, ``results`` (the returned
    table as a dict of columns) and ``expression_shift`` (genes x tested genes: mean predicted
    change, as a dict with ``values``, ``genes``, ``perturbed``).

    Parameters
    ----------
    adata
        Cells with the model's values (e.g. control cells of a screen).
    model
        A trained :class:`~sclong_scverse.model.SCLONG` set up on the same layer.
    genes
        Genes to perturb (``adata.var_names``).
    mode
        ``"delete"`` or ``"overexpress"``.
    indices
        Cells to use (default: all).
    n_null
        Random expression-matched genes per bin for the null.
    n_bins
        Expression bins (quantiles of the genes' mean value).
    seed
        Seed of the null genes.
    batch_size
        Cells per forward pass.
    key_added
        ``adata.uns`` key.

    Returns
    -------
    DataFrame indexed by gene: ``mean_expression``, ``bin``, ``cosine_shift`` (mean over cells),
    ``null_mean``, ``null_std``, ``p_value``, ``fdr``, ``n_cells``.

    Raises
    ------
    ScLongInputError
        Unknown genes, an unknown mode, or too few genes for a null.
    """
    check_not_view(adata)
    if mode not in ("delete", "overexpress"):
        raise ScLongInputError(f"mode must be 'delete' or 'overexpress', not {mode!r}.")
    names = pd.Index(adata.var_names.astype(str))
    genes = [str(g) for g in genes]
    unknown = [g for g in genes if g not in names]
    if unknown:
        raise ScLongInputError(f"Genes {unknown[:5]} are not in adata.var_names.")
    layer = model._setup_args.get("layer")
    values = adata.X if layer is None else adata.layers[layer]
    rows = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    block = values[rows]
    dense = (block.toarray() if sparse.issparse(block) else np.asarray(block)).astype(np.float32)
    mean = dense.mean(axis=0)
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, max(len(edges) - 2, 0))
    record = adata.uns.get(layer or "sclong")

    def embed_and_predict(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query = ad.AnnData(X=sparse.csr_matrix(matrix), var=pd.DataFrame(index=names.copy()))
        if layer is not None:
            query.layers[layer] = query.X
        if record is not None:
            query.uns[layer or "sclong"] = record
        embedding = model.get_latent_representation(query, batch_size=batch_size)
        prediction = model.predict(query, batch_size=batch_size)
        return embedding, prediction

    base_embedding, base_prediction = embed_and_predict(dense)
    cell_max = dense.max(axis=1)

    def shift(gene_index: int) -> tuple[float, np.ndarray]:
        changed = dense.copy()
        changed[:, gene_index] = 0.0 if mode == "delete" else cell_max
        embedding, prediction = embed_and_predict(changed)
        dot = (embedding * base_embedding).sum(axis=1)
        norm = np.linalg.norm(embedding, axis=1) * np.linalg.norm(base_embedding, axis=1)
        cosine = np.divide(dot, norm, out=np.ones_like(dot), where=norm > 0)
        return float(np.mean(1.0 - cosine)), np.nanmean(prediction - base_prediction, axis=0)

    rng = np.random.default_rng(seed)
    tested = set(names.get_indexer(genes))
    null_of: dict[int, np.ndarray] = {}
    records, shifts = [], []
    for gene in genes:
        i = int(names.get_loc(gene))
        b = int(bins[i])
        if b not in null_of:
            pool = np.array([j for j in np.flatnonzero(bins == b) if j not in tested])
            if len(pool) < 2:
                raise ScLongInputError(
                    f"Too few genes in {gene}'s expression bin for a null; lower n_bins."
                )
            chosen = rng.choice(pool, size=min(n_null, len(pool)), replace=False)
            null_of[b] = np.array([shift(int(j))[0] for j in chosen])
        observed, expression = shift(i)
        shifts.append(expression)
        null = null_of[b]
        records.append(
            {
                "gene": gene,
                "mean_expression": float(mean[i]),
                "bin": b,
                "cosine_shift": observed,
                "null_mean": float(null.mean()),
                "null_std": float(null.std()),
                "p_value": float((1 + (null >= observed).sum()) / (1 + len(null))),
                "n_cells": len(rows),
            }
        )
    table = pd.DataFrame.from_records(records).set_index("gene")
    table["fdr"] = benjamini_hochberg(table["p_value"].to_numpy())
    adata.uns[key_added] = {
        "params": {"mode": mode, "n_null": int(n_null), "n_bins": int(n_bins), "seed": int(seed)},
        "results": {c: table[c].to_numpy() for c in table.columns} | {"gene": np.asarray(genes)},
        "expression_shift": {
            "values": np.stack(shifts, axis=1).astype(np.float32),
            "genes": np.asarray(names),
            "perturbed": np.asarray(genes),
        },
    }
    return table
