"""SCLONG through the scvi-tools API on real data (CellBench), official weights, tl functions."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import torch
from scipy import sparse

import sclong_scverse as scl
from sclong_scverse.model import SCLONG
from sclong_scverse.pp import ScLongInputError


def test_pretraining_beats_the_per_gene_mean_and_initialisation(trained, capsys):
    model, adata, after, before = trained
    with capsys.disabled():
        print(
            f"\nheld-out masked MSE: init {before['model_mse']:.3f}, trained "
            f"{after['model_mse']:.3f}, per-gene mean {after['baseline_mse']:.3f} "
            f"({after['n_masked']} masked values)"
        )
    assert after["n_masked"] > 10_000
    # measured: init 7.34, trained 0.712, per-gene mean 0.812 (37,585 masked values)
    assert after["model_mse"] < 0.93 * after["baseline_mse"]
    assert after["model_mse"] < 0.2 * before["model_mse"]
    history = model.history
    assert {"train_loss", "validation_loss", "masked_mse_validation", "lr"} <= set(history)
    assert history["validation_loss"].iloc[-1, 0] < history["validation_loss"].iloc[0, 0]


def test_embed_gene_embeddings_grn_write_documented_keys(trained):
    model, adata, *_ = trained
    view_free = adata.copy()
    out = scl.tl.embed(view_free, model, copy=True)
    assert "X_sclong" not in view_free.obsm  # copy=True leaves the input untouched
    # the default pooling (docs/pooling.md): one value per gene, the original's embedding
    assert out.obsm["X_sclong"].shape == (adata.n_obs, model.module.config.n_genes)
    assert out.uns["X_sclong"]["params"]["pooling"] == "feature_sum"
    assert scl.tl.embed(view_free, model) is None
    np.testing.assert_allclose(view_free.obsm["X_sclong"], out.obsm["X_sclong"], atol=1e-5)

    scl.tl.gene_embeddings(view_free, model)
    assert view_free.varm["sclong"].shape == (adata.n_vars, model.module.config.dim)
    scl.tl.grn(view_free, model, kind="static")
    grn = view_free.varp["sclong_grn"]
    assert grn.shape == (adata.n_vars, adata.n_vars) and np.allclose(np.diag(grn), 0)
    scl.tl.grn(view_free, model, kind="static", top_k=5, key_added="sparse_grn")
    sparse_grn = view_free.varp["sparse_grn"]
    assert sparse.issparse(sparse_grn) and sparse_grn.nnz == 5 * adata.n_vars
    edges = scl.tl.grn_edges(view_free, key="sparse_grn", n_top=20)
    assert list(edges.columns) == ["source", "target", "weight", "score"] and len(edges) == 20
    assert edges["score"].is_monotonic_decreasing
    # the GRN agrees with the dense one on the kept pairs
    rows, cols = sparse_grn.nonzero()
    np.testing.assert_allclose(sparse_grn[rows, cols].A1, grn[rows, cols], atol=1e-5)
    # nothing else changed: X and the layer are the user's
    assert (view_free.layers["sclong"] != adata.layers["sclong"]).nnz == 0


def test_embeddings_carry_the_cell_line(trained, capsys):
    """A linear probe (never shown during pretraining) reads the cell line from the embedding.

    Measured here: majority class 0.23, max pooling 0.76, mean pooling 0.43, PCA(32) of the
    input 0.98 -- a tiny model pretrained for minutes is far from PCA on this task.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model, adata, *_ = trained
    labels = adata.obs["cell_line"].to_numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = {
        pooling: cross_val_score(
            probe, model.get_latent_representation(pooling=pooling), labels, cv=5
        ).mean()
        for pooling in ("max", "mean")
    }
    with capsys.disabled():
        print(f"\ncell-line linear probe accuracy: {accuracy}")
    majority = adata.obs["cell_line"].value_counts(normalize=True).max()
    assert accuracy["max"] > majority + 0.3


