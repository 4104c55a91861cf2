from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

#: Names of the five CellBench batches read by :func:`~sclong_scverse.datasets.cellbench`
#: (the categories of ``adata.obs['batch']``).
CELLBENCH_BATCHES = (
    "sc_celseq2",
    "sc_dropseq",
    "sc_celseq2_5cl_p1",
    "sc_celseq2_5cl_p2",
    "sc_celseq2_5cl_p3",
)


def shared_data_dir(path: str | os.PathLike | None = None) -> Path:
    """Folder of the project's shared real data.

    Parameters
    ----------
    path
        Explicit folder; otherwise the environment variable ``SCLONG_SHARED_DATA``, otherwise
        ``$SCLONG_SHARED/data``, otherwise ``../shared/data`` beside the source checkout, and
        where that is absent, the checkout's ``tests/data``: small real subsets of the same
        files (CellBench: all cells, the genes the tests and tutorials use; see its
        ``PROVENANCE.md``).

    Returns
    -------
    The folder (it may not exist; loaders raise a clear error then).
    """
    if path is not None:
        return Path(path)
    if "SCLONG_SHARED_DATA" in os.environ:
        return Path(os.environ["SCLONG_SHARED_DATA"])
    if "SCLONG_SHARED" in os.environ:
        return Path(os.environ["SCLONG_SHARED"]) / "data"
    checkout = Path(__file__).resolve().parents[3]  # src/sclong_scverse/datasets/ -> checkout
    shared = checkout.parent / "shared" / "data"
    subsets = checkout / "tests" / "data"
    if not shared.is_dir() and (subsets / "scrna").is_dir():
        return subsets
    return shared


def _read_batch(folder: Path, batch: str) -> ad.AnnData:
    counts = pd.read_csv(folder / f"{batch}.count.csv.gz", index_col=0)
    meta = pd.read_csv(folder / f"{batch}.metadata.csv.gz", index_col=0)
    meta = meta.reindex(counts.columns)
    line = meta["cell_line_demuxlet"] if "cell_line_demuxlet" in meta else meta["cell_line"]
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical([batch] * counts.shape[1]),
            "cell_line": line.astype(str).to_numpy(),
            "n_counts_original": meta["total_count_per_cell"].to_numpy(),
        },
        index=[f"{batch}:{cell}" for cell in counts.columns],
    )
    matrix = sparse.csr_matrix(counts.to_numpy(dtype=np.float32).T)
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=counts.index.astype(str)))


def cellbench(
    data_dir: str | os.PathLike | None = None,
    batches: tuple[str, ...] = CELLBENCH_BATCHES,
) -> ad.AnnData:
    """CellBench lung-adenocarcinoma cell-line mixtures (Tian et al. 2019), raw UMI counts.

    Five batches from three protocols (CEL-seq2 3 lines, Drop-seq 3 lines, CEL-seq2 5 lines on
    three plates), about 1,400 cells, genes as Ensembl ids (union of the batches; a gene absent
    from a batch counts 0 there). The subset in a source checkout's ``tests/data`` (the default
    folder where the shared one is absent) has all cells but fewer genes: the 2,048 most
    detected ones and the parity release's 511 (with the Drop-seq batch in full), so results on
    those genes are the same as on the full files.

    Parameters
    ----------
    data_dir
        The shared data folder (``scrna/cellbench/`` inside it); see :func:`shared_data_dir`.
    batches
        Which batches to read.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR float32), ``obs["batch"]``, ``obs["cell_line"]``
    (demuxlet call), ``obs["n_counts_original"]`` and the source in ``uns["dataset"]``.
    Source: GitHub LuyiTian/sc_mixology, MIT licence.
    """
    folder = shared_data_dir(data_dir) / "scrna" / "cellbench"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CellBench files not found in {folder}. Set SCLONG_SHARED_DATA to the shared data "
            "folder (with scrna/cellbench/ inside)."
        )
    unknown = sorted(set(batches) - set(CELLBENCH_BATCHES))
    if unknown:
        raise ValueError(f"Unknown CellBench batches {unknown}; choose from {CELLBENCH_BATCHES}.")
    parts = [_read_batch(folder, batch) for batch in batches]
    adata = ad.concat(parts, join="outer", fill_value=0)
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    adata.obs["batch"] = pd.Categorical(adata.obs["batch"], categories=list(batches))
    adata.obs["cell_line"] = adata.obs["cell_line"].astype("category")
    adata.uns["dataset"] = {"name": "CellBench", "source": "LuyiTian/sc_mixology", "licence": "MIT"}
    return adata
