"""Perturbation benchmark: the model(s) next to the baselines deep models did not beat."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import ScLongTypeError
from ..pp._perturbation import CONTROL, condition_genes
from ..validation import ScLongInputError

if TYPE_CHECKING:
    from ..model import SCLONG, SCLONGPerturbation

logger = logging.getLogger(__name__)

#: Metric columns of :func:`benchmark_perturbation` and whether higher is better.
PERTURBATION_METRICS = {
    "mse_de": False,
    "pearson_de": True,
    "pearson_delta": True,
    "pearson_delta_de": True,
    "l2_top_expressed": False,
    "direction_de": True,
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=float) - np.mean(a)
    b = np.asarray(b, dtype=float) - np.mean(b)
    denominator = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def perturbation_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    control: np.ndarray,
    de_genes: np.ndarray,
    top_expressed: np.ndarray,
) -> dict[str, float]:
    """Metrics of one predicted condition (mean expression profiles).

    Parameters
    ----------
    prediction, truth, control
        ``(n_genes,)`` predicted, observed and control mean expression.
    de_genes
        Integer positions of the condition's top DE genes (GEARS: 20).
    top_expressed
        Integer positions of the most expressed genes (Ahlmann-Eltze et al.: 1,000).

    Returns
    -------
    ``mse_de`` and ``pearson_de`` (expression on the DE genes; GEARS), ``pearson_delta``
    (``prediction - control`` vs ``truth - control`` over all genes) and ``pearson_delta_de``
    (on the DE genes), ``l2_top_expressed`` (Euclidean distance over the most expressed genes)
    and ``direction_de`` (share of DE genes whose change has the observed sign; no change
    counts as wrong).
    """
    pred_delta, true_delta = prediction - control, truth - control
    return {
        "mse_de": float(np.mean((prediction[de_genes] - truth[de_genes]) ** 2)),
        "pearson_de": _pearson(prediction[de_genes], truth[de_genes]),
        "pearson_delta": _pearson(pred_delta, true_delta),
        "pearson_delta_de": _pearson(pred_delta[de_genes], true_delta[de_genes]),
        "l2_top_expressed": float(np.linalg.norm(prediction[top_expressed] - truth[top_expressed])),
        "direction_de": float(
            np.mean(np.sign(pred_delta[de_genes]) == np.sign(true_delta[de_genes]))
        ),
    }


def _condition_means(
    values, conditions: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    means = np.zeros((len(names), values.shape[1]))
    counts = np.zeros(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        rows = np.flatnonzero(conditions == name)
        block = values[rows]
        means[i] = np.asarray(block.mean(axis=0)).ravel()
        counts[i] = len(rows)
    return means, counts


def _embedding_table(source: Any) -> pd.DataFrame | None:
    """Gene x dimension table from a DataFrame or a scLong model (static embeddings)."""
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        return source
    if hasattr(source, "vocabulary") and hasattr(source, "module"):  # an SCLONG
        import torch

        source.module.eval()
        with torch.inference_mode():
            table = source.module.network.gene_embedding().float().cpu().numpy()
        genes = list(source.vocabulary.genes)
        return pd.DataFrame(table[: len(genes)], index=genes)
    raise ScLongTypeError(
        f"gene_embeddings must be a DataFrame (genes x dims) or an SCLONG, not "
        f"{type(source).__name__}."
    )


def _linear_baseline(
    table: pd.DataFrame,
    train_names: list[str],
    train_deltas: np.ndarray,
    names: list[str],
    ridge: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression from the perturbed genes' embedding (summed) to the change."""

    def embed(name: str) -> np.ndarray | None:
        genes = condition_genes(name)
        if not genes or any(g not in table.index for g in genes):
            return None
        rows = table.loc[list(genes)].to_numpy(dtype=float)
        if not np.isfinite(rows).all():
            return None
        return rows.sum(axis=0)

    fitted = [(embed(n), d) for n, d in zip(train_names, train_deltas, strict=True)]
    fitted = [(e, d) for e, d in fitted if e is not None]
    mean_delta = train_deltas.mean(axis=0)
    out = np.tile(mean_delta, (len(names), 1))
    fallback = np.ones(len(names), dtype=bool)
    if len(fitted) < 2:
        return out, fallback
    features = np.stack([e for e, _ in fitted])
    targets = np.stack([d for _, d in fitted])
    feature_mean, target_mean = features.mean(axis=0), targets.mean(axis=0)
    scale = features.std(axis=0) + 1e-8
    x = (features - feature_mean) / scale
    gram = x.T @ x + ridge * len(x) * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ (targets - target_mean))
    for i, name in enumerate(names):
        e = embed(name)
        if e is not None:
            out[i] = target_mean + ((e - feature_mean) / scale) @ weights
            fallback[i] = False
    return out, fallback


