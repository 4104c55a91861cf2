from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import ScLongInputError
from ._embed import _target, _warn_replacing

if TYPE_CHECKING:
    from ..model import SCLONGClassifier


def annotate(
    adata: ad.AnnData,
    model: SCLONGClassifier,
    *,
    key_added: str = "sclong_label",
    threshold: float | Literal["auto"] = "auto",
    unknown_label: str = "unknown",
    batch_size: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Annotate cells with a fine-tuned scLong classifier, with a confidence and an OOD score.

    Reads the values the model was set up with (``adata.layers[layer]`` or ``adata.X``; checked
    as :meth:`~sclong_scverse.model.SCLONG.setup_anndata` checks them) and ``adata.var_names``
    (genes in another order or partly missing are aligned, with a report); ``adata.obs`` is not
    read. A cell whose confidence (highest class probability) is below ``threshold`` is
    labelled ``unknown_label``. Each cell also gets an out-of-distribution score: the
    Mahalanobis distance of its pooled scLong representation to the nearest class of the
    training cells (:meth:`~sclong_scverse.model.SCLONGClassifier.ood_score`); cells of a type
    absent from the reference tend to get a higher score (and a lower confidence).

    Parameters
    ----------
    adata
        The cells to annotate.
    model
        A trained :class:`~sclong_scverse.model.SCLONGClassifier`.
    key_added
        ``adata.obs`` column of the labels; the other fields are named after it.
    threshold
        Confidence below which a cell is ``unknown_label``. ``"auto"`` (default): the model's
        calibrated threshold (:meth:`~sclong_scverse.model.SCLONGClassifier.confidence_threshold`):
        the confidence below which 5% of the validation cells of its training fall, so it
        follows the number of classes and how sure the model is (without validation cells,
        ``1/k + 0.25 (1 - 1/k)`` for ``k`` classes). A number in [0, 1]: that cut-off (``0``:
        every cell gets its best class).
    unknown_label
        Label of cells below the threshold.
    batch_size
        Cells per forward pass.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.obs[key_added]``: categorical labels (the classes, plus ``unknown_label`` when the
      threshold is above 0);
    - ``adata.obs[f"{key_added}_confidence"]``: float highest class probability;
    - ``adata.obs[f"{key_added}_ood"]``: float out-of-distribution score (higher: less like
      any class of the reference; NaN for a model saved before the score existed);
    - ``adata.obsm[f"{key_added}_probabilities"]``: DataFrame ``(n_cells, n_classes)`` of class
      probabilities (rows sum to 1);
    - ``adata.uns[key_added]``: ``"params"`` (the threshold used, its ``threshold_rule``:
      ``"validation"``, ``"chance"`` or ``"given"``, the unknown label, the classes, the model)
      and ``"ood"`` (``"method"``, and the validation cells' ``"validation_median"`` and
      ``"validation_q95"`` of the score, for reference: a cell above ``validation_q95`` is
      farther from the training classes than 95% of cells like them).

    Existing fields of those names are replaced (logged as a warning for ``obs[key_added]``).

    Raises
    ------
    ScLongInputError
        ``adata`` is a view (pass ``copy=True`` or copy it), has no cells, or values the model
        cannot read.
    ValueError
        ``threshold`` neither ``"auto"`` nor in [0, 1], or ``unknown_label`` is one of the
        model's classes.
    """
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ScLongInputError(
                f"threshold must be 'auto' or a number in [0, 1], not {threshold!r}."
            )
        threshold, rule = model.confidence_threshold()
    else:
        if not 0.0 <= threshold <= 1.0:
            raise ScLongInputError(f"threshold must be in [0, 1], got {threshold!r}.")
        rule = "given"
    if unknown_label in model.classes_:
        raise ScLongInputError(
            f"unknown_label={unknown_label!r} is one of the model's classes; choose another."
        )
    target = _target(adata, copy)
    probabilities, ood = model._annotation_outputs(target, None, batch_size)
    values = probabilities.to_numpy()
    best = values.argmax(axis=1)
    confidence = values[np.arange(len(best)), best]
    labels = np.asarray(model.classes_, dtype=object)[best]
    labels = np.where(confidence >= threshold, labels, unknown_label).astype(str)
    categories = list(model.classes_) + ([unknown_label] if threshold > 0 else [])
    if key_added in target.obs:
        _warn_replacing("obs", key_added, "scl.tl.annotate")
    target.obs[key_added] = pd.Categorical(labels, categories=categories)
    target.obs[f"{key_added}_confidence"] = confidence.astype(np.float32)
    target.obs[f"{key_added}_ood"] = np.asarray(ood, dtype=np.float32)
    probabilities.index = target.obs_names
    target.obsm[f"{key_added}_probabilities"] = probabilities
    calibration = getattr(model, "calibration_", None) or {}
    target.uns[key_added] = {
        "params": {
            "threshold": float(threshold),
            "threshold_rule": rule,
            "unknown_label": unknown_label,
            "classes": list(model.classes_),
            "model": model._model_summary_string,
        },
        "ood": {
            "method": "mahalanobis",
            "validation_median": float(calibration.get("validation_ood_median", np.nan)),
            "validation_q95": float(calibration.get("validation_ood_q95", np.nan)),
        },
    }
    return target if copy else None
