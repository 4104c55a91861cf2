"""Metrics of the chemical perturbation and drug combination heads (DeepCE, DeepDDS protocols)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ScLongInputError

#: Cut-offs of DeepCE's precision@k (k predicted genes against the 100 truly most up / down).
PRECISION_KS = (10, 20, 50, 100)


def _row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN if constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a * b).sum(axis=1) / denominator
    out[~(denominator > 0)] = np.nan
    return out


def signature_metrics(
    truth: np.ndarray,
    prediction: np.ndarray,
    ks: Sequence[int] = PRECISION_KS,
    n_true: int = 100,
    per_profile: bool = False,
) -> dict:
    """DeepCE's metrics of predicted expression signatures (profiles x genes).

    - ``pearson``, ``spearman``: correlation across genes of each profile with its prediction,
      averaged over profiles (profiles whose truth or prediction is constant are left out);
    - ``rmse``: over all values;
    - ``precision_up@k`` / ``precision_down@k``: per profile, the share of the ``k`` genes
      predicted most up (down) that are among the ``n_true`` genes truly most up (down),
      averaged over profiles (DeepCE: ``n_true = 100``, ``k`` in 10, 20, 50, 100).

    Parameters
    ----------
    truth, prediction
        ``(n_profiles, n_genes)`` arrays (z-scores for L1000 signatures).
    ks
        Cut-offs of precision@k (each at most ``n_genes``).
    n_true
        Size of the true up / down sets (capped at ``n_genes``).
    per_profile
        Also return the per-profile Pearson and Spearman arrays (keys ``pearson_per_profile``,
        ``spearman_per_profile``).

    Returns
    -------
    A dict of floats (``n_profiles`` included).

    Raises
    ------
    ValueError
        Shapes that differ or are not 2-d, or NaN values.
    """
    from scipy import stats

    truth = np.asarray(truth, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != prediction.shape:
        raise ScLongInputError(
            f"truth and prediction must be 2-d arrays of one shape; got {truth.shape} and "
            f"{prediction.shape}."
        )
    if np.isnan(truth).any() or np.isnan(prediction).any():
        raise ScLongInputError("truth or prediction holds NaN values; drop those profiles first.")
    n_profiles, n_genes = truth.shape
    out: dict = {"n_profiles": float(n_profiles)}
    if n_profiles == 0:
        out.update({"pearson": np.nan, "spearman": np.nan, "rmse": np.nan})
        return out
    pearson = _row_correlations(truth, prediction)
    spearman = _row_correlations(stats.rankdata(truth, axis=1), stats.rankdata(prediction, axis=1))
    out["pearson"] = float(np.nanmean(pearson)) if np.isfinite(pearson).any() else np.nan
    out["spearman"] = float(np.nanmean(spearman)) if np.isfinite(spearman).any() else np.nan
    out["rmse"] = float(np.sqrt(np.mean((truth - prediction) ** 2)))
    n_true = min(int(n_true), n_genes)
    order_truth = np.argsort(truth, axis=1, kind="stable")
    order_prediction = np.argsort(prediction, axis=1, kind="stable")
    true_down, true_up = order_truth[:, :n_true], order_truth[:, n_genes - n_true :]
    for k in ks:
        k = int(k)
        if not 0 < k <= n_genes:
            raise ScLongInputError(f"precision@k needs 0 < k <= n_genes ({n_genes}), not {k}.")
        down, up = order_prediction[:, :k], order_prediction[:, n_genes - k :]
        hits_up = [
            len(np.intersect1d(u, t, assume_unique=True)) for u, t in zip(up, true_up, strict=True)
        ]
        hits_down = [
            len(np.intersect1d(d, t, assume_unique=True))
            for d, t in zip(down, true_down, strict=True)
        ]
        out[f"precision_up@{k}"] = float(np.mean(hits_up) / k)
        out[f"precision_down@{k}"] = float(np.mean(hits_down) / k)
    if per_profile:
        out["pearson_per_profile"] = pearson
        out["spearman_per_profile"] = spearman
    return out


def synergy_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """AUROC, AUPR (average precision) and accuracy of synergy scores (DeepDDS's metrics).

    Parameters
    ----------
    labels
        0/1 labels (1: synergistic).
    scores
        Predicted probabilities (or any score, higher = more synergistic).
    threshold
        Cut-off of ``scores`` for the accuracy.

    Returns
    -------
    ``{"auroc", "aupr", "accuracy", "n", "positive_fraction"}``; AUROC and AUPR are NaN when
    only one class is present.

    Raises
    ------
    ValueError
        Lengths that differ, labels other than 0 / 1, or NaN scores.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ScLongInputError(
            f"labels ({labels.shape}) and scores ({scores.shape}) differ in length."
        )
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ScLongInputError("labels must be 0 or 1.")
    if np.isnan(scores).any():
        raise ScLongInputError("scores hold NaN values.")
    n = len(labels)
    out = {
        "auroc": np.nan,
        "aupr": np.nan,
        "accuracy": float(np.mean((scores >= threshold) == (labels == 1))) if n else np.nan,
        "n": float(n),
        "positive_fraction": float(labels.mean()) if n else np.nan,
    }
    if n and 0 < labels.sum() < n:
        out["auroc"] = float(roc_auc_score(labels, scores))
        out["aupr"] = float(average_precision_score(labels, scores))
    return out
