"""Gene -> GO term annotations from the common file formats and from the embedded human default.

Every reader returns ``dict[str, set[str]]``: gene id -> set of GO term ids (or gene-set names
for GMT files), the form :meth:`GeneGraph.from_annotations` takes (and the official scLong
``.pkl``).
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from .._files import PathTypeError, existing_file, reading, reading_file, shown
from ..errors import ScLongFileError, ScLongInputError
from ._data import _read

PathLike = str | os.PathLike
#: Gene annotations as the readers return them: ``{gene id: set of GO term ids}``.
Annotations = dict[str, set[str]]

#: The three GO ontologies (biological process, molecular function, cellular component);
#: the readers keep all three by default, as scLong.
ONTOLOGIES: tuple[str, ...] = ("BP", "MF", "CC")
_ONTOLOGY_NAMES = {
    "BP": "BP",
    "MF": "MF",
    "CC": "CC",
    "P": "BP",
    "F": "MF",
    "C": "CC",
    "PROCESS": "BP",
    "FUNCTION": "MF",
    "COMPONENT": "CC",
    "BIOLOGICAL_PROCESS": "BP",
    "MOLECULAR_FUNCTION": "MF",
    "CELLULAR_COMPONENT": "CC",
}
#: What to give instead of a file that is not what a reader expects (the end of its messages).
_GMT_HINT = "give a GMT file: one gene set a line, name<TAB>description<TAB>genes (plain or .gz)"
_GAF_HINT = "give a GO Annotation File (GAF 2.x, plain or .gz), e.g. goa_human.gaf.gz"
_GENE2GO_HINT = "give NCBI's gene2go file (plain or .gz; ftp.ncbi.nlm.nih.gov/gene/DATA)"
_PICKLE_HINT = "give the official scLong GO annotation .pkl (a dict gene id -> set of GO ids)"
_PARENTS_HINT = "give go-basic.obo or a TSV/CSV table with columns child, parent"
_TABLE_HINT = "give a table with one row per gene and GO term (columns such as gene, go_id)"


class AnnotationTypeError(ScLongFileError, TypeError):
    """An annotation file holds data of the wrong type (e.g. a pickled list instead of a dict).

    Also a :class:`TypeError`, which is what such a file raised before.
    """


#: GAF 2.x columns (1-based in the specification)
_GAF_COLUMNS = [
    "db",
    "db_object_id",
    "symbol",
    "qualifier",
    "go_id",
    "reference",
    "evidence",
    "with_from",
    "aspect",
    "name",
    "synonym",
    "type",
    "taxon",
    "date",
    "assigned_by",
    "extension",
    "gene_product_form",
]


def _ontologies(ontologies: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(ontologies, str):
        ontologies = (ontologies,)
    out = []
    for o in ontologies:
        key = str(o).strip().upper().replace(" ", "_")
        if key not in _ONTOLOGY_NAMES:
            raise ScLongInputError(
                f"unknown ontology {o!r}; use 'BP' (biological process), 'MF' (molecular "
                "function) and/or 'CC' (cellular component)."
            )
        out.append(_ONTOLOGY_NAMES[key])
    if not out:
        raise ScLongInputError("ontologies is empty; pass at least one of 'BP', 'MF', 'CC'.")
    return tuple(dict.fromkeys(out))


def _evidence(exclude_evidence: Iterable[str] | str) -> set[str]:
    if isinstance(exclude_evidence, str):
        exclude_evidence = (exclude_evidence,)
    return {str(e).strip().upper() for e in exclude_evidence}


def _normalise_ontology(values: pd.Series) -> pd.Series:
    return values.astype(str).str.strip().str.upper().str.replace(" ", "_").map(_ONTOLOGY_NAMES)


def _to_annotations(genes: Iterable[str], terms: Iterable[str]) -> Annotations:
    out: Annotations = {}
    for gene, term in zip(genes, terms, strict=True):
        out.setdefault(gene, set()).add(term)
    return out


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def go_term_ontologies() -> dict[str, str]:
    """Map every GO term id of the embedded ontology (GO 2022-07-01) to its ontology.

    Returns
    -------
    ``{go_id: 'BP' | 'MF' | 'CC'}``.
    """
    terms = _read("go_terms")
    return dict(zip(terms["go_id"], terms["ontology"], strict=True))


def annotations_from_dataframe(
    df: pd.DataFrame,
    gene_column: str | None = None,
    term_column: str | None = None,
    ontology_column: str | None = None,
    evidence_column: str | None = None,
    ontologies: Sequence[str] = ONTOLOGIES,
    exclude_evidence: Iterable[str] = (),
) -> Annotations:
    """Collect gene -> GO term sets from a long table (one row per gene and term).

    Parameters
    ----------
    df
        The table.
    gene_column
        Column with gene ids; guessed among ``gene``, ``gene_id``, ``symbol``, ``ensembl_id``,
        ``entrez_id``, ``GeneID`` when ``None``.
    term_column
        Column with GO ids; guessed among ``go_id``, ``GO_ID``, ``term``, ``go`` when ``None``.
    ontology_column
        Column with the ontology (``BP``/``MF``/``CC``, ``P``/``F``/``C`` or ``Process``/...);
        guessed among ``ontology``, ``aspect``, ``Category``. Without one, a selection of
        ``ontologies`` uses the embedded GO term table (terms unknown to it are dropped).
    evidence_column
        Column with evidence codes; guessed among ``evidence``, ``Evidence``, ``evidence_code``.
    ontologies
        Ontologies to keep.
    exclude_evidence
        Evidence codes to drop (e.g. ``('IEA', 'ND')``); needs an evidence column.

    Returns
    -------
    ``{gene: set of GO ids}``, genes in order of first appearance.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}.")

    def pick(given: str | None, candidates: Sequence[str], what: str, required: bool) -> str | None:
        if given is not None:
            if given not in df.columns:
                raise KeyError(
                    f"{what} column {given!r} not in the table; columns: {list(df.columns)}"
                )
            return given
        for c in candidates:
            if c in df.columns:
                return c
        if required:
            raise KeyError(
                f"cannot find the {what} column (looked for {list(candidates)}); columns: "
                f"{list(df.columns)}. Name it with {what}_column=..."
            )
        return None

    gene_col = pick(
        gene_column,
        ("gene", "gene_id", "symbol", "ensembl_id", "entrez_id", "GeneID", "gene_symbol"),
        "gene",
        True,
    )
    term_col = pick(term_column, ("go_id", "GO_ID", "term", "go", "go_term"), "term", True)
    ont_col = pick(
        ontology_column, ("ontology", "aspect", "Category", "namespace"), "ontology", False
    )
    ev_col = pick(evidence_column, ("evidence", "Evidence", "evidence_code"), "evidence", False)
    wanted = _ontologies(ontologies)
    excluded = _evidence(exclude_evidence)

    table = df[[c for c in (gene_col, term_col, ont_col, ev_col) if c is not None]]
    table = table.dropna(subset=[gene_col, term_col])
    genes = table[gene_col].astype(str).str.strip()
    terms = table[term_col].astype(str).str.strip()
    keep = (genes != "") & (terms != "")
    if set(wanted) != set(ONTOLOGIES):
        if ont_col is not None:
            ont = _normalise_ontology(table[ont_col])
        else:
            ont = terms.map(go_term_ontologies())
        keep &= ont.isin(wanted)
    if excluded:
        if ev_col is None:
            raise ScLongInputError(
                "exclude_evidence needs an evidence column; the table has none "
                f"(columns: {list(df.columns)}). Name it with evidence_column=..."
            )
        keep &= ~table[ev_col].astype(str).str.strip().str.upper().isin(excluded)
    return _to_annotations(genes[keep], terms[keep])


