"""Build ``tests/data/``: small real subsets of ``../shared/data`` and the parity release.

The test suite reads real data from the shared folder beside the checkout when it is there
(``../shared/data``, ``../shared/parity``; the environment variables ``SCLONG_SHARED``,
``SCLONG_SHARED_DATA`` and ``SCLONG_PARITY_DIR`` override them) and otherwise from ``tests/data/``,
which this script derives from the shared folder, so that a clone runs every test. Nothing here is
simulated: every file is a copy of a shared file, or a subset of its rows, columns or cells, in the
same format (the same loaders and readers run on it). The derivation of each file, its source and
its licence are written to ``tests/data/PROVENANCE.md``.

What each test needs, and what is kept:

- ``parity/``: the parity release files the tests and tutorial 02 read, copied unchanged.
- ``scrna/cellbench/``: all 1,408 CellBench cells of the five batches, restricted to the genes
  the tests and tutorials use: the 2,048 most detected genes (with every gene tied with the
  2,048th) and the 511 genes of the parity release's vocabulary; the Drop-seq batch in full
  (``tests/test_pp.py`` checks its shape), metadata in full. Rows are the original text lines.
  One extra file, all 28,204 genes of the CEL-seq2 batch for its first 50 cells, serves the gene
  id mapping tests (``tests/test_genes.py``).
- ``scrna/pbmc68k_reduced/``: 64 of the 700 cells (X, raw, obs, var; not the analysis results
  of all 700 cells: PCA, neighbours, UMAP, marker genes).
- ``scrna/pbmc_celltypist_sample/``: the first 20 of the 559 cells, all 32,786 genes.
- ``grn/``: TRRUST v2, the BEELINE human STRING network and the BEELINE hESC cell-type-specific
  network in full, gzip'd (``tests/test_grn_evaluation.py`` checks the files' edge counts).
- ``perturb/papalexi2021/``: 480 assigned cells of the Papalexi 2021 screen (160 non-targeting,
  40 of each of 8 targets), all 299 response genes and 110 gRNAs, in the shared layout.
- ``go/``: the gene2go rows of the 400 genes ``tests/test_go.py`` samples (its seed), their id
  table rows, the GO terms they use and the parent links of every ancestor of those terms.

Usage (from the repository root; the output is deterministic: the same shared files give
byte-identical files, ``PROVENANCE.md`` lists their sha256)::

    python scripts/build_test_data.py                          # ../shared -> tests/data
    python scripts/build_test_data.py --shared /path/to/shared --out tests/data
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

#: CellBench genes the tests train on (``tests/conftest.py``: ``N_GENES``).
N_CELLBENCH_GENES = 2048
#: Cells of the CEL-seq2 batch kept with all genes (``tests/test_genes.py`` aligns the first 50).
N_CELSEQ2_CELLS = 50
#: Cells of scanpy's pbmc68k_reduced (``tests/test_pp.py``, ``tests/test_model.py``).
N_PBMC68K_CELLS = 64
#: Cells of the celltypist PBMC sample (``tests/test_genes.py`` reads the first 20).
N_CELLTYPIST_CELLS = 20
#: Genes of the GO subset (``tests/test_go.py``'s ``subset`` fixture: 400 genes, seed 0).
N_GO_GENES = 400
#: Genes whose GO terms ``tests/test_go.py`` propagates to their ancestors.
GO_PROPAGATED_GENES = ("TP53", "GAPDH", "CD3E", "ACTB")
#: Papalexi 2021 subset (``tests/test_perturbation.py``): non-targeting cells and cells per target.
PAPALEXI_N_CONTROL = 160
PAPALEXI_N_PER_TARGET = 40
PAPALEXI_TARGETS = ("IFNGR1", "IFNGR2", "JAK2", "STAT1", "IRF1", "CD86", "SMAD4", "ATF2")

#: GDSC subset (``tests/test_drugs.py``): the five CellBench cell lines (DepMap ids) and a seeded
#: draw of other GDSC cell lines; DeepCE SMILES rows kept.
DRUG_CELLBENCH_LINES = ("ACH-000681", "ACH-000416", "ACH-000587", "ACH-000447", "ACH-000012")
DRUG_N_OTHER_LINES = 25
DRUG_N_DEEPCE_SMILES = 200
#: DeepCE gene vectors (``tests/test_drug_heads.py``): every landmark gene, the first columns.
DRUG_N_DEEPCE_VECTOR_COLUMNS = 16

PARITY_FILES = (
    "README.md",
    "tiny_genes.txt",
    "tiny_hparams.pkl",
    "tiny_ckpt.pth",
    "reference_io.npz",
    "tiny_ens_gene2go.pkl",
)
CELLBENCH_BATCHES = (
    "sc_celseq2",
    "sc_dropseq",
    "sc_celseq2_5cl_p1",
    "sc_celseq2_5cl_p2",
    "sc_celseq2_5cl_p3",
)
CELLBENCH_FULL = ("sc_dropseq",)  # tests/test_pp.py checks the batch's full shape

CELLBENCH = ("Tian et al. 2019 Nat Methods; GitHub LuyiTian/sc_mixology `data/csv/`", "MIT")
PARITY = ("miniature official-format scLong release (`../shared/parity/README.md`)", "-")
SOURCES = {
    "parity": PARITY,
    "cellbench": CELLBENCH,
    "pbmc68k": ("scanpy wheel (`pbmc68k_reduced`)", "BSD-3-Clause"),
    "celltypist": ("celltypist 1.7.1 wheel sample, converted to h5ad", "MIT"),
    "trrust": ("TRRUST v2 (copy in GitHub juexinwang/GRGNN @134728b)", "CC BY-SA 4.0"),
    "string": ("BEELINE networks (GitHub Murali-group/Beeline)", "CC BY 4.0 (STRING)"),
    "hesc": ("BEELINE hESC as packaged by GitHub zpliulab/GENELink", "no licence file"),
    "gene2go": (
        "NCBI gene2go 2022-09-12 via Debian `r-bioc-org.hs.eg.db` 3.16",
        "NCBI data public; GO CC BY 4.0",
    ),
    "go": ("GO 2022-07-01 via Debian `r-bioc-go.db` 3.16", "CC BY 4.0"),
    "deepcdr": (
        "GitHub kimmo1019/DeepCDR `data/` (GDSC, CCLE, PubChem)",
        "MIT (DeepCDR code); GDSC terms for the data",
    ),
    "deepce": ("GitHub pth1993/DeepCE", "no licence file"),
    "papalexi": (
        "Papalexi et al. 2021 Nat Genet via GitHub Katsevich-Lab/sceptredata "
        "(`lowmoi_example_data`)",
        "MIT",
    ),
}


@dataclass
class Entry:
    path: str  # relative to the output folder
    source: str  # relative to the shared folder
    kind: str  # key of SOURCES
    how: str


class Builder:
    def __init__(self, shared: Path, out: Path):
        self.shared = shared
        self.data = shared / "data"
        self.parity = shared / "parity"
        self.out = out
        self.entries: list[Entry] = []

    # ------------------------------------------------------------------ writers
    def _target(self, relative: str) -> Path:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def copy(self, relative: str, source: Path, kind: str, how: str = "copied unchanged") -> None:
        shutil.copyfile(source, self._target(relative))
        self._record(relative, source, kind, how)

    def write_gzip(self, relative: str, text: bytes, source: Path, kind: str, how: str) -> None:
        """Gzip without a name or time stamp in the header: the same bytes on every run."""
        with open(self._target(relative), "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
                f.write(text)
        self._record(relative, source, kind, how)

    def _record(self, relative: str, source: Path, kind: str, how: str) -> None:
        where = source.relative_to(self.shared).as_posix()
        self.entries.append(Entry(relative, where, kind, how))

    # ------------------------------------------------------------------ parity release
    def build_parity(self) -> list[str]:
        for name in PARITY_FILES:
            self.copy(f"parity/{name}", self.parity / name, "parity")
        return (self.parity / "tiny_genes.txt").read_text().split()

    # ------------------------------------------------------------------ CellBench
    def cellbench_genes(self, vocabulary: list[str]) -> tuple[set[str], int]:
        """The most detected genes (ties at the boundary included) and the parity vocabulary."""
        detected: dict[str, int] = {}
        for batch in CELLBENCH_BATCHES:
            counts = pd.read_csv(self._cellbench(batch, "count"), index_col=0)
            for gene, n in zip(counts.index, (counts.to_numpy() > 0).sum(axis=1), strict=True):
                detected[gene] = detected.get(gene, 0) + int(n)
        values = np.array(list(detected.values()))
        threshold = np.sort(values)[::-1][N_CELLBENCH_GENES - 1]
        top = {gene for gene, n in detected.items() if n >= threshold}
        return top | (set(vocabulary) & set(detected)), int(threshold)

    def _cellbench(self, batch: str, what: str) -> Path:
        return self.data / "scrna" / "cellbench" / f"{batch}.{what}.csv.gz"

    def build_cellbench(self, vocabulary: list[str]) -> None:
        genes, threshold = self.cellbench_genes(vocabulary)
        n_top = N_CELLBENCH_GENES
        how_subset = (
            f"the rows (genes) of the {len(genes):,} kept genes, all cells, original text lines: "
            f"the {n_top:,} genes detected in the most cells of all five batches (ties included: "
            f"detected in >= {threshold:,} of 1,408 cells) and the parity release's 511 genes"
        )
        for batch in CELLBENCH_BATCHES:
            source = self._cellbench(batch, "count")
            relative = f"scrna/cellbench/{batch}.count.csv.gz"
            if batch in CELLBENCH_FULL:
                self.copy(relative, source, "cellbench", "copied unchanged (all genes)")
            else:
                lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
                kept = [lines[0]] + [
                    line
                    for line in lines[1:]
                    if line.split(b",", 1)[0].strip(b'"').decode() in genes
                ]
                self.write_gzip(relative, b"".join(kept), source, "cellbench", how_subset)
            meta = self._cellbench(batch, "metadata")
            self.copy(f"scrna/cellbench/{batch}.metadata.csv.gz", meta, "cellbench")
        # all genes of the CEL-seq2 batch for its first cells (gene id mapping tests)
        source = self._cellbench("sc_celseq2", "count")
        lines = gzip.decompress(source.read_bytes()).splitlines()
        # R-style csv: the header names the cells only, each row starts with the gene
        header = b",".join(lines[0].split(b",")[:N_CELSEQ2_CELLS])
        rows = [b",".join(line.split(b",")[: N_CELSEQ2_CELLS + 1]) for line in lines[1:]]
        self.write_gzip(
            f"scrna/cellbench/sc_celseq2_first{N_CELSEQ2_CELLS}cells.count.csv.gz",
            b"\n".join([header, *rows]) + b"\n",
            source,
            "cellbench",
            f"all 28,204 rows (genes), the first {N_CELSEQ2_CELLS} of 274 columns (cells), for "
            "tests/test_genes.py",
        )

    # ------------------------------------------------------------------ PBMC h5ad files
    def build_pbmc(self) -> None:
        import anndata as ad

        source = self.data / "scrna" / "pbmc68k_reduced" / "10x_pbmc68k_reduced.h5ad"
        with warnings.catch_warnings():  # written by an old anndata: format warnings on read
            warnings.simplefilter("ignore")
            full = ad.read_h5ad(source)
        rng = np.random.default_rng(0)
        cells = np.sort(rng.choice(full.n_obs, N_PBMC68K_CELLS, replace=False))
        small = full[cells].copy()
        colours = {k: v for k, v in full.uns.items() if k.endswith("_colors")}
        small = ad.AnnData(
            small.X, obs=small.obs, var=small.var, uns=colours, raw=small.raw.to_adata()
        )
        relative = "scrna/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad"
        write_h5ad(small, self._target(relative))
        self._record(
            relative,
            source,
            "pbmc68k",
            f"{N_PBMC68K_CELLS} of the 700 cells (numpy default_rng(0), sorted), all 765 genes: "
            "X (scaled), raw (log-normalised), obs, var and the colour lists; not the results "
            "computed on all 700 cells (PCA, neighbours, UMAP, marker genes)",
        )

        source = self.data / "scrna" / "pbmc_celltypist_sample" / "celltypist_sample_559cells.h5ad"
        full = ad.read_h5ad(source)
        small = full[:N_CELLTYPIST_CELLS].copy()
        relative = f"scrna/pbmc_celltypist_sample/celltypist_sample_{N_CELLTYPIST_CELLS}cells.h5ad"
        write_h5ad(small, self._target(relative), fixed_length_strings=True)
        self._record(
            relative,
            source,
            "celltypist",
            f"the first {N_CELLTYPIST_CELLS} of the 559 cells, all 32,786 genes; gene and cell "
            "names stored as fixed-length strings (HDF5 variable-length strings cost ~30 bytes "
            "each: 1 MB for the gene names alone)",
        )

    # ------------------------------------------------------------------ GRN ground truths
    def build_grn(self) -> None:
        grn = self.data / "grn"
        trrust = grn / "trrust" / "trrust_rawdata.human.tsv"
        self.write_gzip(
            "grn/trrust/trrust_rawdata.human.tsv.gz",
            trrust.read_bytes(),
            trrust,
            "trrust",
            "all 9,396 rows, gzip'd",
        )
        hesc = grn / "beeline_hesc" / "Specific" / "BL--network.csv"
        self.write_gzip(
            "grn/beeline_hesc/Specific/BL--network.csv.gz",
            hesc.read_bytes(),
            hesc,
            "hesc",
            "all rows, gzip'd (the TF and target lists are not used by the tests)",
        )
        string = grn / "beeline_human_string" / "STRING-network.csv"
        self.write_gzip(
            "grn/beeline_human_string/STRING-network.csv.gz",
            string.read_bytes(),
            string,
            "string",
            "all 198,285 rows, gzip'd",
        )

    # ------------------------------------------------------------------ GO tables
    def build_go(self) -> None:
        go = self.data / "go"
        gene2go = pd.read_csv(go / "human_gene2go.tsv.gz", sep="\t", dtype=str)
        # the 400 genes tests/test_go.py draws (the same seed and call): they are the whole file
        # here, so the test draws the same 400
        symbols = np.sort(gene2go["symbol"].unique())
        chosen = set(np.random.default_rng(0).choice(symbols, size=N_GO_GENES, replace=False))
        rows = gene2go[gene2go["symbol"].isin(chosen)]
        self.write_table(
            "go/human_gene2go.tsv.gz",
            rows,
            go / "human_gene2go.tsv.gz",
            "gene2go",
            f"the {len(rows):,} rows of {N_GO_GENES} genes: numpy default_rng(0).choice of the "
            "sorted symbols, as tests/test_go.py draws them",
        )
        ids = pd.read_csv(go / "human_gene_ids.tsv.gz", sep="\t", dtype=str)
        self.write_table(
            "go/human_gene_ids.tsv.gz",
            ids[ids["entrez_id"].isin(set(rows["entrez_id"]))],
            go / "human_gene_ids.tsv.gz",
            "gene2go",
            f"the rows of the {N_GO_GENES} genes of human_gene2go.tsv.gz",
        )
        parents = pd.read_csv(go / "go_parents.tsv.gz", sep="\t", dtype=str)
        propagated = gene2go.loc[gene2go["symbol"].isin(GO_PROPAGATED_GENES), "go_id"]
        closure = ancestors(set(rows["go_id"]) | set(propagated), parents)
        links = parents[parents["child"].isin(closure)]
        self.write_table(
            "go/go_parents.tsv.gz",
            links,
            go / "go_parents.tsv.gz",
            "go",
            f"the {len(links):,} links from the {len(closure):,} terms that are annotated to the "
            f"{N_GO_GENES} genes of human_gene2go.tsv.gz or to {', '.join(GO_PROPAGATED_GENES)}, "
            "or are ancestors of such terms (any relationship)",
        )
        terms = pd.read_csv(go / "go_terms.tsv.gz", sep="\t", dtype=str)
        used = closure | set(links["parent"])
        self.write_table(
            "go/go_terms.tsv.gz",
            terms[terms["go_id"].isin(used)],
            go / "go_terms.tsv.gz",
            "go",
            "the terms of go_parents.tsv.gz (children and parents)",
        )

    def write_table(self, relative: str, table: pd.DataFrame, source, kind, how) -> None:
        buffer = io.StringIO()
        table.to_csv(buffer, sep="\t", index=False, lineterminator="\n")
        self.write_gzip(relative, buffer.getvalue().encode(), source, kind, how)

    # ------------------------------------------------------------------ Papalexi 2021
    def build_papalexi(self) -> None:
        """A few hundred assigned cells: non-targeting controls and several targets."""
        import scipy.io as sio
        from scipy import sparse

        folder = self.data / "perturb" / "papalexi2021"
        relative = "perturb/papalexi2021"
        grnas = (folder / "grnas.txt").read_text().split()
        targets = pd.read_csv(folder / "grna_targets.csv", dtype=str)
        target_of = dict(zip(targets["grna_id"], targets["grna_target"], strict=True))
        grna = sparse.csr_matrix(sio.mmread(folder / "grna_counts_grnas_x_cells.mtx.gz").T)
        top = np.asarray(grna.argmax(axis=1)).ravel()
        top_umis = np.asarray(grna.max(axis=1).todense()).ravel()
        total = np.asarray(grna.sum(axis=1)).ravel()
        # the assignment rule of scl.datasets.papalexi2021's defaults (>= 5 UMIs, >= 80%)
        fraction = np.divide(top_umis, total, out=np.zeros(len(total)), where=total > 0)
        assigned = (top_umis >= 5) & (fraction >= 0.8)
        target = np.array([target_of[grnas[i]] for i in top], dtype=object)
        rng = np.random.default_rng(0)
        chosen = []
        for name, n in [("non-targeting", PAPALEXI_N_CONTROL)] + [
            (t, PAPALEXI_N_PER_TARGET) for t in PAPALEXI_TARGETS
        ]:
            pool = np.flatnonzero(assigned & (target == name))
            chosen.append(rng.choice(pool, size=min(n, len(pool)), replace=False))
        cells = np.sort(np.concatenate(chosen))
        how = (
            f"the {len(cells)} columns (cells) of a seeded draw (numpy default_rng(0)) among the "
            f"cells assigned by scl.datasets.papalexi2021's rule (top gRNA >= 5 UMIs and >= 80% "
            f"of the cell's gRNA UMIs): {PAPALEXI_N_CONTROL} non-targeting cells and "
            f"{PAPALEXI_N_PER_TARGET} of each of {', '.join(PAPALEXI_TARGETS)}; all rows; "
            "cells in their original order"
        )
        for name in ("response_counts_genes_x_cells.mtx.gz", "grna_counts_grnas_x_cells.mtx.gz"):
            matrix = sparse.csc_matrix(sio.mmread(folder / name))[:, cells]
            buffer = io.BytesIO()
            sio.mmwrite(buffer, sparse.coo_matrix(matrix.astype(np.int64)), field="integer")
            self.write_gzip(f"{relative}/{name}", buffer.getvalue(), folder / name, "papalexi", how)
        source = folder / "cell_covariates.csv"
        lines = source.read_bytes().splitlines(keepends=True)
        self._target(f"{relative}/cell_covariates.csv").write_bytes(
            b"".join([lines[0]] + [lines[1 + i] for i in cells])
        )
        self._record(
            f"{relative}/cell_covariates.csv",
            source,
            "papalexi",
            "the rows of the same cells (original text lines)",
        )
        for name in ("genes.txt", "grnas.txt", "grna_targets.csv"):
            self.copy(f"{relative}/{name}", folder / name, "papalexi")

    # ------------------------------------------------------------------ drugs (DeepCDR, DeepCE)
    def build_drug(self) -> None:
        """DeepCDR's drug files (SMILES, graph features, drug list) and a cell-line subset."""
        folder = self.data / "drug" / "deepcdr"
        relative = "drug/deepcdr"
        for name in (
            "223drugs_pubchem_smiles.txt",
            "GDSC_drug_list_2019-06-24.csv",
            "drug_graph_feat.zip",
            "LICENSE",
        ):
            self.copy(f"{relative}/{name}", folder / name, "deepcdr")
        source = folder / "GDSC_IC50.csv"
        table = pd.read_csv(source, index_col=0)
        others = sorted(c for c in table.columns if c not in DRUG_CELLBENCH_LINES)
        rng = np.random.default_rng(0)
        drawn = rng.choice(others, size=DRUG_N_OTHER_LINES, replace=False)
        keep = set(DRUG_CELLBENCH_LINES) | set(drawn)
        columns = [i for i, c in enumerate(table.columns) if c in keep]
        lines = source.read_bytes().decode().splitlines()
        out = []  # no field holds a comma: split the text lines, keep each field's text
        for line in lines:
            cells = line.split(",")
            out.append(",".join([cells[0]] + [cells[1 + i] for i in columns]))
        how = (
            f"all {len(lines) - 1} drug rows; the columns of the 5 CellBench cell lines "
            f"({', '.join(DRUG_CELLBENCH_LINES)}) and {DRUG_N_OTHER_LINES} other cell lines "
            "(numpy default_rng(0).choice of the sorted other ids), in their original order, "
            "values as written; gzip'd"
        )
        self.write_gzip(
            f"{relative}/GDSC_IC50.csv.gz", ("\n".join(out) + "\n").encode(), source, "deepcdr", how
        )
        source = folder / "Cell_lines_annotations_20181226.txt"
        rows = source.read_bytes().decode().splitlines(keepends=True)
        kept = [rows[0]] + [r for r in rows[1:] if r.split("\t")[1] in keep]
        self.write_gzip(
            f"{relative}/Cell_lines_annotations_20181226.txt.gz",
            "".join(kept).encode(),
            source,
            "deepcdr",
            "the header and the rows of the same cell lines (original text lines); gzip'd",
        )
        source = self.data / "drug" / "deepce" / "drugs_smiles.csv"
        rows = source.read_bytes().splitlines(keepends=True)
        self._target("drug/deepce/drugs_smiles.csv").write_bytes(
            b"".join(rows[:DRUG_N_DEEPCE_SMILES])
        )
        self._record(
            "drug/deepce/drugs_smiles.csv",
            source,
            "deepce",
            f"the first {DRUG_N_DEEPCE_SMILES} of {len(rows)} rows (original text lines)",
        )
        source = self.data / "drug" / "deepce" / "gene_vector.csv"
        lines = source.read_bytes().decode().splitlines()
        kept = [",".join(line.split(",")[: 1 + DRUG_N_DEEPCE_VECTOR_COLUMNS]) for line in lines]
        self.write_gzip(
            "drug/deepce/gene_vector.csv.gz",
            ("\n".join(kept) + "\n").encode(),
            source,
            "deepce",
            f"all {len(lines)} rows (the L1000 landmark genes, DeepCE's order); the gene column "
            f"and the first {DRUG_N_DEEPCE_VECTOR_COLUMNS} of "
            f"{len(lines[0].split(',')) - 1} vector columns, values as written; gzip'd",
        )

    # ------------------------------------------------------------------ provenance
    def write_provenance(self, command: str) -> None:
        lines = [
            PROVENANCE_HEAD.format(command=command),
            "| file | size | from (shared folder) | original source | licence | how |",
            "|---|---|---|---|---|---|",
        ]
        total = 0
        for entry in sorted(self.entries, key=lambda e: e.path):
            size = (self.out / entry.path).stat().st_size
            total += size
            origin, licence = SOURCES[entry.kind]
            lines.append(
                f"| `{entry.path}` | {size / 1e3:,.0f} kB | `{entry.source}` | {origin} "
                f"| {licence} | {entry.how} |"
            )
        lines += ["", f"Total: {total / 1e6:.2f} MB in {len(self.entries)} files.", ""]
        lines += ["sha256:", "", "```"]
        for entry in sorted(self.entries, key=lambda e: e.path):
            digest = hashlib.sha256((self.out / entry.path).read_bytes()).hexdigest()
            lines.append(f"{digest}  {entry.path}")
        lines += ["```", "", PROVENANCE_TAIL]
        (self.out / "PROVENANCE.md").write_text("\n".join(lines))


