"""Transcription-factor activities with decoupler from a scLong GRN (or any TF -> target net)."""

from __future__ import annotations

from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from .._optional import import_optional
from ..validation import ScLongInputError, check_not_view, check_whole
from ._grn import grn_edges

Method = Literal["ulm", "mlm"]


def tf_network(
    adata: ad.AnnData,
    tfs: list[str] | pd.Index,
    *,
    key: str = "sclong_grn",
    n_targets: int = 50,
) -> pd.DataFrame:
    """A TF -> target network in decoupler's layout from a GRN in ``adata.varp[key]``.

    Reads ``adata.varp[key]`` (from :func:`grn`) and ``adata.var_names``; writes nothing. A scLong
    network scores every gene pair; decoupler's linear models need each TF's few most likely
    targets, so each TF keeps its ``n_targets`` highest-scoring targets.

    Parameters
    ----------
    adata
        AnnData with ``varp[key]``.
    tfs
        Transcription factors (named like ``adata.var_names``); those absent are ignored.
    key
        ``adata.varp`` key of the GRN.
    n_targets
        Targets kept per TF (positive integer).

    Returns
    -------
    DataFrame with columns ``source`` (TF), ``target`` and ``weight`` (the GRN's score), the
    layout ``decoupler.mt.ulm`` / ``mlm`` read.
    """
    n_targets = check_whole("n_targets", n_targets)
    present = pd.Index(tfs).intersection(adata.var_names)
    if present.empty:
        raise ScLongInputError(
            f"None of the {len(tfs)} TFs is among adata.var_names (e.g. {list(tfs)[:3]}); name "
            "them as the genes are named (symbols vs Ensembl ids)."
        )
    edges = grn_edges(adata, key=key, tfs=list(present))
    edges = edges[edges["target"] != edges["source"]]
    edges = edges.groupby("source", sort=False).head(int(n_targets))
    return edges[["source", "target", "weight"]].reset_index(drop=True)


