"""Gene vocabulary, id mapping and alignment of real AnnData objects to a vocabulary.

Real data: the parity release's official-format gene list (511 Ensembl ids), CellBench CEL-seq2
counts (Ensembl ids; Tian et al. 2019, MIT) and the celltypist PBMC sample (symbols; MIT).
"""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sclong_scverse.genes import (
    GeneAlignment,
    GeneVocabulary,
    detect_id_type,
    human_gene_ids,
    is_ensembl_id,
    map_gene_ids,
    strip_version,
)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_vocab(parity_dir):
    return GeneVocabulary.from_file(parity_dir / "tiny_genes.txt")


@pytest.fixture(scope="module")
def human_vocab():
    return GeneVocabulary(human_gene_ids("ensembl"))


@pytest.fixture(scope="module")
def cellbench(data_dir):
    folder = data_dir / "scrna" / "cellbench"
    # all genes of the batch: the shared file, or tests/data's copy of its first 50 cells
    path = folder / "sc_celseq2_first50cells.count.csv.gz"
    if not path.exists():
        path = folder / "sc_celseq2.count.csv.gz"
    if not path.exists():
        pytest.skip(f"CellBench counts not found at {path}")
    counts = pd.read_csv(path, index_col=0)  # genes x cells
    return ad.AnnData(
        sp.csr_matrix(counts.to_numpy().T.astype(np.float32)),
        obs=pd.DataFrame(index=counts.columns.astype(str)),
        var=pd.DataFrame(index=counts.index.astype(str)),
    )


@pytest.fixture(scope="module")
def pbmc(data_dir):
    folder = data_dir / "scrna" / "pbmc_celltypist_sample"
    # all genes: the shared sample (559 cells), or tests/data's copy of its first 20 cells
    path = folder / "celltypist_sample_559cells.h5ad"
    if not path.exists():
        path = folder / "celltypist_sample_20cells.h5ad"
    if not path.exists():
        pytest.skip(f"celltypist PBMC sample not found at {path}")
    return ad.read_h5ad(path)


