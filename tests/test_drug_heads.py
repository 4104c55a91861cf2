"""Chemical perturbation (DeepCE-style) and drug combination (DeepDDS-style) heads, their readers.

Data: the committed subsets ``tests/data`` (read even where the shared folder exists, so that the
runtime and the numbers do not depend on it): DeepCE's SMILES of 200 L1000 compounds, DeepCE's
978 landmark genes (``gene_vector.csv.gz``: all rows, the first 16 of 128 vector columns), the
CellBench Drop-seq batch (all genes, three lung cancer cell lines). No L1000 signatures and no
O'Neil combinations are offline: the readers are tested on files written here in the published
column layouts, and the heads on targets that are *fixed, documented functions of real inputs*
(:func:`descriptor_profiles`, :func:`logp_synergy`). Those targets only show that each head
trains end to end and learns from drug structure on compounds it never saw; they are not a
biological evaluation (``docs/drugs.md`` lists what needs data that is not offline here).
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import sclong_scverse as scl
from conftest import TEST_DATA
from sclong_scverse.chem import DrugFeatureError
from sclong_scverse.genes import GeneVocabulary
from sclong_scverse.model import (
    ModelIntegrityError,
    SCLONGChemPerturbation,
    SCLONGDrugCombination,
    sclong_gene_features,
    split_combinations,
)
from sclong_scverse.pp import ScLongInputError

pytest.importorskip("rdkit", reason="the [chem] extra (RDKit) is not installed")

DEEPCE = TEST_DATA / "drug" / "deepce"
CELLBENCH = TEST_DATA / "scrna" / "cellbench"
#: the metadata columns of DeepCE's signature files, in the published order
DEEPCE_HEADER = ["sig_id", "pert_id", "pert_type", "cell_id", "pert_idose"]
#: heads small enough for a CPU test
CHEM_SIZES = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "ff_dim": 32,
    "hidden_dim": 32,
    "embedding_dim": 8,
    "dropout": 0.0,
    "gene_self_attention": False,
}
COMBO_SIZES = {"graph_dims": (32, 32), "cell_dims": (32,), "fusion_dims": (64,), "dropout": 0.1}


#: torch on 2 threads in this module (the CI machine's cores), restored after
pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def landmarks() -> list[str]:
    if not DEEPCE.is_dir():
        pytest.skip("tests/data/drug not found (scripts/build_test_data.py)")
    return scl.datasets.deepce_landmark_genes(DEEPCE)


@pytest.fixture(scope="module")
def smiles() -> pd.Series:
    return scl.datasets.read_deepce_smiles(DEEPCE)


@pytest.fixture(scope="module")
def sclong(landmarks):
    """A tiny scLong pretrained 2 epochs on the CellBench Drop-seq cells (the landmark genes)."""
    cells = scl.datasets.cellbench(TEST_DATA, batches=("sc_dropseq",))
    positions = GeneVocabulary(list(cells.var_names)).align(landmarks, min_coverage=0.0)
    positions = positions.var_positions
    genes = sorted(set(np.asarray(cells.var_names)[positions[positions >= 0]]))
    cells = cells[:, genes].copy()
    scl.pp.normalize(cells)
    scl.SCLONG.setup_anndata(cells, layer="sclong")
    torch.manual_seed(0)
    model = scl.SCLONG(cells, config="tiny")
    model.train(max_epochs=2, batch_size=16, lr=5e-3, accelerator="cpu", enable_progress_bar=False)
    return model, cells


@pytest.fixture(scope="module")
def gene_vectors(sclong, landmarks) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sclong_gene_features(sclong[0], landmarks)


@pytest.fixture(scope="module")
def line_vectors(sclong) -> pd.DataFrame:
    model, cells = sclong
    return scl.tl.cell_line_embedding(cells, model, groupby="cell_line")


def descriptors(smiles: pd.Series) -> np.ndarray:
    """Six RDKit descriptors of each drug, standardised over the drugs (real inputs)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen, rdMolDescriptors

    rows = []
    for value in smiles:
        m = Chem.MolFromSmiles(value)
        rows.append(
            [
                Crippen.MolLogP(m),
                rdMolDescriptors.CalcTPSA(m),
                rdMolDescriptors.CalcNumHBD(m),
                rdMolDescriptors.CalcNumHBA(m),
                rdMolDescriptors.CalcFractionCSP3(m),
                rdMolDescriptors.CalcNumAromaticRings(m),
            ]
        )
    table = np.asarray(rows)
    return (table - table.mean(axis=0)) / table.std(axis=0)


def descriptor_profiles(
    smiles: pd.Series, gene_vectors: pd.DataFrame, cell_lines, seed: int = 0
) -> ad.AnnData:
    """Signatures that are a fixed function of real inputs (NOT a biological evaluation).

    ``profile[drug, gene] = a(dose) * desc(drug)^T R v(gene)``: ``desc`` the drug's six
    standardised RDKit descriptors (:func:`descriptors`), ``v`` the gene's standardised scLong
    vector (0 for a gene without one), ``R`` a seeded random ``6 x dim`` matrix, ``a`` = 0.77 at
    0.37 µM and 1 at 10 µM (``0.5 + 0.5 log10(dose / 0.04) / log10(250)``). Each drug x cell
    line x dose is kept with probability 1/2 (seeded). A per-gene random map of the descriptors
    (no link to the gene vectors) would be out of reach of any model that knows genes only
    through their vectors, as DeepCE's design does; this target asks the head to learn the
    drug x gene interaction from drug graphs, which is what it is for.
    """
    rng = np.random.default_rng(seed)
    d = descriptors(smiles)
    v = gene_vectors.to_numpy(dtype=np.float64)
    v = np.nan_to_num((v - np.nanmean(v, axis=0)) / np.nanstd(v, axis=0))
    r = rng.normal(size=(d.shape[1], v.shape[1])) / np.sqrt(d.shape[1] * v.shape[1])
    doses = {"0.37 um": 0.37, "10.0 um": 10.0}
    rows, values = [], []
    for i, drug in enumerate(smiles.index):
        for line in cell_lines:
            for label, um in doses.items():
                if rng.random() < 0.5:
                    continue
                a = 0.5 + 0.5 * np.log10(um / 0.04) / np.log10(250)
                values.append(a * (v @ (r.T @ d[i])))
                rows.append((f"SIG{len(rows):04d}:24H", drug, "trt_cp", line, label))
    obs = pd.DataFrame(rows, columns=DEEPCE_HEADER).set_index("sig_id")
    return ad.AnnData(
        np.asarray(values, dtype=np.float32), obs=obs, var=pd.DataFrame(index=gene_vectors.index)
    )


