"""The human gene and GO tables embedded in the package (``scripts/build_embedded_go.py``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Names of the human gene / GO tables embedded in the package -> their files in
#: ``sclong_scverse/go/data`` (read them with :func:`~sclong_scverse.go.embedded_table`).
EMBEDDED_TABLES = {
    "gene2go": "human_gene2go.tsv.gz",
    "gene_ids": "human_gene_ids.tsv.gz",
    "gene_alias": "human_gene_alias.tsv.gz",
    "go_terms": "go_terms.tsv.gz",
    "go_parents": "go_parents.tsv.gz",
}


@cache
def _read(name: str) -> pd.DataFrame:
    try:
        file = EMBEDDED_TABLES[name]
    except KeyError:
        raise KeyError(
            f"no embedded table {name!r}; choose from {sorted(EMBEDDED_TABLES)}"
        ) from None
    path = DATA_DIR / file
    if not path.exists():  # pragma: no cover - broken installation
        raise FileNotFoundError(
            f"the embedded table {path} is missing from the installed package; reinstall "
            "sclong-scverse or rebuild the tables with scripts/build_embedded_go.py."
        )
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)


def embedded_table(name: str) -> pd.DataFrame:
    """Return a copy of one of the embedded human gene / GO tables.

    Parameters
    ----------
    name
        ``'gene2go'`` (entrez_id, symbol, go_id, evidence, ontology), ``'gene_ids'`` (entrez_id,
        symbol, gene_type, ensembl_ids pipe-joined), ``'gene_alias'`` (entrez_id, alias_symbol),
        ``'go_terms'`` (go_id, ontology) or ``'go_parents'`` (child, parent, relationship).

    Returns
    -------
    The table; every column is a string column (empty string = missing).
    """
    return _read(name).copy()


def embedded_provenance() -> dict[str, Any]:
    """Return the provenance of the embedded tables.

    Returns
    -------
    The content of ``go/data/metadata.json``: the Debian / Bioconductor package versions and
    checksums, the source release dates (NCBI Gene, gene2go, GO) read from the packages'
    databases, and the row counts of each table. ``PROVENANCE.md`` and ``LICENSE.md`` beside the
    data say the same in words, with the terms of use (NCBI: public domain; GO: CC BY 4.0).
    """
    return json.loads((DATA_DIR / "metadata.json").read_text())
