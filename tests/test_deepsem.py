"""DeepSEM (module/_deepsem.py) and scl.tl.grn(method="deepsem"), on real CellBench cells.

The scLong seed is checked against the formula computed densely; DeepSEM's training against its
published schedule (what moves in which epoch, the losses); the TF -> target output against
tl.grn_edges and tl.evaluate_grn's one-candidate-set rule (STRING, BEELINE, CC BY 4.0).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sclong_scverse as scl
from conftest import data_file
from sclong_scverse.model import SCLONG
from sclong_scverse.module import DeepSEM, DeepSEMConfig, GramAccumulator, train_deepsem

N_GENES = 160
FAST = {"n_epochs": 3, "n_hidden": 32}


@pytest.fixture(scope="module")
def small(cellbench_top):
    """A tiny scLong trained one epoch on 300 CellBench cells, 160 of the most detected genes."""
    adata = cellbench_top[::4, :N_GENES][:300].copy()  # all five batches
    scl.pp.normalize(adata)  # again, on these genes
    adata.var["symbol"] = scl.genes.map_gene_ids(adata.var_names, to="symbol").fillna("").values
    SCLONG.setup_anndata(adata, layer="sclong")
    config = scl.ScLongConfig.preset("tiny").to_dict()
    config.pop("n_genes", None)
    config["top_seq_len"] = N_GENES // 4
    torch.manual_seed(0)
    model = SCLONG(adata, config=config)
    model.train(max_epochs=2, batch_size=32, lr=5e-3, accelerator="cpu", enable_progress_bar=False)
    return model, adata


def _dense_seed(decodings: torch.Tensor) -> np.ndarray:
    """The original's seed with everything in memory: (cells, genes, dim) -> genes x genes."""
    per_gene = decodings.permute(1, 0, 2).reshape(decodings.shape[1], -1).double()
    per_gene = per_gene / per_gene.abs().sum(dim=1, keepdim=True)
    gram = per_gene @ per_gene.T
    gram.fill_diagonal_(0)
    return (gram / gram.abs().sum(dim=1, keepdim=True)).numpy()


def test_gram_accumulator_streams_the_dense_formula():
    rng = np.random.default_rng(0)
    decodings = torch.from_numpy(rng.normal(size=(37, 12, 5)))
    accumulator = GramAccumulator(12)
    for start, stop in [(0, 1), (1, 17), (17, 37)]:  # uneven batches
        accumulator.update(decodings[start:stop])
    seed = accumulator.seed().numpy()
    np.testing.assert_allclose(seed, _dense_seed(decodings), atol=1e-6)
    np.testing.assert_allclose(np.abs(seed).sum(axis=1), 1.0, atol=1e-6)
    assert (np.diag(seed) == 0).all()
    with pytest.raises(ValueError, match="no cells"):
        GramAccumulator(3).seed()


def test_scLong_seed_equals_the_dense_formula_on_real_decodings(small):
    model, adata = small
    streamed = scl.tl.deepsem_seed(adata, model, batch_size=100)
    positions = torch.as_tensor(np.asarray(model.alignment.var_positions))
    assert (positions >= 0).all()
    (outputs,) = list(model._batches(adata, None, adata.n_obs))  # all cells at once
    dense = _dense_seed(outputs["decodings"][:, positions].float())
    assert streamed.shape == (N_GENES, N_GENES) and streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, dense, atol=2e-6)
    # close to uniform (decodings share a large common part), but not constant: it ranks pairs
    off_diagonal = streamed[~np.eye(N_GENES, dtype=bool)]
    assert off_diagonal.mean() == pytest.approx(1 / (N_GENES - 1), rel=0.05)
    assert np.std(off_diagonal) > 1e-5


def test_deepsem_schedule_alternates_and_learns(small):
    _, adata = small
    X = adata.layers["sclong"].toarray()
    config = DeepSEMConfig(n_epochs=6, n_hidden=32)
    start = torch.full((N_GENES, N_GENES), 1.0 / (N_GENES - 1)).fill_diagonal_(0)
    learned, history = train_deepsem(X, start, config, seed=0)
    assert learned.shape == (N_GENES, N_GENES) and (np.diag(learned) == 0).all()
    # the adjacency moved (epochs 1, 2, 4, 5 are its epochs) and the L1 penalty shrank it
    assert np.abs(learned - start.numpy()).max() > 1e-4
    assert history["sparsity"][-1] < history["sparsity"][0]
    # the MLPs learned to reconstruct the standardised expression (variance 1 per gene)
    assert np.mean(history["reconstruction"][3:]) < history["reconstruction"][0]
    assert history["loss"][-1] < history["loss"][0]
    assert all(np.isfinite(history["loss"]))
    # epoch 0 steps the MLPs only: the adjacency is exactly the start after one epoch
    one, _ = train_deepsem(X, start, DeepSEMConfig(n_epochs=1, n_hidden=32), seed=0)
    np.testing.assert_array_equal(one, start.numpy())
    # the encoder mixes genes through (I - A^T): with A = 0 it is a per-gene model
    module = DeepSEM(torch.zeros(4, 4), n_hidden=8).eval()
    x = torch.randn(3, 4)
    changed = x.clone()
    changed[:, 0] += 1.0
    out, out_changed = module(x)["x_hat"], module(changed)["x_hat"]
    torch.testing.assert_close(out[:, 1:], out_changed[:, 1:])