def logp_synergy(smiles: pd.Series, cell_lines, n_pairs: int = 400, seed: int = 0):
    """Combination labels from a documented rule on real descriptors (NOT a biological evaluation).

    ``label = 1`` when ``MolLogP(drug 1) + MolLogP(drug 2)`` (RDKit's Crippen logP) is above the
    cell line's cut-off: the 70%, 50% and 30% quantiles of the pairs' sums for the three cell
    lines in sorted order (30%, 50%, 70% synergistic). ``n_pairs`` distinct drug pairs (seeded),
    each with every cell line.
    """
    from rdkit import Chem
    from rdkit.Chem import Crippen

    logp = {d: Crippen.MolLogP(Chem.MolFromSmiles(s)) for d, s in smiles.items()}
    rng = np.random.default_rng(seed)
    drugs = np.asarray(smiles.index)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < n_pairs:
        a, b = sorted(rng.choice(len(drugs), 2, replace=False))
        pairs.add((drugs[a], drugs[b]))
    pairs_list = sorted(pairs)
    total = np.array([logp[a] + logp[b] for a, b in pairs_list])
    rows = []
    for line, share in zip(sorted(cell_lines), (0.3, 0.5, 0.7), strict=False):
        cut = np.quantile(total, 1 - share)
        rows += [(a, b, line, int(t > cut)) for (a, b), t in zip(pairs_list, total, strict=True)]
    return pd.DataFrame(rows, columns=["drug1", "drug2", "cell_line", "label"])


# ---------------------------------------------------------------------- linear probes (issue 27)
def drug_table(smiles, kind: str = "morgan") -> np.ndarray:
    """A simple drug representation per SMILES: a fingerprint or the mean of the atom features.

    ``"morgan"``: 1024-bit Morgan fingerprint (radius 2); ``"deepce"`` / ``"deepcdr"``: the
    mean of the drug's 62-d DeepCE / 75-d DeepCDR atom features (the chemical perturbation /
    drug combination head's own input, without its graph).
    """
    if kind == "deepce":
        return np.stack([scl.chem.deepce_graph(s)["atom_features"].mean(axis=0) for s in smiles])
    if kind == "deepcdr":
        return np.stack([scl.chem.deepcdr_graph(s).atom_features.mean(axis=0) for s in smiles])
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return np.stack(
        [generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles]
    ).astype(np.float64)


