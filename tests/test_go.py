"""GO annotation readers, the embedded human default, and the scLong GO gene graph.

Real data only: the parity release (official-format tiny graph) and the GO / NCBI tables in the
shared data folder (NCBI gene2go 2022-09-12, GO 2022-07-01; public domain / CC BY 4.0), else
their subsets in tests/data (400 genes' annotations, the GO terms above theirs).
"""

from __future__ import annotations

import gzip
import itertools
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from sclong_scverse.genes import GeneVocabulary
from sclong_scverse.go import (
    GeneGraph,
    annotations_from_dataframe,
    default_human_annotations,
    embedded_provenance,
    embedded_table,
    propagate_to_ancestors,
    read_annotations,
    read_gaf,
    read_gene2go,
    read_gene2go_pickle,
    read_gmt,
    read_go_parents,
)
from sclong_scverse.io import read_hparams

ASPECT = {"BP": "P", "MF": "F", "CC": "C"}
CATEGORY = {"BP": "Process", "MF": "Function", "CC": "Component"}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny(parity_dir):
    vocab = GeneVocabulary.from_file(parity_dir / "tiny_genes.txt")
    hparams = read_hparams(parity_dir / "tiny_hparams.pkl")
    return vocab, parity_dir / "tiny_ens_gene2go.pkl", hparams


@pytest.fixture(scope="module")
def go_dir(data_dir):
    path = data_dir / "go"
    if not (path / "human_gene2go.tsv.gz").exists():
        pytest.skip(f"shared GO tables not found in {path}")
    return path


@pytest.fixture(scope="module")
def shared_gene2go(go_dir):
    return pd.read_csv(go_dir / "human_gene2go.tsv.gz", sep="\t", dtype=str)


@pytest.fixture(scope="module")
def subset(shared_gene2go):
    """A real subset: 400 random annotated human genes (symbols) and all their rows."""
    rng = np.random.default_rng(0)
    symbols = np.sort(shared_gene2go["symbol"].unique())
    chosen = set(rng.choice(symbols, size=400, replace=False))
    rows = shared_gene2go[shared_gene2go["symbol"].isin(chosen)]
    return sorted(chosen), rows


def edges(graph: GeneGraph) -> dict[tuple[int, int], float]:
    return {
        (int(s), int(t)): float(w)
        for (s, t), w in zip(graph.edge_index.T.tolist(), graph.edge_weight.tolist(), strict=True)
    }


def brute_force(genes, annotations, threshold, k):
    """The original algorithm, literally: all pairs, then top k incoming per target."""
    rows = []
    for s, t in itertools.product(range(len(genes)), repeat=2):
        a, b = annotations.get(genes[s]), annotations.get(genes[t])
        if a and b:
            j = len(a & b) / len(a | b)
            if j > threshold:
                rows.append((s, t, j))
    table = pd.DataFrame(rows, columns=["s", "t", "w"])  # source-major, like the csv
    table = table.sort_values("w", ascending=False, kind="stable").groupby("t").head(k)
    return {(s, t): np.float32(w) for s, t, w in table.itertuples(index=False)}


# ---------------------------------------------------------------------------- parity
def test_tiny_graph_reproduces_the_official_g_go(tiny):
    vocab, pkl, hparams = tiny
    graph = GeneGraph.from_annotations(vocab, pkl)  # path to the official .pkl
    reference = {
        (int(s), int(t)): float(w)
        for (s, t), w in zip(
            hparams["G_go"].T.tolist(), hparams["G_go_weight"].tolist(), strict=True
        )
    }
    ours = edges(graph)
    shared = set(ours) & set(reference)
    agreement = len(shared) / len(reference)
    print(f"official tiny G_go: {len(reference)} edges, ours {len(ours)}, shared {agreement:.2%}")
    assert agreement >= 0.99 and len(ours) == len(reference)
    assert agreement == 1.0  # ties broken as the original (annotation order = vocabulary order)
    assert all(ours[e] == reference[e] for e in shared)  # identical float32 weights
    assert graph.n_nodes == hparams["max_seq_len"] == vocab.n_tokens
    assert graph.edge_index.dtype == torch.long and graph.edge_weight.dtype == torch.float32
    assert graph.n_annotated == 373
    # the pad node is isolated; every target keeps at most 21 incoming edges
    assert graph.in_degree()[vocab.pad_index] == 0
    assert graph.in_degree().max() == 21
    # the official graph itself, wrapped as a GeneGraph over the vocabulary, is the same graph
    official = GeneGraph(vocab, hparams["G_go"], hparams["G_go_weight"])
    assert official.n_nodes == 512 and official.equals(graph)


