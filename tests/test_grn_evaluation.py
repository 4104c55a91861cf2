"""evaluate_grn and the ground-truth readers, on real networks (TRRUST v2, BEELINE).

Data: TRRUST v2 human (CC BY-SA 4.0), BEELINE human STRING and hESC networks (CC BY 4.0), read
from the shared data folder (``SCLONG_SHARED_DATA``), else from their gzip'd copies in tests/data;
CellBench (MIT) for a co-expression network of real cells.
"""

from __future__ import annotations

import gzip
import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import data_file
from sclong_scverse.genes import map_gene_ids
from sclong_scverse.tl import (
    coexpression_grn,
    evaluate_grn,
    expected_random_aupr,
    read_ground_truth,
)

# 8 real genes with TRRUST edges among them, and a hand-written score matrix (row = source,
# column = target); 64 distinct values, so every ranking below is free of ties
GENES = ["TP53", "MDM2", "CDKN1A", "BAX", "MYC", "JUN", "BCL2", "FOS"]
SCORES = (
    np.array(
        [
            [17, 28, 55, 11, 36, 54, 50, 13],
            [1, 58, 7, 5, 46, 62, 33, 23],
            [20, 25, 15, 43, 40, 51, 27, 21],
            [29, 64, 52, 37, 57, 2, 38, 10],
            [4, 41, 45, 47, 14, 63, 48, 18],
            [19, 59, 60, 56, 9, 8, 34, 31],
            [16, 30, 39, 49, 24, 53, 26, 6],
            [44, 3, 32, 35, 61, 22, 42, 12],
        ],
        dtype=float,
    )
    / 64
)


@pytest.fixture(scope="module")
def grn_dir(data_dir):
    path = data_dir / "grn"
    if not data_file(path / "trrust" / "trrust_rawdata.human.tsv").exists():
        pytest.skip(f"GRN ground truths not found in {path}")
    return path


@pytest.fixture(scope="module")
def trrust(grn_dir):
    return read_ground_truth(data_file(grn_dir / "trrust" / "trrust_rawdata.human.tsv"))


@pytest.fixture(scope="module")
def string_net(grn_dir):
    return read_ground_truth(data_file(grn_dir / "beeline_human_string" / "STRING-network.csv"))


def _hand_ap_and_epr(pairs: list[tuple[float, bool]]) -> tuple[float, float, int, int]:
    """Step-wise AP = sum over ranks of precision@k * 1[true] / n_pos; EPR; N; P."""
    ranked = sorted(pairs, key=lambda p: -p[0])
    n_pos = sum(t for _, t in ranked)
    hits, ap = 0, 0.0
    for k, (_, true) in enumerate(ranked, start=1):
        if true:
            hits += 1
            ap += hits / k / n_pos
    top = sum(t for _, t in ranked[:n_pos])
    epr = (top / n_pos) / (n_pos / len(ranked))
    return ap, epr, len(ranked), n_pos


def _edge_table(genes, scores) -> pd.DataFrame:
    rows = [(a, b, scores[i, j]) for i, a in enumerate(genes) for j, b in enumerate(genes)]
    return pd.DataFrame(rows, columns=["source", "target", "score"])


# ---------------------------------------------------------------- readers on the real files


def test_read_trrust(trrust, grn_dir):
    raw = pd.read_csv(
        data_file(grn_dir / "trrust" / "trrust_rawdata.human.tsv"), sep="\t", header=None
    )
    assert list(trrust.columns) == ["source", "target"]
    assert trrust.iloc[0].tolist() == ["AATF", "BAX"]
    # 9,396 rows; pairs listed with several modes are kept once
    assert len(raw) == 9396
    assert len(trrust) == len(raw[[0, 1]].drop_duplicates()) == 8427
    assert trrust["source"].nunique() == 795


