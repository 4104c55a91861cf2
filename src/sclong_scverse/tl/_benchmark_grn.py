"""Score several predicted GRNs of one AnnData against ground truths, over the same pairs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import ScLongInputError, ScLongKeyError
from ._grn_evaluation import CandidateSet, _as_ground_truth, evaluate_grn, expected_random_aupr

RANDOM = "random"


def _methods(
    adata: ad.AnnData, methods: Sequence[str] | Mapping[str, str] | None
) -> dict[str, str]:
    if methods is None:
        keys = [str(k) for k in adata.varp if str(k).endswith("_grn")]
        if not keys:
            raise ScLongKeyError(
                "no GRN in adata.varp (keys ending in '_grn'; found "
                f"{list(adata.varp)}); run scl.tl.grn / coexpression_grn / genie3_grn first "
                "or pass methods=..."
            )
        return {k: k for k in keys}
    if isinstance(methods, Mapping):
        mapping = {str(name): str(key) for name, key in methods.items()}
    else:
        mapping = {str(key): str(key) for key in methods}
    missing = [key for key in mapping.values() if key not in adata.varp]
    if missing:
        raise ScLongKeyError(f"adata.varp has no {missing} (available: {list(adata.varp)})")
    return mapping


def benchmark_grn(
    adata: ad.AnnData,
    ground_truths: Mapping[str, pd.DataFrame | str | os.PathLike],
    methods: Sequence[str] | Mapping[str, str] | None = None,
    *,
    candidates: CandidateSet = "tf_rows",
    tfs: Sequence[str] | None = None,
    candidate_sources: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    directed: bool | None = None,
    gene_symbols: str | None = None,
    random_baseline: bool = True,
    random_state: int = 0,
    key_added: str = "sclong_grn_benchmark",
) -> pd.DataFrame:
    """Score predicted gene regulatory networks against ground truths, over the same pairs.

    Every method is scored with :func:`evaluate_grn` on the same genes and candidate pairs, so
    the numbers compare directly. By default (``candidates="tf_rows"``) these are the ordered
    pairs TF -> gene from every TF (``tfs``, else each ground truth's source genes) to every
    gene of the AnnData: the protocol of DREAM and BEELINE, on which a method that scores only
    TF rows (e.g. :func:`genie3_grn` with TF regulators, DeepSEM with ``tfs=``) is scored on
    exactly the pairs it scores, like every other method. ``candidates="truth_genes"`` scores
    the pairs among each ground truth's genes instead (the former default; there a method that
    scores only some rows is refused unless ``tfs`` or ``candidate_sources`` is given, since
    over all pairs it would be inflated against the others). A random predictor
    (uniform scores, seeded) is scored alongside: its AUPR ratio and EPR are about 1 by
    construction, the level every method must beat.

    Parameters
    ----------
    adata
        AnnData whose ``adata.varp[key]`` hold gene x gene scores (row = regulator, column =
        target), e.g. from :func:`grn`, :func:`coexpression_grn`, :func:`genie3_grn`. Reads
        ``adata.var_names`` or ``adata.var[gene_symbols]`` for the gene names.
    ground_truths
        Name -> ground truth (a ``source``/``target`` DataFrame or a file path in a format
        :func:`read_ground_truth` reads: TRRUST, BEELINE, DoRothEA/CollecTRI tables).
    methods
        ``adata.varp`` keys to score, or a mapping display name -> key; default: every key
        ending in ``"_grn"``.
    candidates
        ``"tf_rows"`` (default: TF rows x all genes) or ``"truth_genes"`` (pairs among the
        ground truth's genes); see :func:`evaluate_grn`.
    tfs
        Transcription factors, the sources of the candidate pairs. Default: each ground truth's
        source genes (``"tf_rows"``), every gene (``"truth_genes"``).
    candidate_sources
        Genes allowed as sources, as ``tfs`` (give one of the two); see :func:`evaluate_grn`.
    genes
        Restrict the gene universe to these genes (names as in the ground truth).
    directed
        Score ordered pairs (regulator -> target) instead of unordered ones. Default: ``True``
        with ``"tf_rows"``, ``False`` with ``"truth_genes"``.
    gene_symbols
        Column of ``adata.var`` with the names the ground truths use (e.g. symbols when
        ``var_names`` are Ensembl ids).
    random_baseline
        Also score a random predictor (method name ``"random"``).
    random_state
        Seed of the random predictor.
    key_added
        ``adata.uns`` key of the results.

    Returns
    -------
    Long table with one row per (ground truth, method) and the columns of :func:`evaluate_grn`
    (``aupr``, ``aupr_ratio``, ``epr``, ``n_candidates``, ``n_positives``, ``positive_rate``,
    ``n_genes``, ``n_tfs``, ``n_sources``, ``n_scored``, ``candidates``, ``directed``) plus
    ``expected_random_aupr_ratio`` (the analytic AUPR ratio of a random ranking of these
    candidates). Also writes ``adata.uns[key_added]["results"]`` (the table) and
    ``adata.uns[key_added]["params"]`` (with ``candidates`` and ``directed``).

    Raises
    ------
    KeyError
        A missing ``adata.varp`` key or ``adata.var[gene_symbols]`` column.
    ValueError
        No ground truth, or :func:`evaluate_grn` refused a method (the message names the method
        and the ground truth), e.g. a method scoring only some rows over
        ``candidates="truth_genes"`` without ``tfs``.

    Examples
    --------
    >>> scl.tl.grn(adata, model)  # doctest: +SKIP
    >>> scl.tl.coexpression_grn(adata, method="spearman", layer="counts")  # doctest: +SKIP
    >>> scl.tl.benchmark_grn(adata, {"TRRUST": "trrust_rawdata.human.tsv"})  # doctest: +SKIP
    """
    mapping = _methods(adata, methods)
    if not ground_truths:
        raise ScLongInputError("give at least one ground truth, e.g. {'TRRUST': path}")
    if gene_symbols is not None and gene_symbols not in adata.var:
        raise ScLongKeyError(
            f"adata.var[{gene_symbols!r}] not found; columns: {list(adata.var.columns)}"
        )
    if gene_symbols is None:
        names = np.asarray(adata.var_names, dtype=str)
    else:
        symbols = adata.var[gene_symbols].astype(object)
        names = np.asarray(symbols.where(symbols.notna(), ""), dtype=str)
    # evaluate_grn reads the (maybe duplicated) names from var["name"] and merges duplicates
    probe = ad.AnnData(var=pd.DataFrame({"name": names}, index=np.arange(len(names)).astype(str)))
    rng = np.random.default_rng(random_state)
    rows: list[dict[str, Any]] = []
    for truth_name, truth in ground_truths.items():
        table = _as_ground_truth(truth)
        scored = dict(mapping)
        if random_baseline:
            scored[RANDOM] = RANDOM
        for method, key in scored.items():
            if key == RANDOM and method == RANDOM:
                matrix = rng.random((adata.n_vars, adata.n_vars), dtype=np.float32)
            else:
                matrix = adata.varp[key]
            probe.varp["scores"] = matrix
            try:
                result = evaluate_grn(
                    probe,
                    table,
                    key="scores",
                    genes=genes,
                    candidates=candidates,
                    tfs=tfs,
                    candidate_sources=candidate_sources,
                    directed=directed,
                    gene_symbols="name",
                )
            except ValueError as error:
                raise ScLongInputError(f"method {method!r} on {truth_name!r}: {error}") from error
            rows.append({"ground_truth": truth_name, "method": method, **result})
    results = pd.DataFrame(rows)
    results["expected_random_aupr_ratio"] = [
        expected_random_aupr(n, p) / (p / n)
        for n, p in zip(results["n_candidates"], results["n_positives"], strict=True)
    ]
    adata.uns[key_added] = {
        "results": results.copy(),
        "params": {
            "methods": mapping,
            "ground_truths": [str(k) for k in ground_truths],
            "n_tfs_given": 0 if tfs is None else len(list(tfs)),
            "n_candidate_sources_given": (
                0 if candidate_sources is None else len(list(candidate_sources))
            ),
            "candidates": candidates,
            "directed": bool(results["directed"].iloc[0]),
            "gene_symbols": gene_symbols if gene_symbols is not None else "var_names",
            "random_state": random_state,
        },
    }
    return results