def read_gaf(
    path: PathLike,
    ontologies: Sequence[str] = ONTOLOGIES,
    exclude_evidence: Iterable[str] = (),
    id_column: Literal["symbol", "db_object_id"] = "symbol",
    taxon: int | None = None,
    include_not: bool = False,
) -> Annotations:
    """Read a GO Annotation File (GAF 2.x; plain or ``.gz``).

    Parameters
    ----------
    path
        The ``.gaf`` / ``.gaf.gz`` file (e.g. ``goa_human.gaf.gz`` from the GO Consortium).
    ontologies
        Aspects to keep (``'BP'``, ``'MF'``, ``'CC'``; the file's P/F/C).
    exclude_evidence
        Evidence codes to drop, e.g. ``('IEA', 'ND')``.
    id_column
        Gene id to key on: ``'symbol'`` (column 3, DB Object Symbol) or ``'db_object_id'``
        (column 2, e.g. a UniProtKB accession).
    taxon
        Keep only rows of this NCBI taxon (column 13, e.g. ``9606``); ``None`` = all.
    include_not
        Keep rows whose qualifier contains ``NOT`` (dropped by default: they state that the gene
        does *not* have the function).

    Returns
    -------
    ``{gene: set of GO ids}``. Rows with an empty gene id (in ``id_column``) or GO id are skipped.

    Raises
    ------
    ScLongFileNotFound
        No file at ``path`` (a :class:`FileNotFoundError`).
    ScLongFileError
        The file is not a GAF file: a data line with fewer than 15 columns, not text, damaged
        (a :class:`ValueError`).
    ScLongInputError
        A line whose aspect (column 9) is not P, F or C (the message names the line), or a bad
        ``id_column`` or ``ontologies`` (a :class:`ValueError`).
    """
    path = existing_file(path, "GAF file", _GAF_HINT)
    if id_column not in ("symbol", "db_object_id"):
        raise ScLongInputError(f"id_column must be 'symbol' or 'db_object_id', not {id_column!r}.")
    wanted = _ontologies(ontologies)
    excluded = _evidence(exclude_evidence)
    rows = []
    with reading(path, "GAF file", _GAF_HINT), _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("!") or not line.strip():
                continue
            fields = line.rstrip("\n\r").split("\t")
            if len(fields) < 15:
                raise ScLongFileError(
                    f"{path} is not a GAF file: a data line has {len(fields)} tab-separated "
                    f"columns, GAF has 15 (1.0) or 17 (2.x); {_GAF_HINT}."
                )
            aspect = fields[8].strip().upper().replace(" ", "_")
            if aspect not in _ONTOLOGY_NAMES:
                raise ScLongInputError(
                    f"{path}, line {number}: unknown aspect (column 9) {fields[8]!r}; GAF "
                    "aspects are P, F, C (biological process, molecular function, cellular "
                    "component). Fix or remove the line."
                )
            rows.append(fields[:13])
    table = pd.DataFrame(rows, columns=_GAF_COLUMNS[:13])
    keep = _normalise_ontology(table["aspect"]).isin(wanted)
    if excluded:
        keep &= ~table["evidence"].str.upper().isin(excluded)
    if not include_not:
        keep &= ~table["qualifier"].str.upper().str.split("|").map(lambda q: "NOT" in q)
    if taxon is not None:
        first_taxon = table["taxon"].str.split("|").str[0].str.replace("taxon:", "", regex=False)
        keep &= first_taxon == str(int(taxon))
    # rows without a gene id (e.g. an empty DB Object Symbol) or GO id cannot be keyed
    keep &= (table[id_column].str.strip() != "") & (table["go_id"].str.strip() != "")
    table = table[keep]
    return _to_annotations(table[id_column].str.strip(), table["go_id"].str.strip())


