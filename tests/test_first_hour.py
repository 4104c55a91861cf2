"""What a new user meets in the first hour (issue 24): queries that barely match, stale UMAPs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import sclong_scverse as scl
from sclong_scverse.pp import ScLongInputError


@pytest.fixture(scope="module")
def pbmc():
    """A tiny untrained scLong on 120 real PBMCs (scanpy's pbmc68k_reduced, 765 genes)."""
    adata = scl.datasets.pbmc68k_counts(max_cells=120, seed=0)
    scl.pp.normalize(adata)
    scl.SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = scl.SCLONG(adata, config="tiny", gene_graph=False)
    return adata, model


def test_a_query_holding_few_of_the_models_genes_is_refused(pbmc):
    adata, model = pbmc
    detected = np.asarray((adata.layers["sclong"] > 0).sum(axis=0)).ravel()
    few = adata[:, np.sort(np.argsort(-detected)[:15])].copy()  # 2% of the 765 genes
    few = few[np.asarray(few.layers["sclong"].sum(axis=1)).ravel() > 0].copy()
    with pytest.raises(ScLongInputError, match=r"Only 15 of the model's 765 genes \(2%\)"):
        scl.tl.embed(few, model)
    assert "X_sclong" not in few.obsm  # nothing written
    with pytest.raises(ScLongInputError, match="at least 50%"):
        model.get_latent_representation(few)
    # lowered knowingly: embedded, the missing genes entering as 0 (with a warning)
    with pytest.warns(UserWarning, match="absent from this AnnData and enter as 0"):
        scl.tl.embed(few, model, min_coverage=0.0, pooling="max")
    assert few.obsm["X_sclong"].shape == (few.n_obs, model.module.config.dim)
    half = adata[:, : adata.n_vars // 2 + 1].copy()  # just above 50%: accepted
    scl.tl.embed(half, model, pooling="max")
    assert np.isfinite(half.obsm["X_sclong"]).all()


def test_a_umap_of_a_former_embedding_is_never_drawn(pbmc):
    import matplotlib

    matplotlib.use("Agg")
    adata, model = pbmc
    adata = adata.copy()
    scl.tl.embed(adata, model, pooling="max")
    scl.pl.embedding(adata, color="bulk_labels", show=False)
    first = adata.obsm["X_sclong_umap"].copy()
    record = adata.uns["X_sclong_umap"]["source_fingerprint"]
    assert adata.uns["X_sclong_neighbors"]["source_fingerprint"] == record
    # drawn again unchanged: the cached UMAP is reused, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        scl.pl.embedding(adata, color="bulk_labels", show=False)
    np.testing.assert_array_equal(adata.obsm["X_sclong_umap"], first)
    # the embedding replaced (another pooling): the UMAP is computed again, with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scl.tl.embed(adata, model, pooling="mean")
    with pytest.warns(UserWarning, match="not computed from the current"):
        scl.pl.embedding(adata, color="bulk_labels", show=False)
    assert adata.uns["X_sclong_umap"]["source_fingerprint"] != record
    assert not np.allclose(adata.obsm["X_sclong_umap"], first)
    # a UMAP made elsewhere (no record) is not trusted either
    adata.uns.pop("X_sclong_umap")
    with pytest.warns(UserWarning, match="not computed from the current"):
        scl.pl.embedding(adata, color="bulk_labels", show=False)


def test_a_flat_gene_network_is_flagged(pbmc):
    """Gene embeddings that share a large component give cosines all near 1: warned (issue 24)."""
    from sclong_scverse.tl._grn import _warn_if_flat

    adata, model = pbmc
    embeddings = model.get_gene_embeddings(kind="static").to_numpy()
    # what a briefly trained model's embeddings look like: one direction shared by every gene
    shared = embeddings + 50 * np.abs(embeddings).mean() * np.ones(embeddings.shape[1])
    for top_k in (None, 10):
        flat = scl.tl.cosine_similarity_graph(shared, top_k=top_k)
        with pytest.warns(UserWarning, match=r"nearly all equal .*center=True"):
            _warn_if_flat(flat, center=False)
        centred = scl.tl.cosine_similarity_graph(shared, top_k=top_k, center=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            _warn_if_flat(centred, center=True)  # the shared part removed: spread again
    # the model's own network is not flat: tl.grn says nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        scl.tl.grn(adata.copy(), model, top_k=10)


def test_queries_match_genes_across_id_types_and_case(pbmc):
    """A model set up with symbols reads Ensembl ids (and the reverse), as corpora do."""
    from sclong_scverse.genes import map_gene_ids

    adata, model = pbmc
    cells = adata[:32].copy()
    ensembl = map_gene_ids(cells.var_names, to="ensembl", from_type="symbol")
    mapped = ensembl.notna().to_numpy() & ~ensembl.duplicated(keep=False).to_numpy()
    back = map_gene_ids(ensembl.fillna("ENSG00000000000").to_numpy(), to="symbol")
    mapped &= back.to_numpy() == cells.var_names.to_numpy()  # the round trip gives the gene back
    assert mapped.mean() > 0.9  # measured: 747 of 765 genes
    # the same cells with Ensembl ids, the genes without one left out (they enter as 0)
    query = cells[:, mapped].copy()
    query.var_names = ensembl[mapped].to_numpy().astype(str)
    expected = model.get_latent_representation(cells[:, mapped].copy(), pooling="max")
    with pytest.warns(UserWarning, match="absent from this AnnData and enter as 0"):
        embedded = model.get_latent_representation(query, pooling="max")
    np.testing.assert_allclose(embedded, expected, atol=1e-5, rtol=0)
    # symbols in another case: the same genes
    lower = cells.copy()
    lower.var_names = [g.lower() for g in cells.var_names]
    np.testing.assert_allclose(
        model.get_latent_representation(lower, pooling="max"),
        model.get_latent_representation(cells, pooling="max"),
        atol=1e-5,
        rtol=0,
    )
    # before: Ensembl ids on a symbol model matched nothing and the query was refused
    assert not query.var_names.isin(adata.var_names).any()


QUIET_SCRIPT = """
import sys, warnings
import sclong_scverse as scl
scl.settings.library_info = sys.argv[1] == "on"
adata = scl.datasets.pbmc68k_counts(max_cells=60, seed=0)
scl.pp.normalize(adata)
scl.SCLONG.setup_anndata(adata, layer="sclong")
warnings.simplefilter("ignore")
model = scl.SCLONG(adata, config="tiny", gene_graph=False)
model.train(max_epochs=2, batch_size=8, simple_progress_bar=False)  # the step bar
print("history", sorted(model.history))
"""
LIBRARY_LINES = (
    "GPU available",
    "Tip:",
    "LOCAL_RANK",
    "Validation",
    "Sanity Checking",
    "Trainer.fit",
)


@pytest.mark.parametrize("library_info", ["off", "on"])
def test_training_from_python_is_as_quiet_as_the_command_line(library_info):
    """``SCLONG.train`` in a fresh interpreter (Lightning sets its loggers to INFO when first
    imported): by default the step bar and the history, none of Lightning's or scvi-tools'
    information lines or validation bars; ``scl.settings.library_info = True`` shows them."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, library_info],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "'masked_mse_validation'" in result.stdout, output[-2000:]  # validated each epoch
    assert "Epoch 1: 100%" in output, output[-2000:]  # the step bar, to the last step
    shown = [line for line in LIBRARY_LINES if line in output]
    if library_info == "off":
        assert shown == [], output[-3000:]
    else:
        assert "GPU available" in shown and "Validation" in shown, output[-3000:]
