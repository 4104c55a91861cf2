"""scanpy's bundled ``pbmc68k_reduced`` with its integer counts recovered."""

from __future__ import annotations

import anndata as ad
import numpy as np
from scipy import sparse


def pbmc68k_counts(max_cells: int | None = None, seed: int = 0) -> ad.AnnData:
    """Scanpy's bundled ``pbmc68k_reduced`` with integer counts for its 765 genes.

    ``raw.X`` holds ``log1p`` of counts normalised to 1e4 per cell; with the stored totals
    (``obs["n_counts"]``) the counts are ``round(expm1(raw.X) * n_counts / 1e4)``.

    Parameters
    ----------
    max_cells
        Keep a random subset of this many cells (default: all 700).
    seed
        Seed of the subset.

    Returns
    -------
    AnnData ``(cells, 765)`` with integer counts (float32, CSR) in ``X`` and
    ``layers["counts"]``, the original ``obs`` (``bulk_labels``, ``louvain``, ...) and ``var``.
    """
    import scanpy as sc

    reference = sc.datasets.pbmc68k_reduced()
    logged = reference.raw.X
    logged = logged.toarray() if sparse.issparse(logged) else np.asarray(logged)
    scaled = np.expm1(logged.astype(np.float64))
    scaled *= reference.obs["n_counts"].to_numpy()[:, None] / 1e4
    counts = np.round(scaled)
    deviation = float(np.abs(scaled - counts).max())
    if deviation > 0.25:
        raise RuntimeError(f"pbmc68k_reduced counts are not recoverable (deviation {deviation}).")
    counts = sparse.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(counts, obs=reference.obs.copy(), var=reference.raw.var.copy())
    adata.layers["counts"] = counts.copy()
    adata.uns["bulk_labels_colors"] = list(reference.uns.get("bulk_labels_colors", []))
    if max_cells is not None and max_cells < adata.n_obs:
        keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[keep].copy()
    return adata