def test_save_load_reproduces_embeddings_and_aligns_other_gene_orders(trained, tmp_path):
    model, adata, *_ = trained
    latent = model.get_latent_representation()
    model.save(tmp_path / "model", overwrite=True)
    again = SCLONG.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(again.get_latent_representation(), latent)
    # genes shuffled and some missing: aligned with a warning, missing genes enter as 0
    order = np.random.default_rng(0).permutation(adata.n_vars)[: adata.n_vars - 10]
    shuffled = adata[:, order].copy()
    with pytest.warns(UserWarning, match="10 of the model's 2048 genes are absent"):
        other = SCLONG.load(tmp_path / "model", adata=shuffled)
    assert other.adata.n_vars == adata.n_vars
    # no normalisation record: the values are checked on their own genes, before alignment
    # (dropping genes lowers some cells' maximum below the model's 10)
    unrecorded = shuffled.copy()
    del unrecorded.uns["sclong"]
    with pytest.warns(UserWarning, match="absent"):
        SCLONG.load(tmp_path / "model", adata=unrecorded)
    with pytest.warns(UserWarning, match="absent"):
        queried = model.get_latent_representation(shuffled)
    assert queried.shape == latent.shape


def test_per_cell_mode_embeddings_do_not_depend_on_batch_size(trained):
    model, adata, *_ = trained
    model.module.network.attention_mode = "per_cell"
    try:
        small = model.get_latent_representation(indices=np.arange(12), batch_size=3)
        large = model.get_latent_representation(indices=np.arange(12), batch_size=12)
    finally:
        model.module.network.attention_mode = "faithful"
    # float32 rounding only: the default per-gene embedding sums 32 decoding features of about
    # +-6 that cancel, so its absolute rounding is ~6e-6 (max-pooled values agreed to 1e-6)
    np.testing.assert_allclose(small, large, rtol=0, atol=2e-5)


def test_bf16_queries_stay_close_to_float32_and_fp16_needs_a_gpu(trained):
    model, adata, *_ = trained
    cells = np.arange(16)
    full = model.get_latent_representation(indices=cells, batch_size=8)
    half = model.get_latent_representation(indices=cells, batch_size=8, precision="bf16")
    assert half.dtype == np.float32 and not np.array_equal(half, full)  # autocast did run
    # bfloat16 keeps 8 bits of mantissa: ~1% of the embeddings' scale
    assert np.abs(half - full).max() < 0.05 * np.abs(full).max()
    # the cells stay where they were relative to each other
    assert np.corrcoef(half.ravel(), full.ravel())[0, 1] > 0.999
    lightning = model.predict(indices=cells[:4], precision="bf16-mixed")
    assert np.isfinite(lightning[:, np.isfinite(lightning).all(0)]).all()
    # the same masks and baseline: bf16 moves the model's masked error by little
    mse = model.evaluate_masked_mse(indices=cells, seed=0)
    mse_bf16 = model.evaluate_masked_mse(indices=cells, seed=0, precision="bf16")
    assert mse_bf16["baseline_mse"] == mse["baseline_mse"]
    assert mse_bf16["model_mse"] == pytest.approx(mse["model_mse"], rel=0.05)
    query = adata[:16].copy()
    scl.tl.grn(query, model, top_k=5, batch_size=8, precision="bf16", key_added="grn_bf16")
    scl.tl.grn(query, model, top_k=5, batch_size=8, key_added="grn_fp32")
    same = (query.varp["grn_bf16"] != 0).multiply(query.varp["grn_fp32"] != 0).sum()
    assert same > 0.5 * query.varp["grn_fp32"].nnz  # mostly the same partners
    with pytest.raises(ValueError, match="needs a GPU"):
        model.get_latent_representation(indices=cells, precision="16")
    with pytest.raises(ValueError, match="precision must be"):
        model.get_latent_representation(indices=cells, precision="8")


def test_predict_returns_data_genes_and_masks(trained):
    model, adata, *_ = trained
    values, masked = model.predict(indices=np.arange(8), mask_fraction=0.15, return_mask=True)
    assert values.shape == (8, adata.n_vars) and masked.shape == values.shape
    truth = adata.layers["sclong"][:8].toarray()
    expected = np.ceil(0.15 * (truth > 0).sum(axis=1))
    np.testing.assert_array_equal(masked.sum(axis=1), expected)
    assert (truth[masked] > 0).all()