def read_gene2go(
    path: PathLike,
    taxon: int | None = 9606,
    ontologies: Sequence[str] = ONTOLOGIES,
    exclude_evidence: Iterable[str] = (),
    id_type: Literal["entrez", "symbol", "ensembl"] = "entrez",
    include_not: bool = False,
) -> Annotations:
    """Read NCBI's ``gene2go`` file (plain or ``.gz``; all species, filtered by taxon).

    Columns: ``#tax_id GeneID GO_ID Evidence Qualifier GO_term PubMed Category``.

    Parameters
    ----------
    path
        The file (https://ftp.ncbi.nlm.nih.gov/gene/DATA/gene2go.gz).
    taxon
        NCBI taxon to keep (``9606`` = human); ``None`` = all rows.
    ontologies
        Categories to keep (``'BP'`` = Process, ``'MF'`` = Function, ``'CC'`` = Component).
    exclude_evidence
        Evidence codes to drop, e.g. ``('IEA', 'ND')``.
    id_type
        Key the result on NCBI gene ids (``'entrez'``), or translate them to official symbols or
        Ensembl ids with the embedded human tables (human only; a gene with several Ensembl ids
        gives each of them the gene's terms; genes without one are left out).
    include_not
        Keep rows whose qualifier contains ``NOT``.

    Returns
    -------
    ``{gene: set of GO ids}``.

    Raises
    ------
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not a gene2go file (columns missing, not text, damaged).
    ScLongInputError
        A bad ``id_type``, ``taxon`` or ``ontologies``.
    """
    path = existing_file(path, "gene2go file", _GENE2GO_HINT)
    if id_type not in ("entrez", "symbol", "ensembl"):
        raise ScLongInputError(f"id_type must be 'entrez', 'symbol' or 'ensembl', not {id_type!r}.")
    if id_type != "entrez" and taxon != 9606:
        raise ScLongInputError(
            f"id_type={id_type!r} uses the embedded human tables; it needs taxon=9606 "
            f"(got {taxon}). Use id_type='entrez' for other species."
        )
    if taxon is not None:
        try:
            int(taxon)
        except (TypeError, ValueError):
            raise ScLongInputError(
                f"taxon must be an NCBI taxon id such as 9606, or None, not {taxon!r}."
            ) from None
    wanted = _ontologies(ontologies)
    excluded = _evidence(exclude_evidence)
    columns = ["#tax_id", "GeneID", "GO_ID", "Evidence", "Qualifier", "Category"]
    with reading(path, "gene2go file", _GENE2GO_HINT):
        parts = _gene2go_rows(path, columns, wanted, taxon, excluded, include_not)
    table = pd.concat(parts) if parts else pd.DataFrame(columns=["GeneID", "GO_ID"])
    if id_type == "entrez":
        return _to_annotations(table["GeneID"], table["GO_ID"])
    from ..genes.ids import human_gene_index

    index = human_gene_index()
    if id_type == "symbol":
        genes = table["GeneID"].map(index.symbol)
        keep = genes.notna()
        return _to_annotations(genes[keep], table["GO_ID"][keep])
    ens = table["GeneID"].map(index.ensembl).dropna()
    exploded = pd.DataFrame({"gene": ens, "term": table["GO_ID"][ens.index]}).explode("gene")
    exploded = exploded.dropna()
    return _to_annotations(exploded["gene"], exploded["term"])