def tf_activities(
    adata: ad.AnnData,
    net: pd.DataFrame | None = None,
    *,
    tfs: list[str] | pd.Index | None = None,
    key: str = "sclong_grn",
    n_targets: int = 50,
    method: Method = "ulm",
    layer: str | None = "sclong",
    tmin: int = 5,
    key_added: str = "sclong_tf",
    copy: bool = False,
) -> ad.AnnData | None:
    """TF activities per cell with decoupler (``ulm`` or ``mlm``), from a scLong GRN or a prior.

    With ``net=None`` the network is the scLong GRN in ``adata.varp[key]`` restricted to ``tfs``
    (each TF's ``n_targets`` strongest targets, :func:`tf_network`); pass ``net`` (``source``,
    ``target``, ``weight``; e.g. TRRUST or CollecTRI) to score a prior network the same way and
    compare. decoupler (the ``decoupler`` extra) fits, per cell, a linear model of the values on
    each TF's target weights.

    Reads ``adata.layers[layer]`` (or ``adata.X`` when ``layer`` is ``None``), ``adata.var_names``
    and, without ``net``, ``adata.varp[key]``; writes ``adata.obsm[f"{key_added}_{method}"]``,
    ``adata.obsm[f"{key_added}_{method}_padj"]`` and ``adata.uns[key_added]``.

    Parameters
    ----------
    adata
        AnnData with normalised values (e.g. ``scl.pp.normalize``'s layer ``"sclong"``).
    net
        TF -> target network with ``source``, ``target`` and ``weight`` columns; ``None``: the
        scLong GRN of ``adata.varp[key]`` (needs ``tfs``).
    tfs
        Transcription factors to keep (needed without ``net``; optional filter with it).
    key
        ``adata.varp`` key of the scLong GRN (:func:`grn`).
    n_targets
        Targets kept per TF from the scLong GRN.
    method
        decoupler's ``"ulm"`` (univariate linear model, default) or ``"mlm"`` (multivariate).
    layer
        Layer of values to score; ``None``: ``adata.X``.
    tmin
        TFs with fewer targets among ``adata``'s genes are dropped (decoupler's ``tmin``).
    key_added
        Prefix of the ``obsm`` keys and the ``uns`` key.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.obsm[f"{key_added}_{method}"]``: cells x TFs activity scores (DataFrame);
    - ``adata.obsm[f"{key_added}_{method}_padj"]``: their adjusted p-values (DataFrame);
    - ``adata.uns[key_added]["params"]``: the parameters and the network's size.

    Raises
    ------
    ImportError
        decoupler is not installed (the message names the extra).
    ScLongInputError
        ``adata`` is a view; no TF named like ``adata.var_names``; ``layer`` absent; no TF with
        ``tmin`` targets.
    ValueError
        Unknown ``method``; ``net`` without the needed columns; no ``tfs`` without ``net``.
    """
    if method not in ("ulm", "mlm"):
        raise ScLongInputError(f"method must be 'ulm' or 'mlm', not {method!r}.")
    tmin = check_whole("tmin", tmin, minimum=0)
    if not copy:
        check_not_view(adata)
    if net is None:
        if tfs is None:
            raise ScLongInputError(
                "give tfs (e.g. the sources of TRRUST or CollecTRI): a scLong GRN scores every "
                "gene pair and does not say which genes are TFs."
            )
        network = tf_network(adata, tfs, key=key, n_targets=n_targets)
    else:
        missing = {"source", "target", "weight"} - set(net.columns)
        if missing:
            raise ScLongInputError(
                f"net needs columns 'source', 'target', 'weight'; missing {sorted(missing)}."
            )
        network = net[["source", "target", "weight"]]
        weights = pd.to_numeric(network["weight"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(weights).all():
            raise ScLongInputError(
                f"net's weight column holds {int((~np.isfinite(weights)).sum())} missing, "
                "non-numeric or infinite values; drop or fill those edges first."
            )
        if tfs is not None:
            network = network[network["source"].isin(pd.Index(tfs))]
        network = network.drop_duplicates(["source", "target"])
    if layer is not None and layer not in adata.layers:
        raise ScLongInputError(
            f"adata.layers[{layer!r}] not found; run scl.pp.normalize(adata) or pass layer=None "
            "to score adata.X."
        )
    values = adata.X if layer is None else adata.layers[layer]
    if network.empty:
        raise ScLongInputError("the TF network has no edges; give a net with edges.")
    counts = network["target"].isin(adata.var_names).groupby(network["source"]).sum()
    if not (counts >= tmin).any():
        raise ScLongInputError(
            f"No TF has {tmin} targets among adata's genes (most: {int(counts.max())}); lower "
            "tmin or use more genes."
        )
    dc = import_optional(
        "decoupler",
        message="scl.tl.tf_activities needs decoupler: pip install 'sclong-scverse[decoupler]' "
        "(or pip install decoupler).",
    )
    scratch = ad.AnnData(X=values, obs=pd.DataFrame(index=adata.obs_names.copy()))
    scratch.var_names = adata.var_names.copy()
    getattr(dc.mt, method)(scratch, network, tmin=tmin)
    scores = scratch.obsm[f"score_{method}"]
    if not np.isfinite(np.asarray(scores, dtype=float)).all():
        raise ScLongInputError("decoupler returned non-finite activities; check the values.")
    params = {
        "method": method,
        "network": "scLong GRN" if net is None else "given",
        "layer": "X" if layer is None else layer,
        "tmin": int(tmin),
        "n_tfs": int(scores.shape[1]),
        "n_edges": int(len(network)),
    }
    if net is None:
        params.update(key=key, n_targets=int(n_targets))
    target = adata.copy() if copy else adata
    target.obsm[f"{key_added}_{method}"] = scores
    target.obsm[f"{key_added}_{method}_padj"] = scratch.obsm[f"padj_{method}"]
    target.uns[key_added] = {"params": params}
    return target if copy else None