def test_from_official_on_cellbench(parity_dir, cellbench_top):
    adata = cellbench_top.copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG.from_official(
        adata,
        parity_dir / "tiny_ckpt.pth",
        parity_dir / "tiny_hparams.pkl",
        parity_dir / "tiny_genes.txt",
    )
    alignment = model.alignment
    assert 0 < alignment.n_vocab_covered < 511
    assert f"{alignment.n_vocab_covered}" in alignment.summary()
    # the network on the aligned input, by hand
    genes = [line.strip() for line in open(parity_dir / "tiny_genes.txt")]
    x = np.zeros((6, 512), dtype=np.float32)
    data = adata.layers["sclong"][:6].toarray()
    position = {g: i for i, g in enumerate(genes)}
    for j, gene in enumerate(adata.var_names):
        if gene in position:
            x[:, position[gene]] = data[:, j]
    network = model.module.network
    with torch.no_grad():
        expected = network(torch.from_numpy(x))["prediction"].numpy()
    predicted = model.predict(indices=np.arange(6))
    covered = alignment.var_positions >= 0
    np.testing.assert_allclose(
        predicted[:, covered], expected[:, alignment.var_positions[covered]], atol=1e-5
    )
    assert np.isnan(predicted[:, ~covered]).all()
    assert "GO edges" in model.gene_graph_summary


def test_random_features_are_redrawn_only_when_pretraining_from_scratch(parity_dir, cellbench_top):
    adata = cellbench_top[:64].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    official = SCLONG.from_official(
        adata,
        parity_dir / "tiny_ckpt.pth",
        parity_dir / "tiny_hparams.pkl",
        parity_dir / "tiny_genes.txt",
    )
    before = {k: v.clone() for k, v in official.module.state_dict().items() if "projection" in k}
    official.train(max_epochs=1, batch_size=32, train_size=1.0, enable_progress_bar=False)
    assert official.trainer.lightning_module.redraw_interval is None
    after = official.module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    fresh = SCLONG(adata, config="tiny", gene_graph=False)
    fresh.train(max_epochs=1, batch_size=32, train_size=1.0, enable_progress_bar=False)
    assert fresh.trainer.lightning_module.redraw_interval == 1000


def test_bad_input_gets_clear_errors(cellbench_top):
    raw = scl.datasets.cellbench(batches=("sc_dropseq",))
    with pytest.raises(ScLongInputError, match="normalize"):
        SCLONG.setup_anndata(raw)  # raw counts where log values are needed
    with pytest.raises(ScLongInputError, match="view"):
        SCLONG.setup_anndata(cellbench_top[:10], layer="sclong")
    duplicated = cellbench_top[:, :20].copy()
    duplicated.var_names = ["ENSG00000000001"] * 2 + list(duplicated.var_names[2:])
    with pytest.raises(ScLongInputError, match="var_names_make_unique"):
        SCLONG.setup_anndata(duplicated, layer="sclong")
    with pytest.raises(KeyError, match="scl.pp.normalize"):
        SCLONG.setup_anndata(cellbench_top, layer="missing")
    pbmc = sc.read_h5ad(
        scl.datasets.shared_data_dir() / "scrna/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad"
    )
    with pytest.raises(ScLongInputError):
        SCLONG.setup_anndata(pbmc)  # scaled, negative values


def test_mudata_rna_modality(cellbench_top):
    from mudata import MuData

    rna = cellbench_top[:40].copy()
    mdata = MuData({"rna": rna})
    SCLONG.setup_mudata(mdata, rna_layer="sclong", modalities={"rna_layer": "rna"})
    model = SCLONG(mdata, config="tiny", gene_graph=False)
    latent = model.get_latent_representation()
    assert latent.shape == (40, model.module.config.n_genes)  # per gene (default pooling)
    reference = rna.copy()
    SCLONG.setup_anndata(reference, layer="sclong")
    same = SCLONG(reference, config="tiny", gene_graph=False)
    same.module.load_state_dict(model.module.state_dict())
    np.testing.assert_allclose(same.get_latent_representation(), latent, atol=1e-5)


def test_training_on_all_cells_without_validation(cellbench_top):
    adata = cellbench_top[:32].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    model.train(max_epochs=1, batch_size=16, train_size=1.0, enable_progress_bar=False)
    assert "validation_loss" not in model.history and len(model.history["train_loss"]) == 1
    with pytest.raises(ValueError, match="early_stopping needs validation cells"):
        model.train(max_epochs=1, train_size=1.0, early_stopping=True)