def test_read_beeline_formats(string_net, grn_dir):
    # the BEELINE STRING file lists each of its 99,149 distinct edges twice or more (198,285 rows)
    assert list(string_net.columns) == ["source", "target"]
    assert string_net.iloc[0].tolist() == ["CDC5L", "ARF5"]
    assert len(string_net) == 99149 and not string_net.duplicated().any()
    hesc_file = data_file(grn_dir / "beeline_hesc" / "Specific" / "BL--network.csv")
    hesc = read_ground_truth(hesc_file)
    raw = pd.read_csv(hesc_file)
    assert hesc.iloc[0].tolist() == raw.iloc[0, :2].tolist()
    assert len(hesc) == len(raw.drop_duplicates())


def test_read_collectri_and_dorothea_style_tables(trrust, tmp_path):
    # real TRRUST edges written in the CollecTRI (source,target,weight) and DoRothEA
    # (tf,confidence,target,mor) layouts; gzip for one of them
    subset = trrust.iloc[:50]
    collectri = subset.assign(weight=1.0)
    collectri.to_csv(tmp_path / "collectri.csv", index=False)
    dorothea = pd.DataFrame(
        {"tf": subset.source, "confidence": "A", "target": subset.target, "mor": 1}
    )
    with gzip.open(tmp_path / "dorothea.tsv.gz", "wt") as handle:
        dorothea.to_csv(handle, sep="\t", index=False)
    for path in (tmp_path / "collectri.csv", tmp_path / "dorothea.tsv.gz"):
        got = read_ground_truth(path)
        pd.testing.assert_frame_equal(got, subset.reset_index(drop=True))
    # headerless two-column edge list
    subset.to_csv(tmp_path / "edges.txt", sep=" ", header=False, index=False)
    pd.testing.assert_frame_equal(read_ground_truth(tmp_path / "edges.txt"), subset)
    with pytest.raises(ValueError, match="header"):
        read_ground_truth(tmp_path / "edges.txt", format="beeline")
    with pytest.raises(ValueError, match="unknown ground-truth format"):
        read_ground_truth(tmp_path / "edges.txt", format="gmt")  # type: ignore[arg-type]


# ---------------------------------------------------------------- hand-computed AUPR / EPR


def test_truth_genes_undirected_aupr_matches_hand_computation(trrust):
    # the former default: every unordered pair among the ground truth's genes
    truth = set(zip(trrust.source, trrust.target, strict=True))
    pairs = []
    for i, j in itertools.combinations(range(len(GENES)), 2):
        a, b = GENES[i], GENES[j]
        pairs.append((max(SCORES[i, j], SCORES[j, i]), (a, b) in truth or (b, a) in truth))
    ap, epr, n, n_pos = _hand_ap_and_epr(pairs)
    assert (n, n_pos) == (28, 12)  # 12 of the 28 unordered pairs are TRRUST edges

    result = evaluate_grn(_edge_table(GENES, SCORES), trrust, candidates="truth_genes")
    assert result["candidates"] == "truth_genes" and result["directed"] is False
    assert result["n_candidates"] == 28 and result["n_positives"] == 12
    assert result["n_genes"] == 8 and result["n_scored"] == 28
    assert result["positive_rate"] == pytest.approx(12 / 28)
    assert result["aupr"] == pytest.approx(ap, abs=1e-12)
    assert result["aupr_ratio"] == pytest.approx(ap / (12 / 28), abs=1e-12)
    assert result["epr"] == pytest.approx(epr, abs=1e-12)
    # same numbers from a dense and a sparse varp matrix
    adata = ad.AnnData(np.zeros((3, len(GENES)), dtype=np.float32))
    adata.var_names = GENES
    adata.varp["sclong_grn"] = SCORES
    assert evaluate_grn(adata, trrust, candidates="truth_genes") == result
    adata.varp["sclong_grn"] = sp.csr_matrix(SCORES)
    assert evaluate_grn(adata, trrust, candidates="truth_genes") == result


