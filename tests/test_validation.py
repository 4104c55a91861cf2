"""One validation path for every value the model reads, and the edge cases that used to crash.

Data: scanpy's bundled pbmc68k_reduced (BSD-3) with its integer counts recovered
(``scl.datasets.pbmc68k_counts``, offline), on its most detected genes.
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import sclong_scverse as scl
from sclong_scverse.model import SCLONG
from sclong_scverse.pp import (
    ScLongInputError,
    normalization_record,
    validate_adata_input,
    validate_model_input,
)

N_CELLS, N_GENES = 48, 120


@pytest.fixture(scope="module")
def pbmc() -> ad.AnnData:
    """48 pbmc68k cells x their 120 most detected genes: counts in X/'counts', 'sclong' layer."""
    adata = scl.datasets.pbmc68k_counts()
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    adata = adata[:N_CELLS, np.sort(np.argsort(-detected)[:N_GENES])].copy()
    assert (np.asarray(adata.X.sum(axis=1)).ravel() > 0).all()
    scl.pp.normalize(adata, layer="counts")
    return adata


@pytest.fixture(scope="module")
def model(pbmc):
    """A tiny untrained scLong registered on the first 32 cells (batches: 'phase')."""
    adata = pbmc[:32].copy()
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="phase")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # top_seq_len larger than the vocabulary
        return SCLONG(adata, config="tiny", gene_graph=False)


def _query(pbmc, values=None) -> ad.AnnData:
    query = pbmc[32:].copy()
    if values is not None:
        query.layers["sclong"] = values
    return query


def _log1p_normalize_total(counts) -> sp.csr_matrix:
    scaled = sc.pp.normalize_total(ad.AnnData(counts.copy()), target_sum=1e4, inplace=False)["X"]
    return sp.csr_matrix(np.log1p(scaled.toarray()))


# ---------------------------------------------------------------- queries with the model's genes


def test_query_with_the_models_genes_refuses_counts_negative_and_nan(pbmc, model):
    counts = _query(pbmc, pbmc[32:].layers["counts"].copy())
    for call in (
        lambda a: scl.tl.embed(a, model),
        lambda a: model.get_latent_representation(a),
        lambda a: scl.tl.grn(a, model),
    ):
        with pytest.raises(ScLongInputError, match=r"looks like raw counts.*scl\.pp\.normalize"):
            call(counts)
    assert "X_sclong" not in counts.obsm and "sclong_grn" not in counts.varp

    negative = pbmc[32:].layers["sclong"].copy()
    negative.data[7] = -1.0
    first_bad = pbmc.obs_names[32 + np.searchsorted(negative.indptr, 7, side="right") - 1]
    with pytest.raises(ScLongInputError, match=rf"negative.*{first_bad}.*mask tokens"):
        scl.tl.embed(_query(pbmc, negative), model)

    nan = pbmc[32:].layers["sclong"].copy()
    nan.data[-1] = np.nan
    with pytest.raises(ScLongInputError, match=rf"1 NaN.*{pbmc.obs_names[-1]}"):
        scl.tl.grn(_query(pbmc, nan), model)  # used to give an all-zero network
    dense = nan.toarray()
    with pytest.raises(ScLongInputError, match="1 NaN"):
        model.get_latent_representation(_query(pbmc, dense))


def test_small_counts_and_log1p_without_rescaling_are_refused_at_setup(pbmc):
    shallow = pbmc.copy()
    small = shallow.layers["counts"].copy()
    small.data = np.minimum(small.data, 3)  # a shallow data set: counts 1..3
    shallow.layers["sclong"] = small
    with pytest.raises(ScLongInputError, match=r"raw counts.*maximum 3.*scl\.pp\.normalize"):
        SCLONG.setup_anndata(shallow, layer="sclong")

    logged = pbmc.copy()
    del logged.uns["sclong"]  # scanpy's normalisation, no scl.pp.normalize record
    logged.layers["sclong"] = _log1p_normalize_total(logged.layers["counts"])
    with pytest.raises(ScLongInputError, match=r"not rescaled per cell.*log1p\(normalize_total\)"):
        SCLONG.setup_anndata(logged, layer="sclong")
    # the user may say otherwise: recorded, and queries follow it
    SCLONG.setup_anndata(logged, layer="sclong", check_normalization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unchecked = SCLONG(logged, config="tiny", gene_graph=False)
    assert unchecked.adata_manager.registry["setup_args"]["check_normalization"] is False
    assert unchecked.get_latent_representation().shape[0] == pbmc.n_obs
    # a stale scl.pp.normalize record over replaced values still warns
    stale = pbmc.copy()
    stale.layers["sclong"] = _log1p_normalize_total(stale.layers["counts"])
    with pytest.warns(UserWarning, match="no checked cell reaches the maximum 10"):
        SCLONG.setup_anndata(stale, layer="sclong")


def test_setup_records_the_normalisation_and_queries_follow_it(pbmc, model):
    args = model.adata_manager.registry["setup_args"]
    assert args["normalization"] == {
        "method": "scl.pp.normalize",
        "target_sum": 1e4,
        "max_value": 10.0,
    }
    assert args["check_normalization"] is True
    other = pbmc[32:].copy()
    scl.pp.normalize(other, layer="counts", max_value=5.0)  # replaces the layer (logged)
    with pytest.raises(ScLongInputError, match=r"max_value=5.*maximum of 10"):
        model.get_latent_representation(other)
    # a model trained on max_value=5 data checks queries against 5
    five = pbmc[:16].copy()
    scl.pp.normalize(five, layer="counts", max_value=5.0)
    SCLONG.setup_anndata(five, layer="sclong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model5 = SCLONG(five, config="tiny", gene_graph=False)
    assert model5.adata_manager.registry["setup_args"]["normalization"]["max_value"] == 5.0
    with pytest.raises(ScLongInputError, match=r"max_value=10.*maximum of 5"):
        model5.get_latent_representation(pbmc[32:].copy())


def test_registered_values_changed_after_setup_are_checked_again(pbmc):
    adata = pbmc[:16].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SCLONG(adata, config="tiny", gene_graph=False)
    adata.layers["sclong"].data[0] = np.nan  # in place, after registration
    with pytest.raises(ScLongInputError, match="NaN"):
        model.get_latent_representation()
    with pytest.raises(ScLongInputError, match="NaN"):
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    # cells other than the damaged one can still be read
    assert model.get_latent_representation(indices=np.arange(1, 16)).shape[0] == 15


def test_queries_leave_the_users_anndata_alone(pbmc, model, tmp_path):
    query = pbmc[32:].copy()
    query.obs["phase"] = query.obs["phase"].cat.rename_categories(lambda c: f"new_{c}")
    before_obs, before_uns = query.obs.copy(), set(query.uns)
    latent = model.get_latent_representation(query)  # batches unseen in training: fine
    pd.testing.assert_frame_equal(query.obs, before_obs)
    assert set(query.uns) == before_uns  # no scvi-tools registration written into the query
    np.testing.assert_allclose(model.get_latent_representation(pbmc[32:].copy()), latent)
    del query.obs["phase"]  # the model never reads batches
    model.get_latent_representation(query)
    # backed AnnData reads the same values
    query.write_h5ad(tmp_path / "query.h5ad")
    backed = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
    np.testing.assert_allclose(model.get_latent_representation(backed), latent, atol=1e-6)
    backed.file.close()
    # the model keeps no manager (and so no reference) per query
    assert len(model._per_instance_manager_store[model.id]) == 1


# ---------------------------------------------------------------- edge cases


def test_few_cells_train_without_validation_and_say_so(pbmc):
    adata = pbmc[:5].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SCLONG(adata, config="tiny", gene_graph=False)
    with pytest.warns(UserWarning, match="no cell is held out for validation"):
        model.train(max_epochs=1, batch_size=4, accelerator="cpu", enable_progress_bar=False)
    assert "train_loss" in model.history and "validation_loss" not in model.history
    with pytest.raises(ScLongInputError, match="early_stopping needs validation cells"):
        model.train(max_epochs=1, early_stopping=True, accelerator="cpu")
    with pytest.raises(ValueError, match="train_size must be in"):
        model.train(max_epochs=1, train_size=1.5, accelerator="cpu")
    with pytest.raises(ValueError, match="max_steps can end training in the middle of an epoch"):
        model.train(max_epochs=1, train_size=0.5, early_stopping=True, max_steps=1)


def test_zero_cells_genes_and_empty_indices(pbmc, model):
    with pytest.raises(ScLongInputError, match="0 cells x 120 genes"):
        SCLONG.setup_anndata(pbmc[:0].copy(), layer="sclong")
    with pytest.raises(ScLongInputError, match="48 cells x 0 genes"):
        SCLONG.setup_anndata(pbmc[:, :0].copy(), layer="sclong")
    with pytest.raises(ScLongInputError, match="no cells"):
        scl.tl.embed(pbmc[:0].copy(), model)
    with pytest.raises(ScLongInputError, match="indices is empty"):
        model.get_latent_representation(indices=[])
    with pytest.raises(ScLongInputError, match="outside"):
        model.get_latent_representation(indices=[0, 10_000])


def test_batch_column_with_missing_values(pbmc):
    adata = pbmc[:20].copy()
    adata.obs["batch"] = pd.Categorical(["a", None] * 10, categories=["a", "unused"])
    with pytest.raises(ScLongInputError, match=r"obs\['batch'\] \(batch_key\) has no value for 10"):
        SCLONG.setup_anndata(adata, layer="sclong", batch_key="batch")
    with pytest.raises(KeyError, match="not a column of adata.obs"):
        SCLONG.setup_anndata(adata, layer="sclong", labels_key="cell_type")
    # the suggested fix works; unused categories are fine
    column = adata.obs["batch"]
    adata.obs["batch"] = column.astype(str).where(column.notna(), "unknown")
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="batch")


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True, "5"])
def test_grn_refuses_a_bad_top_k(pbmc, model, top_k):
    adata = model.adata
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        scl.tl.grn(adata, model, kind="static", top_k=top_k)
    assert "sclong_grn" not in adata.varp


def test_cosine_graph_on_one_gene_and_large_top_k():
    one = scl.tl.cosine_similarity_graph(np.ones((1, 4)), top_k=5)
    assert one.shape == (1, 1) and one.nnz == 0
    graph = scl.tl.cosine_similarity_graph(np.random.default_rng(0).normal(size=(4, 3)), top_k=9)
    assert graph.nnz == 4 * 3  # capped at n_genes - 1 partners


def test_overwrites_are_logged(pbmc, model, caplog):
    adata = model.adata
    with caplog.at_level(logging.WARNING):
        scl.tl.embed(adata, model)
        scl.tl.embed(adata, model)
        scl.tl.grn(adata, model, kind="static", top_k=3)
        scl.tl.grn(adata, model, kind="static", top_k=3)
        again = pbmc[:4].copy()
        scl.pp.normalize(again, layer="counts")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("replacing the existing adata.obsm['X_sclong']" in m for m in messages) == 1
    assert sum("replacing the existing adata.varp['sclong_grn']" in m for m in messages) == 1
    assert sum("replacing the existing adata.layers['sclong']" in m for m in messages) == 1


# ---------------------------------------------------------------- the validator itself


def test_validator_on_storage_formats(pbmc):
    values = pbmc.layers["sclong"]
    for X in (values, values.tocsc(), values.tocoo(), values.toarray()):
        summary = validate_model_input(X, obs_names=pbmc.obs_names)
        assert summary.max == 10.0 and summary.n_negative == 0
    # data whose expressed genes all share one count normalise to exactly 10: not counts
    flat = ad.AnnData(sp.csr_matrix(np.eye(3, dtype=np.float32) * 10))
    validate_model_input(flat.X)
    with pytest.raises(ScLongInputError, match="integer dtype"):
        validate_model_input(np.array([[1, 2], [0, 5]], dtype=np.int64))
    with pytest.raises(ScLongInputError, match="holds object values"):
        validate_model_input(np.array([["a"]], dtype=object))
    with pytest.raises(ScLongInputError, match="above 10"):
        validate_model_input(values * 1.5)
    # a sample of cells is read for the per-cell tests: the unscaled cell is not in it
    mixed = values.toarray()
    mixed[1] *= 0.5
    validate_model_input(mixed, n_sample=1)
    with pytest.warns(UserWarning, match="1 of 48 checked cells"):
        validate_model_input(mixed)


def test_validator_reads_the_pp_normalize_record(pbmc):
    assert normalization_record(pbmc, "sclong")["max_value"] == 10.0
    assert normalization_record(pbmc, None) is None
    subset = pbmc[:, :30].copy()  # genes removed after normalising: cells below 10
    validate_adata_input(subset, "sclong")  # the record says scl.pp.normalize: fine
    del subset.uns["sclong"]
    with pytest.warns(UserWarning, match="checked cells have a maximum below 10"):
        validate_adata_input(subset, "sclong")


def test_evaluate_grn_refuses_infinite_scores():
    # found by the property tests: +inf (the most confident score) was ranked as 0
    truth = pd.DataFrame({"source": ["A", "B"], "target": ["B", "C"]})
    edges = pd.DataFrame(
        {"source": ["A", "B", "A"], "target": ["B", "C", "C"], "score": [np.inf, 0.5, 0.1]}
    )
    with pytest.raises(ValueError, match="0 NaN and 1 infinite"):
        scl.tl.evaluate_grn(edges, truth)
    adata = ad.AnnData(np.zeros((1, 3), dtype=np.float32))
    adata.var_names = ["A", "B", "C"]
    scores = np.array([[0, np.inf, 0.1], [0, 0, 0.5], [0, 0, 0]])
    for matrix in (scores, sp.csr_matrix(scores)):
        adata.varp["sclong_grn"] = matrix
        with pytest.raises(ValueError, match="infinite"):
            scl.tl.evaluate_grn(adata, truth)
    finite = edges.assign(score=[0.9, 0.5, 0.1])
    # C is scored as a target only: scored over all pairs only when told which rows are candidates
    with pytest.raises(ValueError, match="as sources"):
        scl.tl.evaluate_grn(finite, truth, candidates="truth_genes")
    result = scl.tl.evaluate_grn(
        finite, truth, candidates="truth_genes", candidate_sources=["A", "B", "C"]
    )
    assert result["n_positives"] == 2 and result["n_candidates"] == 3
    # the default (TF rows A, B x all genes, directed) needs no such hint
    assert scl.tl.evaluate_grn(finite, truth)["n_candidates"] == 4


def test_benchmark_integration_takes_normalizes_count_arguments(cellbench_top, monkeypatch):
    # corrected (non-integer) counts in a layer, as scl.pp.normalize(allow_non_integer=True) takes
    pytest.importorskip("scib_metrics")
    import scib_metrics.benchmark

    adata = cellbench_top[:300, :200].copy()
    adata.layers["corrected"] = adata.X.multiply(0.7).tocsr()
    adata.X = adata.layers["sclong"].copy()  # log-normalised: not counts
    adata.obsm["X_sclong"] = np.ones((adata.n_obs, 4), dtype=np.float32)
    args = dict(batch_key="batch", label_key="cell_line", baselines=("pca",), n_comps=5)
    with pytest.raises(ScLongInputError, match="log-normalised") as refused:
        scl.tl.benchmark_integration(adata, **args)
    # the advice names this function's own arguments, not scl.pp.normalize's spelling
    assert "layer=..." in str(refused.value) and "scl.pp.normalize" not in str(refused.value)
    with pytest.raises(ScLongInputError, match="allow_non_integer=True") as refused:
        scl.tl.benchmark_integration(adata, layer="corrected", **args)
    with pytest.raises(ValueError, match="counts_layer"):
        scl.tl.benchmark_integration(adata, layer="corrected", counts_layer="sclong", **args)

    class Reached(Exception):
        pass

    def stop(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(scib_metrics.benchmark, "Benchmarker", stop)
    with pytest.raises(Reached):  # the counts passed the check and the baseline was computed
        scl.tl.benchmark_integration(adata, layer="corrected", allow_non_integer=True, **args)
    pca = adata.obsm["X_pca_unintegrated"]
    # PCA of normalize_total + log1p: the 0.7 factor cancels, so it matches the integer counts'
    expected = cellbench_top[:300, :200].copy()
    expected.obsm["X_sclong"] = adata.obsm["X_sclong"]
    with pytest.raises(Reached):
        scl.tl.benchmark_integration(expected, counts_layer=None, **args)
    np.testing.assert_allclose(
        np.abs(pca), np.abs(expected.obsm["X_pca_unintegrated"]), rtol=1e-3, atol=1e-3
    )