def _standardized_on(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    mean, scale = table[rows].mean(axis=0), table[rows].std(axis=0)
    return (table - mean) / np.where(scale > 1e-8, scale, 1.0)


def chem_probe(model, drug: str = "deepce") -> dict:
    """Ridge regression of the profiles on ``[drug ; cell line ; dose]``, on the head's split.

    Inputs per profile: the drug's :func:`drug_table` row, the head's scLong cell-line vector
    and the dose one-hot; one ridge per gene (multi-output). The project's probe
    (``model._head_base.ridge_probe``): standardised on the training profiles, the penalty the
    one with the lowest validation MSE, as the head's epoch. Returns DeepCE's metrics on the
    test profiles.
    """
    from sclong_scverse.model._head_base import ridge_probe

    spec, profiles = model.spec_, model.profiles_
    split = profiles["split"].to_numpy()
    rows = {name: np.flatnonzero(split == name) for name in ("train", "validation", "test")}
    drugs = drug_table(spec["smiles"], drug)[profiles["drug"].map(model._drug_index).to_numpy()]
    cells = np.asarray(spec["cell_features"], dtype=np.float64)
    cells = cells[profiles["cell_line"].map(model._cell_index).to_numpy()]
    doses = pd.get_dummies(profiles["dose_um"]).to_numpy(dtype=np.float64)
    targets = model._targets()
    predictions, _ = ridge_probe(np.hstack([drugs, cells, doses]), targets, rows)
    test = rows["test"]
    metrics = scl.tl.signature_metrics(targets[test], predictions[test], ks=(100,), n_true=100)
    return {k: metrics[k] for k in ("pearson", "spearman", "rmse")}


def combination_probe(model, drug: str = "deepcdr") -> dict:
    """Logistic regression on ``[drug 1 + drug 2 ; drug 1 * drug 2 ; cell line]``, head's split.

    The drug pair is combined as the head combines its drug vectors (symmetric in the two
    drugs); the cell line is the head's cell-line feature vector; standardised on the training
    triples. C (of 9, 1e-3 to 1e1) is the one with the lowest validation log-loss, as the
    head's epoch. Returns AUROC and AUPR on the test triples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    triples, spec = model.triples_, model.spec_
    split = triples["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    table = drug_table(spec["smiles"], drug)
    d1 = table[triples["drug1"].map(model._drug_index).to_numpy()]
    d2 = table[triples["drug2"].map(model._drug_index).to_numpy()]
    cells = model._feature_matrix()[triples["cell_line"].map(model._cell_index).to_numpy()]
    x = _standardized_on(np.hstack([d1 + d2, d1 * d2, cells]), train)
    y = triples["label"].to_numpy()
    val, test = split == "validation", split == "test"
    best = (np.inf, None)
    for c in np.logspace(-3, 1, 9):
        probe = LogisticRegression(C=c, max_iter=2000).fit(x[train], y[train])
        loss = log_loss(y[val], probe.predict_proba(x[val])[:, 1], labels=[0, 1])
        if loss < best[0]:
            best = (loss, probe)
    metrics = scl.tl.synergy_metrics(y[test], best[1].predict_proba(x[test])[:, 1])
    return {"auroc": metrics["auroc"], "aupr": metrics["aupr"]}


# ---------------------------------------------------------------------- metrics
def test_signature_metrics_by_hand():
    from scipy import stats

    truth = np.array([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 0.0, 2.0, 0.0, 3.0]])
    prediction = np.array([[2.0, 3.0, 0.0, 1.0, -2.0, -1.0], [1.0, 0.0, 2.0, 0.0, 3.0, 0.0]])
    out = scl.tl.signature_metrics(truth, prediction, ks=(1, 2), n_true=2, per_profile=True)
    pearson = [stats.pearsonr(t, p)[0] for t, p in zip(truth, prediction, strict=True)]
    spearman = [stats.spearmanr(t, p)[0] for t, p in zip(truth, prediction, strict=True)]
    assert out["pearson"] == pytest.approx(np.mean(pearson))
    assert out["spearman"] == pytest.approx(np.mean(spearman))
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((truth - prediction) ** 2)))
    # profile 1: true top-2 {0, 1}, predicted top-1 {1}, top-2 {1, 0}; bottom-2 {4, 5}
    # profile 2: true top-2 {3, 5}, predicted top-1 {4} (miss), top-2 {4, 2} (miss)
    assert out["precision_up@1"] == pytest.approx((1 + 0) / 2)
    assert out["precision_up@2"] == pytest.approx((1.0 + 0.0) / 2)
    # bottom: profile 1 true {5, 4} / predicted top-1 {4}: hit; profile 2 true bottom-2 (stable
    # order of the ties at 0: genes 0, 2) vs predicted bottom-1 {1}: miss
    assert out["precision_down@1"] == pytest.approx(0.5)
    assert out["n_profiles"] == 2
    with pytest.raises(ValueError, match="NaN"):
        scl.tl.signature_metrics(truth * np.nan, prediction)
    with pytest.raises(ValueError, match="one shape"):
        scl.tl.signature_metrics(truth, prediction[:, :3])


def test_synergy_metrics_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    scores = np.array([0.1, 0.8, 0.4, 0.35, 0.9, 0.2, 0.6, 0.7])
    out = scl.tl.synergy_metrics(labels, scores)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert out["aupr"] == pytest.approx(average_precision_score(labels, scores))
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert np.isnan(scl.tl.synergy_metrics([1, 1], [0.2, 0.9])["auroc"])  # one class
    with pytest.raises(ValueError, match="0 or 1"):
        scl.tl.synergy_metrics([0, 2], [0.1, 0.2])


# ---------------------------------------------------------------------- readers
def test_parse_dose():
    out = scl.datasets.parse_dose(["10.0 um", "0.04 um", "500 nM", "1.11 µM", "3.33uM", 2.5])
    np.testing.assert_allclose(out, [10.0, 0.04, 0.5, 1.11, 3.33, 2.5])
    with pytest.raises(ScLongInputError, match=r"2 dose labels.*'-666'.*'ten um'"):
        scl.datasets.parse_dose(["10.0 um", "-666", "ten um"])
    with pytest.raises(ScLongInputError, match="'5 kg'"):
        scl.datasets.parse_dose(["5 kg"])


def _signature_file(path, landmarks, rows, order=None):
    """Write rows (metadata tuple, values) in DeepCE's layout (optionally permuted columns)."""
    columns = DEEPCE_HEADER + list(landmarks)
    frame = pd.DataFrame([list(meta) + list(values) for meta, values in rows], columns=columns)
    if order is not None:
        frame = frame[order]
    frame.to_csv(path, index=False)


def test_read_deepce_signatures_layout(tmp_path, landmarks, caplog):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, len(landmarks)))
    replicate = np.vstack([base[0] + 0.1, base[0] - 0.5, base[0] + 0.05])  # 3 replicates
    with_nan = base[3].copy()
    with_nan[7] = np.nan
    rows = [
        (("CPC006_A375_24H:BRD-A:10", "BRD-A", "trt_cp", "A375", "10.0 um"), replicate[0]),
        (("CPC006_A375_24H:BRD-A:10b", "BRD-A", "trt_cp", "A375", "10.0 um"), replicate[1]),
        (("CPC007_A375_24H:BRD-A:10c", "BRD-A", "trt_cp", "A375", "10.0 um"), replicate[2]),
        (("CPC006_MCF7_24H:BRD-B:0.04", "BRD-B", "trt_cp", "MCF7", "0.04 um"), base[1]),
        (("CPC006_MCF7_6H:BRD-B:0.04", "BRD-B", "trt_cp", "MCF7", "0.04 um"), base[2]),
        (("CPC006_PC3_24H:BRD-C:1.11", "BRD-C", "trt_cp", "PC3", "1.11 um"), with_nan),
        (("KD009_PC3_24H:TP53", "TRCN1", "trt_sh", "PC3", "-666"), base[4]),
        (("CPC008_PC3_24H:BRD-D:500", "BRD-D", "trt_cp", "PC3", "500 nM"), base[5]),
    ]
    path = tmp_path / "signature_train.csv"
    _signature_file(path, landmarks, rows)
    with caplog.at_level(logging.WARNING):
        adata = scl.datasets.read_deepce_signatures(path, genes=landmarks, time="24H")
    # trt_sh and the 6 h signature filtered out; the NaN profile dropped with a count
    assert "1 of 6 profiles hold NaN" in caplog.text
    info = adata.uns["sclong_signatures"]
    assert info["n_read"] == 8 and info["n_filtered"] == 2 and info["n_dropped_nan"] == 1
    assert list(adata.var_names) == landmarks  # DeepCE's gene order
    assert adata.n_obs == 3 and list(adata.obs["pert_id"]) == ["BRD-A", "BRD-B", "BRD-D"]
    np.testing.assert_allclose(adata.obs["dose_um"], [10.0, 0.04, 0.5])
    assert adata.obs["n_replicates"].tolist() == [3, 1, 1]
    # DeepCE's choice among replicates: the one whose genes sit nearest the middle rank
    ranks = np.argsort(np.argsort(replicate, axis=0), axis=0).mean(axis=1)
    chosen = int(np.argmin((ranks - 1) ** 2))
    assert chosen == 2  # base + 0.05 lies between base - 0.5 and base + 0.1 at every gene
    assert adata.obs["sig_id"].iloc[0] == "CPC007_A375_24H:BRD-A:10c"
    np.testing.assert_allclose(adata.X[0], replicate[chosen], rtol=1e-6)
    np.testing.assert_allclose(adata.X[1], base[1], rtol=1e-6)
    mean = scl.datasets.read_deepce_signatures(path, time="24H", replicates="mean")
    np.testing.assert_allclose(mean.X[0], replicate.mean(axis=0), rtol=1e-5)
    kept = scl.datasets.read_deepce_signatures(path, pert_type=None, replicates="keep")
    assert kept.n_obs == 7  # all but the NaN profile
    assert np.isnan(kept.obs.loc["KD009_PC3_24H:TP53", "dose_um"])  # L1000's -666: missing
    # columns are found by name: another order of the metadata columns reads the same
    permuted = tmp_path / "permuted.csv"
    order = ["pert_idose", "cell_id"] + list(landmarks) + ["pert_type", "sig_id", "pert_id"]
    _signature_file(permuted, landmarks, rows, order=order)
    again = scl.datasets.read_deepce_signatures(permuted, genes=landmarks, time="24H")
    np.testing.assert_array_equal(again.X, adata.X)
    # errors: a metadata column missing, a requested gene absent, a bad replicate rule
    broken = tmp_path / "broken.csv"
    pd.read_csv(path).drop(columns="pert_idose").to_csv(broken, index=False)
    with pytest.raises(ScLongInputError, match=r"lacks the columns \['pert_idose'\]"):
        scl.datasets.read_deepce_signatures(broken)
    with pytest.raises(ScLongInputError, match="1 of the 979 requested genes"):
        scl.datasets.read_deepce_signatures(path, genes=[*landmarks, "NOTAGENE"])
    with pytest.raises(ScLongInputError, match="replicates must be"):
        scl.datasets.read_deepce_signatures(path, replicates="median")


