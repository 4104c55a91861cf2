"""Score a predicted gene regulatory network against a ground truth: AUPR, AUPR ratio, EPR.

Ground-truth readers for the common formats are here as well (TRRUST, BEELINE,
DoRothEA/CollecTRI-style tables).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.metrics import average_precision_score

from ..errors import ScLongInputError, ScLongKeyError, ScLongTypeError, reading

PathLike = str | os.PathLike

GroundTruthFormat = Literal["auto", "trrust", "beeline", "dorothea", "collectri", "edgelist"]

_TRRUST_MODES = {"activation", "repression", "unknown"}

#: Candidate sets of :func:`evaluate_grn`: TF rows x all genes (default), pairs among the truth's
#: genes (the previous default).
CandidateSet = Literal["tf_rows", "truth_genes"]
CANDIDATE_SETS: tuple[str, ...] = ("tf_rows", "truth_genes")

logger = logging.getLogger(__name__)


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                return line.rstrip("\r\n")
    raise ScLongInputError(f"ground-truth file {path} is empty")


def _split(line: str) -> tuple[list[str], str | None]:
    for sep in ("\t", ","):
        if sep in line:
            return [f.strip().strip('"').strip("'") for f in line.split(sep)], sep
    return line.split(), None


def _detect_format(path: Path) -> tuple[str, str | None]:
    fields, sep = _split(_first_line(path))
    lower = [f.lower() for f in fields]
    if "gene1" in lower and "gene2" in lower:
        return "beeline", sep
    if "source" in lower and "target" in lower:
        return "collectri", sep
    if "tf" in lower and "target" in lower:
        return "dorothea", sep
    if len(fields) >= 3 and lower[2] in _TRRUST_MODES:
        return "trrust", sep
    if len(fields) >= 2:
        return "edgelist", sep
    raise ScLongInputError(
        f"cannot recognise the format of {path}: its first line {fields!r} has no "
        "'Gene1,Gene2' or 'source,target' / 'tf,target' header and fewer than two columns; pass "
        "a DataFrame with 'source' and 'target' columns instead"
    )


def read_ground_truth(
    path: PathLike, format: GroundTruthFormat = "auto", *, sep: str | None = None
) -> pd.DataFrame:
    """Read a ground-truth regulatory network into a ``source``/``target`` edge table.

    Parameters
    ----------
    path
        The file (plain or ``.gz``).
    format
        ``"auto"`` (default) detects it from the first line:

        - ``"beeline"``: BEELINE csv with a ``Gene1,Gene2`` header (Gene1 = regulator);
        - ``"collectri"`` / ``"dorothea"``: a table with a ``source,target`` header, or DoRothEA's
          ``tf,...,target`` columns (``weight``/``mor``/``confidence`` columns are ignored:
          filter the table yourself and pass a DataFrame to select a confidence level);
        - ``"trrust"``: TRRUST tsv without header: ``tf, target, mode, pmids``;
        - ``"edgelist"``: any other table without header: first column = source, second = target.
    sep
        Column separator; detected (tab, comma, else whitespace) when not given.

    Returns
    -------
    DataFrame with string columns ``source`` and ``target``, one row per distinct directed edge
    (duplicates, e.g. TRRUST's activation and repression rows of one pair, are dropped), in file
    order.

    Examples
    --------
    >>> gt = read_ground_truth("trrust_rawdata.human.tsv")  # doctest: +SKIP
    >>> gt.head(2)  # doctest: +SKIP
      source target
    0   AATF    BAX
    1   AATF CDKN1A
    """
    if not isinstance(path, str | os.PathLike):
        raise ScLongTypeError(
            f"give the ground truth as a file path (or a DataFrame to evaluate_grn), not "
            f"{type(path).__name__}."
        )
    path = Path(path)
    with reading(path, "ground-truth file", "a TRRUST, BEELINE, DoRothEA or CollecTRI table"):
        return _read_ground_truth(path, format, sep)


def _read_ground_truth(path: Path, format: str, sep: str | None) -> pd.DataFrame:
    detected, detected_sep = _detect_format(path)
    if format == "auto":
        format = detected  # type: ignore[assignment]
    sep = sep if sep is not None else detected_sep
    read_kw: dict[str, Any] = {"sep": sep} if sep is not None else {"sep": r"\s+"}
    if format in ("trrust", "edgelist"):
        table = pd.read_csv(path, header=None, dtype=str, comment="#", **read_kw)
        if table.shape[1] < 2:
            raise ScLongInputError(f"{path}: expected at least two columns (source, target)")
        table = table.iloc[:, :2]
        table.columns = ["source", "target"]
    elif format in ("beeline", "collectri", "dorothea"):
        table = pd.read_csv(path, dtype=str, comment="#", **read_kw)
        columns = {c.lower().strip(): c for c in table.columns}
        pairs = [("gene1", "gene2"), ("source", "target"), ("tf", "target")]
        for src, tgt in pairs:
            if src in columns and tgt in columns:
                table = table[[columns[src], columns[tgt]]]
                table.columns = ["source", "target"]
                break
        else:
            raise ScLongInputError(
                f"{path}: format {format!r} needs a 'Gene1,Gene2', 'source,target' or "
                f"'tf,target' header; found columns {list(table.columns)}"
            )
    else:
        raise ScLongInputError(
            f"unknown ground-truth format {format!r}; use 'auto', 'trrust', 'beeline', "
            "'dorothea', 'collectri' or 'edgelist'"
        )
    return _clean_edges(table)


def _clean_edges(table: pd.DataFrame) -> pd.DataFrame:
    table = table[["source", "target"]].dropna().astype(str)
    table = table.apply(lambda column: column.str.strip())
    return table.drop_duplicates().reset_index(drop=True)


def _as_ground_truth(ground_truth: pd.DataFrame | PathLike) -> pd.DataFrame:
    if isinstance(ground_truth, pd.DataFrame):
        columns = {c.lower() if isinstance(c, str) else c: c for c in ground_truth.columns}
        for src, tgt in [("source", "target"), ("gene1", "gene2"), ("tf", "target")]:
            if src in columns and tgt in columns:
                table = ground_truth[[columns[src], columns[tgt]]]
                table.columns = ["source", "target"]
                return _clean_edges(table)
        raise ScLongInputError(
            "the ground-truth DataFrame needs 'source' and 'target' columns (or 'Gene1'/'Gene2', "
            f"'tf'/'target'); found {list(ground_truth.columns)}"
        )
    return read_ground_truth(ground_truth)


def _prediction_from_adata(
    adata: AnnData, key: str, gene_symbols: str | None
) -> tuple[np.ndarray, Any]:
    if key not in adata.varp:
        raise ScLongKeyError(
            f"adata.varp[{key!r}] not found (available: {list(adata.varp)}); run scl.tl.grn "
            "first or pass key=..."
        )
    if gene_symbols is None:
        return np.asarray(adata.var_names, dtype=str), adata.varp[key]
    if gene_symbols not in adata.var:
        raise ScLongKeyError(
            f"adata.var[{gene_symbols!r}] not found (columns: {list(adata.var.columns)}); pass "
            "the column with the gene names the ground truth uses"
        )
    names = adata.var[gene_symbols].astype(object)
    return np.asarray(names.where(names.notna(), ""), dtype=str), adata.varp[key]


def _check_finite_scores(values: np.ndarray) -> None:
    """Refuse NaN and infinite scores (an infinite score cannot be ranked against the others)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise ScLongInputError(
            f"the predicted scores contain {n_nan} NaN and {n_inf} infinite values between "
            "evaluated genes; drop or replace them first (e.g. np.nan_to_num, or clip to the "
            "finite range)"
        )


def _finite_or_raise(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        _check_finite_scores(values)


class _Blocks:
    """The prediction's scores around the candidate sources, with the genes each one scores.

    ``out[i, g]``: score of ``rows[i] -> g``; ``inc[i, g]``: score of ``g -> rows[i]`` (``-inf``
    where the prediction gives no score); ``as_source`` / ``as_target``: universe genes with a
    score as source / as target (self pairs ignored).
    """

    def __init__(self, n_rows: int, n: int) -> None:
        self.out = np.full((n_rows, n), -np.inf)
        self.inc = np.full((n_rows, n), -np.inf)
        self.as_source = np.zeros(n, dtype=bool)
        self.as_target = np.zeros(n, dtype=bool)

    def add_triplets(
        self, src: np.ndarray, tgt: np.ndarray, values: np.ndarray, row_of: np.ndarray
    ) -> None:
        """Scores ``src -> tgt`` (universe positions); duplicates keep their largest score."""
        _check_finite_scores(values)
        off_diagonal = src != tgt
        self.as_source[src[off_diagonal]] = True
        self.as_target[tgt[off_diagonal]] = True
        out = row_of[src] >= 0
        np.maximum.at(self.out, (row_of[src[out]], tgt[out]), values[out])
        inc = row_of[tgt] >= 0
        np.maximum.at(self.inc, (row_of[tgt[inc]], src[inc]), values[inc])


def _blocks_from_matrix(
    matrix: Any, names: np.ndarray, universe: pd.Index, rows: np.ndarray
) -> _Blocks:
    n = len(universe)
    row_of = np.full(n, -1)
    row_of[rows] = np.arange(rows.size)
    position = universe.get_indexer(names)
    keep = np.flatnonzero(position >= 0)
    mapped = position[keep]
    blocks = _Blocks(rows.size, n)
    if sp.issparse(matrix):
        sub = sp.csr_matrix(matrix)[keep][:, keep].tocoo()
        blocks.add_triplets(
            mapped[sub.row], mapped[sub.col], np.asarray(sub.data, np.float64), row_of
        )
        return blocks
    dense = np.asarray(matrix)
    for start in range(0, keep.size, 1024):  # every score between evaluated genes is finite
        _finite_or_raise(dense[np.ix_(keep[start : start + 1024], keep)].astype(np.float64))
    # a dense matrix scores every pair between its genes
    present = np.zeros(n, dtype=bool)
    present[mapped] = True
    if present.sum() > 1:
        blocks.as_source |= present
        blocks.as_target |= present
    is_row = row_of[mapped] >= 0
    source_keep, source_rows = keep[is_row], row_of[mapped[is_row]]
    out = dense[np.ix_(source_keep, keep)].astype(np.float64)
    inc = dense[np.ix_(keep, source_keep)].T.astype(np.float64)
    if np.unique(mapped).size == mapped.size:
        blocks.out[np.ix_(source_rows, mapped)] = out
        blocks.inc[np.ix_(source_rows, mapped)] = inc
    else:  # several genes map to one name: the largest score
        index = (source_rows[:, None], mapped[None, :])
        np.maximum.at(blocks.out, index, out)
        np.maximum.at(blocks.inc, index, inc)
    return blocks


def _blocks_from_edges(edges: pd.DataFrame, universe: pd.Index, rows: np.ndarray) -> _Blocks:
    n = len(universe)
    row_of = np.full(n, -1)
    row_of[rows] = np.arange(rows.size)
    src = universe.get_indexer(edges["source"].astype(str))
    tgt = universe.get_indexer(edges["target"].astype(str))
    keep = (src >= 0) & (tgt >= 0)
    blocks = _Blocks(rows.size, n)
    values = edges["score"].to_numpy(dtype=np.float64)[keep]
    blocks.add_triplets(src[keep], tgt[keep], values, row_of)
    return blocks


def _refuse_row_restricted(blocks: _Blocks, universe: pd.Index) -> None:
    """Refuse a prediction that scores some genes as targets but never as sources."""
    target_only = blocks.as_target & ~blocks.as_source
    if not target_only.any():
        return
    n_rows, n_target_only = int(blocks.as_source.sum()), int(target_only.sum())
    raise ScLongInputError(
        f"the prediction scores only {n_rows} of the {len(universe)} evaluated genes as sources "
        f"(rows): {n_target_only} genes, e.g. {list(universe[target_only][:3])}, are scored as "
        "targets only. Scored over all pairs among the ground truth's genes "
        "(candidates='truth_genes'), a method that scores only some regulators (e.g. TFs) is "
        "inflated against methods that score every pair. Compare methods over one candidate "
        "set: the default candidates='tf_rows' (TF rows x all genes), tfs=... (pairs from these "
        "regulators, for every method), or candidate_sources=... (the genes allowed as sources; "
        "all genes to score the unscored rows as 0 on purpose)."
    )


def _precision_at_k(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    """Expected precision of the top ``k`` when ties at the cut-off are broken at random."""
    if k <= 0:
        return float("nan")
    threshold = np.partition(y_score, y_score.size - k)[y_score.size - k]
    above = y_score > threshold
    tied = y_score == threshold
    n_above = int(above.sum())
    hits = float(y_true[above].sum())
    n_tied = int(tied.sum())
    if n_tied:
        hits += (k - n_above) * float(y_true[tied].sum()) / n_tied
    return hits / k


def _prediction_genes(edges_or_adata: Any, key: str, gene_symbols: str | None) -> tuple:
    """(names, matrix, edges, predicted genes) of an AnnData or edge-table prediction."""
    if isinstance(edges_or_adata, AnnData):
        names, matrix = _prediction_from_adata(edges_or_adata, key, gene_symbols)
        if matrix.shape != (len(names), len(names)):
            raise ScLongInputError(
                f"adata.varp[{key!r}] has shape {matrix.shape}, expected genes x genes "
                f"({len(names)}, {len(names)})"
            )
        return names, matrix, None, pd.Index(names)
    if isinstance(edges_or_adata, pd.DataFrame):
        columns = set(edges_or_adata.columns)
        missing = {"source", "target"} - columns
        if missing or not {"weight", "score"} & columns:
            absent = sorted(missing) + ([] if {"weight", "score"} & columns else ["weight"])
            raise ScLongInputError(
                "the edge table needs columns 'source', 'target' and 'weight' (or 'score'); "
                f"missing {absent}"
            )
        edges = edges_or_adata
        if "score" not in columns:  # decoupler's spelling
            edges = edges.rename(columns={"weight": "score"})
        genes = pd.Index(pd.unique(edges[["source", "target"]].astype(str).values.ravel()))
        return None, None, edges, genes
    raise ScLongTypeError(
        "edges_or_adata must be an AnnData (scores in varp[key]) or a DataFrame with 'source', "
        f"'target', 'weight' (or 'score') columns; got {type(edges_or_adata).__name__}"
    )


def _source_mask(
    universe: pd.Index,
    truth: pd.DataFrame,
    candidates: str,
    tfs: Any,
    candidate_sources: Any,
) -> np.ndarray:
    """Universe genes allowed as sources (rows) of the candidate pairs."""
    given = tfs if tfs is not None else candidate_sources
    if given is not None:
        given = list(given)
        is_source = universe.isin(pd.Index(np.asarray(given, dtype=str)))
        if not is_source.any():
            what = "TFs" if tfs is not None else "candidate sources"
            raise ScLongInputError(
                f"none of the {len(given)} given {what} is among the {len(universe)} evaluated "
                f"genes (e.g. {list(universe[:3])}); check the gene naming"
            )
        return np.asarray(is_source)
    if candidates == "truth_genes":
        return np.ones(len(universe), dtype=bool)
    is_source = np.asarray(universe.isin(pd.Index(truth["source"].unique())))
    if not is_source.any():
        raise ScLongInputError(
            f"none of the ground truth's {truth['source'].nunique()} source genes (its TFs, e.g. "
            f"{list(truth['source'].unique()[:3])}) is among the {len(universe)} evaluated genes: "
            "no TF row to score. Pass tfs=... (the regulators), or candidates='truth_genes' "
            "(every pair among the ground truth's genes)"
        )
    return is_source


def evaluate_grn(
    edges_or_adata: pd.DataFrame | AnnData,
    ground_truth: pd.DataFrame | PathLike,
    *,
    genes: Any = None,
    key: str = "sclong_grn",
    candidates: CandidateSet = "tf_rows",
    tfs: Any = None,
    candidate_sources: Any = None,
    self_pairs: bool = False,
    directed: bool | None = None,
    gene_symbols: str | None = None,
) -> dict[str, Any]:
    """Score a predicted gene regulatory network against a ground-truth network.

    The prediction is scored over a set of *candidate pairs* and compared with the ground-truth
    edges among them. Two candidate sets:

    - ``candidates="tf_rows"`` (default): **TF rows x all genes**, the protocol of the DREAM
      challenges and of BEELINE / DeepSEM's early precision: the sources are the transcription
      factors (``tfs``, else ``candidate_sources``, else the ground truth's source genes), the
      targets every evaluated gene (``genes``, else every gene of the prediction), whether or
      not it occurs in the ground truth (a target without a ground-truth edge is a negative).
      Directed by default: the candidates are the ordered pairs ``(TF, gene)``, positive when
      ``TF -> gene`` is a ground-truth edge.
    - ``candidates="truth_genes"``: every pair among the genes that occur in the ground truth
      (as source or target), restricted to pairs with a source in ``tfs`` /
      ``candidate_sources`` when one is given; undirected by default. It was the previous
      default: a curated network's edges all leave a TF, so most of these pairs cannot be
      positive, and co-expression scores closer to chance (measured AUPR ratio 1.43 for
      absolute Pearson on 2,000 PBMC genes against TRRUST, against 3.18 over TF rows x all genes;
      ``docs/grn.md``).

    Further rules, for both sets:

    - with ``directed=False``, candidates are unordered pairs ``{a, b}`` (at least one of them a
      source); a pair is positive when ``a -> b`` or ``b -> a`` is a ground-truth edge, and its
      score is the larger of the two directions' scores;
    - self pairs ``(g, g)`` are excluded unless ``self_pairs=True``;
    - genes named ``""`` (e.g. Ensembl ids without a symbol) are left out.

    **One candidate set for every method.** A method that scores only some rows (e.g.
    :func:`genie3_grn` with TF regulators, DeepSEM with ``tfs=``) puts all its scores on pairs
    with a TF, where the ground-truth edges are. Over TF rows (the default) it is compared with
    every other method on exactly the pairs it scores. Over all pairs among the truth's genes
    it would look better than a method that scores every pair (measured on PBMC against
    TRRUST: AUPR ratio 2.8 for a TF-only forest against 1.3 for absolute Pearson correlation;
    over the pairs with a TF, 1.6 against 1.8), an artefact of the candidate set. So with
    ``candidates="truth_genes"`` and neither ``tfs`` nor ``candidate_sources``, a prediction
    in which some genes are scored as targets but never as sources is **refused**
    (``ValueError``). A score is what the prediction gives: every entry of a dense matrix
    (zeros included), the stored entries of a sparse matrix, the rows of an edge table. Every
    method compared must be scored with the same arguments; :func:`benchmark_grn` does this.

    Candidate pairs the prediction does not score (absent from a sparse ``top_k`` matrix or from
    the edge table, or genes outside its vocabulary) get score 0, i.e. they tie at the bottom of
    the ranking (with non-negative scores). Ground-truth edges between genes outside the
    evaluated genes are ignored. Scores are used as given: rank signed scores (e.g.
    correlations) by their absolute value before calling. The candidate set used is logged
    (logger ``sclong_scverse.tl._grn_evaluation``, level INFO) and returned.

    With an AnnData, reads ``adata.varp[key]`` and ``adata.var_names`` (or
    ``adata.var[gene_symbols]``); writes nothing.

    Parameters
    ----------
    edges_or_adata
        Either a DataFrame of predicted edges with columns ``source``, ``target``, ``weight``
        (or ``score``; higher = more confident; duplicated pairs keep their largest score), or
        an AnnData whose ``adata.varp[key]`` is a genes x genes score matrix (dense or scipy
        sparse; row = source, column = target), with genes named by ``adata.var_names`` or
        ``adata.var[gene_symbols]``.
    ground_truth
        DataFrame with ``source`` and ``target`` columns (``Gene1``/``Gene2`` and ``tf``/``target``
        are accepted too) or the path of a file in a format :func:`read_ground_truth` reads.
    genes
        Evaluate these genes (default: every gene of the prediction). For an edge table from a
        sparse prediction, pass all genes the predictor considered, so that genes without any
        predicted edge still take part (as targets without a score).
    key
        Key of the score matrix in ``adata.varp`` (AnnData input only).
    candidates
        ``"tf_rows"`` (default): TF rows x all evaluated genes; ``"truth_genes"``: pairs among
        the ground truth's genes (see above).
    tfs
        Transcription factors: the sources of the candidate pairs. Default: the ground truth's
        source genes with ``candidates="tf_rows"``, no restriction with ``"truth_genes"``.
    candidate_sources
        Genes allowed as sources, with the same effect on the candidate pairs as ``tfs`` (give
        one of the two; ``n_tfs`` is then reported as 0). With ``candidates="truth_genes"``,
        all genes scores a row-restricted prediction over all pairs on purpose (unscored rows
        then score 0).
    self_pairs
        Include the pairs ``(g, g)``.
    directed
        Score ordered pairs (direction matters) instead of unordered ones. Default: ``True``
        with ``candidates="tf_rows"``, ``False`` with ``"truth_genes"``.
    gene_symbols
        Column of ``adata.var`` holding the gene names used by the ground truth (e.g. symbols
        when ``var_names`` are Ensembl ids). Genes mapping to one name are merged (largest score).

    Returns
    -------
    dict with

    - ``aupr``: average precision of the ranking (``sklearn.metrics.average_precision_score``;
      tied scores form one threshold);
    - ``aupr_ratio``: ``aupr / positive_rate``, the ratio scLong reports (1 for a random ranking
      with many positives; slightly above 1 with few positives, see Notes);
    - ``epr``: early precision ratio, the precision of the top ``K = n_positives`` candidates
      divided by ``positive_rate`` (ties at the cut-off count with their expected precision under
      random tie breaking);
    - ``n_candidates``, ``n_positives``, ``positive_rate`` (= ``n_positives / n_candidates``),
      ``n_genes`` (evaluated genes), ``n_tfs`` (TFs among them: ``tfs`` or, with ``"tf_rows"``,
      the ground truth's sources; 0 otherwise), ``n_sources`` (genes allowed as sources),
      ``n_scored`` (candidates with an explicit score);
    - ``candidates`` (the candidate set, ``"tf_rows"`` or ``"truth_genes"``) and ``directed``.

    Raises
    ------
    KeyError
        ``adata.varp[key]`` is missing.
    ValueError
        Malformed inputs, an unknown candidate set, NaN or infinite scores between evaluated
        genes, fewer than two genes shared with the ground truth, no TF among the evaluated
        genes, no ground-truth edge among the candidates (the message reports the gene
        overlap), both ``tfs`` and ``candidate_sources`` given, or (``"truth_genes"``) a
        prediction that scores only some rows without ``tfs`` / ``candidate_sources``.

    Notes
    -----
    Memory and time grow with ``n_sources x n_genes`` (dense blocks of that size): measured
    0.25 GB above the input and 16 s on a busy 2-core machine for 3,000 genes all as sources
    (``"truth_genes"``, 4.5 million candidate pairs; 1,155 TF rows of them: 10 s).

    For a random ranking of ``N`` candidates with ``P`` positives the expected AUPR is
    ``(P-1)/(N-1) + H_N (N-P) / (N (N-1))`` (``H_N`` the harmonic number), so the AUPR ratio of a
    random predictor is about ``1 + ln(N)/P``: close to 1 only when there are many positives.

    Examples
    --------
    >>> result = scl.tl.evaluate_grn(adata, "trrust_rawdata.human.tsv")  # doctest: +SKIP
    >>> result["candidates"], result["aupr_ratio"]  # doctest: +SKIP
    ('tf_rows', 2.56)
    """
    if candidates not in CANDIDATE_SETS:
        raise ScLongInputError(
            f"candidates must be one of {list(CANDIDATE_SETS)} (TF rows x all genes, or pairs "
            f"among the ground truth's genes), not {candidates!r}"
        )
    if tfs is not None and candidate_sources is not None:
        raise ScLongInputError(
            "give tfs= or candidate_sources= (the same restriction of the candidate pairs' "
            "sources), not both"
        )
    directed = candidates == "tf_rows" if directed is None else bool(directed)
    truth = _as_ground_truth(ground_truth)
    names, matrix, edges, predicted_genes = _prediction_genes(edges_or_adata, key, gene_symbols)
    if genes is not None:
        predicted_genes = pd.Index(np.asarray(list(genes), dtype=str))
    predicted_genes = predicted_genes[predicted_genes.str.strip() != ""]

    truth_genes = pd.Index(pd.unique(truth[["source", "target"]].values.ravel()))
    shared = predicted_genes[predicted_genes.isin(truth_genes)].unique()
    if len(shared) < 2:
        raise ScLongInputError(
            f"only {len(shared)} of the {len(predicted_genes)} predicted genes occur in the "
            f"ground truth ({len(truth_genes)} genes, e.g. {list(truth_genes[:3])}; predicted "
            f"e.g. {list(predicted_genes[:3])}). Check the gene naming (symbols vs Ensembl ids: "
            "pass gene_symbols=... for AnnData input)."
        )
    universe = shared if candidates == "truth_genes" else predicted_genes.unique()
    n = len(universe)
    is_source = _source_mask(universe, truth, candidates, tfs, candidate_sources)
    rows = np.flatnonzero(is_source)
    if edges is None:
        blocks = _blocks_from_matrix(matrix, names, universe, rows)
    else:
        blocks = _blocks_from_edges(edges, universe, rows)
    if candidates == "truth_genes" and tfs is None and candidate_sources is None:
        _refuse_row_restricted(blocks, universe)

    # labels of the same blocks: out = rows[i] -> g, inc = g -> rows[i]
    row_of = np.full(n, -1)
    row_of[rows] = np.arange(rows.size)
    src = universe.get_indexer(truth["source"])
    tgt = universe.get_indexer(truth["target"])
    known = (src >= 0) & (tgt >= 0)
    src, tgt = src[known], tgt[known]
    label_out = np.zeros((rows.size, n), dtype=bool)
    label_inc = np.zeros((rows.size, n), dtype=bool)
    from_row, to_row = row_of[src] >= 0, row_of[tgt] >= 0
    label_out[row_of[src[from_row]], tgt[from_row]] = True
    label_inc[row_of[tgt[to_row]], src[to_row]] = True

    keep = np.ones((rows.size, n), dtype=bool)
    if not self_pairs:
        keep[np.arange(rows.size), rows] = False
    if directed:
        scores, scored, labels = blocks.out, np.isfinite(blocks.out), label_out
    else:
        # each unordered pair once: {rows[i], g} from row i unless g is a source listed earlier
        keep &= ~is_source[None, :] | (np.arange(n)[None, :] >= rows[:, None])
        scores = np.maximum(blocks.out, blocks.inc)
        scored = np.isfinite(blocks.out) | np.isfinite(blocks.inc)
        labels = label_out | label_inc
    y_score = scores[keep]
    y_score[~np.isfinite(y_score)] = 0.0  # unscored pairs (-inf) -> 0
    y_true = labels[keep]
    n_scored = int(scored[keep].sum())
    del blocks, scores, scored, labels, label_out, label_inc, keep

    n_candidates = int(y_true.size)
    n_positives = int(y_true.sum())
    what = (
        f"{rows.size} TF rows x {n} genes"
        if candidates == "tf_rows"
        else f"pairs among the {n} ground-truth genes ({rows.size} as sources)"
    )
    if n_positives == 0:
        raise ScLongInputError(
            f"no ground-truth edge among the {n_candidates} candidate pairs ({what}, "
            f"directed={directed}) of the {len(shared)} genes shared by the prediction and the "
            "ground truth; nothing to evaluate (check the gene set, tfs=..., directed=...)"
        )
    logger.info(
        "evaluate_grn: candidates=%r (%s, directed=%s): %d pairs, %d positives",
        candidates,
        what,
        directed,
        n_candidates,
        n_positives,
    )
    positive_rate = n_positives / n_candidates
    aupr = float(average_precision_score(y_true, y_score))
    early_precision = _precision_at_k(y_true, y_score, n_positives)
    reports_tfs = tfs is not None or (candidates == "tf_rows" and candidate_sources is None)
    return {
        "aupr": aupr,
        "aupr_ratio": aupr / positive_rate,
        "epr": early_precision / positive_rate,
        "n_candidates": n_candidates,
        "n_positives": n_positives,
        "positive_rate": positive_rate,
        "n_genes": n,
        "n_tfs": int(rows.size) if reports_tfs else 0,
        "n_sources": int(rows.size),
        "n_scored": n_scored,
        "candidates": candidates,
        "directed": directed,
    }


def expected_random_aupr(n_candidates: int, n_positives: int) -> float:
    """Expected average precision of a uniformly random ranking (no ties).

    Parameters
    ----------
    n_candidates
        Number of ranked candidates ``N``.
    n_positives
        Number of positives ``P`` among them.

    Returns
    -------
    ``(P-1)/(N-1) + H_N (N-P) / (N (N-1))`` with ``H_N`` the ``N``-th harmonic number.
    """
    N, P = int(n_candidates), int(n_positives)
    if N < 2:
        return float(P / max(N, 1))
    harmonic = float(np.sum(1.0 / np.arange(1, N + 1)))
    return (P - 1) / (N - 1) + harmonic * (N - P) / (N * (N - 1))