def benchmark_perturbation(
    adata: ad.AnnData,
    models: Mapping[str, SCLONGPerturbation | ad.AnnData] | None = None,
    split: str = "split",
    *,
    condition_key: str = "condition",
    layer: str | None = None,
    evaluate: str | Sequence[str] = "test",
    gene_embeddings: Mapping[str, pd.DataFrame | SCLONG] | None = None,
    n_pca: int = 10,
    ridge: float = 1.0,
) -> pd.DataFrame:
    """Score perturbation models and baselines per held-out condition.

    Baselines (Ahlmann-Eltze et al., Nat Methods 2025): ``no_change`` (the control mean),
    ``train_mean`` (control + mean change of the training perturbations), ``additive``
    (doubles: control + the sum of the single changes seen in training), ``linear_pca``
    (ridge regression of the change on the perturbed gene's loading in a PCA of the training
    conditions' changes; unmeasured genes fall back to ``train_mean``) and ``linear_<name>`` for
    each entry of ``gene_embeddings`` (ridge on e.g. scLong's static gene embeddings).

    Reads ``adata.obs[condition_key]``, ``adata.obs[split]`` and
    ``adata.obs[f"{split}_subgroup"]`` (:func:`~sclong_scverse.pp.perturbation_split`),
    ``adata.uns["rank_genes_groups_cov_all"]`` and ``adata.uns["top_expressed_genes"]``
    (:func:`~sclong_scverse.pp.perturbation_conditions`) and the values of ``layer``; writes
    nothing.

    Parameters
    ----------
    adata
        The screen, with conditions, DE genes and a split.
    models
        ``{name: model}``: trained :class:`~sclong_scverse.model.SCLONGPerturbation` models, or
        AnnData predictions (one row per condition, ``obs_names`` the conditions, the genes of
        ``adata``).
    split
        ``adata.obs`` column of the split.
    condition_key
        ``adata.obs`` column of GEARS labels.
    layer
        Values compared (``None``: ``adata.X``); the values the models predict.
    evaluate
        Split part(s) or subgroup(s) to score: ``"test"``, ``"val"``, ``"train"`` or subgroup
        names such as ``"unseen_single"``.
    gene_embeddings
        ``{name: DataFrame (genes x dims) or SCLONG}`` for ``linear_<name>`` baselines.
    n_pca
        Components of the ``linear_pca`` baseline.
    ridge
        Ridge penalty (per training condition, on standardised features).

    Returns
    -------
    DataFrame with one row per condition and method: ``condition``, ``subgroup``, ``method``,
    ``n_cells``, the metrics of :func:`perturbation_metrics` and ``fallback`` (the method used
    ``train_mean`` for that condition).

    Raises
    ------
    ScLongInputError
        Missing conditions, split, DE genes, or no condition to evaluate.
    """
    for key in (condition_key, split, f"{split}_subgroup"):
        if key not in adata.obs.columns:
            raise ScLongInputError(
                f"adata.obs[{key!r}] not found; run scl.pp.perturbation_conditions and "
                "scl.pp.perturbation_split first."
            )
    if "rank_genes_groups_cov_all" not in adata.uns or "top_expressed_genes" not in adata.uns:
        raise ScLongInputError(
            "adata.uns lacks the DE genes; run scl.pp.perturbation_conditions first."
        )
    values = adata.X if layer is None else adata.layers[layer]
    values = sparse.csr_matrix(values) if sparse.issparse(values) else np.asarray(values)
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    part = adata.obs[split].astype(str).to_numpy()
    subgroup = adata.obs[f"{split}_subgroup"].astype(str).to_numpy()
    subgroup_of = dict(zip(conditions, subgroup, strict=True))
    part_of = dict(zip(conditions, part, strict=True))
    wanted = [evaluate] if isinstance(evaluate, str) else list(evaluate)
    names = sorted(
        c for c in set(conditions) - {CONTROL} if part_of[c] in wanted or subgroup_of[c] in wanted
    )
    if not names:
        raise ScLongInputError(f"No condition in {wanted} of adata.obs[{split!r}] to evaluate.")
    train_names = sorted(c for c in set(conditions) - {CONTROL} if subgroup_of[c] == "train")
    if not train_names:
        raise ScLongInputError("No training perturbation in the split; baselines need some.")
    control = np.asarray(values[conditions == CONTROL].mean(axis=0)).ravel()
    truth, n_cells = _condition_means(values, conditions, names)
    train_means, _ = _condition_means(values, conditions, train_names)
    train_deltas = train_means - control
    genes = pd.Index(adata.var_names.astype(str))
    de = adata.uns["rank_genes_groups_cov_all"]
    top = genes.get_indexer(list(np.asarray(adata.uns["top_expressed_genes"]).astype(str)))
    top = top[top >= 0]

    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    no_fallback = np.zeros(len(names), dtype=bool)
    predictions["no_change"] = (np.tile(control, (len(names), 1)), no_fallback)
    predictions["train_mean"] = (
        control + np.tile(train_deltas.mean(0), (len(names), 1)),
        no_fallback,
    )
    if any(len(condition_genes(c)) > 1 for c in names):
        single = {
            condition_genes(c)[0]: d
            for c, d in zip(train_names, train_deltas, strict=True)
            if len(condition_genes(c)) == 1
        }
        additive = np.tile(control + train_deltas.mean(0), (len(names), 1))
        fallback = np.ones(len(names), dtype=bool)
        for i, c in enumerate(names):
            genes_c = condition_genes(c)
            if len(genes_c) > 1 and all(g in single for g in genes_c):
                additive[i] = control + sum(single[g] for g in genes_c)
                fallback[i] = False
        predictions["additive"] = (additive, fallback)
    n_components = max(1, min(n_pca, len(train_names) - 1))
    centered = train_deltas - train_deltas.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    pca_table = pd.DataFrame(vt[:n_components].T, index=genes)
    delta, fallback = _linear_baseline(pca_table, train_names, train_deltas, names, ridge)
    predictions["linear_pca"] = (control + delta, fallback)
    for name, source in (gene_embeddings or {}).items():
        table = _embedding_table(source)
        delta, fallback = _linear_baseline(table, train_names, train_deltas, names, ridge)
        predictions[f"linear_{name}"] = (control + delta, fallback)
    for name, model in (models or {}).items():
        if isinstance(model, ad.AnnData):
            predicted = model
        else:
            predicted = model.predict(names)
        missing = [c for c in names if c not in predicted.obs_names]
        if missing:
            raise ScLongInputError(f"Predictions of {name!r} lack the conditions {missing[:5]}.")
        rows = predicted[names, genes]
        matrix = rows.X.toarray() if sparse.issparse(rows.X) else np.asarray(rows.X)
        predictions[name] = (matrix.astype(float), no_fallback)

    records = []
    for method, (matrix, fallback) in predictions.items():
        for i, c in enumerate(names):
            de_genes = genes.get_indexer(list(np.asarray(de[c]).astype(str)))
            de_genes = de_genes[de_genes >= 0]
            metrics = perturbation_metrics(matrix[i], truth[i], control, de_genes, top)
            records.append(
                {
                    "condition": c,
                    "subgroup": subgroup_of[c],
                    "method": method,
                    "n_cells": int(n_cells[i]),
                    **metrics,
                    "fallback": bool(fallback[i]),
                }
            )
    return pd.DataFrame.from_records(records)
