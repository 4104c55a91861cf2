from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from ..validation import check_not_view
from ._embed import _copy, _warn_replacing

if TYPE_CHECKING:
    from ..model import SCLONGClassifier


def annotate(
    adata: ad.AnnData,
    model: SCLONGClassifier,
    *,
    key_added: str = "sclong_label",
    threshold: float = 0.5,
    unknown_label: str = "unknown",
    batch_size: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Annotate cells with a fine-tuned scLong classifier, with a confidence per cell.

    Reads the values the model was set up with (``adata.layers[layer]`` or ``adata.X``; checked
    as :meth:`~sclong_scverse.model.SCLONG.setup_anndata` checks them) and ``adata.var_names``
    (genes in another order or partly missing are aligned, with a report); ``adata.obs`` is not
    read. A cell whose highest class probability is below ``threshold`` is labelled
    ``unknown_label``: cells of a type absent from the reference tend to get low confidence.

    Parameters
    ----------
    adata
        The cells to annotate.
    model
        A trained :class:`~sclong_scverse.model.SCLONGClassifier`.
    key_added
        ``adata.obs`` column of the labels; the other fields are named after it.
    threshold
        Confidence (highest class probability) below which a cell is ``unknown_label``
        (``0``: every cell gets its best class).
    unknown_label
        Label of cells below the threshold.
    batch_size
        Cells per forward pass.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the new AnnData when ``copy``. Writes

    - ``adata.obs[key_added]``: categorical labels (the classes, plus ``unknown_label`` when a
      cell is below the threshold);
    - ``adata.obs[f"{key_added}_confidence"]``: float highest class probability;
    - ``adata.obsm[f"{key_added}_probabilities"]``: DataFrame ``(n_cells, n_classes)`` of class
      probabilities (rows sum to 1);
    - ``adata.uns[key_added]["params"]``: the parameters and the classes.

    Existing fields of those names are replaced (logged as a warning for ``obs[key_added]``).

    Raises
    ------
    ScLongInputError
        ``adata`` is a view (pass ``copy=True`` or copy it), has no cells, or values the model
        cannot read.
    ValueError
        ``threshold`` outside [0, 1], or ``unknown_label`` is one of the model's classes.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}.")
    if unknown_label in model.classes_:
        raise ValueError(
            f"unknown_label={unknown_label!r} is one of the model's classes; choose another."
        )
    if not copy:
        check_not_view(adata)
    target = _copy(adata) if copy else adata
    probabilities = model.predict(target, soft=True, batch_size=batch_size)
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
    probabilities.index = target.obs_names
    target.obsm[f"{key_added}_probabilities"] = probabilities
    target.uns[key_added] = {
        "params": {
            "threshold": float(threshold),
            "unknown_label": unknown_label,
            "classes": list(model.classes_),
            "model": model._model_summary_string,
        }
    }
    return target if copy else None