def test_redraw_happens_once_per_optimiser_step_with_gradient_accumulation(cellbench_top):
    adata = cellbench_top[:64].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config="tiny")
    calls = []
    redraw = model.module.network.redraw_projection_matrices
    model.module.network.redraw_projection_matrices = lambda *a, **k: (calls.append(1), redraw())
    # 64 cells, batch 8 -> 8 micro-batches, 4 optimiser steps (0..3); interval 2 -> redraw at 2
    model.train(
        max_epochs=1,
        batch_size=8,
        train_size=1.0,
        redraw_interval=2,
        accumulate_grad_batches=2,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    assert model.trainer.global_step == 4
    assert len(calls) == 1


def test_default_gene_graph_is_built_once_per_vocabulary(cellbench_top):
    from sclong_scverse.model import _sclong

    adata = cellbench_top[:, :600].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    _sclong._DEFAULT_GRAPHS.clear()
    first = SCLONG(adata, config="tiny")
    second = SCLONG(adata, config="tiny")
    assert len(_sclong._DEFAULT_GRAPHS) == 1  # the second model reused the first one's graph
    graph = next(iter(_sclong._DEFAULT_GRAPHS.values()))
    assert graph.n_edges > 1000 and graph.n_nodes == 601
    buffers = [m.module.network.gene_embedding for m in (first, second)]
    for name in ("edge_index", "edge_weight"):
        a, b = (getattr(embedding, name) for embedding in buffers)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, getattr(graph, name), rtol=0, atol=0)
        pointers = {a.data_ptr(), b.data_ptr(), getattr(graph, name).data_ptr()}
        assert len(pointers) == 3  # no aliasing between the models and the cache
    # and equal to a graph built from scratch with the embedded annotations
    fresh = scl.go.GeneGraph.from_annotations(
        first.vocabulary, scl.go.default_human_annotations(id_type="ensembl")
    )
    assert fresh.equals(graph)
    # other genes, another entry
    other = cellbench_top[:, 600:900].copy()
    SCLONG.setup_anndata(other, layer="sclong")
    SCLONG(other, config="tiny")
    assert len(_sclong._DEFAULT_GRAPHS) == 2


def test_progress_shows_cells_per_second_per_step_and_per_batch(cellbench_top, capfd):
    adata = cellbench_top[:120].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    # 108 training cells, 2 a step: 54 steps an epoch, so a bar per step (Lightning's)
    model.train(max_epochs=1, batch_size=2, accelerator="cpu")
    out = capfd.readouterr()
    assert "54/54" in out.out and "cells/s=" in out.out, out.out[-2000:]  # Lightning: stdout
    assert "cells/s" not in model.history  # shown, not recorded
    model.get_latent_representation(batch_size=16, progress_bar=True)
    err = capfd.readouterr().err
    assert "embed: 100%" in err and "120/120" in err and "cell/s" in err
    # default: a bar only for calls reading >= 10 million values (here 120 x 2,048)
    model.get_latent_representation(batch_size=16)
    assert "embed" not in capfd.readouterr().err