def _gene2go_rows(
    path: Path,
    columns: list[str],
    wanted: tuple[str, ...],
    taxon: int | None,
    excluded: set[str],
    include_not: bool,
) -> list[pd.DataFrame]:
    """The gene2go rows kept (``GeneID``, ``GO_ID``), read a million rows at a time."""
    parts = []
    try:
        reader = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            usecols=columns,
            chunksize=1_000_000,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
        )
        for chunk in reader:
            keep = _normalise_ontology(chunk["Category"]).isin(wanted)
            if taxon is not None:
                keep &= chunk["#tax_id"] == str(int(taxon))
            if excluded:
                keep &= ~chunk["Evidence"].str.upper().isin(excluded)
            if not include_not:
                keep &= ~chunk["Qualifier"].str.upper().str.contains("NOT", regex=False)
            parts.append(chunk.loc[keep, ["GeneID", "GO_ID"]])
    except ValueError as error:
        raise ScLongFileError(
            f"{path} is not an NCBI gene2go file (expected the columns {columns}): "
            f"{' '.join(str(error).split())}; {_GENE2GO_HINT}."
        ) from error
    return parts


def read_gmt(path: PathLike, ontologies: Sequence[str] | None = None) -> Annotations:
    """Read a GMT gene-set file (one set a line: name, description, genes...; plain or ``.gz``).

    The set names are the terms (e.g. GO ids, or MSigDB names such as ``GOBP_...``).

    Parameters
    ----------
    path
        The ``.gmt`` file.
    ontologies
        Keep only sets named by GO ids of these ontologies (looked up in the embedded GO term
        table); ``None`` = keep every set.

    Returns
    -------
    ``{gene: set of set names}``.

    Raises
    ------
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        A line with a name but no description column, a file that is not text or is damaged.
    """
    path = existing_file(path, "GMT file", _GMT_HINT)
    lookup = go_term_ontologies() if ontologies is not None else None
    wanted = set(_ontologies(ontologies)) if ontologies is not None else None
    out: Annotations = {}
    with reading(path, "GMT file", _GMT_HINT), _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = [f.strip() for f in line.rstrip("\n\r").split("\t")]
            if not fields[0]:
                continue
            if len(fields) < 2:
                raise ScLongFileError(
                    f"{path} line {number} is not GMT (name<TAB>description<TAB>gene...): "
                    f"{line[:80]!r}; {_GMT_HINT}."
                )
            name = fields[0]
            if wanted is not None and lookup.get(name) not in wanted:
                continue
            for gene in fields[2:]:
                if gene:
                    out.setdefault(gene, set()).add(name)
    return out