def test_read_gctx(tmp_path, monkeypatch):
    import h5py

    rng = np.random.default_rng(1)
    genes = np.array([b"5720", b"466", b"6009", b"2101"])
    sigs = np.array([b"CPC004_A375_6H:BRD-1:10", b"CPC004_PC3_24H:BRD-2:1", b"CPC5:BRD-3"])
    values = rng.normal(size=(len(sigs), len(genes))).astype(np.float32)  # (n_cols, n_rows)
    path = tmp_path / "level5.gctx"
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "GCTX1.0"
        f["0/DATA/0/matrix"] = values
        f["0/META/ROW/id"] = genes
        f["0/META/ROW/pr_gene_symbol"] = np.array([b"PSME1", b"ATF1", b"RHEB", b"ABL1"])
        f["0/META/COL/id"] = sigs
        f["0/META/COL/cell_id"] = np.array([b"A375", b"PC3", b"-666"])
        f["0/META/COL/pert_dose"] = np.array([10.0, 1.0, -666.0])
    adata = scl.datasets.read_gctx(path)
    assert list(adata.obs_names) == [s.decode() for s in sigs]
    assert list(adata.var_names) == [g.decode() for g in genes]
    np.testing.assert_array_equal(adata.X, values)  # signatures x genes, as stored
    assert adata.var["pr_gene_symbol"].tolist() == ["PSME1", "ATF1", "RHEB", "ABL1"]
    assert adata.obs["cell_id"].isna().tolist() == [False, False, True]  # -666: missing
    assert np.isnan(adata.obs["pert_dose"].iloc[2]) and adata.obs["pert_dose"].iloc[0] == 10.0
    assert "sclong_signatures" in adata.uns
    part = scl.datasets.read_gctx(
        path,
        rows=["2101", "5720"],
        cols=["CPC5:BRD-3", "CPC004_A375_6H:BRD-1:10"],
        col_metadata=pd.DataFrame({"pert_iname": ["x", "y"]}, index=["CPC5:BRD-3", "other"]),
    )
    np.testing.assert_array_equal(part.X, values[[2, 0]][:, [3, 0]])
    monkeypatch.setattr("sclong_scverse.datasets._l1000.GCTX_BLOCK", 2)  # read in blocks
    cols = ["CPC5:BRD-3", "CPC004_PC3_24H:BRD-2:1"]
    blocked = scl.datasets.read_gctx(path, rows=["466", "5720"], cols=cols)
    np.testing.assert_array_equal(blocked.X, values[[2, 1]][:, [1, 0]])
    np.testing.assert_array_equal(scl.datasets.read_gctx(path).X, values)
    assert part.obs["pert_iname"].tolist()[0] == "x" and pd.isna(part.obs["pert_iname"].iloc[1])
    with pytest.raises(ScLongInputError, match="1 row ids are not in the file"):
        scl.datasets.read_gctx(path, rows=["999999"])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["matrix"] = values
    with pytest.raises(ScLongInputError, match="not a GCTx file"):
        scl.datasets.read_gctx(other)


def test_read_deepdds_combinations(tmp_path, smiles, caplog):
    names = list(smiles.index[:4])
    s = [smiles[n] for n in names]
    frame = pd.DataFrame(
        {
            "drug1": [s[0], s[0], s[1], s[2]],
            "drug2": [s[1], s[2], s[3], s[3]],
            "cell": ["A375", "HT29", "A375", "T47D"],
            "label": [0, 1, None, 1],
        }
    )
    path = tmp_path / "new_labels_0_10.csv"
    frame.to_csv(path, index=False)
    with caplog.at_level(logging.WARNING):
        out = scl.datasets.read_deepdds_combinations(path)
    assert "1 of 4 rows have no label" in caplog.text and out["n_dropped"] == 1
    table = out["combinations"]
    assert list(table.columns) == ["drug1", "drug2", "cell_line", "label"]
    assert table["label"].tolist() == [0, 1, 1] and table["drug1"].iloc[0] == s[0]  # SMILES
    # DeepDDS's drug table (no header: name, SMILES, group) names the drugs
    drugs = tmp_path / "drugs_0_10.csv"
    pd.DataFrame({0: names, 1: s, 2: [0, 5, 0, 5]}).to_csv(drugs, header=False, index=False)
    named = scl.datasets.read_deepdds_combinations(path, drugs=drugs)
    assert named["combinations"]["drug1"].tolist() == [names[0], names[0], names[2]]
    assert named["smiles"][names[3]] == s[3]
    frame.assign(label=[0, 1, 2, 1]).to_csv(path, index=False)
    with pytest.raises(ScLongInputError, match=r"labels must be 0 or 1.*'2'"):
        scl.datasets.read_deepdds_combinations(path)
    frame.drop(columns="cell").to_csv(path, index=False)
    with pytest.raises(ScLongInputError, match=r"lacks the columns \['cell'\]"):
        scl.datasets.read_deepdds_combinations(path)
    frame.iloc[:1].to_csv(path, index=False)
    with pytest.raises(ScLongInputError, match="neither names nor SMILES"):
        scl.datasets.read_deepdds_combinations(path, drugs={"other": "CCO"})


