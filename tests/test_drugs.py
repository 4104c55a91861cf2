"""Drugs: RDKit featurisers, the GDSC loader, cell-line embeddings and the drug response model.

Data: the committed subset ``tests/data/drug`` (DeepCDR's SMILES of 223 drugs and their shipped
graph features in full, the GDSC ln IC50 values of the five CellBench cell lines and 25 other
GDSC cell lines, their CCLE annotations; 200 DeepCE SMILES; see ``tests/data/PROVENANCE.md``).
The subset is read even where the shared folder exists, so that the runtime does not depend on
it (the full GDSC matrix is the benchmark's, ``benchmarks/report_drug_response.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sclong_scverse as scl
from conftest import TEST_DATA
from sclong_scverse.chem import DrugFeatureError
from sclong_scverse.model import ModelIntegrityError, SCLONGDrugResponse
from sclong_scverse.model._drug_response import baseline_predictions, split_pairs
from sclong_scverse.module._module import HEAD_POOLING
from sclong_scverse.pp import ScLongInputError

pytest.importorskip("rdkit", reason="the [chem] extra (RDKit) is not installed")

DEEPCDR = TEST_DATA / "drug" / "deepcdr"
DEEPCE = TEST_DATA / "drug" / "deepce"
#: the CellBench lines' DepMap ids (CCLE annotation table, checked below)
CELLBENCH_DEPMAP = {
    "A549": "ACH-000681",
    "H1975": "ACH-000587",
    "H2228": "ACH-000447",
    "H838": "ACH-000416",
    "HCC827": "ACH-000012",
}


#: torch on 2 threads in this module (the CI machine's cores), restored after
pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def gdsc():
    if not DEEPCDR.is_dir():
        pytest.skip("tests/data/drug not found (scripts/build_test_data.py)")
    return scl.datasets.gdsc_deepcdr(DEEPCDR)


@pytest.fixture(scope="module")
def smiles() -> dict[str, str]:
    lines = (DEEPCDR / "223drugs_pubchem_smiles.txt").read_text().splitlines()
    return dict(line.split("\t") for line in lines if line.strip())


# ---------------------------------------------------------------------- featurisers
def test_deepcdr_features_reproduce_the_shipped_files_for_all_223_drugs(smiles, tmp_path):
    import zipfile

    with zipfile.ZipFile(DEEPCDR / "drug_graph_feat.zip") as archive:
        archive.extractall(tmp_path)
    shipped = scl.chem.read_deepcdr_graph_features(tmp_path / "drug_graph_feat")
    assert len(shipped) == 223 and set(shipped) == set(smiles)
    for pubchem, reference in shipped.items():
        graph = scl.chem.deepcdr_graph(smiles[pubchem], pubchem)
        # exact: the same 75 features per atom, the same atom order (sorted by degree)
        np.testing.assert_array_equal(graph.atom_features, reference.atom_features)
        assert graph.adjacency_list == reference.adjacency_list
        np.testing.assert_array_equal(graph.degrees, reference.degrees)
    # the padded network input: DeepCDR's CalculateGraphFeat (normalised block + identity)
    graph = scl.chem.deepcdr_graph(smiles["5289247"], "5289247")
    features, adjacency = graph.padded()
    n = graph.n_atoms
    assert features.shape == (100, 75) and adjacency.shape == (100, 100)
    assert not features[n:].any()
    np.testing.assert_allclose(adjacency, adjacency.T)
    np.testing.assert_array_equal(adjacency[n:, n:], np.eye(100 - n))
    a = graph.adjacency() + np.eye(n)
    d = a.sum(axis=1) ** -0.5
    np.testing.assert_allclose(adjacency[:n, :n], a * d[:, None] * d[None, :], rtol=1e-6)


def test_deepcdr_atom_features_by_hand():
    # ethanol CCO: the oxygen has degree 1, implicit valence 1, sp3, one hydrogen
    graph = scl.chem.deepcdr_graph("CCO", "ethanol")
    assert graph.atom_features.shape == (3, 75)
    # degree sort: the two degree-1 atoms (C0, O2) first, then the central carbon
    assert graph.degrees.tolist() == [1, 1, 2]
    oxygen = graph.atom_features[1]
    assert oxygen[2] == 1 and oxygen[:44].sum() == 1  # element O
    assert oxygen[44 + 1] == 1  # degree 1
    assert oxygen[55 + 1] == 1  # implicit valence 1
    assert oxygen[64 + 2] == 1  # SP3
    assert oxygen[70 + 1] == 1  # one hydrogen
    assert graph.adjacency_list == [[2], [2], [0, 1]]


def test_deepce_features_on_real_smiles():
    table = pd.read_csv(DEEPCE / "drugs_smiles.csv", header=None, names=["drug", "smiles"])
    features = scl.chem.featurize_drugs(
        dict(zip(table["drug"], table["smiles"], strict=True)), "deepce"
    )
    assert len(features["graphs"]) == len(table) == 200
    for graph in features["graphs"].values():
        n_atoms = graph["atom_features"].shape[0]
        assert graph["atom_features"].shape[1] == 62 and graph["bond_features"].shape[1] == 6
        assert graph["edge_index"].shape == (2, graph["bond_features"].shape[0])
        assert graph["edge_index"].max() < n_atoms
        # one element, one degree, one hydrogen count, one implicit valence per atom
        np.testing.assert_array_equal(graph["atom_features"][:, :61].sum(axis=1), 4)
        # exactly one bond type per bond
        np.testing.assert_array_equal(graph["bond_features"][:, :4].sum(axis=1), 1)
    benzene = scl.chem.deepce_graph("c1ccccc1", "benzene")
    assert benzene["atom_features"][:, 61].tolist() == [1.0] * 6  # aromatic
    np.testing.assert_array_equal(benzene["bond_features"][:, 3:], 1)  # aromatic, conjugated, ring


def test_bad_smiles_and_large_molecules_name_the_drug(smiles):
    with pytest.raises(DrugFeatureError, match="'broken'.*C1CC"):
        scl.chem.deepcdr_graph("C1CC(", "broken")
    with pytest.raises(DrugFeatureError, match="'empty'"):
        scl.chem.deepce_graph("", "empty")
    with pytest.raises(DrugFeatureError, match="'148124' has 58 heavy atoms.*max_atoms=50"):
        scl.chem.deepcdr_graph(smiles["148124"], "148124", max_atoms=50)  # docetaxel
    with pytest.raises(DrugFeatureError, match="2 of 3 drugs") as error:
        scl.chem.featurize_drugs({"ok": "CCO", "bad1": "xyz", "bad2": "C(C"})
    assert "'bad1'" in str(error.value) and "'bad2'" in str(error.value)


# ---------------------------------------------------------------------- data
def test_gdsc_loader_and_cellbench_depmap_ids(gdsc):
    table = gdsc["ln_ic50"]
    assert table.shape == (30, 223) and gdsc["n_dropped_drugs"] == 28
    assert set(table.columns) == set(gdsc["smiles"].index)
    ids = scl.datasets.depmap_ids(list(CELLBENCH_DEPMAP), gdsc["cell_lines"])
    assert ids.to_dict() == CELLBENCH_DEPMAP
    assert set(CELLBENCH_DEPMAP.values()) <= set(table.index)
    # two GDSC ids of one compound (PubChem 10196499) are averaged per cell line
    raw = pd.read_csv(DEEPCDR / "GDSC_IC50.csv.gz", index_col=0)
    listing = pd.read_csv(DEEPCDR / "GDSC_drug_list_2019-06-24.csv", dtype={"PubCHEM": str})
    gdsc_ids = ["GDSC:" + str(i) for i in listing.loc[listing["PubCHEM"] == "10196499", "drug_id"]]
    assert len(gdsc_ids) == 2
    expected = raw.loc[gdsc_ids].mean(axis=0)  # NaN-aware, as the loader
    np.testing.assert_allclose(table["10196499"].to_numpy(), expected[table.index].to_numpy())


def test_baselines_match_a_hand_computation():
    train = pd.DataFrame(
        {
            "drug": ["a", "a", "b", "b", "c"],
            "cell_line": ["x", "y", "x", "z", "y"],
            "ln_ic50": [1.0, 3.0, 5.0, 7.0, 2.0],
        }
    )
    pairs = pd.DataFrame({"drug": ["a", "b", "c", "new"], "cell_line": ["z", "y", "x", "x"]})
    out = baseline_predictions(train, pairs)
    grand = 18.0 / 5
    drug = {"a": 2.0, "b": 6.0, "c": 2.0, "new": grand}
    cell = {"x": 3.0, "y": 2.5, "z": 7.0}
    for i, (d, c) in enumerate(zip(pairs["drug"], pairs["cell_line"], strict=True)):
        assert out["drug_mean"][i] == pytest.approx(drug[d])
        assert out["cell_line_mean"][i] == pytest.approx(cell[c])
        assert out["drug_cell_line_mean"][i] == pytest.approx(drug[d] + cell[c] - grand)


def test_splits_hold_out_whole_drugs_or_cell_lines(gdsc):
    pairs = gdsc["ln_ic50"].stack().rename("ln_ic50").reset_index()
    pairs.columns = ["cell_line", "drug", "ln_ic50"]
    for kind, column in (("leave_drug_out", "drug"), ("leave_cell_line_out", "cell_line")):
        split = split_pairs(pairs, kind, seed=3)
        np.testing.assert_array_equal(split, split_pairs(pairs, kind, seed=3))  # seeded
        groups = {s: set(pairs.loc[split == s, column]) for s in ("train", "validation", "test")}
        assert all(groups.values())
        assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
        assert not groups["validation"] & groups["test"]
    split = split_pairs(pairs, "random", test_fraction=0.2, validation_fraction=0.1, seed=0)
    assert (split == "test").mean() == pytest.approx(0.2, abs=1e-3)
    assert (split == "validation").mean() == pytest.approx(0.1, abs=1e-3)
    assert not (split == split_pairs(pairs, "random", seed=1)).all()
    with pytest.raises(ValueError, match="split must be one of"):
        split_pairs(pairs, "scaffold")


# ---------------------------------------------------------------------- model
def _lines(gdsc, features: pd.DataFrame):
    import anndata as ad

    table = gdsc["ln_ic50"].loc[features.index]
    adata = ad.AnnData(X=features.to_numpy(np.float32), obs=pd.DataFrame(index=features.index))
    adata.obsm["ln_ic50"] = table
    return adata


@pytest.fixture(scope="module")
def tissue_features(gdsc):
    """A per-cell-line table of the 30 lines: CCLE site and histology one-hot (real metadata)."""
    annotations = gdsc["cell_lines"][["Site_Primary", "Histology"]].fillna("unknown")
    return pd.get_dummies(annotations.astype(str)).astype(np.float32)


def test_drug_response_model_trains_selects_on_validation_and_round_trips(
    gdsc, tissue_features, tmp_path, caplog
):
    adata = _lines(gdsc, tissue_features)
    SCLONGDrugResponse.setup_anndata(adata)
    small = {"graph_dims": (32, 32), "cell_dims": (32,), "fusion_dims": (32,), "dropout": 0.0}
    with caplog.at_level("INFO"):
        model = SCLONGDrugResponse(adata, smiles=gdsc["smiles"], **small)
    n_measured = int(np.isfinite(gdsc["ln_ic50"].to_numpy()).sum())
    assert len(model.pairs_) == n_measured and model.n_unmeasured_ == 30 * 223 - n_measured
    assert f"{model.n_unmeasured_} of {30 * 223}" in caplog.text  # dropped with a count
    counts = model.split("leave_cell_line_out", test_fraction=0.2, validation_fraction=0.2)
    assert counts.loc["test", "cell_lines"] == 6 and counts.loc["validation", "cell_lines"] == 6
    history = model.train(
        max_epochs=6,
        batch_size=1024,
        lr=1e-2,
        early_stopping_patience=None,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    assert len(history) == 6
    # trained by the Lightning trainer: scvi-tools' history, per epoch
    assert {"train_loss", "validation_loss"} <= set(model.history)
    assert len(model.history["train_loss"]) == 6
    # the kept weights are those of the best validation epoch (never chosen on test)
    best = history["validation_loss"].min()
    assert model.best_epoch_ == int(history["validation_loss"].idxmin())
    # below the trivial baseline: the training mean ln IC50 predicted for every pair
    pairs = model.pairs_
    train_mean = pairs.loc[pairs["split"] == "train", "ln_ic50"].mean()
    validation = pairs.loc[pairs["split"] == "validation", "ln_ic50"]
    assert best < float(((validation - train_mean) ** 2).mean())
    scores = model.evaluate(splits=("validation", "test"))
    validation = scores[(scores["method"] == "model") & (scores["split"] == "validation")]
    assert validation["rmse"].iloc[0] ** 2 == pytest.approx(best, rel=1e-4)
    test = scores.set_index(["method", "split"])
    assert test.loc[("model", "test"), "pearson"] > 0.2
    # at least as good as the ridge probe on its own inputs (issue 27): cell-line features,
    # drug one-hot and mean atom features (measured: Pearson 0.870 vs 0.869, RMSE 1.438 vs
    # 1.441 on these held-out cell lines; the network alone, residual=False, 0.80 / 1.73)
    assert test.loc[("model", "test"), "pearson"] >= test.loc[("ridge", "test"), "pearson"] - 0.02
    assert test.loc[("model", "test"), "rmse"] <= 1.02 * test.loc[("ridge", "test"), "rmse"]
    # held-out cell lines: the cell-line mean is a constant (undefined correlation)
    assert np.isnan(test.loc[("cell_line_mean", "test"), "pearson"])
    assert test.loc[("drug_mean", "test"), "pearson"] > 0.5
    table = model.predict(["5289247", "11364421"], ["ACH-000681", "ACH-000012"])
    assert table.shape == (2, 2) and list(table.columns) == ["ACH-000681", "ACH-000012"]
    new = model.predict({"ethanol": "CCO"}, tissue_features.iloc[:3])
    assert new.shape == (1, 3) and np.isfinite(new.to_numpy()).all()
    with pytest.raises(ScLongInputError, match="Unknown cell-line ids"):
        model.predict(None, ["ACH-999999"])
    with pytest.raises(ScLongInputError, match="Unknown drugs"):
        model.predict(["aspirin"])
    model.save(tmp_path / "drug")
    loaded = SCLONGDrugResponse.load(tmp_path / "drug", adata.copy())
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    pd.testing.assert_frame_equal(loaded.pairs_, model.pairs_)
    manifest = tmp_path / "drug" / "model.pt"
    manifest.write_bytes(manifest.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelIntegrityError, match="checksum"):
        SCLONGDrugResponse.load(tmp_path / "drug", adata.copy())


def test_drug_response_bad_input(gdsc, tissue_features):
    adata = _lines(gdsc, tissue_features)
    with pytest.raises(KeyError, match="response_key='ic50'"):
        SCLONGDrugResponse.setup_anndata(adata, response_key="ic50")
    adata.obsm["empty"] = gdsc["ln_ic50"].loc[adata.obs_names] * np.nan
    with pytest.raises(ScLongInputError, match="no measured"):
        SCLONGDrugResponse.setup_anndata(adata, response_key="empty")
    del adata.obsm["empty"]
    SCLONGDrugResponse.setup_anndata(adata)
    partial = dict(list(gdsc["smiles"].items())[:200])
    with pytest.raises(ScLongInputError, match="23 drugs of the response table have no SMILES"):
        SCLONGDrugResponse(adata, smiles=partial)
    nan_features = adata.copy()
    nan_features.X[0, 0] = np.nan
    with pytest.raises(ScLongInputError, match="finite"):
        SCLONGDrugResponse.setup_anndata(nan_features)


# ---------------------------------------------------------------------- cell-line vectors
def test_cell_line_embedding_mean_and_pseudobulk(cellbench_top):
    rows = np.concatenate(
        [np.flatnonzero(cellbench_top.obs["cell_line"] == c)[:4] for c in CELLBENCH_DEPMAP]
    )
    adata = cellbench_top[rows, :256].copy()
    scl.pp.normalize(adata)  # the 256 genes' own normalisation
    scl.SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = scl.SCLONG(adata, config="tiny", gene_graph=False)
    table = scl.tl.cell_line_embedding(adata, model, groupby="cell_line", key_added="lines")
    latent = model.get_latent_representation(adata, pooling=HEAD_POOLING)  # the heads' pooling
    assert list(table.index) == sorted(CELLBENCH_DEPMAP)
    for line in table.index:
        mine = latent[adata.obs["cell_line"].to_numpy() == line].mean(axis=0)
        np.testing.assert_allclose(table.loc[line].to_numpy(), mine, rtol=1e-5, atol=1e-6)
    assert adata.uns["lines"]["embedding"] is table
    assert adata.uns["lines"]["n_cells"].tolist() == [4] * 5
    assert adata.uns["lines"]["params"]["pooling"] == "mean"
    bulk = scl.tl.cell_line_embedding(adata, model, groupby="cell_line", pooling="pseudobulk")
    # one profile per line: the summed counts, normalised as scLong expects, embedded once
    import anndata as ad

    line = "H838"
    summed = np.asarray(adata.X[adata.obs["cell_line"].to_numpy() == line].sum(axis=0))
    profile = ad.AnnData(X=summed.astype(np.float32), var=pd.DataFrame(index=adata.var_names))
    scl.pp.normalize(profile, allow_non_integer=True)
    # (up to the FAVOR+ key stabiliser's batch dependence: 5 profiles in one batch vs 1)
    np.testing.assert_allclose(
        bulk.loc[line].to_numpy(),
        model.get_latent_representation(profile, pooling=HEAD_POOLING)[0],
        rtol=1e-3,
    )
    assert not np.allclose(bulk.to_numpy(), table.to_numpy())
    with pytest.raises(KeyError, match="groupby='tissue'"):
        scl.tl.cell_line_embedding(adata, model, groupby="tissue")
