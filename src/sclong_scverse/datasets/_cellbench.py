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


#: Where :func:`cellbench` downloads its files: the authors' repository, pinned to a commit.
CELLBENCH_URL = (
    "https://raw.githubusercontent.com/LuyiTian/sc_mixology/"
    "19667e111aac52abbfcaa6fff07da2fd05984709/data/csv"
)
#: sha256 of each CellBench file (counts and metadata of every batch), as published.
CELLBENCH_SHA256 = {
    "sc_celseq2.count.csv.gz": "a82aa89b8995aed412f4260c0adb343967e33a801af6f2e0aa647c1d897a5a21",
    "sc_celseq2.metadata.csv.gz": (
        "78429916bac394d92d8c972059a8f195c5479ce578da04f1eb3ba599585ef3d9"
    ),
    "sc_dropseq.count.csv.gz": "98c0bb6a9fbf4b93967ef82cef9985d7691cf59a31dc5b0b3699f70ed1a0fd08",
    "sc_dropseq.metadata.csv.gz": (
        "4c48f3e13778e89192d9861095bc102cc0deb9eba1a7f47a093f5a058ce1aa6a"
    ),
    "sc_celseq2_5cl_p1.count.csv.gz": (
        "577324d2fd427685144420536489202c68ae98cb22f5825c40c8cf41c5fe0a07"
    ),
    "sc_celseq2_5cl_p1.metadata.csv.gz": (
        "a6f5b206f891113162d2c9af27860c187a04ccd8848f9bc29be97dfa95eeadc4"
    ),
    "sc_celseq2_5cl_p2.count.csv.gz": (
        "c6ef3df82d9fa44598ee15d8a07113c44a830ee3d2e3205c93590d594240bab5"
    ),
    "sc_celseq2_5cl_p2.metadata.csv.gz": (
        "06d2f3b9fd646b4a3c1e6d1af7205c7eec1017bfab9a4c68853f9a3fc97be836"
    ),
    "sc_celseq2_5cl_p3.count.csv.gz": (
        "e535abac653a5a3ee44eff88345db2315693732f679156ab20ee924b21bced9a"
    ),
    "sc_celseq2_5cl_p3.metadata.csv.gz": (
        "c373869c9d3bbca9dc7773a8b8ef65e6035c939d45b18cb410fede526770eadb"
    ),
}


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
    download: bool = True,
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
    download
        Where no local copy is found (no ``data_dir``, no ``SCLONG_SHARED_DATA`` /
        ``SCLONG_SHARED``, not in a source checkout: a ``pip install``), download the
        batches' files (about 12 MB in all) from the authors' repository, pinned to a commit,
        into ``datasets.data_cache_dir()/cellbench`` once, each verified by its sha256
        (:data:`CELLBENCH_SHA256`).

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR float32), ``obs["batch"]``, ``obs["cell_line"]``
    (demuxlet call), ``obs["n_counts_original"]`` and the source in ``uns["dataset"]``.
    Source: GitHub LuyiTian/sc_mixology, MIT licence.
    """
    unknown = sorted(set(batches) - set(CELLBENCH_BATCHES))
    if unknown:
        raise ValueError(f"Unknown CellBench batches {unknown}; choose from {CELLBENCH_BATCHES}.")
    folder = shared_data_dir(data_dir) / "scrna" / "cellbench"
    chosen = data_dir is not None or "SCLONG_SHARED_DATA" in os.environ
    chosen = chosen or "SCLONG_SHARED" in os.environ
    if not folder.is_dir() and download and not chosen:
        from ._download import data_cache_dir, fetch_files

        files = {
            name: CELLBENCH_SHA256[name]
            for batch in batches
            for name in (f"{batch}.count.csv.gz", f"{batch}.metadata.csv.gz")
        }
        folder = fetch_files(CELLBENCH_URL, files, data_cache_dir() / "cellbench")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CellBench files not found in {folder}. Set SCLONG_SHARED_DATA to the shared data "
            "folder (with scrna/cellbench/ inside), or call cellbench() without data_dir to "
            "download them."
        )
    parts = [_read_batch(folder, batch) for batch in batches]
    adata = ad.concat(parts, join="outer", fill_value=0)
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    adata.obs["batch"] = pd.Categorical(adata.obs["batch"], categories=list(batches))
    adata.obs["cell_line"] = adata.obs["cell_line"].astype("category")
    adata.uns["dataset"] = {"name": "CellBench", "source": "LuyiTian/sc_mixology", "licence": "MIT"}
    return adata