# ---------------------------------------------------------------------- gene vectors, guard
def test_landmark_genes_map_through_the_vocabulary_and_unmapped_are_reported(sclong, landmarks):
    model, cells = sclong
    assert len(landmarks) == 978 and landmarks[:3] == ["DDR1", "PAX8", "RPS5"]
    alignment = model.vocabulary.align(landmarks, min_coverage=0.0)
    n_absent = int((alignment.var_positions < 0).sum())
    assert 0 < n_absent < 100  # most landmark symbols map to the Drop-seq Ensembl ids
    with pytest.warns(UserWarning, match=f"{n_absent} of 978 genes do not map"):
        table = sclong_gene_features(model, landmarks)
    assert table.shape == (978, model.module.config.dim) and list(table.index) == landmarks
    assert len(table.attrs["unmapped"]) == n_absent
    assert table.loc[table.attrs["unmapped"]].isna().all().all()
    mapped = alignment.var_positions >= 0
    with torch.inference_mode():
        tokens = model.module.network.gene_embedding().float().numpy()
    np.testing.assert_allclose(
        table.to_numpy()[mapped], tokens[alignment.var_positions[mapped]], rtol=1e-6
    )
    with pytest.warns(UserWarning, match=r"1 of 3 genes.*'NOTAGENE1'"):
        small = sclong_gene_features(model, ["RPS5", "ABCF1", "NOTAGENE1"])
    assert small.attrs["unmapped"] == ["NOTAGENE1"] and small.iloc[:2].notna().all().all()
    contextual = sclong_gene_features(model, ["RPS5", "ABCF1"], kind="contextual", cells=cells)
    assert contextual.notna().all().all()
    assert not np.allclose(contextual.to_numpy(), small.iloc[:2].to_numpy())


def test_signatures_are_never_fed_to_sclong_as_expression(sclong, landmarks):
    model, cells = sclong
    rng = np.random.default_rng(0)
    signatures = ad.AnnData(
        rng.normal(size=(4, len(landmarks))).astype(np.float32),
        var=pd.DataFrame(index=landmarks),
    )
    signatures.uns["sclong_signatures"] = {"kind": "z-score"}
    with pytest.raises(ScLongInputError, match=r"z-scores.*<= -1.*mask"):
        sclong_gene_features(model, landmarks, kind="contextual", cells=signatures)
    unmarked = cells[:4].copy()
    unmarked.X = unmarked.X.toarray() - 2.0 if hasattr(unmarked.X, "toarray") else unmarked.X - 2
    with pytest.raises(ScLongInputError, match="negative values"):
        scl.datasets.check_not_signatures(unmarked, "scl.tl.embed")
    del signatures.uns["sclong_signatures"]
    with pytest.raises(ScLongInputError, match="mask tokens"):  # scLong's own guard
        scl.SCLONG.setup_anndata(signatures)
    with pytest.raises(ScLongInputError, match="cells="):
        sclong_gene_features(model, landmarks, kind="contextual")


# ---------------------------------------------------------------------- chemical perturbation
def test_chem_module_with_gene_self_attention_and_packing():
    from sclong_scverse.module import ChemPerturbationModule, pack_bond_graphs

    graphs = [scl.chem.deepce_graph(s) for s in ("CCO", "c1ccccc1O", "C")]
    packed = pack_bond_graphs(
        [g["atom_features"] for g in graphs],
        [g["bond_features"] for g in graphs],
        [g["edge_index"] for g in graphs],
    )
    assert packed["atoms"].shape == (3 + 7 + 1, 62) and packed["slots"].shape == (3, 7)
    assert packed["degree"].tolist()[:3] == [1, 2, 1] and packed["degree"][-1] == 0
    assert packed["edge_index"].shape[1] == 2 * (2 + 7 + 0)
    features = torch.randn(5, 3)
    features[1] = float("nan")  # a gene without features
    torch.manual_seed(0)
    module = ChemPerturbationModule(features, n_cell_lines=2, n_doses=2, d_model=8, n_heads=2)
    out, attention = module(
        module.atom_vectors(packed),
        packed["slots"],
        torch.tensor([0, 1, 2]),
        torch.zeros(2, 0),
        torch.tensor([0, 1, 1]),
        torch.tensor([1, 0, 1]),
        return_attention=True,
    )
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert attention.shape == (3, 5, 7)
    assert torch.all(attention[0, :, 3:] == 0) and torch.all(attention[2, :, 1:] == 0)  # padding
    out.sum().backward()
    assert module.missing_embedding.grad[1].abs().sum() > 0
    assert module.missing_embedding.grad[0].abs().sum() == 0  # genes with features: not used


