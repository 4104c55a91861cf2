from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._docs import fill_doc
from ..errors import ScLongInputError, ScLongKeyError
from ..io._safe import sha256_plain

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..model import SCLONG

# (train, validation) history keys, preferred first
_CURVES = (("masked_mse_train", "masked_mse_validation"), ("train_loss", "validation_loss"))


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _finish(ax: Axes, show: bool | None, save: str | os.PathLike | None, drawn: Any = None) -> Any:
    """Save and show the figure of ``ax`` as the plotting functions' ``show`` and ``save`` say.

    Parameters
    ----------
    ax
        Axes of the figure.
    show
        Show the figure; ``None``: scanpy's ``autoshow``, unless ``save`` is given.
    save
        Write the figure to this path.
    drawn
        What the plotting function returns when the figure is not shown (default: ``ax``).

    Returns
    -------
    ``drawn`` (or ``ax``), or ``None`` when shown.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        ax.figure.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        import scanpy as sc

        show = bool(sc.settings.autoshow) and save is None
    if show:
        plt.show()
        return None
    return ax if drawn is None else drawn


def _series(history: Mapping[str, Any], key: str) -> pd.Series | None:
    if key not in history:
        return None
    frame = history[key]
    series = frame.iloc[:, 0] if isinstance(frame, pd.DataFrame) else pd.Series(frame)
    series = pd.to_numeric(series, errors="coerce").dropna()
    return series if len(series) else None


@fill_doc
def training_history(
    model_or_history: SCLONG | Mapping[str, Any],
    *,
    ax: Axes | None = None,
    log_y: bool | None = None,
    baseline: float | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """Masked-expression error per epoch, on training and validation cells.

    Parameters
    ----------
    model_or_history
        A trained :class:`~sclong_scverse.model.SCLONG` (its ``history``) or the history dict
        itself (``{name: DataFrame indexed by epoch}``). Plotted: ``masked_mse_train`` and
        ``masked_mse_validation`` (else ``train_loss`` and ``validation_loss``).
    ax
        Axes to draw into (default: a new figure).
    log_y
        Logarithmic error axis. ``None`` (default): logarithmic when the curve spans more than a
        factor of 10 (the first epochs of a fresh model would squash the rest).
    baseline
        A reference error drawn as a horizontal line, e.g. the per-gene mean baseline of
        :meth:`~sclong_scverse.model.SCLONG.evaluate_masked_mse` (``baseline_mse``).
    {plot_show_save}

    Returns
    -------
    The axes, or ``None`` when shown.
    """
    import matplotlib as mpl

    history = getattr(model_or_history, "history", model_or_history)
    if history is None:
        raise ScLongInputError("The model has no training history: train it first.")
    curves = [(_series(history, t), _series(history, v)) for t, v in _CURVES]
    train, validation = next(((t, v) for t, v in curves if t is not None), (None, None))
    if train is None:
        raise ScLongInputError(
            f"No training curve in the history (keys: {sorted(history)}); expected "
            "'masked_mse_train' or 'train_loss'."
        )
    ax = _axes(ax, (4.5, 3.5))
    ax.plot(train.index + 1, train.to_numpy(), marker="o", label="training cells")
    if validation is not None:
        ax.plot(validation.index + 1, validation.to_numpy(), marker="s", label="validation cells")
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle="--", label="per-gene mean baseline")
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked MSE")
    ax.set_title("scLong pretraining")
    if log_y is None:
        values = np.concatenate(
            [train.to_numpy().ravel()]
            + ([validation.to_numpy().ravel()] if validation is not None else [])
        )
        values = values[np.isfinite(values) & (values > 0)]
        log_y = bool(values.size) and values.max() > 10 * values.min()
    if log_y:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return _finish(ax, show, save)


def _grn_genes(
    adata: ad.AnnData, key: str, genes: Sequence[str] | None, n_top: int, symmetric: bool
):
    """The genes to draw and the edges among them."""
    from ..tl import grn_edges

    if key not in adata.varp:
        raise ScLongKeyError(f"adata.varp[{key!r}] not found; run scl.tl.grn(adata, model) first.")
    edges = grn_edges(adata, key=key, tfs=genes)
    if symmetric:
        pairs = pd.Series(
            [frozenset(p) for p in zip(edges["source"], edges["target"], strict=True)]
        )
        edges = edges[~pairs.duplicated().to_numpy()]
    if genes is not None:
        genes = [g for g in genes if g in adata.var_names]
        if not genes:
            raise ScLongInputError("None of the given genes are in adata.var_names.")
        edges = edges[edges["target"].isin(genes)].head(n_top)
        return list(dict.fromkeys(genes)), edges
    edges = edges.head(n_top)
    nodes = list(dict.fromkeys(np.concatenate([edges["source"], edges["target"]]).tolist()))
    return nodes, edges


@fill_doc
def grn(
    adata: ad.AnnData,
    *,
    key: str = "sclong_grn",
    genes: Sequence[str] | None = None,
    n_top: int = 30,
    kind: Literal["heatmap", "network"] = "heatmap",
    symmetric: bool = True,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
) -> Axes | None:
    """The strongest edges of a scLong gene network, as a heatmap or a network drawing.

    Parameters
    ----------
    adata
        AnnData with the network in ``adata.varp[key]`` (from :func:`sclong_scverse.tl.grn`);
        gene names are ``adata.var_names``.
    key
        ``adata.varp`` key of the network.
    genes
        Draw these genes and the edges among them (default: the genes of the ``n_top``
        highest-scoring edges).
    n_top
        Number of edges drawn (highest scores first).
    kind
        ``"heatmap"``: scores among the genes (symmetrised, grey where no edge is kept);
        ``"network"``: genes on a circle, edges with width and colour by score.
    symmetric
        Count ``a - b`` and ``b - a`` as one edge (cosine scores are symmetric).
    cmap
        Colour map of the scores.
    ax
        Axes to draw into (default: a new figure).
    {plot_show_save}

    Returns
    -------
    The axes, or ``None`` when shown.
    """
    import matplotlib as mpl

    if kind not in ("heatmap", "network"):
        raise ScLongInputError(f"kind must be 'heatmap' or 'network', not {kind!r}.")
    nodes, edges = _grn_genes(adata, key, genes, n_top, symmetric)
    if not len(edges):
        raise ScLongInputError(f"adata.varp[{key!r}] has no edges among the chosen genes.")
    if kind == "heatmap":
        positions = adata.var_names.get_indexer(nodes)
        matrix = adata.varp[key]
        matrix = matrix[positions][:, positions]
        matrix = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        matrix = np.maximum(matrix, matrix.T)  # top-k graphs keep an edge in one direction
        # only the listed edges are coloured (the other pairs among these genes are grey)
        index = {name: i for i, name in enumerate(nodes)}
        chosen = np.zeros(matrix.shape, dtype=bool)
        for source, target in zip(edges["source"], edges["target"], strict=True):
            chosen[index[source], index[target]] = chosen[index[target], index[source]] = True
        size = max(4.0, 0.28 * len(nodes) + 1.5)
        ax = _axes(ax, (size + 1.0, size))
        shown = np.ma.masked_array(matrix, mask=~chosen | (matrix == 0.0))
        colours = mpl.colormaps[cmap].with_extremes(bad="0.9")
        image = ax.imshow(shown, cmap=colours, interpolation="nearest")
        ax.set_xticks(range(len(nodes)), nodes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
        ax.figure.colorbar(image, ax=ax, shrink=0.7, label="score")
        ax.set_title(f"scLong GRN: top {len(edges)} edges among {len(nodes)} genes")
        return _finish(ax, show, save)

    ax = _axes(ax, (6.0, 6.0))
    angle = 2 * np.pi * np.arange(len(nodes)) / len(nodes)
    xy = dict(zip(nodes, np.c_[np.cos(angle), np.sin(angle)], strict=True))
    scores = edges["weight"].to_numpy(dtype=float)
    low, high = float(scores.min()), float(scores.max())
    norm = mpl.colors.Normalize(vmin=low, vmax=high if high > low else low + 1e-9)
    colours = mpl.colormaps[cmap]
    for source, target, score in edges[["source", "target", "weight"]].itertuples(index=False):
        (x0, y0), (x1, y1) = xy[source], xy[target]
        ax.plot(
            [x0, x1],
            [y0, y1],
            color=colours(norm(score)),
            linewidth=0.5 + 2.5 * norm(score),
            alpha=0.8,
            zorder=1,
        )
    points = np.array(list(xy.values()))
    ax.scatter(points[:, 0], points[:, 1], s=30, color="black", zorder=2)
    for name, (x, y) in xy.items():
        side = "left" if x > 0.1 else "right" if x < -0.1 else "center"
        ax.text(1.07 * x, 1.07 * y, name, fontsize=7, ha=side, va="center")
    ax.figure.colorbar(
        mpl.cm.ScalarMappable(norm=norm, cmap=colours), ax=ax, shrink=0.7, label="score"
    )
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"scLong GRN: top {len(edges)} edges")
    return _finish(ax, show, save)


def _fingerprint(values) -> str:
    """A short sha256 of a representation's values and shape (what a UMAP was computed from)."""
    return sha256_plain(np.asarray(values, dtype=np.float32))[:32]


