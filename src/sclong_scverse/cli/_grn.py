"""``sclong grn``: a gene network from a saved model -> ``varp['sclong_grn']`` (+ edge table)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._common import (
    CliError,
    _add_query_options,
    _load_for_query,
    _output_file,
    _query_paths,
    _same_file,
    _say,
    count_int,
    positive_int,
)
from ._staging import _staged

NAME = "grn"
HELP = "gene network -> varp['sclong_grn'] (+ edge table)"
DESCRIPTION = (
    "Gene-gene network from the cosine similarity of scLong gene embeddings; "
    "writes the input with varp[KEY] added and optionally a table of the highest-scoring "
    "gene pairs (each pair once; Ensembl ids get their symbols beside them)."
)


# var columns that commonly hold gene symbols (10x / Cell Ranger, CELLxGENE, scanpy, ...)
SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "symbol",
    "symbols",
    "feature_name",
    "gene_name",
    "gene_names",
    "gene_short_name",
)


def _undirected(edges):
    """Drop the reverse copy of each edge (cosine scores are symmetric)."""
    import numpy as np
    import pandas as pd

    pairs = np.sort(edges[["source", "target"]].to_numpy().astype(str), axis=1)
    return edges[~pd.DataFrame(pairs).duplicated().to_numpy()].reset_index(drop=True)


def _gene_symbols(genes: Sequence[str], var) -> list[str] | None:
    """Symbols of Ensembl ``genes``, ``None`` when they are not Ensembl ids (symbols already).

    From a symbol column of ``var`` (indexed by gene; see ``SYMBOL_COLUMNS``), else from the
    embedded NCBI table.
    """
    import pandas as pd

    from ..genes import detect_id_type, map_gene_ids

    genes = [str(gene) for gene in genes]
    if not genes or detect_id_type(genes) != "ensembl":
        return None
    symbols = pd.Series([None] * len(genes), index=genes, dtype=object)
    columns = [] if var is None else list(var.columns)
    column = next((name for name in SYMBOL_COLUMNS if name in columns), None)
    if column is not None:
        known = var[column].astype(object).where(var[column].notna(), None)
        known.index = var.index.astype(str)
        known = known[~known.index.duplicated()]
        symbols = known.reindex(genes).astype(object)
    missing = symbols.isna().to_numpy()
    if missing.any():
        table = map_gene_ids([g for g, m in zip(genes, missing, strict=True) if m], to="symbol")
        symbols[missing] = table.to_numpy()
    return ["" if value is None or pd.isna(value) else str(value) for value in symbols]


def _edge_table(target, key: str, n_edges: int, var=None):
    """The ``n_edges`` highest-scoring gene pairs, each once, with symbols beside Ensembl ids."""
    from .. import tl

    # a pair is listed at most twice (A-B, B-A, same score): 2n directed edges hold the top n
    edges = _undirected(tl.grn_edges(target, key=key, n_top=2 * n_edges)).head(n_edges)
    genes = list(dict.fromkeys([*edges["source"], *edges["target"]]))
    symbols = _gene_symbols(genes, target.var if var is None else var)
    if symbols is not None:
        lookup = dict(zip(genes, symbols, strict=True))
        edges["source_symbol"] = [lookup[gene] for gene in edges["source"]]
        edges["target_symbol"] = [lookup[gene] for gene in edges["target"]]
    return edges


def run(args: argparse.Namespace) -> None:
    """Run ``sclong grn``."""
    source, model_dir, out = _query_paths(args)
    edges_path = None
    if args.edges is not None:
        edges_path = _output_file(
            args.edges, "--edges", inputs=[source], overwrite=args.overwrite, example="edges.csv"
        )
        if edges_path.absolute() == out.absolute() or _same_file(edges_path, out):
            raise CliError(f"--edges {args.edges} and --out {args.out} are the same file")
    if args.n_edges < 1:
        raise CliError(f"--n-edges must be at least 1, got {args.n_edges}")
    from .. import tl

    adata, model, restore = _load_for_query(args, source, model_dir)
    target = adata
    if not adata.var_names.equals(model.adata.var_names):
        _say("the input's genes differ from the model's: the GRN is written for the model's genes")
        target = model.adata
    top_k = None if args.top_k <= 0 else args.top_k
    tl.grn(
        target,
        model,
        kind=args.kind,
        center=args.center,
        top_k=top_k,
        batch_size=args.batch_size,
        key_added=args.key,
        progress_bar=args.progress,
    )
    restore()  # the input's own gene names again (varp is by position)
    edges = _edge_table(target, args.key, args.n_edges, var=adata.var)
    _say(f"varp[{args.key!r}]: {target.n_vars} x {target.n_vars}, top gene pairs:")
    _say(edges.head(10).to_string(index=False))
    with _staged() as staging:
        if edges_path is not None:
            edges.to_csv(staging.path(edges_path), index=False)
        target.write_h5ad(staging.path(out))
    if edges_path is not None:
        _say(f"wrote {edges_path} ({len(edges)} unique gene pairs)")
    _say(f"wrote {out}")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong grn``."""
    _add_query_options(parser)
    parser.add_argument(
        "--top-k", type=count_int, default=50, help="partners kept per gene (0: dense)"
    )
    parser.add_argument(
        "--kind", default="contextual", choices=("contextual", "static"), help="gene embeddings"
    )
    parser.add_argument(
        "--center",
        action="store_true",
        help="subtract the mean gene embedding before the cosine (not in the article; mostly "
        "scores regulatory pairs better for small self-pretrained models)",
    )
    parser.add_argument("--edges", metavar="EDGES.csv", help="write the top gene pairs here")
    parser.add_argument(
        "--n-edges", type=positive_int, default=1000, metavar="N", help="gene pairs in EDGES.csv"
    )
    parser.add_argument("--key", default="sclong_grn", help="varp key")