#: the trainer settings of the tests (CPU, no progress bar)
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False}
#: the chemical perturbation head's schedule here: 30 epochs (at 15 it was still far below the
#: ridge probe, test Pearson 0.60 vs 0.69; at 30, 0.71)
CHEM_TRAIN = {"max_epochs": 30, "batch_size": 32, "lr": 6e-3, "early_stopping_patience": None}
#: the combination head's: lr 1e-3 over 30 epochs (lr 3e-3 over 15: unstable, AUROC 0.90 vs the
#: logistic probe's 0.92; lr 1e-3 over 30: 0.93)
COMBO_TRAIN = {"max_epochs": 30, "batch_size": 128, "lr": 1e-3, "early_stopping_patience": None}
#: how far below its probe a head may score on the test split: the runs are seeded, but the
#: scLong vectors they read move by ~1e-3 between pretraining runs and float sums with the
#: thread count; 0.02 is also the tolerance issue 27 gives the classifier against its probe
PROBE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def chem_trained(smiles, gene_vectors, line_vectors):
    """The chemical perturbation head trained on ``leave_drug_out`` (30 epochs, Lightning)."""
    signatures = descriptor_profiles(smiles, gene_vectors, line_vectors.index)
    SCLONGChemPerturbation.setup_anndata(signatures)
    with pytest.warns(UserWarning, match=r"\d+ of 978 genes have no features"):
        model = SCLONGChemPerturbation(
            signatures,
            smiles=smiles,
            gene_features=gene_vectors,
            cell_features=line_vectors,
            **CHEM_SIZES,
        )
    counts = model.split("leave_drug_out", seed=0)
    history = model.train(**CHEM_TRAIN, **TRAINER)
    return model, signatures, counts, history


def test_chem_head_learns_drug_structure_on_held_out_compounds(
    chem_trained, smiles, gene_vectors, landmarks, tmp_path
):
    model, signatures, counts, history = chem_trained
    assert set(model.genes_without_features_) == set(gene_vectors.attrs["unmapped"])
    assert counts.loc["test", "drugs"] >= 30 and counts.loc["validation", "drugs"] >= 30
    split = model.profiles_.groupby("split")["drug"].agg(set)
    assert not split["train"] & split["test"] and not split["validation"] & split["test"]
    # trained by the Lightning trainer: a per-epoch frame, and scvi-tools' history per epoch
    assert list(history.columns) == ["train_loss", "validation_loss"]
    assert len(history) == CHEM_TRAIN["max_epochs"]
    for name in ("train_loss", "validation_loss"):
        assert len(model.history[name]) == CHEM_TRAIN["max_epochs"]
    assert model.best_epoch_ == int(history["validation_loss"].idxmin())  # chosen on validation
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    # below the trivial baseline: the mean training profile predicted for every profile
    targets, part = np.asarray(signatures.X), model.profiles_["split"].to_numpy()
    mean = targets[part == "train"].mean(axis=0)
    trivial = float(((targets[part == "validation"] - mean) ** 2).mean())
    assert history["validation_loss"].min() < 0.5 * trivial  # measured: 0.18 vs 0.67
    scores = model.evaluate().set_index(["method", "split"])
    test = scores.xs("test", level="split")
    # held-out compounds: the drug mean has nothing to offer (= the mean profile) and the
    # target has no cell-line term, so any gain comes from the drug graphs
    assert test.loc["model", "pearson"] > test.loc["mean_profile", "pearson"] + 0.15
    assert test.loc["model", "rmse"] < test.loc["mean_profile", "rmse"]
    assert test.loc["model", "rmse"] < test.loc["cell_line_mean", "rmse"]
    assert test.loc["model", "precision_up@100"] > test.loc["mean_profile", "precision_up@100"]
    best = scores.loc[("model", "validation"), "rmse"] ** 2
    assert best == pytest.approx(history["validation_loss"].min(), rel=1e-4)
    # predictions: drugs x cell lines x doses; a new compound from its SMILES
    table = model.predict(["BRD-K70792160"], doses=["10.0 um"])
    assert table.shape == (3, 978) and table.index.names == ["drug", "cell_line", "dose_um"]
    new = model.predict({"ethanol": "CCO"}, cell_lines=["H1975"], doses=[0.37])
    assert new.shape == (1, 978) and np.isfinite(new.to_numpy()).all()
    with pytest.raises(ScLongInputError, match="Unknown cell ids"):
        model.predict(cell_lines=["A549"])
    with pytest.raises(ScLongInputError, match="not in training"):
        model.predict(doses=["1.11 um"])
    with pytest.raises(DrugFeatureError, match="'broken'"):
        model.predict({"broken": "C1CC("})
    model.save(tmp_path / "chem")
    loaded = SCLONGChemPerturbation.load(tmp_path / "chem", signatures.copy())
    np.testing.assert_allclose(loaded.predict_profiles(), model.predict_profiles(), rtol=1e-5)
    pd.testing.assert_frame_equal(loaded.profiles_, model.profiles_)
    pd.testing.assert_frame_equal(loaded.history_frame(), history)
    assert loaded.best_epoch_ == model.best_epoch_ and loaded.split_ == model.split_
    weights = tmp_path / "chem" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelIntegrityError, match="checksum"):
        SCLONGChemPerturbation.load(tmp_path / "chem", signatures.copy())
    # the baseline gene representation (DeepCE's own vectors) and the ablation without any
    deepce = scl.datasets.read_deepce_gene_vectors(DEEPCE)
    assert deepce.shape == (978, 16) and list(deepce.index) == landmarks
    SCLONGChemPerturbation.setup_anndata(signatures)  # load() registered a copy of it
    for features in (deepce, None):
        other = SCLONGChemPerturbation(
            signatures, smiles=smiles, gene_features=features, **CHEM_SIZES
        )
        other.split("leave_drug_out", seed=0)
        other.train(max_epochs=1, batch_size=64, lr=6e-3, **TRAINER)
        assert np.isfinite(other.predict_profiles(rows=[0, 1])).all()


def test_chem_head_at_least_matches_a_ridge_probe(chem_trained):
    """Issue 27: the head is no worse than a ridge on its own inputs (same split, test drugs)."""
    model = chem_trained[0]
    head = model.evaluate(splits=("test",)).set_index("method").loc["model"]
    probe = chem_probe(model)  # drug: mean DeepCE atom features, the head's own input
    morgan = chem_probe(model, drug="morgan")
    assert probe["pearson"] > morgan["pearson"] > 0.5  # the bar: the stronger of the two
    # wide & deep (residual=True): measured over seeds 0-2, 0.79-0.83 vs 0.69; the network
    # alone (residual=False) 0.57-0.64, and it failed this test in CI (0.65)
    assert head["pearson"] >= probe["pearson"] + 0.05
    assert head["rmse"] <= probe["rmse"] - 0.03  # measured: 0.38-0.41 vs 0.50
    # the head's own "ridge" baseline is that probe
    ridge = model.evaluate(splits=("test",)).set_index("method").loc["ridge"]
    assert ridge["pearson"] == pytest.approx(probe["pearson"], abs=1e-4)


