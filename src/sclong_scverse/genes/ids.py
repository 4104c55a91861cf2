"""Gene identifiers: id types, Ensembl version suffixes, human symbol / alias / Ensembl maps.

The human maps come from the tables embedded in :mod:`sclong_scverse.go` (NCBI Gene via
Bioconductor org.Hs.eg.db; see ``sclong_scverse/go/data/PROVENANCE.md``). Every mapping goes
through the NCBI (Entrez) gene id: symbol -> Entrez -> Ensembl and back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd

IdType = Literal["ensembl", "symbol"]

#: Ensembl gene id of any species, optional version and GENCODE ``_PAR_Y`` suffix
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?(_PAR_Y)?$", re.IGNORECASE)
_SUFFIX = re.compile(r"(\.\d+)?(_PAR_Y)?$", re.IGNORECASE)
_HUMAN_ENSEMBL = re.compile(r"^ENSG\d{11}$")


def _as_str_list(ids: Iterable[object], what: str = "gene ids") -> list[str]:
    """Return ``ids`` as a list of stripped strings; raise a clear error on other types."""
    if isinstance(ids, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string ({ids[:40]!r}).")
    values = list(ids)
    bad = [(i, v) for i, v in enumerate(values) if not isinstance(v, str | np.str_)]
    if bad:
        i, v = bad[0]
        raise TypeError(
            f"{what} must be strings; {len(bad)} are not (first at position {i}: {v!r} of type "
            f"{type(v).__name__}). Convert them (e.g. `[str(g) for g in ids]`), or, for an AnnData "
            "whose var_names are not gene ids, pass gene_id_key=<the adata.var column with ids>."
        )
    return [str(v).strip() for v in values]


def is_ensembl_id(gene_id: str) -> bool:
    """Return whether ``gene_id`` looks like an Ensembl gene id (any species, version allowed).

    Parameters
    ----------
    gene_id
        One identifier, e.g. ``'ENSG00000141510'``, ``'ENSG00000141510.17'``,
        ``'ENSMUSG00000059552'``.

    Returns
    -------
    ``True`` for an Ensembl gene id.
    """
    return bool(_ENSEMBL.match(gene_id))


def strip_version(gene_id: str) -> str:
    """Remove the version (``.17``) and GENCODE ``_PAR_Y`` suffixes of an Ensembl id, upper-case it.

    Parameters
    ----------
    gene_id
        An identifier; ids that are not Ensembl gene ids are returned unchanged.

    Returns
    -------
    ``'ENSG00000141510'`` for ``'ENSG00000141510.17'``.
    """
    if not _ENSEMBL.match(gene_id):
        return gene_id
    return _SUFFIX.sub("", gene_id).upper()


def detect_id_type(ids: Iterable[str]) -> IdType:
    """Guess whether gene ids are Ensembl gene ids or symbols.

    Parameters
    ----------
    ids
        Gene identifiers.

    Returns
    -------
    ``'ensembl'`` when more than half of the ids look like Ensembl gene ids
    (``ENS[species]G`` + digits, optionally ``.version``), else ``'symbol'``.
    """
    values = _as_str_list(ids)
    if not values:
        return "symbol"
    n_ensembl = sum(1 for v in values if _ENSEMBL.match(v))
    return "ensembl" if n_ensembl > len(values) / 2 else "symbol"


def _split_pipes(values: pd.Series) -> pd.Series:
    return values.str.split("|")


@dataclass(frozen=True)
class HumanGeneIndex:
    """Lookup tables between human gene symbols, aliases, Ensembl and NCBI (Entrez) ids.

    Build it with :func:`human_gene_index` (cached); all keys of the ``by_*_upper`` maps are
    upper case, values are tuples of Entrez ids.

    Attributes
    ----------
    symbol
        Entrez id -> official symbol.
    ensembl
        Entrez id -> Ensembl gene ids.
    gene_type
        Entrez id -> NCBI gene type (``'protein-coding'``, ``'ncRNA'``, ``'pseudo'``, ...).
    by_symbol
        Official symbol -> Entrez id (exact case).
    by_symbol_upper
        Upper-case official symbol -> Entrez ids.
    by_alias_upper
        Upper-case alias or previous symbol -> Entrez ids (official symbols not included).
    by_ensembl
        Ensembl gene id (no version) -> Entrez ids.
    """

    symbol: dict[str, str]
    ensembl: dict[str, tuple[str, ...]]
    gene_type: dict[str, str]
    by_symbol: dict[str, str]
    by_symbol_upper: dict[str, tuple[str, ...]]
    by_alias_upper: dict[str, tuple[str, ...]]
    by_ensembl: dict[str, tuple[str, ...]]

    def entrez_from_symbol(self, symbol: str) -> tuple[tuple[str, ...], str]:
        """Resolve a symbol to Entrez ids: official symbol, then its case variants, then aliases.

        Parameters
        ----------
        symbol
            A gene symbol.

        Returns
        -------
        The Entrez ids (empty when unknown) and how they were found: ``'symbol'``, ``'case'``,
        ``'alias'`` or ``''``.
        """
        if symbol in self.by_symbol:
            return (self.by_symbol[symbol],), "symbol"
        upper = symbol.upper()
        if upper in self.by_symbol_upper:
            return self.by_symbol_upper[upper], "case"
        if upper in self.by_alias_upper:
            return self.by_alias_upper[upper], "alias"
        return (), ""

    def entrez(self, gene_id: str, id_type: IdType) -> tuple[tuple[str, ...], str]:
        """Resolve a symbol or an Ensembl id to Entrez ids.

        Parameters
        ----------
        gene_id
            A symbol or an Ensembl gene id (version suffix allowed).
        id_type
            ``'symbol'`` or ``'ensembl'``.

        Returns
        -------
        The Entrez ids (empty when unknown) and how they were found (``'ensembl'``, ``'symbol'``,
        ``'case'``, ``'alias'``, or ``''``).
        """
        if id_type == "ensembl":
            found = self.by_ensembl.get(strip_version(gene_id), ())
            return found, "ensembl" if found else ""
        return self.entrez_from_symbol(gene_id)


def _group(keys: Iterable[str], values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for key, value in zip(keys, values, strict=True):
        bucket = out.setdefault(key, [])
        if value not in bucket:
            bucket.append(value)
    return {k: tuple(v) for k, v in out.items()}


@cache
def human_gene_index() -> HumanGeneIndex:
    """Return the (cached) human gene id lookup tables built from the embedded NCBI tables.

    Returns
    -------
    A :class:`HumanGeneIndex`.
    """
    from ..go._data import _read

    ids = _read("gene_ids")
    alias = _read("gene_alias")
    entrez = ids["entrez_id"].tolist()
    symbols = ids["symbol"].tolist()
    ens_lists = [tuple(s.split("|")) if s else () for s in ids["ensembl_ids"]]
    exploded = [(e, g) for g, es in zip(entrez, ens_lists, strict=True) for e in es]
    return HumanGeneIndex(
        symbol=dict(zip(entrez, symbols, strict=True)),
        ensembl=dict(zip(entrez, ens_lists, strict=True)),
        gene_type=dict(zip(entrez, ids["gene_type"], strict=True)),
        by_symbol=dict(zip(symbols, entrez, strict=True)),
        by_symbol_upper=_group((s.upper() for s in symbols), entrez),
        by_alias_upper=_group(alias["alias_symbol"].str.upper(), alias["entrez_id"]),
        by_ensembl=_group((e for e, _ in exploded), (g for _, g in exploded)),
    )


def human_gene_table() -> pd.DataFrame:
    """Return the embedded table of human genes (NCBI Gene 2022-09-12).

    Returns
    -------
    One row per NCBI gene: ``entrez_id``, ``symbol``, ``gene_type``, ``ensembl_ids``
    (pipe-joined, empty when none).
    """
    from ..go._data import embedded_table

    return embedded_table("gene_ids")


def human_gene_ids(
    id_type: Literal["ensembl", "symbol", "entrez"] = "ensembl",
    gene_types: Sequence[str] | None = None,
) -> list[str]:
    """List the human genes of the embedded NCBI table, e.g. to build a full-genome vocabulary.

    Parameters
    ----------
    id_type
        ``'ensembl'`` (every Ensembl gene id NCBI maps to a human gene, 39,708 ids),
        ``'symbol'`` (official symbols) or ``'entrez'``.
    gene_types
        Keep only these NCBI gene types (e.g. ``('protein-coding', 'ncRNA')``); ``None`` = all.

    Returns
    -------
    The ids, sorted (Ensembl, Entrez) or in symbol order, without duplicates.
    """
    table = human_gene_table()
    if gene_types is not None:
        known = set(table["gene_type"])
        unknown = sorted(set(gene_types) - known)
        if unknown:
            raise ValueError(f"unknown gene types {unknown}; choose from {sorted(known)}.")
        table = table[table["gene_type"].isin(list(gene_types))]
    if id_type == "ensembl":
        return sorted({e for s in table["ensembl_ids"] if s for e in s.split("|")})
    if id_type == "symbol":
        return list(dict.fromkeys(table["symbol"]))
    if id_type == "entrez":
        return sorted(set(table["entrez_id"]), key=int)
    raise ValueError(f"id_type must be 'ensembl', 'symbol' or 'entrez', not {id_type!r}.")


def _id_shape(value: str) -> str:
    """What an id looks like: ``'ensembl'``, ``'entrez'`` (digits only) or ``'symbol'``."""
    if _ENSEMBL.match(value):
        return "ensembl"
    return "entrez" if value.isdigit() else "symbol"


def _check_declared_type(values: list[str], from_type: str) -> None:
    """Refuse ids most of which do not look like ``from_type`` (they would all map to None)."""
    if from_type not in ("ensembl", "symbol", "entrez") or not values:
        return  # an unknown from_type gets its own error below
    shapes = pd.Series([_id_shape(v) for v in values])
    if (shapes == from_type).sum() * 2 >= len(values):
        return
    looks_like = shapes.mode().iloc[0]
    example = values[int(np.flatnonzero(shapes.to_numpy() != from_type)[0])]
    raise ValueError(
        f"from_type={from_type!r}, but most ids do not look like {from_type} ids (e.g. "
        f"{example!r}); they look like {looks_like} ids. Pass from_type={looks_like!r}, or "
        "from_type=None to detect Ensembl vs symbol."
    )


def map_gene_ids(
    ids: Iterable[str],
    to: Literal["ensembl", "symbol", "entrez"],
    from_type: Literal["ensembl", "symbol", "entrez"] | None = None,
) -> pd.Series:
    """Translate human gene ids (symbol <-> Ensembl <-> Entrez) with the embedded NCBI tables.

    Symbols resolve through the official symbol, then case variants, then aliases / previous
    symbols (an alias shared by several genes is left unmapped). Ensembl version suffixes are
    ignored.

    Parameters
    ----------
    ids
        Gene ids, all of one type.
    to
        Target id type.
    from_type
        Type of ``ids``; detected (Ensembl vs symbol) when ``None``.

    Returns
    -------
    A Series indexed by the input ids with the translated id, or ``None`` where there is none.
    Where a gene has several Ensembl ids, the first in sort order is given.
    """
    values = _as_str_list(ids)
    if to not in ("ensembl", "symbol", "entrez"):
        raise ValueError(f"to must be 'ensembl', 'symbol' or 'entrez', not {to!r}.")
    if from_type is not None:
        _check_declared_type(values, from_type)
    from_type = from_type or detect_id_type(values)
    index = human_gene_index()
    out: list[str | None] = []
    for value in values:
        if from_type == "entrez":
            entrez = (value,) if value in index.symbol else ()
        elif from_type in ("ensembl", "symbol"):
            entrez, how = index.entrez(value, from_type)
            if how == "alias" and len(entrez) > 1:
                entrez = ()
        else:
            raise ValueError(
                f"from_type must be 'ensembl', 'symbol' or 'entrez', not {from_type!r}."
            )
        if not entrez:
            out.append(None)
        elif to == "entrez":
            out.append(entrez[0])
        elif to == "symbol":
            out.append(index.symbol[entrez[0]])
        else:
            ens = sorted(e for g in entrez for e in index.ensembl.get(g, ()))
            out.append(ens[0] if ens else None)
    return pd.Series(out, index=pd.Index(values, name=from_type), name=to, dtype=object)