def test_directed_with_tfs_matches_hand_computation(trrust):
    truth = set(zip(trrust.source, trrust.target, strict=True))
    tfs = ["TP53", "MYC", "JUN"]
    pairs = [
        (SCORES[i, j], (GENES[i], GENES[j]) in truth)
        for i, j in itertools.product(range(len(GENES)), repeat=2)
        if i != j and GENES[i] in tfs
    ]
    ap, epr, n, n_pos = _hand_ap_and_epr(pairs)
    result = evaluate_grn(_edge_table(GENES, SCORES), trrust, directed=True, tfs=tfs)
    # every gene here is in TRRUST: TF rows x all genes = TF rows x the truth's genes
    assert result == evaluate_grn(
        _edge_table(GENES, SCORES), trrust, directed=True, tfs=tfs, candidates="truth_genes"
    ) | {"candidates": "tf_rows"}
    assert (result["n_candidates"], result["n_positives"], result["n_tfs"]) == (n, n_pos, 3)
    assert n == 3 * 7 and n_pos == 11
    assert result["aupr"] == pytest.approx(ap, abs=1e-12)
    assert result["epr"] == pytest.approx(epr, abs=1e-12)
    # self pairs: TP53 -> TP53 and JUN -> JUN are TRRUST edges
    with_self = evaluate_grn(
        _edge_table(GENES, SCORES), trrust, directed=True, tfs=tfs, self_pairs=True
    )
    assert (with_self["n_candidates"], with_self["n_positives"]) == (24, 13)


def test_sparse_prediction_unscored_pairs_get_zero(trrust):
    # keep the 2 best targets per source (a top_k prediction); the other pairs score 0
    top = np.zeros_like(SCORES)
    for i in range(len(GENES)):
        best = np.argsort(-SCORES[i])[:2]
        top[i, best] = SCORES[i, best]
    edges = _edge_table(GENES, top)
    edges = edges[edges.score > 0]
    for candidates in ("truth_genes", "tf_rows"):
        sparse_result = evaluate_grn(edges, trrust, genes=GENES, candidates=candidates)
        assert sparse_result["n_genes"] == 8
        assert sparse_result["n_scored"] < sparse_result["n_candidates"]
        dense_result = evaluate_grn(_edge_table(GENES, top), trrust, candidates=candidates)
        assert sparse_result == dense_result | {"n_scored": sparse_result["n_scored"]}
    assert evaluate_grn(edges, trrust, genes=GENES, candidates="truth_genes")["n_candidates"] == 28
    # without genes=, the universe is only the genes named in the edge table
    assert evaluate_grn(edges, trrust)["n_genes"] == len(set(edges.source) | set(edges.target))


def test_gene_symbols_and_duplicates(trrust):
    adata = ad.AnnData(np.zeros((2, 9), dtype=np.float32))
    adata.var_names = [f"ENSG{i:011d}" for i in range(9)]
    adata.var["symbol"] = [*GENES, "TP53"]  # the last gene maps to TP53 again
    scores = np.zeros((9, 9))
    scores[:8, :8] = SCORES
    adata.varp["sclong_grn"] = scores
    for candidates in ("tf_rows", "truth_genes"):
        expected = evaluate_grn(_edge_table(GENES, SCORES), trrust, candidates=candidates)
        got = evaluate_grn(adata, trrust, gene_symbols="symbol", candidates=candidates)
        assert got == expected
    with pytest.raises(ValueError, match="gene naming"):
        evaluate_grn(adata, trrust)  # Ensembl ids vs TRRUST symbols


def _hand_ap_and_epr_with_ties(scores: list[float], labels: list[bool]) -> tuple[float, float]:
    """AP = sum over distinct thresholds of recall gained x precision there; tie-aware EPR."""
    groups: dict[float, list[int]] = {}
    for score, label in zip(scores, labels, strict=True):
        groups.setdefault(score, [0, 0])
        groups[score][0] += 1
        groups[score][1] += int(label)
    n_pos, n = sum(labels), len(labels)
    ap, seen, hits, top_hits = 0.0, 0, 0, 0.0
    for score in sorted(groups, reverse=True):
        size, positives = groups[score]
        if seen < n_pos:  # the top K = n_pos, ties at the cut-off at their expected precision
            top_hits += min(size, n_pos - seen) * positives / size
        seen += size
        hits += positives
        ap += positives / n_pos * hits / seen
    return ap, (top_hits / n_pos) / (n_pos / n)