def test_chem_bad_input(smiles, gene_vectors, line_vectors):
    signatures = descriptor_profiles(smiles.iloc[:20], gene_vectors, line_vectors.index)
    broken = signatures.copy()
    broken.X[3, 5] = np.nan
    with pytest.raises(ScLongInputError, match=r"1 of \d+ profiles hold NaN.*never imputed"):
        SCLONGChemPerturbation.setup_anndata(broken)
    with pytest.raises(KeyError, match="'dose'"):
        SCLONGChemPerturbation.setup_anndata(signatures, dose_key="dose")
    bad_dose = signatures.copy()
    bad_dose.obs["pert_idose"] = bad_dose.obs["pert_idose"].astype(str)
    bad_dose.obs.iloc[0, bad_dose.obs.columns.get_loc("pert_idose")] = "-666"
    with pytest.raises(ScLongInputError, match="'-666'"):
        SCLONGChemPerturbation.setup_anndata(bad_dose)
    SCLONGChemPerturbation.setup_anndata(signatures)
    first = signatures.obs["pert_id"].iloc[0]
    bad = dict(smiles.iloc[:20])
    bad[first] = "C1CC(N"
    with pytest.raises(DrugFeatureError, match=f"'{first}'"):
        SCLONGChemPerturbation(signatures, smiles=bad, **CHEM_SIZES)
    with pytest.raises(ScLongInputError, match="1 drugs of adata have no SMILES"):
        SCLONGChemPerturbation(signatures, smiles=smiles.drop(first), **CHEM_SIZES)
    with pytest.raises(ScLongInputError, match=r"Unknown cell ids \['HCC827'\]"):
        SCLONGChemPerturbation(
            signatures, smiles=smiles, cell_features=line_vectors.iloc[:2], **CHEM_SIZES
        )
    with pytest.raises(ScLongInputError, match="No gene of adata has features"):
        SCLONGChemPerturbation(
            signatures,
            smiles=smiles,
            gene_features=gene_vectors.set_axis([f"x{i}" for i in range(978)], axis=0),
            **CHEM_SIZES,
        )


# ---------------------------------------------------------------------- drug combinations
def _lines(features: pd.DataFrame, combinations: pd.DataFrame) -> ad.AnnData:
    adata = ad.AnnData(features.to_numpy(np.float32), obs=pd.DataFrame(index=features.index))
    adata.uns["combinations"] = combinations
    return adata


def test_combination_splits_hold_out_whole_groups(smiles, line_vectors):
    frame = logp_synergy(smiles, line_vectors.index, n_pairs=300)
    for kind in ("leave_combination_out", "leave_drug_out", "leave_cell_line_out", "random"):
        split = split_combinations(frame, kind, seed=2)
        np.testing.assert_array_equal(split, split_combinations(frame, kind, seed=2))
        parts = {s: frame[split == s] for s in ("train", "validation", "test")}
        assert all(len(p) for p in parts.values())
        if kind == "leave_drug_out":
            drugs = {s: set(p["drug1"]) | set(p["drug2"]) for s, p in parts.items()}
            held = drugs["test"] - drugs["validation"] - drugs["train"]
            assert held and not held & drugs["train"]
            # every test triple has a drug that training never saw
            seen = drugs["train"]
            assert (~parts["test"]["drug1"].isin(seen) | ~parts["test"]["drug2"].isin(seen)).all()
        if kind == "leave_combination_out":
            keys = {s: set(zip(p["drug1"], p["drug2"], strict=True)) for s, p in parts.items()}
            assert not keys["train"] & keys["test"]
        if kind == "leave_cell_line_out":
            lines = {s: set(p["cell_line"]) for s, p in parts.items()}
            assert not lines["train"] & lines["test"]
    with pytest.raises(ValueError, match="split must be one of"):
        split_combinations(frame, "scaffold")


@pytest.fixture(scope="module")
def combination_trained(smiles, line_vectors):
    """The drug combination head trained on ``leave_drug_out`` (30 epochs, Lightning)."""
    combinations = logp_synergy(smiles, line_vectors.index)
    adata = _lines(line_vectors, combinations)
    SCLONGDrugCombination.setup_anndata(adata)
    model = SCLONGDrugCombination(adata, smiles=smiles, **COMBO_SIZES)
    counts = model.split("leave_drug_out", seed=0)
    history = model.train(**COMBO_TRAIN, **TRAINER)
    return model, adata, combinations, counts, history