def test_official_pkl_as_dict_and_embedded_default_give_the_same_graph(tiny):
    vocab, pkl, _ = tiny
    official = read_gene2go_pickle(pkl)
    assert len(official) == 373
    from_dict = GeneGraph.from_annotations(vocab, official)
    from_path = GeneGraph.from_annotations(vocab, pkl)
    # the tiny release's annotations are the embedded default's (same NCBI / GO releases)
    embedded = GeneGraph.from_annotations(vocab, default_human_annotations("ensembl"))
    assert from_dict.equals(from_path) and from_dict.equals(embedded)


def test_graph_matches_the_literal_algorithm_on_real_genes_with_many_ties(tiny):
    vocab, pkl, _ = tiny
    annotations = read_gene2go_pickle(pkl)
    genes = vocab.genes[:160]
    for threshold, k in ((0.1, 21), (0.05, 4), (0.3, 2)):
        graph = GeneGraph.from_annotations(
            genes, annotations, jaccard_threshold=threshold, max_neighbors=k - 1
        )
        assert edges(graph) == brute_force(genes, annotations, threshold, k), (threshold, k)


def test_graph_structure_and_matrices(tiny):
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    vocab, pkl, _ = tiny
    graph = GeneGraph.from_annotations(vocab, pkl)
    src, dst = graph.edge_index.numpy()
    annotated = graph.annotated
    assert annotated[np.concatenate([src, dst])].all()  # edges join annotated genes only
    assert set(np.flatnonzero(annotated)) == set(src) | set(dst)
    assert np.all(np.lexsort((src, dst)) == np.arange(len(src)))  # sorted by target, source
    assert (graph.edge_weight > 0.1).all() and (graph.edge_weight <= 1).all()
    # normalised adjacency = PyG's gcn_norm without added self loops (SGConv K=1 in scLong)
    index, weight = gcn_norm(
        graph.edge_index, graph.edge_weight, graph.n_nodes, add_self_loops=False
    )
    dense = torch.zeros(graph.n_nodes, graph.n_nodes)
    dense[index[1], index[0]] = weight
    ours = graph.normalized_adjacency()
    np.testing.assert_allclose(ours.toarray(), dense.numpy(), rtol=1e-6, atol=1e-7)
    x = torch.randn(graph.n_nodes, 5)
    as_torch = graph.normalized_adjacency("torch")
    torch.testing.assert_close(as_torch @ x, dense @ x, rtol=1e-5, atol=1e-6)
    assert graph.adjacency()[dst[0], src[0]] == pytest.approx(float(graph.edge_weight[0]))
    text = graph.summary()
    assert "511 genes" in text and "373" in text and "6,662" in text
    print(text)


def test_save_load_reindex_subgraph(tiny, tmp_path):
    vocab, pkl, _ = tiny
    graph = GeneGraph.from_annotations(vocab, pkl)
    graph.save(tmp_path / "g.npz")
    back = GeneGraph.load(tmp_path / "g.npz")
    assert back.equals(graph) and back.pad_token == "<pad>" and back.n_nodes == 512
    assert back.params == graph.params and back.n_annotated == 373
    # reindex onto a reversed order plus an unknown gene: same edges, renamed
    order = vocab.genes[::-1] + ["ENSG_NOT_A_GENE"]
    moved = graph.reindex(order)
    assert moved.n_nodes == 512 and moved.n_edges == graph.n_edges
    assert moved.pad_token is None
    name = dict(enumerate(order))
    old = {(vocab[s], vocab[t]): w for (s, t), w in edges(graph).items()}
    new = {(name[s], name[t]): w for (s, t), w in edges(moved).items()}
    assert old == new
    assert moved.reindex(vocab).equals(graph)  # back onto the vocabulary (+ pad node)
    # subgraph = induced edges among kept genes, same as rebuilding when no target lost sources
    keep = vocab.genes[:100]
    sub = graph.subgraph(keep)
    assert sub.genes == keep
    assert set(edges(sub)) == {(s, t) for (s, t) in edges(graph) if s < 100 and t < 100}


