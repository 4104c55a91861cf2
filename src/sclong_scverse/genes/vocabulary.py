"""The model's gene vocabulary and the alignment of an AnnData's genes to it."""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .ids import (
    _ENSEMBL,
    _HUMAN_ENSEMBL,
    IdType,
    _as_str_list,
    detect_id_type,
    human_gene_index,
    strip_version,
)

if TYPE_CHECKING:
    from anndata import AnnData

PathLike = str | os.PathLike

_FORMAT = "sclong_scverse.GeneVocabulary"
#: How an AnnData gene was matched to the vocabulary: the values of the ``match`` column of
#: :attr:`GeneAlignment.table <sclong_scverse.genes.GeneAlignment.table>`, and their meaning.
MATCH_KINDS = {
    "exact": "same id",
    "version": "same Ensembl id once the version suffix is removed",
    "case": "same symbol up to upper/lower case",
    "symbol": "through the human tables (symbol -> NCBI gene -> vocabulary id)",
    "alias": "through a human alias / previous symbol",
    "ensembl": "through the human tables (Ensembl id -> NCBI gene -> vocabulary id)",
    "duplicate": "dropped: another AnnData gene already took this vocabulary gene",
    "ambiguous": "dropped: maps to several vocabulary genes (alias shared by several genes)",
    "absent": "dropped: not in the vocabulary",
}