def test_a_saved_head_refuses_edits_and_the_command_line_names_it(
    combination_trained, tmp_path, capsys
):
    # issue 23: a head's saved spec is built on the meta device and compared with its weights
    # before the real module is built; sclong embed says what a head's folder holds
    from conftest import rewrite_saved_model
    from sclong_scverse import cli
    from sclong_scverse.errors import ModelIntegrityError

    model, adata = combination_trained[:2]
    model.save(tmp_path / "combo")
    edits = {
        "wide": (
            lambda c: c["attr_dict"]["spec_"].update(fusion_dims=[4096, 4096]),
            "do not fit the spec",
        ),
        "text": (lambda c: c["attr_dict"]["spec_"].update(graph_dims="wide"), "does not build"),
        "other class": (
            lambda c: c["attr_dict"]["registry_"].update(model_name="SCLONGDrugResponse"),
            "holds a SCLONGDrugResponse",
        ),
        "no spec": (lambda c: c["attr_dict"].pop("spec_"), "no registry_ or spec_"),
    }
    for name, (edit, match) in edits.items():
        folder = tmp_path / name
        folder.mkdir()
        for file in (tmp_path / "combo").iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        rewrite_saved_model(folder, edit)
        with pytest.raises(ModelIntegrityError, match=match):
            SCLONGDrugCombination.load(folder, adata.copy())
    # a flipped byte (the head files' own integrity error, as every head gives)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in (tmp_path / "combo").iterdir():
        (damaged / file.name).write_bytes(file.read_bytes())
    raw = bytearray((damaged / "model.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (damaged / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match="checksum"):
        SCLONGDrugCombination.load(damaged, adata.copy())
    query = tmp_path / "lines.h5ad"
    adata.write_h5ad(query)
    code = cli.main(["embed", str(query), "--model", str(tmp_path / "combo"), "--out", "x.h5ad"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "holds a SCLONGDrugCombination" in err


def test_combination_head_learns_on_held_out_drugs(
    combination_trained, smiles, line_vectors, tmp_path
):
    model, adata, combinations, counts, history = combination_trained
    assert counts.loc["test", "triples"] > 100
    assert list(history.columns) == ["train_loss", "validation_loss"]
    assert len(history) == COMBO_TRAIN["max_epochs"]
    for name in ("train_loss", "validation_loss"):
        assert len(model.history[name]) == COMBO_TRAIN["max_epochs"]
    assert model.best_epoch_ == int(history["validation_loss"].idxmin())
    # below the trivial baseline: the BCE of the training base rate on the validation triples
    triples = model.triples_
    rate = triples.loc[triples["split"] == "train", "label"].mean()
    y = triples.loc[triples["split"] == "validation", "label"].to_numpy()
    trivial = float(-np.mean(y * np.log(rate) + (1 - y) * np.log(1 - rate)))
    assert history["validation_loss"].min() < 0.6 * trivial  # measured: 0.36 vs 0.69
    scores = model.evaluate().set_index(["method", "split"]).xs("test", level="split")
    assert scores.loc["model", "auroc"] > 0.8
    for baseline in ("cell_line_rate", "drug_rate", "combination_rate"):
        assert scores.loc["model", "auroc"] > scores.loc[baseline, "auroc"] + 0.1
        assert scores.loc["model", "aupr"] > scores.loc[baseline, "aupr"]
    # symmetric in the two drugs; new drugs from their SMILES
    swapped = model.triples_.rename(columns={"drug1": "drug2", "drug2": "drug1"})
    np.testing.assert_allclose(model.predict(swapped), model.predict(), rtol=1e-5, atol=1e-6)
    query = pd.DataFrame({"drug1": ["ethanol"], "drug2": [smiles.index[0]], "cell_line": ["H1975"]})
    assert 0 <= model.predict(query, smiles={"ethanol": "CCO"})[0] <= 1
    with pytest.raises(ScLongInputError, match="Unknown drugs"):
        model.predict(query)
    with pytest.raises(ScLongInputError, match="Unknown cell ids"):
        model.predict(query.assign(cell_line="A549"), smiles={"ethanol": "CCO"})
    model.save(tmp_path / "combo")
    loaded = SCLONGDrugCombination.load(tmp_path / "combo", adata.copy())
    np.testing.assert_allclose(loaded.predict(), model.predict(), rtol=1e-6)
    # the scLong-free ablation: the same head with the cell line as one-hot
    onehot = pd.DataFrame(np.eye(3, dtype=np.float32), index=line_vectors.index)
    ablation = _lines(onehot, combinations)
    SCLONGDrugCombination.setup_anndata(ablation)
    other = SCLONGDrugCombination(ablation, smiles=smiles, **COMBO_SIZES)
    other.split("leave_drug_out", seed=0)
    other.train(max_epochs=3, batch_size=128, lr=3e-3, **TRAINER)
    assert other.evaluate()["auroc"].notna().all()


def test_combination_head_at_least_matches_a_logistic_probe(combination_trained):
    """Issue 27: the head is no worse than a logistic regression on its own inputs."""
    model = combination_trained[0]
    head = model.evaluate(splits=("test",)).set_index("method").loc["model"]
    probe = combination_probe(model)  # drugs: mean DeepCDR atom features, the head's input
    morgan = combination_probe(model, drug="morgan")
    assert probe["auroc"] > morgan["auroc"] > 0.8  # the bar: the stronger of the two
    assert head["auroc"] >= probe["auroc"] - PROBE_TOLERANCE  # measured: 0.93 vs 0.92
    assert head["aupr"] >= probe["aupr"] - PROBE_TOLERANCE


def test_combination_bad_input(smiles, line_vectors, caplog):
    combinations = logp_synergy(smiles.iloc[:30], line_vectors.index, n_pairs=40)
    adata = _lines(
        line_vectors, combinations.assign(cell_line=["A549"] + [*combinations["cell_line"][1:]])
    )
    with pytest.raises(ScLongInputError, match=r"Unknown cell ids \['A549'\]"):
        SCLONGDrugCombination.setup_anndata(adata)
    adata.uns["combinations"] = combinations.assign(label=[2] + [*combinations["label"][1:]])
    with pytest.raises(ScLongInputError, match="0 or 1"):
        SCLONGDrugCombination.setup_anndata(adata)
    adata.uns["combinations"] = combinations.assign(
        label=[np.nan, np.nan] + [*combinations["label"][2:]]
    )
    SCLONGDrugCombination.setup_anndata(adata)
    with caplog.at_level(logging.WARNING):
        model = SCLONGDrugCombination(adata, smiles=smiles, **COMBO_SIZES)
    assert model.n_unlabelled_ == 2 and len(model.triples_) == len(combinations) - 2
    assert f"2 of {len(combinations)} triples have no label" in caplog.text
    first = combinations["drug1"].iloc[0]
    with pytest.raises(DrugFeatureError, match=f"'{first}'"):
        SCLONGDrugCombination(adata, smiles={**dict(smiles), first: "xyz("}, **COMBO_SIZES)
    with pytest.raises(ScLongInputError, match="have no SMILES"):
        SCLONGDrugCombination(adata, smiles=smiles.drop(first), **COMBO_SIZES)
    with pytest.raises(KeyError, match="combinations_key='pairs'"):
        SCLONGDrugCombination.setup_anndata(adata, combinations_key="pairs")