PROVENANCE_HEAD = """\
# Test data: small real subsets of the shared data and the parity release

Every file is real public data (nothing simulated): a copy of a file of the project's shared
folder (`../shared/data`, `../shared/parity`), or a subset of its rows, columns or cells in the
same format. The tests read these files where the shared folder is absent (`tests/conftest.py`),
and `scl.datasets.shared_data_dir()` falls back to this folder in a source checkout. Keep the
attribution when you use a file.

Built from the repository root by

    {command}

deterministically: the same shared files give the same bytes (sha256 of each file below).
"""

PROVENANCE_TAIL = """\
Sources and licences, as listed in `../shared/data/README.md`:

- CellBench: Tian L. et al., Benchmarking single cell RNA-sequencing analysis pipelines using
  mixture control experiments, Nat Methods 16, 479-487 (2019); GitHub LuyiTian/sc_mixology, MIT.
- `pbmc68k_reduced`: bundled with scanpy (BSD-3-Clause), a subset of 10x Genomics' 68k PBMCs.
- celltypist PBMC sample: shipped in the celltypist 1.7.1 wheel (MIT).
- TRRUST v2: Han H. et al., Nucleic Acids Res 46, D380-D386 (2018); CC BY-SA 4.0.
- BEELINE: Pratapa A. et al., Nat Methods 17, 147-154 (2020); human STRING network CC BY 4.0
  (STRING); hESC networks as packaged by GitHub zpliulab/GENELink (no licence file).
- NCBI gene2go (public) and the Gene Ontology (CC BY 4.0), via the Debian packages of
  Bioconductor's org.Hs.eg.db 3.16 and GO.db 3.16.
- The parity release: computed once with the original scLong implementation (class
  `DualEncoderSCFM`) on toy-size weights; its `README.md` is copied beside it.
- DeepCDR: Liu Q. et al., DeepCDR: a hybrid graph convolutional network for predicting cancer
  drug response, Bioinformatics 36, i911-i918 (2020); GitHub kimmo1019/DeepCDR `data/` (MIT code
  licence, copied beside the files). The data inside: GDSC (Yang W. et al., Nucleic Acids Res
  2013; GDSC terms of use), CCLE annotations (Ghandi M. et al., Nature 2019), PubChem SMILES.
- DeepCE: Pham T.-H. et al., A deep learning framework for high-throughput mechanism-driven
  phenotype compound screening, Nat Mach Intell 3, 247-257 (2021); GitHub pth1993/DeepCE (no
  licence file); SMILES of LINCS L1000 compounds.
- Papalexi 2021: Papalexi E. et al., Characterizing the molecular regulation of inhibitory
  immune checkpoints with multimodal single-cell screens, Nat Genet 53, 322-331 (2021), as
  packaged by GitHub Katsevich-Lab/sceptredata (`lowmoi_example_data`), MIT.
"""


