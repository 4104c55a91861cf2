from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
from scipy import io as sio
from scipy import sparse

from ._cellbench import shared_data_dir

#: Label of the non-targeting guides in ``grna_targets.csv`` (``obs["target"]``).
PAPALEXI_NON_TARGETING = "non-targeting"


def papalexi2021(
    data_dir: str | os.PathLike | None = None,
    min_umis: int = 5,
    min_fraction: float = 0.8,
    drop_unassigned: bool = True,
) -> ad.AnnData:
    """THP-1 ECCITE-seq CRISPR knock-out screen (Papalexi et al. 2021), response UMI counts.

    Low-MOI screen of 26 targets (3-4 gRNAs each) and 9 non-targeting gRNAs; 20,729 cells x 299
    response genes (sceptre's ``lowmoi_example_data``). Each cell is assigned the gRNA with the
    most UMIs when it has at least ``min_umis`` UMIs and at least ``min_fraction`` of the cell's
    gRNA UMIs (a maximum-assignment rule as in sceptre's low-MOI analyses). Several target genes
    (e.g. ``ATF2``, ``BRD4``) are not among the measured response genes.

    Parameters
    ----------
    data_dir
        The shared data folder (``perturb/papalexi2021/`` inside it); see
        :func:`~sclong_scverse.datasets.shared_data_dir`.
    min_umis
        Fewest UMIs of the top gRNA for an assignment.
    min_fraction
        Smallest share of the cell's gRNA UMIs that the top gRNA must hold.
    drop_unassigned
        Drop the cells without an assignment (otherwise they are kept with
        ``obs["assigned"] == False`` and ``obs["perturbation"] == "unassigned"``).

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR float32), gene symbols as ``var_names``, and ``obs``:

    - ``grna``: the assigned gRNA (the top gRNA); ``grna_umis``, ``grna_fraction``: its UMIs
      and their share of the cell's gRNA UMIs; ``n_grnas``: gRNAs with at least ``min_umis``;
    - ``target``: the gRNA's target gene, or ``"non-targeting"``;
    - ``perturbation``: pertpy / scPerturb convention, the target gene or ``"control"``;
    - ``assigned``: the assignment passed both thresholds;
    - ``replicate``: the biological replicate (``bio_rep``).

    ``obsm["grna_counts"]`` holds the cells x gRNAs UMI counts (CSR; gRNA names in
    ``uns["grna_names"]``), ``uns["grna_targets"]`` the gRNA -> target table and
    ``uns["dataset"]`` the source. Source: GitHub Katsevich-Lab/sceptredata, MIT licence.

    Raises
    ------
    FileNotFoundError
        The folder or one of its files is missing.
    """
    folder = shared_data_dir(data_dir) / "perturb" / "papalexi2021"
    names = (
        "response_counts_genes_x_cells.mtx.gz",
        "grna_counts_grnas_x_cells.mtx.gz",
        "genes.txt",
        "grnas.txt",
        "grna_targets.csv",
        "cell_covariates.csv",
    )
    missing = [name for name in names if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"Papalexi 2021 files {missing} not found in {folder}. Set SCLONG_SHARED_DATA to the "
            "shared data folder (with perturb/papalexi2021/ inside)."
        )
    if min_umis < 1 or not 0.0 < min_fraction <= 1.0:
        raise ValueError(
            f"min_umis must be >= 1 and min_fraction in (0, 1]; got {min_umis}, {min_fraction}."
        )
    counts = sparse.csr_matrix(sio.mmread(folder / names[0]).T, dtype=np.float32)
    grna = sparse.csr_matrix(sio.mmread(folder / names[1]).T, dtype=np.float32)
    genes = (folder / "genes.txt").read_text().split()
    grnas = (folder / "grnas.txt").read_text().split()
    targets = pd.read_csv(folder / "grna_targets.csv", dtype=str)
    covariates = pd.read_csv(folder / "cell_covariates.csv", index_col=0)
    if counts.shape != (len(covariates), len(genes)) or grna.shape != (len(covariates), len(grnas)):
        raise ValueError(
            f"{folder}: the matrices ({counts.shape}, {grna.shape}) do not fit the name lists "
            f"({len(covariates)} cells, {len(genes)} genes, {len(grnas)} gRNAs)."
        )
    target_of = dict(zip(targets["grna_id"], targets["grna_target"], strict=True))

    top = np.asarray(grna.argmax(axis=1)).ravel()
    top_umis = np.asarray(grna.max(axis=1).todense()).ravel()
    total = np.asarray(grna.sum(axis=1)).ravel()
    fraction = np.divide(top_umis, total, out=np.zeros_like(top_umis), where=total > 0)
    assigned = (top_umis >= min_umis) & (fraction >= min_fraction)
    top_grna = np.asarray(grnas, dtype=object)[top]
    target = np.array([target_of.get(g, "unknown") for g in top_grna], dtype=object)
    perturbation = np.where(target == PAPALEXI_NON_TARGETING, "control", target)
    perturbation = np.where(assigned, perturbation, "unassigned")
    obs = pd.DataFrame(
        {
            "grna": top_grna,
            "grna_umis": top_umis.astype(np.int64),
            "grna_fraction": fraction.astype(np.float32),
            "n_grnas": np.asarray((grna >= min_umis).sum(axis=1)).ravel().astype(np.int64),
            "target": target,
            "perturbation": perturbation,
            "assigned": assigned,
            "replicate": covariates["bio_rep"].astype(str).to_numpy(),
        },
        index=[f"cell{int(i)}" for i in covariates.index],
    )
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.obsm["grna_counts"] = grna
    adata.uns["grna_names"] = np.asarray(grnas, dtype=object)
    adata.uns["grna_targets"] = {
        "grna_id": targets["grna_id"].to_numpy(dtype=object),
        "grna_target": targets["grna_target"].to_numpy(dtype=object),
    }
    adata.uns["dataset"] = {
        "name": "Papalexi 2021 (THP-1 ECCITE-seq)",
        "source": "Katsevich-Lab/sceptredata (lowmoi_example_data)",
        "licence": "MIT",
        "assignment": {"min_umis": int(min_umis), "min_fraction": float(min_fraction)},
    }
    if drop_unassigned:
        adata = adata[assigned].copy()
    for column in ("grna", "target", "perturbation", "replicate"):
        adata.obs[column] = adata.obs[column].astype("category")
    return adata