def test_default_and_gaf_gene2go_gmt_readers_agree(subset, tmp_path, go_dir):
    symbols, rows = subset
    terms = pd.read_csv(go_dir / "go_terms.tsv.gz", sep="\t", dtype=str).set_index("go_id")
    # GAF 2.2 (gzip), with header comments, a NOT row and another taxon (both must be ignored)
    gaf = tmp_path / "subset.gaf.gz"
    with gzip.open(gaf, "wt") as f:
        f.write("!gaf-version: 2.2\n!generated from NCBI gene2go 2022-09-12 (test)\n")
        for r in rows.itertuples(index=False):
            fields = ["NCBIGene", r.entrez_id, r.symbol, "enables", r.go_id, "PMID:0", r.evidence,
                      "", ASPECT[r.ontology], "", "", "protein", "taxon:9606", "20220912",
                      "NCBI", "", ""]  # fmt: skip
            f.write("\t".join(fields) + "\n")
        first = rows.iloc[0]
        f.write("\t".join(["NCBIGene", first.entrez_id, first.symbol, "NOT|enables",
                           "GO:0003824", "PMID:0", "IDA", "", "F", "", "", "protein",
                           "taxon:9606", "20220912", "NCBI", "", ""]) + "\n")  # fmt: skip
        f.write("\t".join(["MGI", "MGI:1", first.symbol, "enables", "GO:0003824", "PMID:0",
                           "IDA", "", "F", "", "", "protein", "taxon:10090", "20220912",
                           "MGI", "", ""]) + "\n")  # fmt: skip
    # NCBI gene2go, plus a mouse row that the taxon filter drops
    gene2go = tmp_path / "gene2go"
    table = pd.DataFrame(
        {
            "#tax_id": "9606",
            "GeneID": rows["entrez_id"],
            "GO_ID": rows["go_id"],
            "Evidence": rows["evidence"],
            "Qualifier": "enables",
            "GO_term": rows["go_id"].map(terms["term"]),
            "PubMed": "-",
            "Category": rows["ontology"].map(CATEGORY),
        }
    )
    mouse = table.iloc[:1].assign(**{"#tax_id": "10090", "GO_ID": "GO:0003824"})
    pd.concat([table, mouse]).to_csv(gene2go, sep="\t", index=False)
    # GMT: one line per GO term
    gmt = tmp_path / "subset.gmt"
    with gmt.open("w") as f:
        for go_id, genes in rows.groupby("go_id")["symbol"]:
            f.write("\t".join([go_id, terms.loc[go_id, "term"], *sorted(set(genes))]) + "\n")

    default = {g: t for g, t in default_human_annotations("symbol").items() if g in set(symbols)}
    from_gaf = read_gaf(gaf, taxon=9606)
    from_gene2go = read_gene2go(gene2go, id_type="symbol")
    from_gmt = read_gmt(gmt)
    from_table = annotations_from_dataframe(rows, gene_column="symbol")
    assert set(default) == set(symbols)
    for name, ann in [("gaf", from_gaf), ("gene2go", from_gene2go), ("gmt", from_gmt),
                      ("dataframe", from_table)]:  # fmt: skip
        assert ann == default, name
    assert read_annotations(gaf, taxon=9606) == default and read_annotations(gmt) == default
    graphs = [GeneGraph.from_annotations(symbols, a) for a in (default, from_gaf, from_gmt)]
    graphs.append(GeneGraph.from_annotations(symbols, from_gene2go))
    assert graphs[0].n_edges > len(symbols)
    assert all(g.equals(graphs[0]) for g in graphs[1:])

    # filters agree across readers: no IEA / ND evidence, biological process only
    kwargs = dict(ontologies=("BP",), exclude_evidence=("IEA", "ND"))
    default_bp = {
        g: t for g, t in default_human_annotations("symbol", **kwargs).items() if g in set(symbols)
    }
    assert read_gaf(gaf, taxon=9606, **kwargs) == default_bp
    assert read_gene2go(gene2go, id_type="symbol", **kwargs) == default_bp
    assert read_gmt(gmt, ontologies=("BP",)) == {
        g: t for g, t in default_human_annotations("symbol", ontologies=("BP",)).items()
        if g in set(symbols)
    }  # fmt: skip
    # entrez and Ensembl keys from gene2go follow the embedded id tables
    by_entrez = read_gene2go(gene2go)
    assert set(by_entrez) == set(rows["entrez_id"])
    by_ensembl = read_gene2go(gene2go, id_type="ensembl")
    default_ens = default_human_annotations("ensembl")
    assert by_ensembl == {g: default_ens[g] for g in by_ensembl}