def _dedup_report(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup


class GeneVocabulary:
    """The ordered gene ids of a model's input, plus one trailing pad token.

    Token ``i`` is ``genes[i]`` for ``i < len(genes)``; the pad token is token ``len(genes)``
    (the official scLong layout: 27,874 Ensembl ids + 1 pad = 27,875 tokens).

    Parameters
    ----------
    genes
        Gene ids in model order (Ensembl ids or symbols), unique, non-empty strings.
    pad_token
        Name of the trailing pad token; must not be one of ``genes``.

    Examples
    --------
    >>> vocab = GeneVocabulary(["ENSG00000141510", "ENSG00000012048"])
    >>> len(vocab), vocab.n_tokens, vocab.index("ENSG00000012048")
    (2, 3, 1)
    """

    def __init__(self, genes: Sequence[str], pad_token: str = "<pad>") -> None:
        if isinstance(genes, GeneVocabulary):
            genes = genes.genes
        values = _as_str_list(genes, "vocabulary genes")
        if not values:
            raise ValueError(
                "a GeneVocabulary needs at least one gene; got an empty list. Read the official "
                "gene list with GeneVocabulary.from_file(path) or pass the genes of your data."
            )
        empty = [i for i, v in enumerate(values) if not v]
        if empty:
            raise ValueError(
                f"vocabulary genes must be non-empty strings; {len(empty)} are empty (first at "
                f"position {empty[0]}). Remove them first."
            )
        dup = _dedup_report(values)
        if dup:
            raise ValueError(
                f"vocabulary genes must be unique; {len(dup)} ids occur more than once "
                f"(e.g. {dup[:5]}). Remove the repeats (e.g. `list(dict.fromkeys(genes))`)."
            )
        if not isinstance(pad_token, str) or not pad_token:
            raise TypeError(f"pad_token must be a non-empty string, not {pad_token!r}.")
        if pad_token in values:
            raise ValueError(
                f"the pad token {pad_token!r} is also one of the genes; choose another pad_token."
            )
        self._genes: tuple[str, ...] = tuple(values)
        self._pad_token = pad_token
        self._index: dict[str, int] = {g: i for i, g in enumerate(values)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: PathLike, pad_token: str = "<pad>") -> GeneVocabulary:
        """Read a gene list: one id a line (the official ``genes.txt``; ``.gz`` accepted).

        Parameters
        ----------
        path
            The text file. Blank lines are skipped; the pad token is not listed in it.
        pad_token
            Name of the pad token.

        Returns
        -------
        The vocabulary, token ``i`` = line ``i``.

        Raises
        ------
        ScLongFileNotFound
            No file at ``path`` (a :class:`FileNotFoundError`).
        ScLongFileError
            A folder, a file that is not text, is damaged or empty, or lists an id twice (a
            :class:`ValueError`).
        """
        from .._files import existing_file, reading
        from ..errors import ScLongFileError

        hint = "give a text file with one gene id a line (plain or .gz)"
        path = existing_file(path, "gene list", hint)
        opener = gzip.open if path.suffix == ".gz" else open
        with reading(path, "gene list", hint), opener(path, "rt", encoding="utf-8") as handle:
            genes = [line.strip() for line in handle if line.strip()]
        if not genes:
            raise ScLongFileError(f"{path} lists no genes (expected one gene id a line).")
        try:
            return cls(genes, pad_token=pad_token)
        except (ValueError, TypeError) as error:
            raise ScLongFileError(f"{path}: {' '.join(str(error).split())}") from error

    @classmethod
    def from_anndata(
        cls, adata: AnnData, gene_id_key: str | None = None, pad_token: str = "<pad>"
    ) -> GeneVocabulary:
        """Make a vocabulary of an AnnData's genes, in ``adata.var`` order.

        Parameters
        ----------
        adata
            The data (not modified).
        gene_id_key
            Column of ``adata.var`` holding the gene ids; ``None`` = ``adata.var_names``.
        pad_token
            Name of the pad token.

        Returns
        -------
        The vocabulary.
        """
        return cls(_var_ids(adata, gene_id_key), pad_token=pad_token)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> GeneVocabulary:
        """Rebuild a vocabulary from :meth:`to_dict` output.

        Parameters
        ----------
        state
            ``{'genes': [...], 'pad_token': ...}`` (JSON-compatible).

        Returns
        -------
        The vocabulary.
        """
        if not isinstance(state, Mapping) or "genes" not in state:
            raise ValueError(
                "expected the dict written by GeneVocabulary.to_dict() (with a 'genes' list); "
                f"got {type(state).__name__} "
                f"{sorted(state) if isinstance(state, Mapping) else ''}."
            )
        return cls(state["genes"], pad_token=state.get("pad_token", "<pad>"))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description (for saving models).

        Returns
        -------
        ``{'format': ..., 'version': 1, 'genes': [...], 'pad_token': ...}``.
        """
        return {
            "format": _FORMAT,
            "version": 1,
            "genes": list(self._genes),
            "pad_token": self._pad_token,
        }

    def to_file(self, path: PathLike) -> None:
        """Write the genes one a line, the official ``genes.txt`` format (pad token not written).

        Parameters
        ----------
        path
            Output file.
        """
        Path(path).write_text("\n".join(self._genes) + "\n")

    # ------------------------------------------------------------------ access
    @property
    def genes(self) -> list[str]:
        """Gene ids in token order (pad token excluded)."""
        return list(self._genes)

    @property
    def pad_token(self) -> str:
        """Name of the trailing pad token."""
        return self._pad_token

    @property
    def pad_index(self) -> int:
        """Token position of the pad token (``len(self)``)."""
        return len(self._genes)

    @property
    def n_tokens(self) -> int:
        """Number of tokens = number of genes + 1 (pad)."""
        return len(self._genes) + 1

    @cached_property
    def id_type(self) -> IdType:
        """The detected id type of the genes, ``'ensembl'`` or ``'symbol'``."""
        return detect_id_type(self._genes)

    def index(self, gene: str) -> int:
        """Token position of a gene (the pad token gives :attr:`pad_index`).

        Parameters
        ----------
        gene
            A gene id exactly as in the vocabulary.

        Returns
        -------
        Its position.
        """
        if gene == self._pad_token:
            return self.pad_index
        try:
            return self._index[gene]
        except KeyError:
            hint = ""
            if isinstance(gene, str) and strip_version(gene) in self._index:
                hint = f" ({strip_version(gene)!r} without the version suffix is)"
            raise KeyError(
                f"{gene!r} is not in the vocabulary{hint}; use vocab.align(adata) to map "
                "data genes with version suffixes, other case, aliases or the other id type."
            ) from None

    def positions(self, genes: Iterable[str], missing: int = -1) -> np.ndarray:
        """Token positions of several genes (exact ids), ``missing`` where absent.

        Parameters
        ----------
        genes
            Gene ids.
        missing
            Value for ids not in the vocabulary.

        Returns
        -------
        ``int64`` array of positions.
        """
        return np.fromiter((self._index.get(g, missing) for g in genes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._genes)

    def __contains__(self, gene: object) -> bool:
        return gene in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._genes)

    def __getitem__(self, position: int) -> str:
        # token positions: 0..len-1 = genes, len = pad; negative counts from the pad
        position = int(position)
        if position < 0:
            position += self.n_tokens
        if position == len(self._genes):
            return self._pad_token
        if not 0 <= position < len(self._genes):
            raise IndexError(f"token position out of range 0..{len(self._genes)}")
        return self._genes[position]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneVocabulary):
            return NotImplemented
        return self._genes == other._genes and self._pad_token == other._pad_token

    def __hash__(self) -> int:
        return hash((self._genes, self._pad_token))

    def __repr__(self) -> str:
        head = ", ".join(self._genes[:3]) + (", ..." if len(self._genes) > 3 else "")
        return (
            f"GeneVocabulary({len(self._genes)} {self.id_type} ids [{head}] "
            f"+ pad {self._pad_token!r})"
        )

    # ------------------------------------------------------------------ alignment
    def align(
        self,
        adata: AnnData | Sequence[str] | pd.Index,
        gene_id_key: str | None = None,
        min_coverage: float = 0.5,
        id_type: IdType | None = None,
    ) -> GeneAlignment:
        """Map an AnnData's genes to vocabulary positions.

        Matching, best first (a vocabulary gene goes to the first AnnData gene matching it at
        the best level; later ones are reported as duplicates):

        1. same id; Ensembl ids compared without version / ``_PAR_Y`` suffixes;
        2. symbols: same symbol up to case;
        3. human genes (embedded NCBI tables): official symbol (any case) -> NCBI gene -> the
           vocabulary's Ensembl id, or Ensembl id -> NCBI gene -> symbol when the vocabulary has
           symbols (also outdated symbols in the vocabulary);
        4. the same through an alias / previous symbol of the data. An alias shared by genes
           that are both in the vocabulary is left unmapped (``'ambiguous'``).

        Ensembl ids of the data are matched to Ensembl ids of the vocabulary only by level 1.

        Parameters
        ----------
        adata
            The data (never modified), or its gene ids directly.
        gene_id_key
            Column of ``adata.var`` with the gene ids; ``None`` = ``adata.var_names``.
        min_coverage
            Warn (``UserWarning``) when fewer than this fraction of the AnnData genes map.
        id_type
            Id type of the AnnData genes; detected when ``None``.

        Returns
        -------
        The alignment: positions, coverage, dropped genes, and the function that puts a batch of
        rows into vocabulary order.
        """
        if isinstance(adata, pd.Index | Sequence | np.ndarray) and not isinstance(adata, str):
            if gene_id_key is not None:
                raise ValueError("gene_id_key applies to an AnnData, not to a list of gene ids.")
            data_ids = _as_str_list(adata, "data gene ids")
        else:
            data_ids = _var_ids(adata, gene_id_key, check_unique=False)
        if not data_ids:
            raise ValueError("the data have no genes (0 variables); nothing to align.")
        alignment = _align(self, data_ids, id_type)
        if alignment.n_mapped == 0:
            raise ValueError(
                "none of the data's genes maps to the vocabulary.\n" + alignment.summary()
            )
        species = alignment._species_note()
        if species and alignment.data_coverage >= min_coverage:
            warnings.warn(species, UserWarning, stacklevel=2)
        if alignment.data_coverage < min_coverage:
            warnings.warn(
                f"only {alignment.n_mapped:,} of {alignment.n_vars:,} genes of the data "
                f"({alignment.data_coverage:.1%}) map to the vocabulary "
                f"(min_coverage={min_coverage:.0%}); the rest are dropped from the model's "
                "input.\n" + "\n".join(f"  - {r}" for r in alignment.reasons()),
                UserWarning,
                stacklevel=2,
            )
        return alignment


def _var_ids(adata: AnnData, gene_id_key: str | None, check_unique: bool = True) -> list[str]:
    if not hasattr(adata, "var") or not hasattr(adata, "var_names"):
        raise TypeError(
            f"expected an AnnData, got {type(adata).__name__}; pass a list of gene ids instead."
        )
    if gene_id_key is None:
        ids = _as_str_list(adata.var_names, "adata.var_names")
        where = "adata.var_names"
    else:
        if gene_id_key not in adata.var.columns:
            raise KeyError(
                f"gene_id_key={gene_id_key!r} is not a column of adata.var; columns: "
                f"{list(adata.var.columns)} (None = use adata.var_names)."
            )
        column = adata.var[gene_id_key]
        if column.isna().any():
            raise ValueError(
                f"adata.var[{gene_id_key!r}] has {int(column.isna().sum())} missing values; fill "
                "or drop those genes first."
            )
        ids = _as_str_list(column, f"adata.var[{gene_id_key!r}]")
        where = f"adata.var[{gene_id_key!r}]"
    if check_unique:
        dup = _dedup_report(ids)
        if dup:
            raise ValueError(
                f"{where} has {len(dup)} duplicated ids (e.g. {dup[:5]}); a vocabulary needs "
                "unique genes: drop the repeats or choose a unique column with gene_id_key."
            )
    return ids


def _align(vocab: GeneVocabulary, data_ids: list[str], id_type: IdType | None) -> GeneAlignment:
    vocab_type = vocab.id_type
    data_type: IdType = id_type or detect_id_type(data_ids)
    if data_type not in ("ensembl", "symbol"):
        raise ValueError(f"id_type must be 'ensembl' or 'symbol', not {data_type!r}.")
    genes = vocab.genes
    n_vars = len(data_ids)

    # vocabulary lookup keys (first wins)
    exact: dict[str, int] = {}
    upper: dict[str, int] = {}
    for pos, g in enumerate(genes):
        exact.setdefault(strip_version(g) if _ENSEMBL.match(g) else g, pos)
        upper.setdefault(g.upper(), pos)

    # vocabulary genes -> NCBI genes (human tables), built lazily: only when needed
    by_entrez: dict[str, int] | None = None

    def vocab_by_entrez() -> dict[str, int]:
        nonlocal by_entrez
        if by_entrez is None:
            index = human_gene_index()
            by_entrez = {}
            for pos, g in enumerate(genes):
                entrez, how = index.entrez(g, "ensembl" if _ENSEMBL.match(g) else "symbol")
                if how == "alias" and len(entrez) > 1:
                    continue
                for e in entrez:
                    by_entrez.setdefault(e, pos)
        return by_entrez

    # best candidate of every data gene: (tier, position, kind)
    tier = np.full(n_vars, 9, dtype=np.int64)
    cand = np.full(n_vars, -1, dtype=np.int64)
    kind = np.array(["absent"] * n_vars, dtype=object)
    unmatched: list[int] = []
    for i, d in enumerate(data_ids):
        is_ens = bool(_ENSEMBL.match(d))
        key = strip_version(d) if is_ens else d
        if key in exact:
            cand[i], tier[i] = exact[key], 0
            kind[i] = "exact" if genes[exact[key]] == d else "version"
        elif not is_ens and d.upper() in upper and vocab_type == "symbol":
            cand[i], tier[i], kind[i] = upper[d.upper()], 1, "case"
        else:
            unmatched.append(i)
    if unmatched:
        index = None
        for i in unmatched:
            d = data_ids[i]
            is_ens = bool(_ENSEMBL.match(d))
            if is_ens and vocab_type == "ensembl":
                continue  # Ensembl -> Ensembl: same id only
            if is_ens and not _HUMAN_ENSEMBL.match(strip_version(d)):
                continue  # not a human Ensembl id: the human tables cannot help
            index = index or human_gene_index()
            entrez, how = index.entrez(d, "ensembl" if is_ens else "symbol")
            if not entrez:
                continue
            mapping = vocab_by_entrez()
            found = sorted({mapping[e] for e in entrez if e in mapping})
            if not found:
                continue
            if how == "alias" and len(found) > 1:
                kind[i] = "ambiguous"
                continue
            cand[i], tier[i] = found[0], 3 if how == "alias" else 2
            kind[i] = {"ensembl": "ensembl", "alias": "alias"}.get(how, "symbol")

    # assign: best tier first, then data order; a vocabulary gene goes to one data gene only
    var_positions = np.full(n_vars, -1, dtype=np.int64)
    taken: dict[int, int] = {}
    duplicates: list[str] = []
    for i in np.lexsort((np.arange(n_vars), tier)):
        if cand[i] < 0:
            continue
        if cand[i] in taken:
            kind[i] = "duplicate"
            duplicates.append(data_ids[i])
            continue
        taken[int(cand[i])] = int(i)
        var_positions[i] = cand[i]
    table = pd.DataFrame(
        {
            "data_id": data_ids,
            "vocab_gene": [genes[p] if p >= 0 else None for p in var_positions],
            "position": var_positions,
            "match": kind.astype(str),
        }
    )
    # keep duplicates in data order
    order = {g: k for k, g in enumerate(data_ids)}
    duplicates.sort(key=order.__getitem__)
    return GeneAlignment(
        vocabulary=vocab,
        data_genes=data_ids,
        var_positions=var_positions,
        id_type=data_type,
        table=table,
        duplicates=duplicates,
    )


@dataclass(frozen=True, eq=False)
class GeneAlignment:
    """How the genes of one AnnData map to a :class:`GeneVocabulary` (made by ``vocab.align``).

    Attributes
    ----------
    vocabulary
        The vocabulary aligned to.
    data_genes
        The AnnData's gene ids, in ``adata.var`` order.
    var_positions
        ``int64`` array ``(n_vars,)``: vocabulary position of each AnnData gene, ``-1`` if dropped.
    id_type
        Id type of the AnnData genes: ``'ensembl'`` or ``'symbol'``.
    table
        One row per AnnData gene: ``data_id``, ``vocab_gene``, ``position``, ``match`` (how it
        was matched or why dropped; see ``sclong_scverse.genes.MATCH_KINDS``).
    duplicates
        AnnData genes dropped because an earlier (or better-matching) AnnData gene already took
        the same vocabulary gene.
    """

    vocabulary: GeneVocabulary
    data_genes: list[str]
    var_positions: np.ndarray
    id_type: IdType
    table: pd.DataFrame = field(repr=False)
    duplicates: list[str] = field(default_factory=list)

    @property
    def n_vars(self) -> int:
        """Number of AnnData genes."""
        return len(self.data_genes)

    @property
    def n_mapped(self) -> int:
        """Number of AnnData genes that map to a vocabulary gene."""
        return int((self.var_positions >= 0).sum())

    @property
    def data_coverage(self) -> float:
        """Fraction of the AnnData genes that map."""
        return self.n_mapped / self.n_vars

    @property
    def n_vocab_covered(self) -> int:
        """Number of vocabulary genes present in the data."""
        return self.n_mapped

    @property
    def coverage(self) -> float:
        """Fraction of the vocabulary genes present in the data."""
        return self.n_vocab_covered / len(self.vocabulary)

    @property
    def n_dropped(self) -> int:
        """Number of AnnData genes dropped (not in the vocabulary, ambiguous, or duplicates)."""
        return self.n_vars - self.n_mapped

    @property
    def dropped(self) -> list[str]:
        """AnnData genes dropped (not in the vocabulary, ambiguous, or duplicates)."""
        return [g for g, p in zip(self.data_genes, self.var_positions, strict=True) if p < 0]

    @property
    def present(self) -> np.ndarray:
        """Which vocabulary tokens have a gene in the data (bool ``(n_tokens,)``; pad False)."""
        mask = np.zeros(self.vocabulary.n_tokens, dtype=bool)
        mask[self.var_positions[self.var_positions >= 0]] = True
        return mask

    def match_counts(self) -> dict[str, int]:
        """Count the AnnData genes by how they matched (``table['match']``).

        Returns
        -------
        ``{match kind: number of genes}``.
        """
        return {k: int(v) for k, v in self.table["match"].value_counts().items()}

    def reasons(self) -> list[str]:
        """Likely reasons for genes that do not map (used in the low-coverage warning).

        Returns
        -------
        Plain-language diagnostics; empty when nothing looks wrong.
        """
        out: list[str] = []
        ids = self.data_genes
        vocab_type = self.vocabulary.id_type
        n = len(ids)
        n_ens = sum(1 for g in ids if _ENSEMBL.match(g))
        n_human_ens = sum(1 for g in ids if _HUMAN_ENSEMBL.match(strip_version(g)))
        n_numeric = sum(1 for g in ids if g.isdigit())
        if n_numeric > n / 2:
            out.append(
                "most gene ids are numbers (Entrez ids or row numbers?): put symbols or Ensembl "
                "ids in a column of adata.var and pass gene_id_key=<column>."
            )
        if n_ens > n / 2 and n_human_ens < n_ens / 2:
            prefix = pd.Series([g[:7] for g in ids if _ENSEMBL.match(g)]).mode().iloc[0]
            out.append(
                f"the Ensembl ids are not human (prefix {prefix!r}, human is 'ENSG'): the "
                "vocabulary is human; convert to human orthologues first."
            )
        species = self._species_note()
        if species:
            out.append(species)
        if len(self.vocabulary) < 0.9 * n:
            out.append(
                f"the vocabulary has {len(self.vocabulary):,} genes, fewer than the data's "
                f"{n:,}: at most {len(self.vocabulary) / n:.0%} of the data genes can map."
            )
        counts = self.match_counts()
        if counts.get("duplicate", 0):
            out.append(
                f"{counts['duplicate']:,} data genes map to a vocabulary gene already taken "
                "(see .duplicates)."
            )
        if counts.get("ambiguous", 0):
            out.append(f"{counts['ambiguous']:,} data symbols are aliases of several genes.")
        if self.id_type != vocab_type and not out:
            out.append(
                f"the data have {self.id_type} ids and the vocabulary {vocab_type} ids: only "
                "human genes known to NCBI (embedded tables, 2022-09) can be translated."
            )
        absent = counts.get("absent", 0)
        if absent and self.id_type == "symbol":
            unresolved = [
                g
                for g, k in zip(self.data_genes, self.table["match"], strict=True)
                if k == "absent"
            ][:5]
            out.append(f"{absent:,} data genes are not in the vocabulary (e.g. {unresolved}).")
        return out

    def _species_note(self) -> str:
        letters = [g for g in self.data_genes if g[:1].isalpha() and not _ENSEMBL.match(g)]
        n_title = sum(1 for g in letters if g[:1].isupper() and g[1:].islower())
        if letters and n_title > len(letters) / 2:
            return (
                "most data symbols are capitalised like mouse symbols (e.g. 'Gapdh'), and the "
                "vocabulary and id tables are human: upper/lower-case matching maps same-name "
                "genes only. Convert mouse genes to human orthologues for a faithful mapping."
            )
        return ""

    def summary(self) -> str:
        """Return a readable report: coverage both ways, dropped genes, how genes matched.

        Returns
        -------
        A multi-line string.
        """
        v = self.vocabulary
        counts = self.match_counts()
        how = ", ".join(f"{k} {counts[k]:,}" for k in MATCH_KINDS if counts.get(k))
        lines = [
            f"GeneAlignment: {self.n_vars:,} data genes ({self.id_type}) -> vocabulary of "
            f"{len(v):,} genes ({v.id_type}) + pad",
            f"  data genes mapped:        {self.n_mapped:,} ({self.data_coverage:.1%}); "
            f"dropped {self.n_dropped:,}",
            f"  vocabulary genes covered: {self.n_vocab_covered:,} ({self.coverage:.1%}); "
            f"the other {len(v) - self.n_vocab_covered:,} are input as 0",
            f"  matched by: {how}",
        ]
        if self.duplicates:
            lines.append(
                f"  duplicates dropped: {len(self.duplicates):,} (e.g. {self.duplicates[:5]})"
            )
        reasons = self.reasons()
        if reasons and self.data_coverage < 0.5:
            lines += ["  notes:"] + [f"    - {r}" for r in reasons]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"GeneAlignment({self.n_mapped}/{self.n_vars} data genes mapped, "
            f"{self.coverage:.1%} of {len(self.vocabulary)} vocabulary genes covered)"
        )

    @cached_property
    def _src_dst(self) -> tuple[np.ndarray, np.ndarray]:
        src = np.flatnonzero(self.var_positions >= 0)
        return src, self.var_positions[src]

    def to_vocabulary_order(self, X: Any) -> np.ndarray:
        """Put rows of the AnnData's matrix into vocabulary order.

        Parameters
        ----------
        X
            ``(n_cells, n_vars)`` rows of ``adata.X`` (or a layer): dense array or scipy sparse.

        Returns
        -------
        ``float32`` array ``(n_cells, n_tokens)``: column ``j`` = the data gene mapped to token
        ``j``; vocabulary genes absent from the data and the pad column are 0.
        """
        n_tokens = self.vocabulary.n_tokens
        if X is None or not hasattr(X, "shape") or len(X.shape) not in (1, 2):
            raise TypeError(
                "X must be a (n_cells, n_vars) array or scipy sparse matrix, got "
                f"{type(X).__name__}."
            )
        if len(X.shape) == 1:
            X = X.reshape(1, -1)
        if X.shape[1] != self.n_vars:
            raise ValueError(
                f"X has {X.shape[1]} columns but the alignment was made for {self.n_vars} genes; "
                "pass rows of the same AnnData (all its variables, in adata.var order)."
            )
        n_cells = X.shape[0]
        out = np.zeros((n_cells, n_tokens), dtype=np.float32)
        if sp.issparse(X):
            csr = sp.csr_matrix(X)
            rows = np.repeat(np.arange(n_cells), np.diff(csr.indptr))
            cols = self.var_positions[csr.indices]
            keep = cols >= 0
            out[rows[keep], cols[keep]] = csr.data[keep]
        else:
            src, dst = self._src_dst
            out[:, dst] = np.asarray(X)[:, src]
        return out