# ---------------------------------------------------------------- ablation: no low branch
def test_masking_without_low_branch_routes_the_chosen_genes_into_the_top_set(cellbench_top):
    adata = cellbench_top[:16].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    ablated = SCLONG(adata, config="tiny", gene_graph=False, low_expression_branch=False).module
    full = SCLONG(adata, config="tiny", gene_graph=False).module
    x = torch.from_numpy(adata.layers["sclong"].toarray())
    tokens = ablated.to_tokens(x)
    k = ablated.config.top_seq_len
    with torch.no_grad():
        out = ablated.inference(x, generator=torch.Generator().manual_seed(0))
        published = full.inference(x, generator=torch.Generator().manual_seed(0))
    chosen, replaced, predicted = out["chosen"], out["replaced"], out["predicted"]
    # the masks are the published network's (ceil(15%) of all non-zero values)...
    assert torch.equal(chosen, published["chosen"]) and torch.equal(replaced, published["replaced"])
    assert torch.equal(chosen.sum(dim=1), torch.ceil((tokens > 0).sum(dim=1) * 0.15).long())
    # ...and every chosen gene is in the ablated network's top set, the rest of it the highest
    # other values; in the published network the masked genes go to the mini encoder
    assert (chosen.sum(dim=1) < k).all() and not (chosen & ~predicted).any()
    assert (predicted.sum(dim=1) == k).all()
    rest = tokens.masked_fill(chosen, -1.0)
    for cell in range(tokens.shape[0]):
        n_rest = k - int(chosen[cell].sum())
        lowest_kept = rest[cell][predicted[cell] & ~chosen[cell]].min()
        assert lowest_kept >= rest[cell][~predicted[cell]].max()  # the highest others
        assert int((predicted[cell] & ~chosen[cell]).sum()) == n_rest
    full_top = torch.zeros_like(replaced).scatter_(1, published["top_indices"], True)
    assert not (replaced & full_top).any()
    loss = ablated.loss({}, out, {}).loss
    torch.testing.assert_close(loss, ((out["prediction"] - tokens) ** 2)[chosen].mean())
    # masks the network cannot predict (drawn elsewhere, outside its top set) are not counted
    outside = torch.zeros_like(chosen)
    outside[:, : tokens.shape[1] - 1] = tokens[:, :-1] > 0
    with torch.no_grad():
        direct = ablated.network(tokens)  # no masks: the plain top set
    outside &= ~direct["predicted"]
    wide = {**direct, "tokens": tokens, "chosen": chosen | outside}
    counted = wide["chosen"] & direct["predicted"]
    assert outside.any() and counted.any()
    loss = ablated.loss({}, wide, {}).loss
    torch.testing.assert_close(loss, ((direct["prediction"] - tokens) ** 2)[counted].mean())
    wide["prediction"] = direct["prediction"].masked_fill(~direct["predicted"], 1e6)
    torch.testing.assert_close(ablated.loss({}, wide, {}).loss, loss)


def test_sclong_without_low_branch_trains_queries_saves_and_loads(cellbench_top, tmp_path):
    adata = cellbench_top[:64].copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config="tiny", gene_graph=False, low_expression_branch=False)
    assert "no low-expression branch" in model._model_summary_string
    assert model.module.network.mini_encoder is None
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    mse = model.evaluate_masked_mse(seed=1)
    assert mse["n_masked"] > 0 and np.isfinite(mse["model_mse"]) and mse["baseline_mse"] > 0

    # predictions exist at each cell's top genes only
    cells = np.arange(8)
    values, masked = model.predict(indices=cells, mask_fraction=0.15, return_mask=True)
    k = model.module.config.top_seq_len
    n_known = (~np.isnan(values)).sum(axis=1)
    assert (n_known <= k).all() and (n_known >= k - 1).all()  # k, less the pad token if chosen
    assert masked.any() and not np.isnan(values[masked]).any()

    # cell embeddings pool the decoded genes only
    x = torch.from_numpy(adata.layers["sclong"][:4].toarray())
    with torch.no_grad():
        out = model.module.inference(x, mask=False)
    n_genes = model.module.config.n_genes
    decoded = out["predicted"][:, :n_genes]
    decodings = out["decodings"][:, :n_genes]
    mean = (decodings * decoded.unsqueeze(-1)).sum(dim=1) / decoded.sum(dim=1, keepdim=True)
    np.testing.assert_allclose(
        model.get_latent_representation(indices=np.arange(4), pooling="mean"), mean, atol=1e-5
    )
    latent = model.get_latent_representation()
    assert np.isfinite(latent).all()
    # contextual gene embeddings: NaN exactly for genes never among a cell's top genes
    table = model.get_gene_embeddings(kind="contextual").to_numpy()
    with torch.no_grad():
        tokens = model.module.to_tokens(torch.from_numpy(adata.layers["sclong"].toarray()))
        ever = torch.zeros(model.module.config.n_tokens, dtype=torch.bool)
        ever[model.module.network.route(tokens)[0].flatten()] = True
    ever = ever[model.alignment.var_positions].numpy()
    assert ever.any() and (~ever).any()
    np.testing.assert_array_equal(np.isnan(table).all(axis=1), ~ever)

    model.save(tmp_path / "ablated", overwrite=True)
    again = SCLONG.load(tmp_path / "ablated", adata=adata)
    assert again.module.config.low_expression_branch is False
    assert again.module.network.mini_encoder is None
    np.testing.assert_array_equal(again.get_latent_representation(), latent)
    with pytest.raises(ValueError, match="low_expression_branch differs"):
        SCLONG(adata, config="tiny", network=model.module.network, low_expression_branch=True)
