"""Score cell embeddings for batch integration with scib-metrics, next to standard baselines."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from .._optional import import_optional
from ..errors import ScLongKeyError
from ..validation import (
    LOG_MAX_THRESHOLD,
    ScLongInputError,
    check_not_view,
    summarize_values,
)

Baseline = Literal["pca", "hvg_pca", "scvi"]

#: obsm key each baseline is written to (and read from when already present).
BASELINE_KEYS: dict[str, str] = {
    "pca": "X_pca_unintegrated",
    "hvg_pca": "X_pca_hvg",
    "scvi": "X_scVI",
}

#: Column of the silhouette batch score (the "batch ASW" of the scLong article and of scIB).
BATCH_ASW = "Batch ASW"
#: Metric type of scores reported next to, but not counted in, scib-metrics' aggregates.
NOT_AGGREGATED = "Not aggregated"
AGGREGATE = "Aggregate score"
#: The aggregate columns, in the order the table ends with: bio conservation (do cell types
#: survive?), batch correction, and their 0.6 / 0.4 total.
AGGREGATES = ("Bio conservation", "Batch correction", "Total")


def sklearn_neighbors(X: np.ndarray, k: int) -> Any:
    """Exact ``k`` nearest neighbours with scikit-learn, in scib-metrics' result type.

    scib-metrics defaults to pynndescent, whose first call in a process spends about a minute
    compiling; exact search is faster than that for up to some ten thousand cells.

    Parameters
    ----------
    X
        ``(n_cells, dim)`` embedding.
    k
        Number of neighbours (the cell itself included, as with pynndescent).

    Returns
    -------
    :class:`scib_metrics.nearest_neighbors.NeighborsResults`.
    """
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    k = min(int(k), X.shape[0])
    search = NearestNeighbors(n_neighbors=k, n_jobs=-1).fit(X)
    distances, indices = search.kneighbors(X)
    return NeighborsResults(indices=indices, distances=distances)


def _counts(adata: ad.AnnData, layer: str | None) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise ScLongKeyError(
            f"adata.layers[{layer!r}] not found (available: {list(adata.layers)}); pass the "
            "layer that holds raw counts as layer=..."
        )
    return adata.layers[layer]


def _check_baseline_counts(X: Any, where: str, allow_non_integer: bool) -> None:
    """Raw counts for the baselines, with messages naming benchmark_integration's arguments."""
    s = summarize_values(X)
    own = (
        "The baselines (PCA, HVG PCA, scVI) are computed from raw counts: pass layer=... with "
        "the layer that holds them, or give the baselines' embeddings yourself in "
        "adata.obsm['X_pca_unintegrated'] (and 'X_pca_hvg' / 'X_scVI' for those baselines)."
    )
    if s.n_nan or s.n_inf:
        raise ScLongInputError(
            f"{where} contains {s.n_nan} NaN and {s.n_inf} infinite values. {own}"
        )
    if s.n_negative:
        raise ScLongInputError(
            f"{where} contains {s.n_negative} negative values (minimum {s.min:.4g}): it looks "
            f"scaled or centred (e.g. sc.pp.scale output), not raw counts. {own}"
        )
    if s.n_non_integer == 0:
        return
    fraction = s.n_non_integer / max(1, s.n_values)
    if s.max < LOG_MAX_THRESHOLD:
        message = (
            f"{where} looks log-normalised already: {fraction:.0%} of its stored values are not "
            f"integers and its maximum is {s.max:.4g}. {own} If counts are lost and this is "
            "sc.pp.normalize_total + sc.pp.log1p output, np.expm1 of it with "
            "allow_non_integer=True gives the same baselines."
        )
        if not allow_non_integer:
            raise ScLongInputError(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        return
    if not allow_non_integer:
        raise ScLongInputError(
            f"{where} contains {s.n_non_integer} non-integer values ({fraction:.0%} of its "
            f"stored values, maximum {s.max:.4g}), not raw counts. If these are corrected "
            "counts (e.g. ambient-RNA removal by SoupX/CellBender), pass "
            f"allow_non_integer=True. {own}"
        )


def _log_normalized(adata: ad.AnnData, counts: Any) -> ad.AnnData:
    """New AnnData: ``normalize_total(1e4)`` + ``log1p`` of ``counts`` (``adata`` untouched)."""
    import scanpy as sc

    work = ad.AnnData(X=counts.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    work.X = work.X.astype(np.float32)
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    return work


def _pca(work: ad.AnnData, n_comps: int, random_state: int) -> np.ndarray:
    import scanpy as sc

    n_comps = min(n_comps, min(work.shape) - 1)
    return sc.pp.pca(work, n_comps=n_comps, random_state=random_state, copy=True).obsm["X_pca"]


def _hvg_mask(work: ad.AnnData, n_top_genes: int, batch_key: str, batches: pd.Series) -> np.ndarray:
    import scanpy as sc

    if n_top_genes >= work.n_vars:
        return np.ones(work.n_vars, dtype=bool)

    probe = ad.AnnData(
        X=work.X, obs=pd.DataFrame({batch_key: batches.to_numpy()}, index=work.obs_names)
    )
    probe.var_names = work.var_names
    table = sc.pp.highly_variable_genes(
        probe,
        n_top_genes=n_top_genes,
        batch_key=batch_key,
        flavor="seurat",
        inplace=False,
    )
    return np.asarray(table["highly_variable"], dtype=bool)


def _check_hvg_baseline(
    baselines: list[str], n_top_genes: int, n_genes: int
) -> tuple[list[str], str | None]:
    """Leave out HVG PCA, with a warning, when HVG selection keeps every gene (it is PCA)."""
    if "hvg_pca" not in baselines:
        return baselines, None
    if n_top_genes >= n_genes:
        message = (
            f"n_top_genes={n_top_genes} >= the {n_genes} genes of adata: HVG selection keeps "
            "every gene, so HVG PCA would be PCA under another name. It is left out of the "
            f"table; pass n_top_genes below {n_genes} (e.g. {max(2, n_genes // 2)}) to score it."
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        return [b for b in baselines if b != "hvg_pca"], message
    return baselines, None


def _scvi_latent(
    adata: ad.AnnData,
    counts: Any,
    genes: np.ndarray,
    batch_key: str,
    scvi_kwargs: Mapping[str, Any] | None,
    random_state: int,
) -> np.ndarray:
    import scvi

    scvi.settings.seed = random_state
    kwargs = dict(scvi_kwargs or {})
    model_kwargs = {k: kwargs.pop(k) for k in ("n_latent", "n_layers", "n_hidden") if k in kwargs}
    model_kwargs.setdefault("n_latent", 10)
    counts = counts[:, genes]
    work = ad.AnnData(
        X=counts.copy(),
        obs=pd.DataFrame(
            {"batch": adata.obs[batch_key].astype(str).to_numpy()}, index=adata.obs_names
        ),
    )
    scvi.model.SCVI.setup_anndata(work, batch_key="batch")
    model = scvi.model.SCVI(work, **model_kwargs)
    kwargs.setdefault("enable_progress_bar", True)
    model.train(**kwargs)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def _default_embeddings(adata: ad.AnnData) -> list[str]:
    keys = [k for k in adata.obsm if str(k).startswith("X_sclong")]
    if not keys:
        raise ScLongKeyError(
            "no scLong embedding in adata.obsm (keys starting with 'X_sclong'; found "
            f"{list(adata.obsm)}); run scl.tl.embed(adata, model) first or pass embeddings=[...]"
        )
    return keys


def _check_labels(adata: ad.AnnData, key: str, what: str) -> pd.Series:
    if key not in adata.obs:
        raise ScLongKeyError(
            f"adata.obs[{key!r}] ({what}) not found; columns: {list(adata.obs.columns)}"
        )
    values = adata.obs[key]
    if values.isna().any():
        raise ScLongInputError(
            f"adata.obs[{key!r}] ({what}) has {int(values.isna().sum())} missing values; "
            "subset to labelled cells first (adata = adata[adata.obs[key].notna()].copy())"
        )
    if values.nunique() < 2:
        raise ScLongInputError(
            f"adata.obs[{key!r}] ({what}) has a single value; the benchmark needs at least two"
        )
    return values


def benchmark_integration(
    adata: ad.AnnData,
    embeddings: Sequence[str] | None = None,
    *,
    batch_key: str,
    label_key: str,
    baselines: Sequence[Baseline] = ("pca", "hvg_pca"),
    layer: str | None = None,
    allow_non_integer: bool = False,
    counts_layer: str | None = None,
    n_comps: int = 50,
    n_top_genes: int = 2000,
    scvi_kwargs: Mapping[str, Any] | None = None,
    kbet: bool = False,
    batch_asw: bool = True,
    neighbors: Literal["sklearn", "pynndescent"] = "sklearn",
    recompute_baselines: bool = False,
    key_added: str = "sclong_integration",
    random_state: int = 0,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Score cell embeddings for batch integration with scib-metrics, with baselines.

    Every embedding is scored by scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker`:
    bio conservation (isolated labels, KMeans NMI/ARI, silhouette label, cLISI) and batch
    correction (BRAS, iLISI, graph connectivity, PCR comparison; kBET on request), with its
    aggregate scores, which end the table side by side: ``"Bio conservation"`` (do the cell
    types survive?), ``"Batch correction"`` and ``"Total"`` (``0.6 bio + 0.4 batch``). Read
    the first two, not only the total: an embedding that mixes batches by losing the cell
    types can have the better total (on CellBench a tiny scLong scored a total of 0.53 against
    0.51 for PCA, with bio conservation 0.36 against 0.63). The silhouette
    batch score of scIB (the "batch ASW" the scLong article reports, 1 = batches fully mixed
    within each label) is added as a column that does not enter the aggregates, since BRAS
    replaces it there.

    Baselines the benchmark needs are computed on request from raw counts, on copies
    (``adata.X`` is never changed) and written to ``adata.obsm``:

    - ``"pca"`` -> ``obsm["X_pca_unintegrated"]``: PCA of the log-normalised expression of all
      genes (``normalize_total(1e4)`` + ``log1p``); always computed (it is the pre-integration
      reference of the PCR comparison);
    - ``"hvg_pca"`` -> ``obsm["X_pca_hvg"]``: the same on the ``n_top_genes`` most variable genes
      (scanpy's ``seurat`` flavour, per batch). When ``n_top_genes`` is at least the number of
      genes, HVG selection keeps them all and this would be PCA again: it is **left out with a
      warning** that gives the numbers;
    - ``"scvi"`` -> ``obsm["X_scVI"]``: scVI (scvi-tools) trained on the counts of those genes with
      the batch as covariate: an *integrating* baseline, unlike scLong zero-shot embeddings.

    Parameters
    ----------
    adata
        Cells x genes AnnData. Reads the embeddings ``adata.obsm[key]``,
        ``adata.obs[batch_key]``, ``adata.obs[label_key]`` and, for the baselines, raw counts in
        ``adata.X`` or ``adata.layers[layer]``.
    embeddings
        ``adata.obsm`` keys to score; default: every key starting with ``"X_sclong"``.
    batch_key
        Batch column of ``adata.obs``.
    label_key
        Cell-type (label) column of ``adata.obs``.
    baselines
        Baselines to score next to the embeddings (see above); ``()`` for none but the PCR
        reference.
    layer
        Layer with raw counts (default ``adata.X``), as in :func:`~sclong_scverse.pp.normalize`.
    allow_non_integer
        Accept non-integer counts (e.g. ambient-RNA-corrected counts from SoupX or CellBender),
        as :func:`~sclong_scverse.pp.normalize` does; values that look log-normalised then only
        give a warning.
    counts_layer
        Former name of ``layer`` (kept for compatibility; give one of the two).
    n_comps
        Principal components of the PCA baselines.
    n_top_genes
        Highly variable genes of ``"hvg_pca"`` and ``"scvi"`` (all genes when there are fewer;
        see ``"hvg_pca"`` above).
    scvi_kwargs
        Keyword arguments of :class:`scvi.model.SCVI` (``n_latent``, default 10; ``n_layers``,
        ``n_hidden``) and of its ``train`` (e.g. ``max_epochs``).
    kbet
        Also compute kBET per label (slow; off by default as in most quick benchmarks).
    batch_asw
        Add the silhouette batch column (:data:`BATCH_ASW`).
    neighbors
        ``"sklearn"`` (exact search, no compilation) or ``"pynndescent"`` (scib-metrics' default,
        approximate; about a minute of compilation in a fresh process).
    recompute_baselines
        Recompute baselines whose ``obsm`` key already exists (default: reuse them).
    key_added
        ``adata.uns`` key of the results.
    random_state
        Seed of the PCA baselines and of scVI.
    progress_bar
        Show scib-metrics' and scVI's progress bars.

    Returns
    -------
    Results table: one row per embedding (baselines included, named by their ``obsm`` key),
    one float column per metric, then the aggregates ``"Bio conservation"``,
    ``"Batch correction"`` and ``"Total"`` (:data:`AGGREGATES`). Also writes

    - ``adata.uns[key_added]["results"]``: the same table;
    - ``adata.uns[key_added]["metric_type"]``: metric -> ``"Bio conservation"``,
      ``"Batch correction"``, ``"Not aggregated"`` or ``"Aggregate score"``;
    - ``adata.uns[key_added]["params"]``: the parameters (``baselines``: those scored), the
      number of genes, ``hvg_note`` (the HVG warning given, else ``""``) and the seconds spent;
    - ``adata.obsm`` keys of the computed baselines (see above).

    Raises
    ------
    ImportError
        scib-metrics is not installed (``pip install 'sclong-scverse[scib]'``).
    KeyError
        A missing ``obsm``, ``obs`` or layer key.
    ScLongInputError
        Missing labels or batches, an AnnData view, or baselines asked from data that are not
        raw counts.

    Warns
    -----
    UserWarning
        HVG PCA left out because ``n_top_genes`` keeps every gene (the message gives both
        numbers).

    Examples
    --------
    >>> import sclong_scverse as scl
    >>> scl.tl.embed(adata, model)  # doctest: +SKIP
    >>> table = scl.tl.benchmark_integration(
    ...     adata, batch_key="batch", label_key="cell_type", baselines=["pca", "scvi"]
    ... )  # doctest: +SKIP
    >>> scl.pl.benchmark(adata)  # doctest: +SKIP
    """
    scib_metrics = import_optional(
        "scib_metrics",
        "scib_metrics.benchmark",
        message="scl.tl.benchmark_integration needs scib-metrics, an optional dependency: "
        "pip install 'sclong-scverse[scib]' (or pip install scib-metrics).",
    )
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    check_not_view(adata)
    if counts_layer is not None and layer is not None and counts_layer != layer:
        raise ScLongInputError(
            f"layer={layer!r} and counts_layer={counts_layer!r} name different layers; "
            "give layer= only (counts_layer is its former name)"
        )
    layer = layer if layer is not None else counts_layer
    started = time.perf_counter()
    batches = _check_labels(adata, batch_key, "batch")
    labels = _check_labels(adata, label_key, "labels")
    unknown = sorted(set(baselines) - set(BASELINE_KEYS))
    if unknown:
        raise ScLongInputError(f"unknown baselines {unknown}; choose from {sorted(BASELINE_KEYS)}")
    keys = list(embeddings) if embeddings is not None else _default_embeddings(adata)
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise ScLongKeyError(f"adata.obsm has no {missing} (available: {list(adata.obsm)})")
    for key in keys:
        values = np.asarray(adata.obsm[key])
        if values.shape[0] != adata.n_obs or values.ndim != 2:
            raise ScLongInputError(
                f"adata.obsm[{key!r}] must be (n_cells, dim), not {values.shape}"
            )
        if not np.isfinite(values).all():
            raise ScLongInputError(f"adata.obsm[{key!r}] contains NaN or infinite values")

    baselines = list(dict.fromkeys(baselines))
    needed = ["pca", *[b for b in baselines if b != "pca"]]
    to_compute = [b for b in needed if recompute_baselines or BASELINE_KEYS[b] not in adata.obsm]
    hvg_note = None
    if "hvg_pca" in to_compute:  # a given X_pca_hvg is the user's: scored as it is
        baselines, hvg_note = _check_hvg_baseline(baselines, n_top_genes, adata.n_vars)
        to_compute = [b for b in to_compute if b in baselines or b == "pca"]
    if to_compute:
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        counts = _counts(adata, layer)
        _check_baseline_counts(counts, where, allow_non_integer)
        work = _log_normalized(adata, counts)
        hvg = None
        if {"hvg_pca", "scvi"} & set(to_compute):
            hvg = _hvg_mask(work, n_top_genes, batch_key, batches)
        for baseline in to_compute:
            if baseline == "pca":
                latent = _pca(work, n_comps, random_state)
            elif baseline == "hvg_pca":
                latent = _pca(work[:, hvg].copy(), n_comps, random_state)
            else:
                latent = _scvi_latent(
                    adata, counts, np.flatnonzero(hvg), batch_key, scvi_kwargs, random_state
                )
            adata.obsm[BASELINE_KEYS[baseline]] = np.asarray(latent, dtype=np.float32)
    scored = keys + [BASELINE_KEYS[b] for b in baselines if BASELINE_KEYS[b] not in keys]

    view = ad.AnnData(
        obs=pd.DataFrame(
            {"batch": batches.astype(str).to_numpy(), "label": labels.astype(str).to_numpy()},
            index=adata.obs_names,
        ),
        obsm={
            k: np.asarray(adata.obsm[k], dtype=np.float32) for k in {*scored, "X_pca_unintegrated"}
        },
    )
    bio = BioConservation()
    batch = BatchCorrection(kbet_per_label=kbet)
    benchmarker = Benchmarker(
        view,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=scored,
        bio_conservation_metrics=bio,
        batch_correction_metrics=batch,
        pre_integrated_embedding_obsm_key="X_pca_unintegrated",
        progress_bar=progress_bar,
    )
    benchmarker.prepare(neighbor_computer=sklearn_neighbors if neighbors == "sklearn" else None)
    benchmarker.benchmark()
    raw = benchmarker.get_results(min_max_scale=False)
    metric_type = raw.loc["Metric Type"].astype(str).to_dict()
    table = raw.drop(index="Metric Type").astype(np.float64)
    table.index = pd.Index([str(i) for i in table.index], name="Embedding")

    if batch_asw:
        table[BATCH_ASW] = [
            float(
                scib_metrics.silhouette_batch(
                    view.obsm[key], view.obs["label"].to_numpy(), view.obs["batch"].to_numpy()
                )
            )
            for key in table.index
        ]
        metric_type[BATCH_ASW] = NOT_AGGREGATED
    order = [c for c in table.columns if metric_type[c] != AGGREGATE]
    aggregates = [c for c in table.columns if metric_type[c] == AGGREGATE]
    order += [c for c in AGGREGATES if c in aggregates]
    order += [c for c in aggregates if c not in AGGREGATES]
    table = table[order]
    table.columns = pd.Index([str(c) for c in table.columns])

    adata.uns[key_added] = {
        "results": table.copy(),
        "metric_type": {str(k): metric_type[k] for k in order},
        "params": {
            "embeddings": list(keys),
            "baselines": list(baselines),
            "batch_key": batch_key,
            "label_key": label_key,
            "layer": layer if layer is not None else "X",
            "allow_non_integer": allow_non_integer,
            "n_comps": n_comps,
            "n_top_genes": n_top_genes,
            "n_genes": int(adata.n_vars),
            "hvg_note": hvg_note or "",
            "kbet": kbet,
            "neighbors": neighbors,
            "random_state": random_state,
            "seconds": time.perf_counter() - started,
        },
    }
    return table