def test_embedded_tables_equal_the_shared_tables(go_dir, shared_gene2go):
    def rows(frame):
        return set(map(tuple, frame.fillna("").astype(str).to_numpy()))

    embedded = embedded_table("gene2go")
    assert len(embedded) == 348_116
    # all genes of the shared table (tests/data: the rows of 400 genes)
    genes = set(shared_gene2go["entrez_id"])
    assert rows(embedded[embedded["entrez_id"].isin(genes)]) == rows(shared_gene2go)
    ids = pd.read_csv(go_dir / "human_gene_ids.tsv.gz", sep="\t", dtype=str).fillna("")
    ours = embedded_table("gene_ids")
    assert len(ours) == 77_614 == ours["entrez_id"].nunique()
    merged = ours.merge(ids, on="entrez_id", suffixes=("", "_shared"))
    assert (merged["symbol"] == merged["symbol_shared"]).all()
    assert (merged["gene_type"] == merged["gene_type_shared"]).all()
    same_ens = [
        set(a.split("|")) - {""} == set(b.split("|")) - {""}
        for a, b in zip(merged["ensembl_ids"], merged["ensembl_ids_shared"], strict=True)
    ]
    assert all(same_ens)
    parents = pd.read_csv(go_dir / "go_parents.tsv.gz", sep="\t", dtype=str)
    unique_links = parents.drop_duplicates(["child", "parent", "relationship"])
    links = embedded_table("go_parents")
    assert len(links) == 85_716 and len(unique_links) <= len(links)
    # every shared link (tests/data: the links above 6,100 terms) is embedded
    embedded_pairs = set(zip(links["child"], links["parent"], strict=True))
    assert set(zip(unique_links["child"], unique_links["parent"], strict=True)) <= embedded_pairs
    meta = embedded_provenance()
    org = meta["sources"]["r-bioc-org.hs.eg.db"]
    assert org["version"].startswith("3.16.0")
    assert org["metadata"]["GOEGSOURCEDATE"] == "2022-Sep12"
    assert org["metadata"]["GOSOURCEDATE"] == "2022-07-01"
    stats = default_human_annotations("entrez")
    assert len(stats) == 20_728 and len(set().union(*stats.values())) == 18_933


def test_default_annotations_id_types():
    by_symbol = default_human_annotations("symbol")
    by_entrez = default_human_annotations("entrez")
    by_ensembl = default_human_annotations("ensembl")
    assert by_symbol["TP53"] == by_entrez["7157"] == by_ensembl["ENSG00000141510"]
    assert len(by_symbol["TP53"]) > 100
    assert all(t.startswith("GO:") for t in by_symbol["TP53"])
    mf = default_human_annotations("symbol", ontologies=("MF",))
    assert mf["TP53"] < by_symbol["TP53"] and "GO:0003700" in mf["TP53"]  # DNA-binding TF act.