def read_gene2go_pickle(path: PathLike) -> Annotations:
    """Read the official scLong GO annotation ``.pkl`` (a dict gene id -> set of GO ids).

    Parameters
    ----------
    path
        The pickle. It is read with an allow-list unpickler that admits only plain data (dicts,
        lists, sets and tuples of strings and numbers): a pickle that refers to any other
        global (code) is refused before anything in it runs.

    Returns
    -------
    ``{gene: set of GO ids}``.

    Raises
    ------
    UnsafeFileError
        The pickle refers to a global outside the allow-list (named in the message).
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not a pickle (empty, truncated, damaged, another format; a :class:`ValueError`).
    AnnotationTypeError
        Not a dict of gene ids to sets of GO ids (a :class:`TypeError`).
    """
    from ..errors import ScLongError
    from ..io._safe import PLAIN_DATA_GLOBALS, restricted_load

    path = existing_file(path, "GO annotation pickle", _PICKLE_HINT)
    try:
        data = restricted_load(path, PLAIN_DATA_GLOBALS, what=str(path))
    except ScLongError:
        raise
    except Exception as error:  # the restricted unpickler: any failure is a damaged file
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ScLongFileError(f"{path} is not a pickle ({reason}); {_PICKLE_HINT}.") from error
    try:
        return _check_annotations(data, str(path))
    except TypeError as error:
        raise AnnotationTypeError(f"{error} {_PICKLE_HINT[0].upper()}{_PICKLE_HINT[1:]}.") from None


def _check_annotations(data: object, where: str = "annotations") -> Annotations:
    if not isinstance(data, Mapping):
        raise TypeError(
            f"{where} must map gene ids to sets of GO term ids (a dict), got {type(data).__name__}."
        )
    out: Annotations = {}
    for gene, terms in data.items():
        if not isinstance(gene, str):
            raise TypeError(
                f"{where}: gene ids must be strings, found {gene!r} ({type(gene).__name__}); "
                "convert the keys with str()."
            )
        if isinstance(terms, str) or not isinstance(terms, Iterable):
            raise TypeError(
                f"{where}: the terms of {gene!r} must be a set (or list) of term ids, got "
                f"{type(terms).__name__} {str(terms)[:40]!r}."
            )
        terms = set(terms)
        bad = [t for t in terms if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{where}: terms of {gene!r} must be strings, found {bad[0]!r}.")
        out[gene] = terms
    return out


def read_annotations(source: PathLike | Mapping | pd.DataFrame, **kwargs) -> Annotations:
    """Read annotations from a mapping, a DataFrame or a file (format from the file name).

    Parameters
    ----------
    source
        A ``{gene: set of terms}`` mapping; a DataFrame (see :func:`annotations_from_dataframe`);
        or a path: ``.pkl``/``.pickle`` (official scLong), ``.gmt``, ``.gaf`` (``.gz`` allowed),
        a file named ``gene2go*`` (NCBI), or ``.tsv``/``.csv`` (a long table).
    **kwargs
        Passed to the reader.

    Returns
    -------
    ``{gene: set of terms}``.
    """
    if isinstance(source, Mapping):
        return _check_annotations(source)
    if isinstance(source, pd.DataFrame):
        return annotations_from_dataframe(source, **kwargs)
    if not isinstance(source, str | os.PathLike):
        raise PathTypeError(
            "annotations must be a dict gene -> set of GO ids, a DataFrame or a file path, "
            f"not {type(source).__name__} {shown(source)}."
        )
    path = Path(source)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".pkl", ".pickle")):
        return read_gene2go_pickle(path, **kwargs)
    if name.endswith(".gmt"):
        return read_gmt(path, **kwargs)
    if name.endswith((".gaf", ".gpa")) or ".gaf" in name:
        return read_gaf(path, **kwargs)
    if name.startswith("gene2go"):
        return read_gene2go(path, **kwargs)
    if name.endswith((".tsv", ".txt", ".csv")):
        return _read_annotation_table(path, sep="," if name.endswith(".csv") else "\t", **kwargs)
    raise ScLongInputError(
        f"cannot tell the format of {path.name}; call read_gaf, read_gene2go, read_gmt, "
        "read_gene2go_pickle or annotations_from_dataframe directly."
    )


