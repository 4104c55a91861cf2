"""Training-free in-silico perturbation with scLong (Geneformer's bar): delete / overexpress."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..validation import ScLongInputError, check_not_view, check_whole, summarize_values

if TYPE_CHECKING:
    from ..model import SCLONG

logger = logging.getLogger(__name__)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (FDR), monotone, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _read_by_model(adata: ad.AnnData, model: SCLONG) -> np.ndarray:
    """Which of ``adata``'s genes reach ``model``: bool ``(n_vars,)``.

    A gene reaches the model when its id (``adata.var_names`` or the model's ``gene_id_key``
    column) is one of the genes the model was set up on and that gene is in the model's
    vocabulary; any other gene enters no forward pass, so perturbing it changes nothing.
    """
    from ..model._anndata import _gene_ids, _rna

    key = model._gene_id_key
    ids = _gene_ids(adata, key) if key is not None else pd.Index(adata.var_names.astype(str))
    model_ids = _gene_ids(_rna(model.adata, model._modality), key)
    where = model_ids.get_indexer(ids)
    positions = np.asarray(model.alignment.var_positions)
    return (where >= 0) & (positions[np.maximum(where, 0)] >= 0)


def in_silico_perturb(
    adata: ad.AnnData,
    model: SCLONG,
    genes: Sequence[str],
    mode: Literal["delete", "overexpress"] = "delete",
    *,
    indices: Sequence[int] | None = None,
    n_null: int = 20,
    n_bins: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    key_added: str = "sclong_in_silico",
) -> pd.DataFrame:
    """Shift of scLong's cell embeddings and predictions when genes are deleted or overexpressed.

    As Geneformer's in-silico perturbation: each gene's input value is set to 0 in every cell
    (``"delete"``) or to the cell's maximum (``"overexpress"``; Geneformer moves the gene to the
    front of its rank encoding); the cell embeddings (max-pooled decodings) are computed again
    and the shift per cell is ``1 - cosine(original, perturbed)``. The mean shift is compared
    with a null of random genes in the same expression bin (quantiles of the mean value),
    perturbed the same way: empirical p-value, Benjamini-Hochberg FDR over the tested genes.
    The change of the model's predicted expression of every gene is kept too.

    Every gene in ``genes`` must reach the model (be one of the genes it was set up on and in
    its vocabulary): a gene the model never reads would show "no effect" (shift 0, p-value 1),
    which is not a result, so such genes are refused, all of them named, even when only some of
    the requested genes are missing (drop them and call again). The null genes are drawn from
    the genes the model reads only.

    Reads the values the model was set up with (``adata.layers[layer]`` or ``adata.X``) and
    ``adata.var_names``; writes ``adata.uns[key_added]``: ``params``, ``results`` (the returned
    table as a dict of columns), ``expression_shift`` (genes x tested genes: mean predicted
    change, as a dict with ``values``, ``genes``, ``perturbed``) and ``null_expression_shift``
    (the same for the random null genes, with their expression ``bin``).

    Parameters
    ----------
    adata
        Cells with the model's values (e.g. control cells of a screen).
    model
        A trained :class:`~sclong_scverse.model.SCLONG` set up on the same layer.
    genes
        Genes to perturb (``adata.var_names``).
    mode
        ``"delete"`` or ``"overexpress"``.
    indices
        Cells to use (default: all).
    n_null
        Random expression-matched genes per bin for the null.
    n_bins
        Expression bins (quantiles of the genes' mean value).
    seed
        Seed of the null genes.
    batch_size
        Cells per forward pass.
    key_added
        ``adata.uns`` key.

    Returns
    -------
    DataFrame indexed by gene: ``mean_expression``, ``bin``, ``cosine_shift`` (mean over cells),
    ``null_mean``, ``null_std``, ``p_value``, ``fdr``, ``n_cells``.

    Raises
    ------
    ScLongInputError
        Genes not in ``adata.var_names``, genes the model does not read (not in its vocabulary
        or not among the genes it was set up on), an unknown mode, or too few genes for a null.
    """
    check_not_view(adata)
    if mode not in ("delete", "overexpress"):
        raise ScLongInputError(f"mode must be 'delete' or 'overexpress', not {mode!r}.")
    n_null, n_bins = check_whole("n_null", n_null), check_whole("n_bins", n_bins)
    check_whole("batch_size", batch_size, allow_none=True)
    if isinstance(genes, str) or not len(genes):
        raise ScLongInputError(
            f"genes must be a non-empty list of gene names, e.g. [{str(genes)!r}], got {genes!r}."
        )
    names = pd.Index(adata.var_names.astype(str))
    genes = [str(g) for g in genes]
    unknown = [g for g in genes if g not in names]
    if unknown:
        raise ScLongInputError(f"Genes {unknown[:5]} are not in adata.var_names.")
    read = _read_by_model(adata, model)
    outside = [g for g in dict.fromkeys(genes) if not read[names.get_loc(g)]]
    if outside:
        raise ScLongInputError(
            f"Genes {outside[:10]}{' ...' if len(outside) > 10 else ''} ({len(outside)} of "
            f"the {len(set(genes))} requested) are in adata.var_names but not in the model's "
            "vocabulary (or not among the genes it was set up on): the model never reads them, so "
            "perturbing them would show no effect. Leave them out of genes=, or use a model "
            "whose vocabulary has them."
        )
    layer = model._setup_args.get("layer")
    values = adata.X if layer is None else adata.layers[layer]
    rows = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    block = values[rows]
    dense = (block.toarray() if sparse.issparse(block) else np.asarray(block)).astype(np.float32)
    mean = dense.mean(axis=0)
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, max(len(edges) - 2, 0))
    record = adata.uns.get(layer or "sclong")

    id_key = model._gene_id_key
    var = pd.DataFrame(index=names.copy())
    if id_key is not None:  # the query is matched to the model's genes by this column
        var[id_key] = adata.var[id_key].to_numpy()

    def embed_and_predict(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query = ad.AnnData(X=sparse.csr_matrix(matrix), var=var.copy())
        if layer is not None:
            query.layers[layer] = query.X
        if record is not None:
            query.uns[layer or "sclong"] = record
        return model._embed_and_predict(query, batch_size=batch_size)  # one forward pass

    base_embedding, base_prediction = embed_and_predict(dense)
    cell_max = dense.max(axis=1)

    def shift(gene_index: int) -> tuple[float, np.ndarray]:
        changed = dense.copy()
        changed[:, gene_index] = 0.0 if mode == "delete" else cell_max
        embedding, prediction = embed_and_predict(changed)
        dot = (embedding * base_embedding).sum(axis=1)
        norm = np.linalg.norm(embedding, axis=1) * np.linalg.norm(base_embedding, axis=1)
        cosine = np.divide(dot, norm, out=np.ones_like(dot), where=norm > 0)
        return float(np.mean(1.0 - cosine)), np.nanmean(prediction - base_prediction, axis=0)

    rng = np.random.default_rng(seed)
    tested = set(names.get_indexer(genes))
    null_of: dict[int, np.ndarray] = {}
    null_genes: list[int] = []
    null_shifts: list[np.ndarray] = []
    records, shifts = [], []
    for gene in genes:
        i = int(names.get_loc(gene))
        b = int(bins[i])
        if b not in null_of:
            pool = np.array([j for j in np.flatnonzero((bins == b) & read) if j not in tested])
            if len(pool) < 2:
                raise ScLongInputError(
                    f"Too few genes in {gene}'s expression bin for a null; lower n_bins."
                )
            chosen = rng.choice(pool, size=min(n_null, len(pool)), replace=False)
            cosines = []
            for j in chosen:
                cosine, expression = shift(int(j))
                cosines.append(cosine)
                null_genes.append(int(j))
                null_shifts.append(expression)
            null_of[b] = np.array(cosines)
        observed, expression = shift(i)
        shifts.append(expression)
        null = null_of[b]
        records.append(
            {
                "gene": gene,
                "mean_expression": float(mean[i]),
                "bin": b,
                "cosine_shift": observed,
                "null_mean": float(null.mean()),
                "null_std": float(null.std()),
                "p_value": float((1 + (null >= observed).sum()) / (1 + len(null))),
                "n_cells": len(rows),
            }
        )
    table = pd.DataFrame.from_records(records).set_index("gene")
    table["fdr"] = benjamini_hochberg(table["p_value"].to_numpy())
    adata.uns[key_added] = {
        "params": {"mode": mode, "n_null": int(n_null), "n_bins": int(n_bins), "seed": int(seed)},
        "results": {c: table[c].to_numpy() for c in table.columns} | {"gene": np.asarray(genes)},
        "expression_shift": {
            "values": np.stack(shifts, axis=1).astype(np.float32),
            "genes": np.asarray(names),
            "perturbed": np.asarray(genes),
        },
        "null_expression_shift": {
            "values": np.stack(null_shifts, axis=1).astype(np.float32),
            "genes": np.asarray(names),
            "perturbed": np.asarray(names[null_genes]),
            "bin": bins[null_genes].astype(np.int64),
        },
    }
    return table


def _sign_agreement(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Fraction of genes whose predicted change has the observed change's sign (0 counts wrong)."""
    keep = observed != 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sign(predicted[keep]) == np.sign(observed[keep])))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def in_silico_vs_screen(
    adata: ad.AnnData,
    model: SCLONG,
    *,
    condition_key: str = "condition",
    control: str = "ctrl",
    targets: Sequence[str] | None = None,
    layer: str | None = None,
    n_de_genes: int = 20,
    n_cells: int | None = 128,
    n_null: int = 20,
    n_bins: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    key_added: str = "sclong_in_silico_screen",
) -> pd.DataFrame:
    """Score in-silico deletion on control cells against a screen's real knock-outs.

    For each single-gene condition ``"T+ctrl"`` whose target ``T`` is measured, ``T`` is deleted
    in silico in control cells (:func:`in_silico_perturb`, ``mode="delete"``) and the model's
    predicted change of every other gene is compared with the observed change (mean of the
    knock-out cells minus mean of the control cells in ``layer``): the fraction of the top
    ``n_de_genes`` DE genes of the condition (``T`` itself excluded) whose predicted direction
    matches the observed one, and the Pearson correlation of predicted and observed changes over
    all genes but ``T``. The null: random genes in ``T``'s expression bin deleted the same way and
    scored against ``T``'s observed changes (empirical p-value, Benjamini-Hochberg FDR over the
    targets). A model whose deletions carry information about the screen scores above its null.

    Reads ``adata.obs[condition_key]`` (GEARS labels, as written by
    :func:`~sclong_scverse.pp.perturbation_conditions`), ``adata.uns["rank_genes_groups_cov_all"]``
    (the DE genes per condition), ``adata.layers[layer]`` (or ``adata.X``) for the observed
    changes and the model's own input values for the deletion. Writes
    ``adata.uns[key_added]``: ``params``, ``results`` (the returned table as a dict of columns)
    and ``skipped`` (targets that cannot be deleted in silico: not measured, or, when
    ``targets`` is not given, measured but not in the model's vocabulary; named ``targets`` the
    model does not read are refused).
    The observed values of the control and knock-out cells must be finite.

    Parameters
    ----------
    adata
        The screen: control and perturbed cells, set up for ``model``'s input layer too.
    model
        A trained :class:`~sclong_scverse.model.SCLONG`.
    condition_key
        ``adata.obs`` column of GEARS condition labels.
    control
        The control label in ``condition_key``.
    targets
        Targets to score (default: every measured target of a single-gene condition).
    layer
        Values of the observed changes (e.g. log-normalised; default ``adata.X``).
    n_de_genes
        DE genes per condition scored for direction.
    n_cells
        Control cells deleted in (a seeded random subset; ``None``: all).
    n_null, n_bins, seed, batch_size
        As in :func:`in_silico_perturb`.
    key_added
        ``adata.uns`` key.

    Returns
    -------
    DataFrame indexed by target: ``n_knockout_cells``, ``observed_target_change`` (how well the
    knock-out removed the target), ``direction_agreement`` (top DE genes), ``null_agreement_mean``,
    ``null_agreement_std``, ``p_value``, ``fdr``, ``pearson`` (all genes), ``null_pearson_mean``,
    ``cosine_shift`` (of the cell embeddings, from :func:`in_silico_perturb`).

    Raises
    ------
    ScLongInputError
        A missing condition column or control label, missing DE genes, targets that are not
        measured single-gene conditions or that the model does not read (see
        :func:`in_silico_perturb`), a missing ``layer``, or NaN / infinite observed values in
        the control and knock-out cells.
    """
    from ..pp._perturbation import condition_genes

    check_not_view(adata)
    for name, value in (("n_de_genes", n_de_genes), ("n_null", n_null), ("n_bins", n_bins)):
        check_whole(name, value)
    check_whole("n_cells", n_cells, allow_none=True)
    check_whole("batch_size", batch_size, allow_none=True)
    if condition_key not in adata.obs:
        raise ScLongInputError(
            f"adata.obs has no column {condition_key!r}; run "
            "scl.pp.perturbation_conditions(adata, ...) first."
        )
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    control_rows = np.flatnonzero(conditions == control)
    if len(control_rows) == 0:
        raise ScLongInputError(
            f"No cells labelled {control!r} in adata.obs[{condition_key!r}]; pass control=."
        )
    ranked = adata.uns.get("rank_genes_groups_cov_all")
    if ranked is None:
        raise ScLongInputError(
            "adata.uns['rank_genes_groups_cov_all'] is missing; run "
            "scl.pp.perturbation_conditions(adata, ...) to rank the DE genes."
        )
    names = pd.Index(adata.var_names.astype(str))
    single = {}
    for label in pd.unique(conditions):
        genes = condition_genes(label) if label != control else ()
        if len(genes) == 1:
            single[genes[0]] = label
    measured = [g for g in single if g in names]
    skipped = sorted(g for g in single if g not in names)
    if targets is None:
        read = _read_by_model(adata, model)
        unread = {g for g in measured if not read[names.get_loc(g)]}  # not in the model
        skipped = sorted({*skipped, *unread})
        targets = sorted(g for g in measured if g not in unread)
    else:
        targets = [str(t) for t in targets]
        bad = [t for t in targets if t not in measured]
        if bad:
            raise ScLongInputError(
                f"Targets {bad[:5]} are not measured single-gene conditions of "
                f"adata.obs[{condition_key!r}]; measured targets: {sorted(measured)[:10]}."
            )
    if not targets:
        raise ScLongInputError(
            "No measured target of a single-gene condition to delete (skipped, not measured or "
            f"not in the model's vocabulary: {skipped[:10]})."
        )

    if layer is not None and layer not in adata.layers:
        raise ScLongInputError(
            f"layer={layer!r} is not in adata.layers ({list(adata.layers)}); pass the layer "
            "of the observed values (e.g. log-normalised), or None for adata.X."
        )
    values = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    used = np.concatenate(
        [control_rows, *(np.flatnonzero(conditions == single[t]) for t in targets)]
    )
    summary = summarize_values(values[np.unique(used)])
    if summary.n_nan or summary.n_inf:
        raise ScLongInputError(
            f"{where} holds {summary.n_nan} NaN and {summary.n_inf} infinite values in the "
            "control and knock-out cells; the observed changes need finite values. Recompute "
            "the layer (e.g. sc.pp.normalize_total and sc.pp.log1p on the counts) or pass "
            "another layer=."
        )

    def mean_of(rows: np.ndarray) -> np.ndarray:
        block = values[rows]
        return np.asarray(block.mean(axis=0)).ravel().astype(np.float64)

    control_mean = mean_of(control_rows)
    rng = np.random.default_rng(seed)
    chosen = control_rows
    if n_cells is not None and len(control_rows) > n_cells:
        chosen = np.sort(rng.choice(control_rows, size=n_cells, replace=False))
    cells = adata[chosen].copy()
    cells.uns.pop(key_added, None)
    table = in_silico_perturb(
        cells,
        model,
        targets,
        "delete",
        n_null=n_null,
        n_bins=n_bins,
        seed=seed,
        batch_size=batch_size,
        key_added="in_silico",
    )
    shifts = cells.uns["in_silico"]["expression_shift"]["values"].astype(np.float64)
    null = cells.uns["in_silico"]["null_expression_shift"]
    null_values = null["values"].astype(np.float64)
    null_bins = np.asarray(null["bin"])
    records = []
    for k, target in enumerate(targets):
        label = single[target]
        rows = np.flatnonzero(conditions == label)
        observed = mean_of(rows) - control_mean
        t = int(names.get_loc(target))
        de = [g for g in np.asarray(ranked.get(label, []), dtype=str) if g != target]
        de_index = names.get_indexer(de[:n_de_genes])
        de_index = de_index[de_index >= 0]
        others = np.setdiff1d(np.arange(len(names)), [t])
        agreement = _sign_agreement(shifts[de_index, k], observed[de_index])
        pearson = _correlation(shifts[others, k], observed[others])
        same_bin = np.flatnonzero(null_bins == int(table.loc[target, "bin"]))
        null_agreement = np.array(
            [_sign_agreement(null_values[de_index, j], observed[de_index]) for j in same_bin]
        )
        null_pearson = np.array(
            [_correlation(null_values[others, j], observed[others]) for j in same_bin]
        )
        finite = null_agreement[np.isfinite(null_agreement)]
        p_value = (
            float((1 + (finite >= agreement).sum()) / (1 + len(finite)))
            if np.isfinite(agreement)
            else float("nan")
        )
        records.append(
            {
                "target": target,
                "n_knockout_cells": len(rows),
                "observed_target_change": float(observed[t]),
                "n_de_genes": len(de_index),
                "direction_agreement": agreement,
                "null_agreement_mean": float(np.mean(finite)) if len(finite) else float("nan"),
                "null_agreement_std": float(np.std(finite)) if len(finite) else float("nan"),
                "p_value": p_value,
                "pearson": pearson,
                "null_pearson_mean": float(np.nanmean(null_pearson))
                if np.isfinite(null_pearson).any()
                else float("nan"),
                "cosine_shift": float(table.loc[target, "cosine_shift"]),
            }
        )
    result = pd.DataFrame.from_records(records).set_index("target")
    p = result["p_value"].to_numpy()
    fdr = np.full(len(p), np.nan)
    fdr[np.isfinite(p)] = benjamini_hochberg(p[np.isfinite(p)])
    result["fdr"] = fdr
    adata.uns[key_added] = {
        "params": {
            "condition_key": condition_key,
            "control": control,
            "layer": layer,
            "n_de_genes": int(n_de_genes),
            "n_cells": len(chosen),
            "n_null": int(n_null),
            "n_bins": int(n_bins),
            "seed": int(seed),
        },
        "results": {c: result[c].to_numpy() for c in result.columns}
        | {"target": np.asarray(result.index)},
        "skipped": np.asarray(skipped, dtype=str),
    }
    if skipped:
        logger.info("Targets skipped (cannot be deleted in silico): %s", ", ".join(skipped))
    return result