@pytest.fixture(scope="module")
def cellbench_pearson(cellbench_top):
    """|Pearson| of the 2,048 CellBench genes (log-normalised counts), named by symbol."""
    adata = cellbench_top.copy()
    adata.var["symbol"] = map_gene_ids(adata.var_names, to="symbol").fillna("").to_numpy()
    adata = adata[:, ~adata.var["symbol"].duplicated(keep=False) | (adata.var["symbol"] == "")]
    adata = adata.copy()
    coexpression_grn(adata, method="pearson")
    return adata


def test_default_is_tf_rows_by_all_genes_on_real_data(cellbench_pearson, trrust):
    """The default = BEELINE / DREAM's TF rows x all genes, AUPR built by hand on CellBench."""
    adata = cellbench_pearson
    symbols = adata.var["symbol"].to_numpy()
    named = np.flatnonzero(symbols != "")  # genes without a symbol cannot match: left out
    truth = set(zip(trrust.source, trrust.target, strict=True))
    tf_rows = [i for i in named if symbols[i] in set(trrust.source)]
    scores = adata.varp["pearson_grn"]
    pairs = [(i, j) for i in tf_rows for j in named if i != j]
    hand_scores = [float(scores[i, j]) for i, j in pairs]
    hand_labels = [(symbols[i], symbols[j]) in truth for i, j in pairs]
    ap, epr = _hand_ap_and_epr_with_ties(hand_scores, hand_labels)
    rate = sum(hand_labels) / len(pairs)

    result = evaluate_grn(adata, trrust, key="pearson_grn", gene_symbols="symbol")
    assert result["candidates"] == "tf_rows" and result["directed"] is True
    assert result["n_genes"] == named.size and result["n_tfs"] == len(tf_rows) == 88
    assert result["n_candidates"] == len(pairs) == 88 * (named.size - 1)
    assert result["n_positives"] == sum(hand_labels) == 104
    assert result["aupr"] == pytest.approx(ap, rel=1e-9)
    assert result["aupr_ratio"] == pytest.approx(ap / rate, rel=1e-9)
    assert result["epr"] == pytest.approx(epr, abs=1e-9)
    # what the default measures on real cells: 1.61 against 1.33 over all pairs among the truth's
    # genes (the former default), where most pairs (between two non-TFs) cannot be positive
    former = evaluate_grn(
        adata, trrust, key="pearson_grn", gene_symbols="symbol", candidates="truth_genes"
    )
    assert result["aupr_ratio"] == pytest.approx(1.608, abs=0.01)
    assert former["aupr_ratio"] == pytest.approx(1.327, abs=0.01)
    assert former["n_genes"] < result["n_genes"] / 4  # 354 of the 1,918 named genes
    # the same pairs from an edge table, given every gene the predictor considered
    rows, cols = np.nonzero(np.ones((named.size, named.size), dtype=bool))
    edges = pd.DataFrame(
        {
            "source": symbols[named][rows],
            "target": symbols[named][cols],
            "weight": np.asarray(scores)[np.ix_(named, named)].ravel(),
        }
    )
    assert evaluate_grn(edges, trrust) == result


# ---------------------------------------------------------------- reference predictors


def test_perfect_predictor_epr_is_inverse_positive_rate(trrust):
    degree = pd.concat([trrust.source, trrust.target]).value_counts()
    genes = list(degree.index[:100])
    truth = set(zip(trrust.source, trrust.target, strict=True))
    edges = pd.DataFrame(
        [(a, b, float((a, b) in truth)) for a in genes for b in genes],
        columns=["source", "target", "score"],
    )
    for directed in (False, True):
        result = evaluate_grn(edges, trrust, directed=directed)
        assert result["aupr"] == pytest.approx(1.0)
        assert result["epr"] == pytest.approx(1 / result["positive_rate"])
        assert result["aupr_ratio"] == pytest.approx(1 / result["positive_rate"])