def _read_annotation_table(path: Path, sep: str, **kwargs) -> Annotations:
    """A long table file (one row per gene and term) through :func:`annotations_from_dataframe`."""
    with reading_file(path, "annotation table", _TABLE_HINT) as path:
        table = pd.read_csv(path, sep=sep, dtype=str)
    try:
        return annotations_from_dataframe(table, **kwargs)
    except KeyError as error:  # a column not found: say so for the file
        raise ScLongFileError(f"{path}: {error.args[0]}") from None


def default_human_annotations(
    id_type: Literal["ensembl", "symbol", "entrez"] = "ensembl",
    ontologies: Sequence[str] = ONTOLOGIES,
    exclude_evidence: Iterable[str] = (),
    propagate: bool = False,
) -> Annotations:
    """Human gene -> GO annotations embedded in the package (works offline).

    NCBI gene2go 2022-09-12 with GO 2022-07-01, via Bioconductor org.Hs.eg.db 3.16 (see
    ``sclong_scverse/go/data/PROVENANCE.md``; NCBI data public domain, GO CC BY 4.0):
    20,728 genes, 18,933 terms, direct annotations.

    Parameters
    ----------
    id_type
        Key on Ensembl gene ids (a gene with several Ensembl ids gives each of them its terms;
        genes without one are left out), official symbols, or NCBI (Entrez) ids.
    ontologies
        Ontologies to keep.
    exclude_evidence
        Evidence codes to drop, e.g. ``('IEA', 'ND')`` (``ND`` = no data: annotations to the
        root terms).
    propagate
        Add every ancestor term (``is_a`` and ``part_of``; see :func:`propagate_to_ancestors`).
        Off by default, as in the original scLong, which uses direct annotations.

    Returns
    -------
    ``{gene: set of GO ids}``, genes sorted.
    """
    wanted = _ontologies(ontologies)
    excluded = _evidence(exclude_evidence)
    table = _read("gene2go")
    keep = table["ontology"].isin(wanted)
    if excluded:
        keep &= ~table["evidence"].isin(excluded)
    table = table.loc[keep, ["entrez_id", "symbol", "go_id"]]
    if id_type == "symbol":
        genes, terms = table["symbol"], table["go_id"]
    elif id_type == "entrez":
        genes, terms = table["entrez_id"], table["go_id"]
    elif id_type == "ensembl":
        ids = _read("gene_ids")
        ens = dict(zip(ids["entrez_id"], ids["ensembl_ids"].str.split("|"), strict=True))
        exploded = (
            pd.DataFrame({"gene": table["entrez_id"].map(ens), "term": table["go_id"]})
            .explode("gene")
            .query("gene != ''")
            .dropna()
        )
        genes, terms = exploded["gene"], exploded["term"]
    else:
        raise ScLongInputError(f"id_type must be 'ensembl', 'symbol' or 'entrez', not {id_type!r}.")
    annotations = _to_annotations(genes, terms)
    annotations = {g: annotations[g] for g in sorted(annotations)}
    if propagate:
        annotations = propagate_to_ancestors(annotations)
    return annotations


