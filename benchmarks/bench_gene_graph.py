"""Build time and peak memory of scLong's GO gene graph (``GeneGraph.from_annotations``).

Cases (each in a fresh process, so that peaks do not mix):
- the parity release's tiny graph (511 genes; skipped when ``SCLONG_PARITY_DIR`` is absent);
- the full human graph from the embedded default annotations (NCBI gene2go 2022-09-12):
  keyed by Ensembl id (23,153 annotated ids), by symbol (20,728 genes), and over the vocabulary
  of every human Ensembl id (39,708 genes + pad, 23,153 of them annotated);
- the full human graph with annotations propagated to ancestor terms (denser term sets).

Memory: ``peak RSS +`` = rise of the process's peak resident memory during the build (numpy,
scipy and torch buffers alike); ``tracemalloc`` = peak of Python/numpy allocations it traces
(torch buffers are not traced). The loading of the annotations is timed separately.

Usage: python benchmarks/bench_gene_graph.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARITY = Path(os.environ.get("SCLONG_PARITY_DIR", REPO.parent / "shared" / "parity"))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(case: str) -> dict:
    import torch

    from sclong_scverse.genes import GeneVocabulary, human_gene_ids
    from sclong_scverse.go import GeneGraph, default_human_annotations, read_gene2go_pickle

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    start = time.perf_counter()
    if case == "tiny":
        genes = GeneVocabulary.from_file(PARITY / "tiny_genes.txt")
        annotations = read_gene2go_pickle(PARITY / "tiny_ens_gene2go.pkl")
    elif case == "ensembl":
        annotations = default_human_annotations("ensembl")
        genes = sorted(annotations)
    elif case == "symbol":
        annotations = default_human_annotations("symbol")
        genes = sorted(annotations)
    elif case == "vocabulary":
        annotations = default_human_annotations("ensembl")
        genes = GeneVocabulary(human_gene_ids("ensembl"))
    elif case == "propagated":
        annotations = default_human_annotations("symbol", propagate=True)
        genes = sorted(annotations)
    else:
        raise ValueError(case)
    load_s = time.perf_counter() - start

    before = peak_mb()
    tracemalloc.start()
    start = time.perf_counter()
    graph = GeneGraph.from_annotations(genes, annotations)
    build_s = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    terms = sum(len(annotations[g]) for g in graph.genes if g in annotations)
    return {
        "case": case,
        "nodes": graph.n_nodes,
        "annotated": graph.n_annotated,
        "terms/gene": terms / max(graph.n_annotated, 1),
        "edges": graph.n_edges,
        "load s": load_s,
        "build s": build_s,
        "peak RSS + MB": max(peak_mb() - before, 0.0),
        "tracemalloc MB": traced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny and Ensembl cases only")
    args = parser.parse_args()
    cases = ["tiny", "ensembl"] if args.quick else [
        "tiny", "ensembl", "symbol", "vocabulary", "propagated"
    ]  # fmt: skip
    if not (PARITY / "tiny_genes.txt").exists():
        print(f"(parity release not found in {PARITY}: tiny case skipped)")
        cases.remove("tiny")
    context = mp.get_context("spawn")
    rows = []
    for case in cases:
        with context.Pool(1) as pool:
            rows.append(pool.apply(measure, (case,)))
    header = list(rows[0])
    widths = [max(len(h), 10) for h in header]
    print(f"GeneGraph.from_annotations (jaccard > 0.1, 21 incoming edges per gene), "
          f"{os.cpu_count()} CPU cores, torch threads = cores")  # fmt: skip
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = []
        for h, w in zip(header, widths, strict=True):
            v = row[h]
            text = f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v
            cells.append(text.rjust(w))
        print("  ".join(cells))


if __name__ == "__main__":
    main()