def _recorded_source(adata: ad.AnnData, key: str) -> str | None:
    record = adata.uns.get(key)
    return record.get("source_fingerprint") if isinstance(record, dict) else None


def record_embedding_source(adata: ad.AnnData, basis: str = "X_sclong") -> None:
    """Record that the neighbours and UMAP of ``basis`` were computed from ``obsm[basis]`` now.

    For a UMAP made with scanpy under the keys :func:`embedding` uses
    (``uns[f"{basis}_neighbors"]``, ``obsm[f"{basis}_umap"]``): :func:`embedding` then draws it
    instead of computing it again, until ``obsm[basis]`` changes. Writes
    ``uns[f"{basis}_neighbors"]["source_fingerprint"]`` and
    ``uns[f"{basis}_umap"]["source_fingerprint"]``.
    """
    source = _fingerprint(adata.obsm[basis])
    adata.uns[f"{basis}_neighbors"]["source_fingerprint"] = source
    adata.uns.setdefault(f"{basis}_umap", {})["source_fingerprint"] = source


@fill_doc
def embedding(
    adata: ad.AnnData,
    color: str | Sequence[str] | None = None,
    *,
    basis: str = "X_sclong",
    n_neighbors: int = 15,
    random_state: int = 0,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    **kwargs,
):
    """Cells in a scLong embedding, coloured by ``adata.obs`` columns or genes (via scanpy).

    When ``adata.obsm[basis]`` has more than two dimensions, its UMAP is drawn: computed once
    (:func:`scanpy.pp.neighbors` on ``basis`` and :func:`scanpy.tl.umap`) and kept in
    ``adata.obsm[f"{basis}_umap"]``, with the neighbour graph under
    ``neighbors_key=f"{basis}_neighbors"`` (reused when present).

    Parameters
    ----------
    adata
        AnnData with ``adata.obsm[basis]`` (e.g. from :func:`sclong_scverse.tl.embed`).
    color
        ``adata.obs`` column(s) or gene name(s) to colour by, as in :func:`scanpy.pl.embedding`.
    basis
        ``adata.obsm`` key of the embedding.
    n_neighbors
        Neighbours of the kNN graph, when the UMAP is computed here.
    random_state
        Seed of the UMAP, when computed here.
    {plot_show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (e.g. ``legend_loc``, ``frameon``, ``title``).

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns with ``show=False`` (axes, or a list of axes for
    several colours), or ``None`` when shown. Writes ``adata.obsm[f"{basis}_umap"]`` and, when
    absent, the neighbour graph ``adata.uns[f"{basis}_neighbors"]``,
    ``adata.obsp[f"{basis}_neighbors_distances"]`` and
    ``adata.obsp[f"{basis}_neighbors_connectivities"]``. Both record a fingerprint of the
    ``obsm[basis]`` they were computed from (``uns[...]["source_fingerprint"]``): when the
    embedding has changed since (e.g. :func:`~sclong_scverse.tl.embed` ran again), or a cached
    UMAP has no record, they are computed again, with a warning, never drawn stale.
    """
    import scanpy as sc

    if basis not in adata.obsm:
        raise ScLongKeyError(
            f"adata.obsm[{basis!r}] not found; run scl.tl.embed(adata, model) first "
            f"(obsm keys: {list(adata.obsm)})."
        )
    plotted = basis
    if np.asarray(adata.obsm[basis]).shape[1] > 2:
        plotted = f"{basis}_umap"
        neighbors = f"{basis}_neighbors"
        source = _fingerprint(adata.obsm[basis])
        stale = [key for key in (neighbors, plotted) if _recorded_source(adata, key) != source]
        if plotted in adata.obsm and stale:
            warnings.warn(
                f"adata.obsm[{plotted!r}] was not computed from the current "
                f"adata.obsm[{basis!r}] (it changed since, e.g. scl.tl.embed ran again, or the "
                "UMAP was made elsewhere); computing the neighbours and the UMAP again.",
                UserWarning,
                stacklevel=2,
            )
        if neighbors in stale or neighbors not in adata.uns:
            sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=basis, key_added=neighbors)
        if plotted in stale or plotted not in adata.obsm:
            sc.tl.umap(adata, neighbors_key=neighbors, random_state=random_state, key_added=plotted)
        record_embedding_source(adata, basis)
    axes = sc.pl.embedding(adata, basis=plotted, color=color, show=False, **kwargs)
    return _finish(axes[0] if isinstance(axes, list) else axes, show, save, drawn=axes)