def read_go_parents(path: PathLike) -> pd.DataFrame:
    """Read GO parent links from an OBO file (``go-basic.obo``) or a table.

    Parameters
    ----------
    path
        An ``.obo`` file (``is_a`` and ``relationship:`` lines of ``[Term]`` stanzas), or a
        TSV/CSV (``.gz`` allowed) with columns ``child``, ``parent`` and optionally
        ``relationship`` (missing = ``is_a``).

    Returns
    -------
    Table ``child, parent, relationship``.

    Raises
    ------
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        A table without the columns ``child`` and ``parent``, or a file that is not text, is
        empty or damaged.
    """
    with reading_file(path, "GO parents file", _PARENTS_HINT) as path:
        return _read_go_parents(path)


def _read_go_parents(path: Path) -> pd.DataFrame:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".obo"):
        rows: list[tuple[str, str, str]] = []
        with _open_text(path) as handle:
            term: str | None = None
            for line in handle:
                line = line.strip()
                if line.startswith("["):
                    term = None if line != "[Term]" else ""
                elif term is not None and line.startswith("id: "):
                    term = line[4:].strip()
                elif term and line.startswith("is_a: "):
                    rows.append((term, line[6:].split("!")[0].strip(), "is_a"))
                elif term and line.startswith("relationship: "):
                    parts = line[14:].split("!")[0].split()
                    if len(parts) >= 2:
                        rows.append((term, parts[1], parts[0]))
        return pd.DataFrame(rows, columns=["child", "parent", "relationship"])
    table = pd.read_csv(path, sep="," if name.endswith(".csv") else "\t", dtype=str)
    missing = {"child", "parent"} - set(table.columns)
    if missing:
        raise ScLongFileError(
            f"{path} lacks the columns {sorted(missing)} (found {list(table.columns)[:8]}); "
            f"{_PARENTS_HINT}."
        )
    if "relationship" not in table.columns:
        table["relationship"] = "is_a"
    table["relationship"] = table["relationship"].str.strip().str.replace(" ", "_")
    table["relationship"] = table["relationship"].replace({"isa": "is_a"})
    return table[["child", "parent", "relationship"]]


def propagate_to_ancestors(
    annotations: Mapping[str, Iterable[str]],
    parents: pd.DataFrame | PathLike | None = None,
    relationships: Sequence[str] = ("is_a", "part_of"),
) -> Annotations:
    """Add to each gene every ancestor of its terms (the GO "true path rule").

    Parameters
    ----------
    annotations
        ``{gene: terms}``.
    parents
        Parent links: a table ``child, parent, relationship`` or a file for
        :func:`read_go_parents`; ``None`` = the embedded GO 2022-07-01 (GO.db 3.16).
    relationships
        Relationship types to follow (``is_a``, ``part_of``, ``regulates``,
        ``positively_regulates``, ``negatively_regulates``).

    Returns
    -------
    ``{gene: terms and all their ancestors}``; terms unknown to the ontology are kept as they are.
    """
    annotations = _check_annotations(annotations)
    if parents is None:
        links = _read("go_parents")
    elif isinstance(parents, pd.DataFrame):
        links = parents
    else:
        links = read_go_parents(parents)
    rel = {r.replace(" ", "_") for r in relationships}
    links = links[links["relationship"].isin(rel)]
    graph: dict[str, list[str]] = {}
    for child, parent in zip(links["child"], links["parent"], strict=True):
        graph.setdefault(child, []).append(parent)

    closure: dict[str, frozenset[str]] = {}

    def ancestors(term: str) -> frozenset[str]:
        # iterative post-order DFS (the GO DAG is ~15 levels deep, but avoid recursion limits)
        if term in closure:
            return closure[term]
        stack = [(term, False)]
        visiting: set[str] = set()
        while stack:
            node, expanded = stack.pop()
            if node in closure:
                continue
            if expanded:
                acc = {node}
                for p in graph.get(node, ()):
                    acc |= closure.get(p, frozenset((p,)))
                closure[node] = frozenset(acc)
                visiting.discard(node)
            elif node not in visiting:  # (a cycle, impossible in GO, would stop here)
                visiting.add(node)
                stack.append((node, True))
                stack.extend(
                    (p, False)
                    for p in graph.get(node, ())
                    if p not in closure and p not in visiting
                )
        return closure[term]

    out: Annotations = {}
    for gene, terms in annotations.items():
        acc: set[str] = set()
        for t in terms:
            acc |= ancestors(t)
        out[gene] = acc
    return out
