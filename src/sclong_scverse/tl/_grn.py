from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._docs import fill_doc
from ..errors import ScLongKeyError
from ..validation import ScLongInputError, check_finite_number, check_whole
from ._embed import _check_same_genes, _gene_table, _target, _warn_replacing

if TYPE_CHECKING:
    from ..model import SCLONG

_DENSE_LIMIT = 20_000


#: Below this spread (1st to 99th percentile) the GRN's scores rank genes by noise.
FLAT_SPREAD = 0.01


def _warn_if_flat(network, center: bool, max_values: int = 1_000_000) -> None:
    """Warn when a cosine GRN's off-diagonal scores are nearly all equal (a flat network).

    Gene embeddings of a model pretrained briefly share a large common component: their plain
    cosines are then all close to 1 (e.g. 0.9971-0.9980), and a heatmap's colour bar shows that
    narrow range as contrast. ``center=True`` removes the shared component.
    """
    if sparse.issparse(network):
        values = np.asarray(network.tocoo().data, dtype=np.float64)
    else:
        dense = np.asarray(network)
        n = dense.shape[0]
        rng = np.random.default_rng(0)
        size = min(max_values, max(n * (n - 1), 0))
        rows, cols = rng.integers(0, n, size), rng.integers(0, n, size)
        keep = rows != cols
        values = dense[rows[keep], cols[keep]].astype(np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size < 10:
        return
    low, high = np.percentile(values, [1, 99])
    if high - low < FLAT_SPREAD:
        hint = (
            "pass center=True to remove the component every gene embedding shares"
            if not center
            else "the model may need more training"
        )
        warnings.warn(
            f"The GRN's scores are nearly all equal ({low:.4f} to {high:.4f} for 98% of the "
            f"edges): their ranking is mostly noise and a heatmap's colours exaggerate it; "
            f"{hint} (docs/grn.md).",
            UserWarning,
            stacklevel=3,
        )


def _check_top_k(top_k: int | None) -> int | None:
    """``top_k`` as an int, or ``None`` (dense); refuse anything else with a clear message."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ScLongInputError(
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
        raise ScLongInputError(f"embeddings must be (n_genes, dim), got shape {values.shape}.")
    if np.isinf(values).any():
        raise ScLongInputError(
            "embeddings contain infinite values; a gene's row must be finite or NaN."
        )
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


@fill_doc
def grn(
    adata: ad.AnnData,
    model: SCLONG | None = None,
    *,
    method: Literal["cosine", "deepsem"] = "cosine",
    kind: Literal["static", "contextual"] = "contextual",
    center: bool = False,
    top_k: int | None = None,
    tfs: Sequence[str] | None = None,
    layer: str | None = None,
    n_seeds: int = 5,
    random_state: int = 0,
    deepsem_kwargs: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    key_added: str = "sclong_grn",
    copy: bool = False,
    progress_bar: bool | None = None,
    precision: Literal["32", "bf16", "16"] | None = None,
) -> ad.AnnData | None:
    """Gene-regulatory network from scLong: embedding similarity, or DeepSEM seeded by scLong.

    ``method="cosine"``: as in the scLong article's embedding analysis, genes are scored by the
    cosine similarity of their embeddings. The default, ``center=False``, is the article's
    plain cosine, kept on held-out evidence (``docs/grn.md``, ``benchmarks/report_grn.py``):
    on tiny scLong models pretrained on the data's own cells, contextual embeddings, it scored
    TRRUST edges on PBMC (development) better than ``center=True`` (AUPR ratio 1.34 against
    1.10), and on CellBench against STRING (held out) it scored worse (0.95 against 1.26) but
    within the noise allowance (2 bootstrap standard deviations, 0.40). ``center=True`` (not
    in the article) removes the embedding component all genes share first; use it when
    ``scl.tl.grn`` warns that the plain cosines are flat (98% of them within 0.01, as for a
    model whose gene embeddings share a large component).

    ``method="deepsem"``: the article's GRN protocol. DeepSEM (Shu et al., Nat Comput Sci
    2021; :class:`~sclong_scverse.module.DeepSEM`, a beta-VAE with a structural-equation
    layer, trained with its published losses and schedule) learns the network from the
    expression of ``adata``'s cells; with a ``model``, its adjacency starts from scLong's
    gene-gene similarity, as the original scLong code seeds it: each gene's contextual
    decodings over the cells, L1-normalised, their Gram matrix, zero diagonal, rows
    L1-normalised (accumulated batch by batch over the cells: memory ``genes x genes``, never
    ``cells x genes x dim``). Without a model, DeepSEM starts from its own initialisation
    (the baseline). DeepSEM is trained ``n_seeds`` times (seeds ``random_state``,
    ``random_state + 1``, ...; the paper reports ``n = 5``) and the network is the mean of the
    learned ``|A|`` (the edge score DeepSEM ranks by). Its time grows with ``genes^3`` per step
    (one ``genes x genes`` linear solve) and with the cells: measured 20-30 s per epoch for
    2,000 genes and 559 cells on a busy 2-core CPU with the default ``n_hidden=128``.

    Reads ``adata.var_names``; for ``"contextual"`` and for ``"deepsem"`` with a model, the
    values the model was set up with (checked first as
    :meth:`~sclong_scverse.model.SCLONG.setup_anndata` checks them: one NaN or negative value
    gives a :class:`~sclong_scverse.pp.ScLongInputError` naming the cells, never an empty
    network); for ``"deepsem"``, the expression in ``adata.X`` or ``adata.layers[layer]``
    (raw counts are log-normalised first, ``normalize_total(1e4)`` + ``log1p``, on a copy;
    other values are used as they are). Writes ``adata.varp[key_added]`` and
    ``adata.uns[key_added]``.

    Parameters
    ----------
    adata
        AnnData whose genes are the model's registered genes (its cells are the context of
        ``"contextual"`` embeddings and DeepSEM's training data).
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`; ``None`` only with
        ``method="deepsem"`` (DeepSEM's own initialisation).
    method
        ``"cosine"``: cosine similarity of gene embeddings; ``"deepsem"``: DeepSEM, seeded by
        scLong when ``model`` is given.
    kind
        ``"contextual"`` (decodings averaged over the cells) or ``"static"`` gene embeddings
        (``"cosine"`` only; the DeepSEM seed always uses the contextual decodings).
    center
        Subtract the mean gene embedding before the cosine (see
        :func:`cosine_similarity_graph`); ``False`` (default): the article's plain cosine,
        chosen by the rule of ``docs/grn.md`` (development PBMC / TRRUST, held out
        CellBench / STRING; ``tests/test_grn_default.py`` ties it to the committed table).
    top_k
        Keep the ``top_k`` strongest partners per gene (a positive integer), sparse; ``None``:
        dense (refused above 20,000 genes: the dense matrix would take gigabytes; give
        ``top_k``).
    tfs
        ``"deepsem"``: keep only edges from these regulators (names of ``adata.var_names``;
        others ignored), as DeepSEM reports TF -> target edges; the other rows are 0 (empty
        rows of a CSR matrix). Evaluate such a network with ``tfs=`` in
        :func:`evaluate_grn` / :func:`benchmark_grn`. Default: every gene as a regulator.
    layer
        ``"deepsem"``: layer with the expression DeepSEM learns from (default ``adata.X``).
    n_seeds
        ``"deepsem"``: DeepSEM runs averaged (5, as the paper reports).
    random_state
        ``"deepsem"``: seed of the first run.
    deepsem_kwargs
        ``"deepsem"``: hyper-parameters of :class:`~sclong_scverse.module.DeepSEMConfig`
        (``n_epochs`` 90, ``n_hidden`` 128, ``alpha`` 100, ``beta`` 1, ``lr`` 1e-4,
        ``lr_adj_factor`` 0.2, ``gamma`` 0.95, ``batch_size`` 64, ``k1`` 1, ``k2`` 2).
    batch_size
        Cells per forward pass of the scLong model.
    key_added
        ``adata.varp`` key of the result.
    copy
        Return a new AnnData instead of writing into ``adata`` (in memory, also for a backed
        ``adata``).
    progress_bar
        Show a progress bar (cells done, cells/s, time left; DeepSEM: optimisation steps);
        ``None`` (default): for the scLong pass when the call reads at least 10 million cell x
        gene values, for DeepSEM always.
    precision
        Of the scLong pass: ``"32"`` (default, float32), ``"bf16"`` (bfloat16 autocast, for
        GPUs and CPUs with bfloat16 instructions), ``"auto"`` or ``"16"`` (float16, GPUs
        only); DeepSEM trains in float32.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.varp[key_added]``: ``(n_vars, n_vars)`` scores, row = regulator, column =
      target (dense float32, or CSR with ``top_k`` or ``tfs``), diagonal 0; ``"cosine"``:
      genes outside the vocabulary without edges; ``"deepsem"``: mean ``|A|`` over the seeds;
    - ``adata.uns[key_added]["params"]``: the parameters (``"deepsem"``: also ``seeded``, the
      DeepSEM configuration, and ``final_loss``, each run's last-epoch loss).

    {verb_replaced}

    Raises
    ------
    ValueError
        Unknown ``method`` or ``kind``; ``"cosine"`` without a model; ``top_k`` not a positive
        integer or ``None``; genes other than the model's; a dense network above 20,000
        genes; ``n_seeds`` below 1; unknown ``deepsem_kwargs``; no ``tfs`` among the genes.
    ScLongInputError
        ``adata`` is a view (without ``copy=True``); ``"contextual"`` on cells whose values the
        model cannot read, or on no cells; DeepSEM expression with NaN or infinite values.

    Examples
    --------
    >>> scl.tl.grn(adata, model, method="deepsem", tfs=tfs)  # doctest: +SKIP
    >>> scl.tl.grn(adata, method="deepsem", tfs=tfs, key_added="deepsem_grn")  # doctest: +SKIP
    >>> scl.tl.benchmark_grn(adata, {"TRRUST": path}, tfs=tfs)  # doctest: +SKIP
    """
    if method not in ("cosine", "deepsem"):
        raise ScLongInputError(f"method must be 'cosine' or 'deepsem', not {method!r}.")
    if method == "deepsem":
        return _deepsem_grn(
            adata,
            model,
            top_k=top_k,
            tfs=tfs,
            layer=layer,
            n_seeds=n_seeds,
            random_state=random_state,
            deepsem_kwargs=deepsem_kwargs,
            batch_size=batch_size,
            key_added=key_added,
            copy=copy,
            progress_bar=progress_bar,
            precision=precision,
        )
    if model is None:
        raise ScLongInputError(
            "method='cosine' scores the model's gene embeddings: pass the model "
            "(scl.tl.grn(adata, model)); only method='deepsem' runs without one."
        )
    if kind not in ("static", "contextual"):
        raise ScLongInputError(f"kind must be 'static' or 'contextual', not {kind!r}.")
    top_k = _check_top_k(top_k)
    if top_k is None and adata.n_vars > _DENSE_LIMIT:
        raise ScLongInputError(
            f"A dense {adata.n_vars} x {adata.n_vars} GRN would need "
            f"{adata.n_vars**2 * 4 / 2**30:.1f} GiB; give top_k (e.g. top_k=50)."
        )
    target = _target(adata, copy)
    table = _gene_table(
        target, model, kind, batch_size=batch_size, progress_bar=progress_bar, precision=precision
    )
    network = cosine_similarity_graph(table.to_numpy(), top_k=top_k, center=center)
    _warn_if_flat(network, center)
    if key_added in target.varp:
        _warn_replacing("varp", key_added, "scl.tl.grn")
    target.varp[key_added] = network
    target.uns[key_added] = {
        "params": {"method": method, "kind": kind, "center": center, "top_k": top_k}
    }
    return target if copy else None


def deepsem_seed(
    adata: ad.AnnData,
    model: SCLONG,
    *,
    batch_size: int | None = None,
    progress_bar: bool | None = None,
    precision: Literal["32", "bf16", "16"] | None = None,
) -> np.ndarray:
    """The scLong seed of DeepSEM's adjacency, as the original scLong code computes it.

    For each gene, its contextual decodings in all cells of ``adata`` (``n_cells x dim``
    values) are L1-normalised; the seed is their Gram matrix with zero diagonal, each row then
    L1-normalised. Accumulated batch by batch over the cells (memory ``genes x genes`` plus
    one batch of decodings). Reads the values the model was set up with; writes nothing.
    For a model without the low-expression branch, a gene's decoding is 0 in the cells where
    it is not among the decoded top genes (the network's ``decodings`` there), so only the
    cells that decode both genes add to a pair's entry.

    Parameters
    ----------
    adata
        AnnData whose genes are the model's registered genes.
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    batch_size
        Cells per forward pass.
    progress_bar
        Show a progress bar over the cells (``None``: for large inputs).
    precision
        ``"32"`` (default), ``"bf16"`` or ``"16"`` (GPUs only) for the scLong pass; the Gram
        matrix is accumulated in float32 or wider.

    Returns
    -------
    ``(n_vars, n_vars)`` float32, row = regulator; rows and columns of genes outside the
    model's vocabulary are 0.
    """
    import torch

    from ..module._deepsem import GramAccumulator

    _check_same_genes(adata, model)
    positions = np.asarray(model.alignment.var_positions)
    kept = np.flatnonzero(positions >= 0)
    index = torch.as_tensor(positions[kept], dtype=torch.long)
    accumulator = None
    batches = model._batches(
        adata, None, batch_size, progress_bar=progress_bar, desc="seed", precision=precision
    )
    for outputs in batches:
        decodings = outputs["decodings"]
        if accumulator is None:
            accumulator = GramAccumulator(len(kept), decodings.device)
            index = index.to(decodings.device)
        accumulator.update(decodings.index_select(1, index).float())
    if accumulator is None:
        raise ScLongInputError("adata has no cells; nothing to seed DeepSEM with.")
    seed = np.zeros((adata.n_vars, adata.n_vars), dtype=np.float32)
    seed[np.ix_(kept, kept)] = accumulator.seed().cpu().numpy()
    return seed


def _deepsem_grn(
    adata: ad.AnnData,
    model: SCLONG | None,
    *,
    top_k: int | None,
    tfs: Sequence[str] | None,
    layer: str | None,
    n_seeds: int,
    random_state: int,
    deepsem_kwargs: Mapping[str, Any] | None,
    batch_size: int | None,
    key_added: str,
    copy: bool,
    progress_bar: bool | None,
    precision: str | None = None,
) -> ad.AnnData | None:
    import dataclasses

    from ..module._deepsem import DeepSEMConfig, train_deepsem
    from ._grn_baselines import _dense_columns, _expression

    top_k = _check_top_k(top_k)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int | np.integer) or n_seeds < 1:
        raise ScLongInputError(f"n_seeds must be a positive integer, got {n_seeds!r}.")
    known = {f.name for f in dataclasses.fields(DeepSEMConfig)}
    unknown = sorted(set(deepsem_kwargs or {}) - known)
    if unknown:
        raise ScLongInputError(f"unknown deepsem_kwargs {unknown}; known: {sorted(known)}.")
    config = DeepSEMConfig(**dict(deepsem_kwargs or {}))
    if adata.n_vars > _DENSE_LIMIT:
        raise ScLongInputError(
            f"DeepSEM over {adata.n_vars} genes needs dense {adata.n_vars} x {adata.n_vars} "
            "matrices and a linear solve of that size per step; subset the genes first (e.g. "
            "to highly variable genes and TFs)."
        )
    regulators = None
    if tfs is not None:
        regulators = np.flatnonzero(adata.var_names.isin(pd.Index([str(t) for t in tfs])))
        if regulators.size == 0:
            raise ScLongInputError(
                f"none of the {len(list(tfs))} given tfs is among adata.var_names (e.g. "
                f"{list(adata.var_names[:3])})."
            )
    target = _target(adata, copy)
    expression, normalised = _expression(target, layer)
    values = _dense_columns(expression, np.arange(target.n_vars))
    seed = None
    if model is not None:
        seed = deepsem_seed(
            target, model, batch_size=batch_size, progress_bar=progress_bar, precision=precision
        )
    show = True if progress_bar is None else bool(progress_bar)
    total = np.zeros((target.n_vars, target.n_vars), dtype=np.float64)
    final_loss = []
    for run in range(n_seeds):
        learned, history = train_deepsem(
            values,
            seed,
            config,
            seed=random_state + run,
            progress_bar=show,
            desc=f"DeepSEM {run + 1}/{n_seeds}",
        )
        total += np.abs(learned)
        final_loss.append(history["loss"][-1])
    network = (total / n_seeds).astype(np.float32)
    np.fill_diagonal(network, 0.0)
    if regulators is not None:
        keep = np.zeros(target.n_vars, dtype=bool)
        keep[regulators] = True
        network[~keep] = 0.0
    if top_k is not None:
        network = _top_k_rows(network, min(top_k, target.n_vars - 1))
    elif regulators is not None:
        network = sparse.csr_matrix(network)
    if key_added in target.varp:
        _warn_replacing("varp", key_added, "scl.tl.grn")
    target.varp[key_added] = network
    target.uns[key_added] = {
        "params": {
            "method": "deepsem",
            "seeded": model is not None,
            "n_seeds": n_seeds,
            "random_state": random_state,
            "top_k": top_k,
            "n_tfs": 0 if regulators is None else int(regulators.size),
            "layer": layer if layer is not None else "X",
            "log_normalized": normalised,
            "deepsem": config.to_dict(),
            "final_loss": final_loss,
        }
    }
    return target if copy else None


def _top_k_rows(network: np.ndarray, top_k: int) -> sparse.csr_matrix:
    """The ``top_k`` largest entries of each row (non-zero ones), as CSR."""
    n = network.shape[0]
    if top_k < 1:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    best = np.argpartition(-network, top_k - 1, axis=1)[:, :top_k]
    scores = np.take_along_axis(network, best, axis=1)
    keep = scores != 0
    rows = np.repeat(np.arange(n), top_k)[keep.ravel()]
    return sparse.csr_matrix(
        (scores.ravel()[keep.ravel()], (rows, best.ravel()[keep.ravel()])), shape=(n, n)
    )


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
        raise ScLongKeyError(f"adata.varp[{key!r}] not found; run scl.tl.grn(adata, model) first.")
    n_top = check_whole("n_top", n_top, allow_none=True)
    min_score = check_finite_number("min_score", min_score, allow_none=True)
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