@pytest.mark.parametrize("candidates", ["tf_rows", "truth_genes"])
@pytest.mark.parametrize("network", ["trrust", "string"])
def test_random_predictor_aupr_ratio_is_about_one(network, candidates, trrust, string_net):
    truth = trrust if network == "trrust" else string_net
    # the 200 best-connected genes: enough positives (1,653 TRRUST, 4,299 STRING pairs) that
    # the small-sample upward bias of random AP (about ln(N)/P) stays below 1%
    degree = pd.concat([truth.source, truth.target]).value_counts()
    genes = np.asarray(degree.index[:200])
    ratios, eprs, expected = [], [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        adata = ad.AnnData(np.zeros((1, genes.size), dtype=np.float32))
        adata.var_names = genes
        adata.varp["sclong_grn"] = rng.random((genes.size, genes.size))
        result = evaluate_grn(adata, truth, candidates=candidates)
        if candidates == "truth_genes":
            assert result["n_candidates"] == 200 * 199 // 2
        else:  # ordered pairs (TF, gene): the ground truth's sources as TFs
            n_tfs = np.isin(genes, truth["source"]).sum()
            assert result["n_tfs"] == n_tfs and result["n_candidates"] == n_tfs * 199
        ratios.append(result["aupr_ratio"])
        eprs.append(result["epr"])
        expected.append(
            expected_random_aupr(result["n_candidates"], result["n_positives"])
            / result["positive_rate"]
        )
    assert result["n_positives"] > 600
    assert 0.9 < np.mean(ratios) < 1.1, ratios
    assert 0.8 < np.mean(eprs) < 1.2, eprs
    assert np.mean(ratios) == pytest.approx(np.mean(expected), abs=0.05)


def test_constant_predictor_has_ratio_one(trrust):
    # every pair tied: sklearn's AP = positive rate; tie-aware EPR = 1
    edges = _edge_table(GENES, np.ones_like(SCORES))
    result = evaluate_grn(edges, trrust)
    assert result["aupr_ratio"] == pytest.approx(1.0)
    assert result["epr"] == pytest.approx(1.0)


def test_expected_random_aupr_formula_by_simulation():
    rng = np.random.default_rng(0)
    n, p, draws = 40, 4, 20000
    labels = np.zeros(n, dtype=bool)
    labels[:p] = True
    ranks = np.argsort(rng.random((draws, n)), axis=1)  # random permutations
    rel = labels[ranks]
    precision = np.cumsum(rel, axis=1) / np.arange(1, n + 1)
    ap = (precision * rel).sum(axis=1) / p
    assert ap.mean() == pytest.approx(expected_random_aupr(n, p), rel=0.02)


# ---------------------------------------------------------------- errors


def test_clear_errors(trrust):
    edges = _edge_table(GENES, SCORES)
    adata = ad.AnnData(np.zeros((2, 8), dtype=np.float32))
    adata.var_names = GENES
    with pytest.raises(KeyError, match="varp"):
        evaluate_grn(adata, trrust)
    with pytest.raises(ValueError, match="missing"):
        evaluate_grn(edges.drop(columns="score"), trrust)
    with pytest.raises(ValueError, match="source"):
        evaluate_grn(edges, trrust.rename(columns={"source": "from"}))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_grn(edges.assign(score=np.nan), trrust)
    with pytest.raises(ValueError, match="TFs"):
        evaluate_grn(edges, trrust, tfs=["NOT_A_GENE"])
    with pytest.raises(ValueError, match="no ground-truth edge"):
        evaluate_grn(edges, trrust[trrust.source == trrust.target])  # only self edges
    with pytest.raises(TypeError, match="AnnData"):
        evaluate_grn(SCORES, trrust)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tf_rows"):
        evaluate_grn(edges, trrust, candidates="all")  # type: ignore[arg-type]
    # the default needs a TF among the genes: here the truth's only source is not one of them
    targets_only = trrust[trrust.target.isin(GENES) & ~trrust.source.isin(GENES)]
    with pytest.raises(ValueError, match="no TF row"):
        evaluate_grn(edges, targets_only)


# ---------------------------------------------------------------- one candidate set for all


def test_refuses_row_restricted_prediction_and_scores_the_fair_comparison(trrust):
    # 40 TRRUST TFs with most targets and 120 non-TF genes with most regulators; a "TF-only"
    # predictor scores rows of TFs only (as genie3_grn with TF regulators), a dense predictor
    # scores every pair; both are random
    tfs = list(trrust.source.value_counts().index[:40])
    targets = trrust.target.value_counts().index
    genes = np.asarray(tfs + [g for g in targets if g not in set(trrust.source)][:120])
    is_tf = np.isin(genes, tfs)
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((1, genes.size), dtype=np.float32))
    adata.var_names = genes
    dense = rng.random((genes.size, genes.size))
    adata.varp["dense"] = dense
    adata.varp["tf_rows"] = sp.csr_matrix(np.where(is_tf[:, None], dense, 0.0))

    # over all pairs, random scores on TF rows look 4 times better than chance (measured 4.06):
    # every TRRUST edge has a TF source, and the non-TF rows all score 0
    old = {"candidates": "truth_genes"}  # every pair among the truth's genes
    unfair = evaluate_grn(
        adata, trrust, key="tf_rows", candidate_sources=genes, directed=True, **old
    )
    assert unfair["n_sources"] == genes.size == 160
    assert unfair["aupr_ratio"] > 3.0
    all_pairs = evaluate_grn(adata, trrust, key="dense", directed=True, **old)
    assert 0.9 < all_pairs["aupr_ratio"] < 1.1
    for directed in (False, True):
        with pytest.raises(ValueError, match=r"only 40 of the 160 evaluated genes as sources"):
            evaluate_grn(adata, trrust, key="tf_rows", directed=directed, **old)
    edges = _edge_table(genes, adata.varp["tf_rows"].toarray())
    with pytest.raises(ValueError, match="tfs="):
        evaluate_grn(edges[edges.score > 0], trrust, genes=genes, **old)

    # the default, TF rows x all genes (TRRUST's sources as TFs), scores both without being
    # told anything, on the same pairs, with the same result
    default = {k: evaluate_grn(adata, trrust, key=k) for k in ("dense", "tf_rows")}
    assert default["dense"]["candidates"] == "tf_rows" and default["dense"]["directed"] is True
    assert default["dense"]["n_tfs"] == 40 and default["dense"]["n_candidates"] == 40 * 159
    assert default["dense"] == default["tf_rows"]
    with pytest.raises(ValueError, match="not both"):
        evaluate_grn(adata, trrust, key="tf_rows", tfs=tfs, candidate_sources=genes)

    # over TF rows x genes both predictors are random, score alike, on the same pairs
    fair = {
        k: evaluate_grn(adata, trrust, key=k, tfs=tfs, directed=True) for k in ("dense", "tf_rows")
    }
    assert fair["dense"]["n_candidates"] == 40 * 159
    assert fair["dense"] == fair["tf_rows"]  # the same score on every candidate pair
    assert 0.9 < fair["tf_rows"]["aupr_ratio"] < 1.1
    # candidate_sources=TFs is the same candidate set as tfs=TFs
    same = evaluate_grn(adata, trrust, key="tf_rows", candidate_sources=tfs, directed=True)
    assert same == fair["tf_rows"] | {"n_tfs": 0}
    assert default["tf_rows"] == fair["tf_rows"]  # the truth's sources are these 40 TFs
    # over the truth's genes, a dense prediction is scored over all pairs without being told
    assert evaluate_grn(adata, trrust, key="dense", **old)["n_sources"] == 160
    # a dense matrix scores every pair, zeros included: it is taken as it is
    adata.varp["tf_rows_dense"] = adata.varp["tf_rows"].toarray()
    dense_zeros = evaluate_grn(adata, trrust, key="tf_rows_dense", directed=True, **old)
    assert dense_zeros == unfair | {"n_scored": unfair["n_candidates"]}
    # genes without any score (neither row nor column) are not a row restriction
    isolated = dense.copy()
    isolated[0, :] = isolated[:, 0] = 0.0
    adata.varp["isolated"] = sp.csr_matrix(isolated)
    assert evaluate_grn(adata, trrust, key="isolated", **old)["n_genes"] == 160
