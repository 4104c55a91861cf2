"""scLong GRNs handed to decoupler (TF activities), next to the TRRUST prior, on real PBMCs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sclong_scverse as scl
from sclong_scverse.model import SCLONG
from sclong_scverse.pp import ScLongInputError

pytest.importorskip("decoupler")

from conftest import DATA_DIR, data_file

T_CELLS = [
    "CD4+/CD25 T Reg",
    "CD4+/CD45RA+/CD25- Naive T",
    "CD4+/CD45RO+ Memory",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
]


@pytest.fixture(scope="module")
def pbmc_grn():
    """pbmc68k_reduced (700 PBMCs, 765 genes) with a tiny scLong GRN and the TRRUST prior."""
    adata = scl.datasets.pbmc68k_counts()
    scl.pp.normalize(adata, layer="counts")
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config="tiny")
    model.train(max_epochs=2, batch_size=16, lr=5e-3, accelerator="cpu", enable_progress_bar=False)
    scl.tl.grn(adata, model, center=True)
    trrust = pd.read_csv(
        data_file(DATA_DIR / "grn" / "trrust" / "trrust_rawdata.human.tsv"),
        sep="\t",
        header=None,
        names=["source", "target", "mode", "pmids"],
    )
    trrust["weight"] = np.where(trrust["mode"] == "Repression", -1.0, 1.0)
    return adata, trrust


def test_grn_edges_carry_decouplers_weight_column(pbmc_grn):
    adata, trrust = pbmc_grn
    edges = scl.tl.grn_edges(adata, n_top=20_000)
    assert list(edges.columns) == ["source", "target", "weight", "score"]
    np.testing.assert_array_equal(edges["weight"], edges["score"])  # score: alias, one release
    # evaluate_grn reads decoupler's spelling too
    by_weight = scl.tl.evaluate_grn(edges.drop(columns="score"), trrust[["source", "target"]])
    by_score = scl.tl.evaluate_grn(edges.drop(columns="weight"), trrust[["source", "target"]])
    assert by_weight == pytest.approx(by_score, nan_ok=True)


def test_tf_activities_from_scLong_and_from_trrust(pbmc_grn, capsys):
    adata, trrust = pbmc_grn
    before = adata.layers["sclong"].copy()
    tfs = pd.unique(trrust["source"])
    # the prior, scored the same way: a check that values and orientation are right
    scl.tl.tf_activities(adata, trrust, key_added="trrust", tmin=3)
    prior = adata.obsm["trrust_ulm"]
    labels = adata.obs["bulk_labels"]
    cebpa = prior["CEBPA"].groupby(labels, observed=True).mean()
    # CEBPA drives the myeloid programme: highest in monocytes, above every T-cell group
    assert cebpa["CD14+ Monocyte"] > cebpa[T_CELLS].max() + 1.0
    # the scLong network, restricted to TRRUST's TFs, 20 strongest targets each
    scl.tl.tf_activities(adata, tfs=tfs, n_targets=20)
    scores = adata.obsm["sclong_tf_ulm"]
    padj = adata.obsm["sclong_tf_ulm_padj"]
    assert scores.shape[0] == adata.n_obs and scores.shape[1] > 20
    assert set(scores.columns) <= set(tfs) & set(adata.var_names)
    assert np.isfinite(scores.to_numpy()).all()
    assert ((padj.to_numpy() >= 0) & (padj.to_numpy() <= 1)).all()
    params = adata.uns["sclong_tf"]["params"]
    assert params["n_targets"] == 20 and params["n_edges"] == 20 * params["n_tfs"]
    shared = scores.columns.intersection(prior.columns)
    agreement = [np.corrcoef(scores[tf], prior[tf])[0, 1] for tf in shared if prior[tf].std() > 0]
    with capsys.disabled():
        print(
            f"\nTF activities: scLong net {scores.shape[1]} TFs, TRRUST {prior.shape[1]}; median "
            f"per-TF correlation over {len(agreement)} shared TFs {np.median(agreement):.2f}"
        )
    assert (adata.layers["sclong"] != before).nnz == 0  # values untouched


def test_tf_activities_bad_input(pbmc_grn):
    adata, trrust = pbmc_grn
    with pytest.raises(ValueError, match="give tfs"):
        scl.tl.tf_activities(adata)
    with pytest.raises(ScLongInputError, match="None of the 2 TFs"):
        scl.tl.tf_activities(adata, tfs=["ENSG00000141510", "ENSG00000245848"])
    with pytest.raises(ScLongInputError, match="layers\\['missing'\\] not found"):
        scl.tl.tf_activities(adata, trrust, layer="missing")
    with pytest.raises(ValueError, match="missing \\['weight'\\]"):
        scl.tl.tf_activities(adata, trrust[["source", "target"]])
    with pytest.raises(ValueError, match="method must be"):
        scl.tl.tf_activities(adata, trrust, method="viper")