def test_propagation_adds_ancestors(go_dir, tmp_path):
    direct = default_human_annotations("symbol", ontologies=("MF",))
    sample = {g: direct[g] for g in ["TP53", "GAPDH", "CD3E", "ACTB"]}
    up = propagate_to_ancestors(sample)
    for gene, terms in sample.items():
        assert terms < up[gene] and "GO:0003674" in up[gene]  # molecular_function root
    # DNA-binding TF activity (GO:0003700) is_a transcription regulator activity (GO:0140110)
    assert "GO:0140110" in up["TP53"]
    # the shared parents table and an OBO file give the same closure as the embedded default
    parents = pd.read_csv(go_dir / "go_parents.tsv.gz", sep="\t", dtype=str)
    assert propagate_to_ancestors(sample, parents=go_dir / "go_parents.tsv.gz") == up
    obo = tmp_path / "mini.obo"
    with obo.open("w") as f:
        f.write("format-version: 1.2\n\n")
        for child, links in parents.groupby("child"):
            f.write(f"[Term]\nid: {child}\n")
            for p, r in zip(links["parent"], links["relationship"], strict=True):
                r = r.replace(" ", "_")
                f.write(f"is_a: {p} ! x\n" if r == "isa" else f"relationship: {r} {p} ! x\n")
            f.write("\n")
    assert len(read_go_parents(obo)) == len(parents)
    assert propagate_to_ancestors(sample, parents=obo) == up
    assert propagate_to_ancestors(sample, relationships=("is_a",)).keys() == up.keys()


def test_bad_inputs_give_clear_errors(tiny, tmp_path):
    vocab, pkl, _ = tiny
    official = read_gene2go_pickle(pkl)
    with pytest.raises(ValueError, match="same id type"):
        GeneGraph.from_annotations(vocab, default_human_annotations("symbol"))
    with pytest.raises(TypeError, match="gene ids must be strings"):
        GeneGraph.from_annotations(vocab, {1: {"GO:1"}})
    with pytest.raises(TypeError, match="must be a set"):
        GeneGraph.from_annotations(vocab, {vocab[0]: "GO:0005515"})
    with pytest.raises(ValueError, match="unique"):
        GeneGraph.from_annotations(vocab.genes + vocab.genes[:1], official)
    with pytest.raises(ValueError, match="empty"):
        GeneGraph.from_annotations([], official)
    with pytest.raises(ValueError, match="jaccard_threshold"):
        GeneGraph.from_annotations(vocab, official, jaccard_threshold=1.5)
    with pytest.raises(ValueError, match="unknown ontology"):
        default_human_annotations(ontologies=("XX",))
    with pytest.raises(ValueError, match="id_type"):
        default_human_annotations(id_type="uniprot")
    with pytest.raises(FileNotFoundError):
        read_gaf(tmp_path / "missing.gaf")
    bad = tmp_path / "bad.gaf"
    bad.write_text("a\tb\tc\n")
    with pytest.raises(ValueError, match="not a GAF"):
        read_gaf(bad)
    with pytest.raises(ValueError, match="format"):
        read_annotations(tmp_path / "annotations.xyz")
    with pytest.raises(ValueError, match="edge_index"):
        GeneGraph(["A", "B"], [[0, 5], [1, 1]])
    (tmp_path / "x.npz").write_bytes(b"")
    np.savez(tmp_path / "other.npz", genes=np.array(["A"]), edge_index=np.zeros((2, 0)),
             edge_weight=np.zeros(0), meta=np.asarray(json.dumps({"format": "x"})))  # fmt: skip
    with pytest.raises(ValueError, match="not a saved GeneGraph"):
        GeneGraph.load(tmp_path / "other.npz")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump(["GO:1"], f)
    with pytest.raises(TypeError, match="dict"):
        read_gene2go_pickle(tmp_path / "list.pkl")
