"""scl.pl: plots write non-empty PNGs (no model needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from sclong_scverse import pl
from sclong_scverse.tl import cosine_similarity_graph


@pytest.fixture
def adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    n_cells, n_genes = 60, 25
    result = ad.AnnData(
        rng.poisson(1.0, (n_cells, n_genes)).astype(np.float32),
        obs=pd.DataFrame(
            {"group": pd.Categorical(rng.choice(["a", "b", "c"], n_cells))},
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)]),
    )
    result.obsm["X_sclong"] = rng.normal(size=(n_cells, 8)).astype(np.float32)
    result.varp["sclong_grn"] = cosine_similarity_graph(rng.normal(size=(n_genes, 6)), top_k=5)
    return result


def _png(path) -> None:
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_history(tmp_path):
    history = {
        "masked_mse_train": pd.DataFrame({"masked_mse_train": [3.0, 2.0, 1.5]}),
        "masked_mse_validation": pd.DataFrame({"masked_mse_validation": [2.5, 1.9, 1.7]}),
    }
    ax = pl.training_history(history, show=False, save=tmp_path / "h.png")
    assert len(ax.get_lines()) == 2
    _png(tmp_path / "h.png")
    plt.close("all")
    only_loss = {"train_loss": pd.DataFrame({"train_loss": [1.0, 0.5]})}
    assert len(pl.training_history(only_loss, show=False).get_lines()) == 1
    plt.close("all")
    with pytest.raises(ValueError, match="No training curve"):
        pl.training_history({"lr": pd.DataFrame({"lr": [1.0]})}, show=False)


@pytest.mark.parametrize("kind", ["heatmap", "network"])
def test_grn(adata, tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    ax = pl.grn(adata, n_top=10, kind=kind, show=False, save=path)
    assert ax is not None
    _png(path)
    plt.close("all")


def test_grn_selected_genes_and_errors(adata):
    ax = pl.grn(adata, genes=["GENE0", "GENE1", "GENE2", "GENE3", "NOPE"], show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["GENE0", "GENE1", "GENE2", "GENE3"]
    plt.close("all")
    with pytest.raises(KeyError, match="scl.tl.grn"):
        pl.grn(adata, key="missing", show=False)
    with pytest.raises(ValueError, match="kind"):
        pl.grn(adata, kind="pie", show=False)
    adata.varp["empty"] = sparse.csr_matrix((adata.n_vars, adata.n_vars))
    with pytest.raises(ValueError, match="no edges"):
        pl.grn(adata, key="empty", show=False)


def test_embedding_computes_umap_once(adata, tmp_path):
    path = tmp_path / "umap.png"
    pl.embedding(adata, "group", show=False, save=path)
    _png(path)
    assert adata.obsm["X_sclong_umap"].shape == (adata.n_obs, 2)
    assert "X_sclong_neighbors" in adata.uns
    first = adata.obsm["X_sclong_umap"].copy()
    pl.embedding(adata, ["group", "GENE0"], show=False)
    np.testing.assert_array_equal(adata.obsm["X_sclong_umap"], first)
    plt.close("all")
    with pytest.raises(KeyError, match="scl.tl.embed"):
        pl.embedding(adata, "group", basis="X_missing", show=False)