def align_quietly(vocab, data, **kwargs) -> tuple[GeneAlignment, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alignment = vocab.align(data, **kwargs)
    return alignment, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------------------- vocabulary
def test_vocabulary_from_the_official_gene_list(tiny_vocab, parity_dir, tmp_path):
    vocab = tiny_vocab
    lines = (parity_dir / "tiny_genes.txt").read_text().split()
    assert vocab.genes == lines and len(vocab) == 511 and vocab.n_tokens == 512
    assert vocab.pad_index == 511 and vocab[511] == vocab[-1] == "<pad>"
    assert vocab.index("<pad>") == 511 and vocab.index(lines[7]) == 7 and vocab[7] == lines[7]
    assert lines[3] in vocab and "<pad>" not in vocab and vocab.id_type == "ensembl"
    np.testing.assert_array_equal(vocab.positions([lines[5], "nope", lines[0]]), [5, -1, 0])
    with pytest.raises(KeyError, match="without the version suffix"):
        vocab.index(lines[2] + ".4")
    vocab.to_file(tmp_path / "genes.txt")
    assert GeneVocabulary.from_file(tmp_path / "genes.txt") == vocab
    state = json.loads(json.dumps(vocab.to_dict()))
    assert GeneVocabulary.from_dict(state) == vocab
    assert GeneVocabulary(vocab.genes, pad_token="[PAD]") != vocab
    assert "511 ensembl ids" in repr(vocab)


def test_vocabulary_from_anndata_and_bad_input(pbmc, tmp_path):
    vocab = GeneVocabulary.from_anndata(pbmc)
    assert vocab.genes == list(pbmc.var_names) and vocab.id_type == "symbol"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: "Variable names are not unique"
        small = ad.AnnData(
            np.zeros((2, 3), dtype=np.float32),
            var=pd.DataFrame({"ens": ["ENSG1", "ENSG2", "ENSG2"]}, index=["A", "B", "B"]),
        )
    with pytest.raises(ValueError, match="duplicated"):
        GeneVocabulary.from_anndata(small)
    with pytest.raises(ValueError, match="duplicated"):
        GeneVocabulary.from_anndata(small, gene_id_key="ens")
    with pytest.raises(KeyError, match="not a column"):
        GeneVocabulary.from_anndata(small, gene_id_key="gene_ids")
    with pytest.raises(ValueError, match="at least one gene"):
        GeneVocabulary([])
    with pytest.raises(ValueError, match="unique"):
        GeneVocabulary(["TP53", "CD3E", "TP53"])
    with pytest.raises(TypeError, match="must be strings"):
        GeneVocabulary(["TP53", 7157, None])
    with pytest.raises(TypeError, match="not one string"):
        GeneVocabulary("TP53")
    with pytest.raises(ValueError, match="non-empty"):
        GeneVocabulary(["TP53", " "])
    with pytest.raises(ValueError, match="pad token"):
        GeneVocabulary(["TP53", "<pad>"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="lists no genes"):
        GeneVocabulary.from_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        GeneVocabulary.from_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="GeneVocabulary.to_dict"):
        GeneVocabulary.from_dict({"names": []})


def test_id_helpers():
    assert is_ensembl_id("ENSG00000141510.17") and is_ensembl_id("ENSMUSG00000059552")
    assert not is_ensembl_id("TP53")
    assert strip_version("ENSG00000141510.17") == "ENSG00000141510"
    assert strip_version("ENSG00000182378.14_PAR_Y") == "ENSG00000182378"
    assert strip_version("HLA-A.1") == "HLA-A.1"
    assert detect_id_type(["ENSG00000141510", "ENSG00000012048.2", "TP53"]) == "ensembl"
    assert detect_id_type(["TP53", "BRCA1", "ENSG00000012048"]) == "symbol"
    mapped = map_gene_ids(["TP53", "p53", "GAPDH", "NOT_A_GENE"], to="ensembl")
    assert mapped.tolist() == ["ENSG00000141510", "ENSG00000141510", "ENSG00000111640", None]
    back = map_gene_ids(["ENSG00000141510.17", "ENSG00000111640"], to="symbol")
    assert back.tolist() == ["TP53", "GAPDH"]
    assert map_gene_ids(["TP53"], to="entrez").tolist() == ["7157"]
    assert len(human_gene_ids("ensembl")) == 39_708
    coding = human_gene_ids("symbol", gene_types=("protein-coding",))
    assert 19_000 < len(coding) < 21_000 and "TP53" in coding
    with pytest.raises(ValueError, match="unknown gene types"):
        human_gene_ids(gene_types=("coding",))


# ---------------------------------------------------------------------------- alignment
def test_cellbench_ensembl_against_the_tiny_vocabulary(tiny_vocab, cellbench):
    before_names, before_x = cellbench.var_names.copy(), cellbench.X.copy()
    al, warned = align_quietly(tiny_vocab, cellbench)
    print(al.summary())
    assert al.id_type == "ensembl" and al.n_vars == 28_204
    assert al.n_vocab_covered == 511 and al.coverage == 1.0
    assert al.n_dropped == 28_204 - 511 and len(al.dropped) == al.n_dropped
    assert al.duplicates == [] and al.match_counts() == {"absent": 27_693, "exact": 511}
    assert warned and "fewer than the data's" in warned[0]  # 1.8% of the data's genes map
    # positions are right, and rows come out in vocabulary order (sparse and dense alike)
    positions = al.var_positions
    assert positions.dtype == np.int64 and positions.shape == (28_204,)
    mapped = np.flatnonzero(positions >= 0)
    assert [tiny_vocab[p] for p in positions[mapped]] == list(cellbench.var_names[mapped])
    rows = cellbench.X[:50]
    out = al.to_vocabulary_order(rows)
    assert out.shape == (50, 512) and out.dtype == np.float32
    assert np.array_equal(out, al.to_vocabulary_order(rows.toarray()))
    expected = np.zeros((50, 512), dtype=np.float32)
    expected[:, positions[mapped]] = rows.toarray()[:, mapped]
    assert np.array_equal(out, expected) and out[:, 511].sum() == 0  # pad column is 0
    assert np.isclose(out.sum(), rows[:, mapped].sum())
    # adata untouched
    assert cellbench.var_names.equals(before_names)
    assert (cellbench.X != before_x).nnz == 0 and "sclong" not in str(cellbench.uns)


def test_version_suffixes_and_gene_id_key(tiny_vocab, cellbench):
    # (the tiny vocabulary also has 6 ERCC spike-ins, which have no version)
    versioned = [
        f"{g}.{i % 7 + 1}" if g.startswith("ENSG") else g for i, g in enumerate(cellbench.var_names)
    ]
    al, _ = align_quietly(tiny_vocab, versioned)
    assert al.n_vocab_covered == 511
    assert al.match_counts()["version"] == 505 and al.match_counts()["exact"] == 6
    plain, _ = align_quietly(tiny_vocab, cellbench)
    np.testing.assert_array_equal(al.var_positions, plain.var_positions)
    # ids in a var column (var_names = numbers): gene_id_key picks them, and numbers warn
    var = pd.DataFrame({"gene_ids": versioned}, index=[str(i) for i in range(len(versioned))])
    numbered = ad.AnnData(cellbench.X, obs=cellbench.obs, var=var)
    keyed, _ = align_quietly(tiny_vocab, numbered, gene_id_key="gene_ids")
    np.testing.assert_array_equal(keyed.var_positions, plain.var_positions)
    with pytest.raises(ValueError, match="gene_id_key"):
        tiny_vocab.align(numbered)  # no number maps: clear error naming gene_id_key


def test_cellbench_against_the_full_human_ensembl_set(human_vocab, cellbench):
    al, warned = align_quietly(human_vocab, cellbench)
    print(al.summary())
    assert not warned
    assert al.n_mapped == 20_028 and al.data_coverage == pytest.approx(0.710, abs=1e-3)
    assert al.coverage == pytest.approx(20_028 / 39_708)
    assert al.to_vocabulary_order(cellbench.X[:3]).shape == (3, 39_709)


def test_pbmc_symbols_against_ensembl_vocabularies(tiny_vocab, human_vocab, pbmc):
    before = pbmc.var_names.copy()
    al, warned = align_quietly(human_vocab, pbmc)
    print(al.summary())
    counts = al.match_counts()
    assert al.id_type == "symbol" and not warned
    assert al.n_mapped == 20_300 and al.data_coverage > 0.6
    assert counts["symbol"] > 18_000 and counts["alias"] > 1_000
    assert len(al.duplicates) == counts["duplicate"] > 0
    table = al.table.set_index("data_id")
    assert table.loc["CD3E", "vocab_gene"] == "ENSG00000198851"
    assert table.loc["CD3E", "match"] == "symbol"
    # an alias whose official symbol is also in the data is a duplicate: the official one wins
    dup = al.duplicates[0]
    assert table.loc[dup, "match"] == "duplicate" and table.loc[dup, "position"] == -1
    # the tiny official-style vocabulary: symbol -> Ensembl through the embedded NCBI tables
    small, warned = align_quietly(tiny_vocab, pbmc)
    print(small.summary())
    assert warned  # only 1% of the PBMC genes are in a 511-gene vocabulary
    assert small.n_vocab_covered == 361 and small.coverage == pytest.approx(361 / 511)
    dense = small.to_vocabulary_order(pbmc.X[:20])
    src = np.flatnonzero(small.var_positions >= 0)
    np.testing.assert_array_equal(
        dense[:, small.var_positions[src]], np.asarray(pbmc.X[:20][:, src].todense())
    )
    assert pbmc.var_names.equals(before)


def test_symbol_vocabulary_with_ensembl_data_and_case(pbmc, cellbench):
    vocab = GeneVocabulary(list(pbmc.var_names[:5000]))
    al, _ = align_quietly(vocab, cellbench)
    counts = al.match_counts()
    assert al.id_type == "ensembl" and counts["ensembl"] == al.n_mapped > 1_500
    # each Ensembl id went to its NCBI gene's symbol: the official one, or the outdated symbol
    # (an alias now) that this older annotation of the PBMC data uses (e.g. FAM49A = CYRIA)
    mapped = al.table[al.table["position"] >= 0]
    official = map_gene_ids(mapped["data_id"], to="symbol", from_type="ensembl").to_numpy()
    same_symbol = (mapped["vocab_gene"].to_numpy() == official).mean()
    gene_of_data = map_gene_ids(mapped["data_id"], to="entrez", from_type="ensembl").to_numpy()
    gene_of_vocab = map_gene_ids(mapped["vocab_gene"], to="entrez", from_type="symbol").to_numpy()
    same_gene = (gene_of_data == gene_of_vocab).mean()
    print(f"{al.n_mapped} Ensembl ids -> symbols: {same_symbol:.1%} official, {same_gene:.1%} same")
    assert same_symbol > 0.9 and same_gene > 0.99
    # symbols in another case still map (and are labelled so)
    lower, _ = align_quietly(vocab, [g.lower() for g in pbmc.var_names[:5000]])
    assert lower.match_counts()["case"] > 4_500


def test_low_coverage_warns_with_the_reason(tiny_vocab, human_vocab, pbmc):
    mouse_like = [g.capitalize() for g in pbmc.var_names]
    symbol_vocab = GeneVocabulary(list(pbmc.var_names))
    with pytest.warns(UserWarning, match="mouse"):
        symbol_vocab.align(mouse_like[:2000])  # maps (case-insensitively), but warns
    mouse_ens = [f"ENSMUSG{n:011d}" for n in range(30_000, 31_000)]
    with pytest.raises(ValueError, match="not human"):
        human_vocab.align(mouse_ens)
    with pytest.warns(UserWarning, match=r"only 1 of 1,001"):
        human_vocab.align([*mouse_ens, "ENSG00000141510"])
    with pytest.raises(ValueError, match="no genes"):
        tiny_vocab.align([])
    with pytest.raises(TypeError, match="must be strings"):
        tiny_vocab.align(["ENSG00000141510", 5])
    al, _ = align_quietly(tiny_vocab, pbmc)
    with pytest.raises(ValueError, match="columns"):
        al.to_vocabulary_order(np.zeros((2, 10)))
    with pytest.raises(TypeError, match="n_cells"):
        al.to_vocabulary_order([[1, 2]])


def test_map_gene_ids_refuses_ids_of_another_type_than_declared():
    # symbols declared as Entrez ids used to map silently to None
    with pytest.raises(ValueError, match="from_type='symbol'"):
        map_gene_ids(["CD3E", "TP53", "GAPDH"], to="ensembl", from_type="entrez")
    with pytest.raises(ValueError, match="from_type='ensembl'"):
        map_gene_ids(["ENSG00000141510", "ENSG00000198851"], to="symbol", from_type="symbol")
    mapped = map_gene_ids(["7157", "916"], to="symbol", from_type="entrez")
    assert mapped.tolist() == ["TP53", "CD3E"]