def ancestors(terms: set[str], parents: pd.DataFrame) -> set[str]:
    """``terms`` and all their ancestors, through links of any relationship."""
    up = parents.groupby("child")["parent"].apply(list).to_dict()
    seen, stack = set(terms), list(terms)
    while stack:
        for parent in up.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def write_h5ad(adata, path: Path, fixed_length_strings: bool = False) -> None:
    """Write an h5ad file; optionally with fixed-length (instead of variable-length) strings.

    anndata reads both; variable-length strings live uncompressed in HDF5's global heap.
    """
    import anndata as ad
    import h5py

    if path.exists():
        path.unlink()
    if not fixed_length_strings:
        adata.write_h5ad(path, compression="gzip", compression_opts=9)
        return
    buffer = path.with_suffix(".tmp.h5ad")
    adata.write_h5ad(buffer, compression="gzip", compression_opts=9)
    with h5py.File(buffer, "r") as source, h5py.File(path, "w") as target:
        target.attrs.update(dict(source.attrs))

        def copy(group_in, group_out):
            for name, item in group_in.items():
                if isinstance(item, h5py.Group):
                    copy(item, group_out.create_group(name))
                    group_out[name].attrs.update(dict(item.attrs))
                    continue
                if h5py.check_string_dtype(item.dtype) is not None and item.shape:
                    values = [v.encode() for v in item.asstr()[()]]
                    width = max(1, *(len(v) for v in values))
                    data = np.array(values, dtype=f"S{width}")
                    new = group_out.create_dataset(
                        name, data=data, compression="gzip", compression_opts=9
                    )
                else:
                    group_in.copy(item, group_out, name=name)
                    new = group_out[name]
                new.attrs.update(dict(item.attrs))

        copy(source, target)
    buffer.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = ad.read_h5ad(path)
    assert back.var_names.equals(adata.var_names) and back.obs_names.equals(adata.obs_names)
    assert (back.X != adata.X).nnz == 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data")
    args = parser.parse_args(argv)
    for folder in (args.shared / "data", args.shared / "parity"):
        if not folder.is_dir():
            sys.exit(f"{folder} not found (pass --shared)")
    if args.out.exists():
        if any(args.out.iterdir()) and not (args.out / "PROVENANCE.md").exists():
            sys.exit(f"{args.out} is not empty and has no PROVENANCE.md: not replacing it")
        shutil.rmtree(args.out)
    builder = Builder(args.shared.resolve(), args.out)
    vocabulary = builder.build_parity()
    builder.build_cellbench(vocabulary)
    builder.build_pbmc()
    builder.build_grn()
    builder.build_go()
    builder.build_papalexi()
    builder.build_drug()
    builder.write_provenance("python scripts/build_test_data.py")
    total = sum((args.out / e.path).stat().st_size for e in builder.entries)
    print(f"{len(builder.entries)} files, {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