def test_grn_deepsem_is_seeded_by_scLong_and_averages_seeds(small):
    model, adata = small
    seed = scl.tl.deepsem_seed(adata, model)
    # with a learning rate of 0 the network is the start: scLong's seed, or DeepSEM's own
    frozen = {"n_epochs": 3, "n_hidden": 32, "lr": 0.0}
    scl.tl.grn(adata, model, method="deepsem", n_seeds=1, deepsem_kwargs=frozen)
    np.testing.assert_allclose(adata.varp["sclong_grn"], np.abs(seed), atol=1e-7)
    params = adata.uns["sclong_grn"]["params"]
    assert params["method"] == "deepsem" and params["seeded"] and params["n_seeds"] == 1
    assert params["deepsem"]["lr"] == 0.0 and params["log_normalized"] is True
    plain = scl.tl.grn(adata, method="deepsem", n_seeds=1, deepsem_kwargs=frozen, copy=True)
    off = plain.varp["sclong_grn"][~np.eye(N_GENES, dtype=bool)]
    assert off.min() >= 1 / (N_GENES - 1) and off.max() < 1 / (N_GENES - 1) + 2e-4
    assert plain.uns["sclong_grn"]["params"]["seeded"] is False
    assert "sclong_grn" not in adata.uns or adata.uns["sclong_grn"]["params"]["seeded"]

    # n_seeds runs average |A| of the runs seeded random_state, random_state + 1, ...
    runs = [
        scl.tl.grn(
            adata,
            model,
            method="deepsem",
            n_seeds=1,
            random_state=s,
            deepsem_kwargs=FAST,
            copy=True,
        ).varp["sclong_grn"]
        for s in (3, 4)
    ]
    both = scl.tl.grn(
        adata, model, method="deepsem", n_seeds=2, random_state=3, deepsem_kwargs=FAST, copy=True
    ).varp["sclong_grn"]
    np.testing.assert_allclose(both, (runs[0] + runs[1]) / 2, atol=1e-6)
    assert np.abs(runs[0] - runs[1]).max() > 1e-6  # the seeds differ
    # trained from scLong's seed, the network stays close to it (3 epochs, lr 1e-4)
    rank = np.corrcoef(both.ravel(), np.abs(seed).ravel())[0, 1]
    assert rank > 0.5


def test_deepsem_tf_output_and_fair_evaluation(small, data_dir):
    model, adata = small
    string = scl.tl.read_ground_truth(
        data_file(data_dir / "grn" / "beeline_human_string" / "STRING-network.csv")
    )
    symbols = adata.var["symbol"]
    tf_symbols = sorted(set(string["source"]) & set(symbols))[:40]
    tf_ids = list(adata.var_names[symbols.isin(tf_symbols)])
    scl.tl.grn(
        adata,
        model,
        method="deepsem",
        tfs=tf_ids,
        n_seeds=1,
        deepsem_kwargs=FAST,
        key_added="deepsem_grn",
    )
    network = adata.varp["deepsem_grn"]
    assert sp.issparse(network)
    rows = np.unique(network.nonzero()[0])
    assert set(adata.var_names[rows]) == set(tf_ids)
    edges = scl.tl.grn_edges(adata, key="deepsem_grn", n_top=50)
    assert set(edges["source"]) <= set(tf_ids) and len(edges) == 50
    assert edges["weight"].is_monotonic_decreasing
    # only TF rows are scored: refused over all pairs, scored over TF rows x genes
    with pytest.raises(ValueError, match="tfs="):
        scl.tl.evaluate_grn(
            adata, string, key="deepsem_grn", gene_symbols="symbol", candidates="truth_genes"
        )
    result = scl.tl.evaluate_grn(
        adata, string, key="deepsem_grn", gene_symbols="symbol", tfs=tf_symbols, directed=True
    )
    assert result["n_tfs"] == len(tf_symbols) and result["n_positives"] > 0
    assert result["n_scored"] == result["n_candidates"]  # every TF -> gene pair scored
    # top_k keeps that many targets per TF row
    scl.tl.grn(
        adata,
        model,
        method="deepsem",
        tfs=tf_ids,
        top_k=5,
        n_seeds=1,
        deepsem_kwargs=FAST,
        key_added="deepsem_top",
    )
    counts = np.diff(adata.varp["deepsem_top"].indptr)
    assert set(counts[counts > 0]) == {5} and (counts > 0).sum() == len(tf_ids)


def test_grn_deepsem_errors(small):
    model, adata = small
    with pytest.raises(ValueError, match="pass the model"):
        scl.tl.grn(adata)
    with pytest.raises(ValueError, match="'cosine' or 'deepsem'"):
        scl.tl.grn(adata, model, method="genie3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_seeds"):
        scl.tl.grn(adata, method="deepsem", n_seeds=0)
    with pytest.raises(ValueError, match="unknown deepsem_kwargs"):
        scl.tl.grn(adata, method="deepsem", deepsem_kwargs={"epochs": 3})
    with pytest.raises(ValueError, match="tfs"):
        scl.tl.grn(adata, method="deepsem", tfs=["NOT_A_GENE"])
    with pytest.raises(ValueError, match="n_epochs"):
        DeepSEMConfig(n_epochs=0)
    with pytest.raises(ValueError, match="square"):
        DeepSEM(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="shape"):
        train_deepsem(np.ones((5, 3)), torch.zeros(4, 4))
