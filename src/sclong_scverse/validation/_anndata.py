"""Checks of an AnnData's structure: views, gene names, ``obs`` columns given to a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import ScLongKeyError
from ._errors import ScLongInputError


def check_not_view(adata: Any, name: str = "adata") -> None:
    """Refuse an AnnData view, which would be silently copied on the first write.

    Reads ``adata.is_view``; writes nothing.

    Parameters
    ----------
    adata
        The AnnData object.
    name
        How to name it in the message.

    Raises
    ------
    ScLongInputError
        ``adata.is_view`` is true.
    """
    if getattr(adata, "is_view", False):
        raise ScLongInputError(
            f"{name} is a view of another AnnData (e.g. adata[cells, genes]); results written "
            "into it would turn it into a copy and never reach the original. Make it an actual "
            "AnnData first: adata = adata[cells, genes].copy(), or pass copy=True."
        )


def check_unique_var_names(adata: Any, *, n_examples: int = 5) -> None:
    """Refuse duplicated gene names in ``adata.var_names``.

    Parameters
    ----------
    adata
        The AnnData object (reads ``adata.var_names``).
    n_examples
        How many duplicated names to list in the message.

    Raises
    ------
    ScLongInputError
        Some gene name occurs more than once.
    """
    names = adata.var_names
    if names.is_unique:
        return
    counts = names.value_counts()
    duplicated = counts[counts > 1]
    examples = ", ".join(f"{name!r} x{n}" for name, n in duplicated.head(n_examples).items())
    raise ScLongInputError(
        f"adata.var_names has {len(duplicated)} duplicated gene names (e.g. {examples}); scLong "
        "looks genes up by name. Make them unique with adata.var_names_make_unique(), sum the "
        "duplicated genes, or use unique identifiers (e.g. Ensembl ids) as var_names."
    )


def check_obs_key(adata: Any, key: str | None, argument: str, *, n_examples: int = 3) -> None:
    """Check a categorical ``adata.obs`` column given to the model (batches, labels).

    Reads ``adata.obs[key]``; writes nothing.

    Parameters
    ----------
    adata
        The AnnData.
    key
        The column (``None``: nothing to check).
    argument
        The argument that named it (``"batch_key"``), for messages.
    n_examples
        Cells named in the message.

    Raises
    ------
    KeyError
        ``key`` is not a column of ``adata.obs``.
    ScLongInputError
        The column has missing values (NaN / ``None``), which scvi-tools cannot register.
    """
    if key is None:
        return
    if key not in adata.obs.columns:
        raise ScLongKeyError(
            f"{argument}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        )
    column = adata.obs[key]
    missing = np.asarray(column.isna())
    if missing.any():
        names = np.asarray(adata.obs_names)[missing]
        examples = ", ".join(repr(str(n)) for n in names[:n_examples])
        raise ScLongInputError(
            f"adata.obs[{key!r}] ({argument}) has no value for {int(missing.sum())} of "
            f"{adata.n_obs} cells (e.g. {examples}). Give them a category, e.g. "
            f"adata.obs[{key!r}] = adata.obs[{key!r}].astype(str).where("
            f"adata.obs[{key!r}].notna(), 'unknown'), or remove those cells."
        )


def refuse_missing(column: pd.Series, where: str, what: str, rows: str, fix: str) -> None:
    """Refuse a column of ``adata.obs`` or ``adata.var`` with missing values (NaN / ``None``).

    Reads ``column``; writes nothing. The message: ``"{where} has no {what} for {n} {rows}
    (e.g. <3 row names>); {fix}."``.

    Raises
    ------
    ScLongInputError
        Some rows have no value.
    """
    missing = np.asarray(column.isna())
    if missing.any():
        raise ScLongInputError(
            f"{where} has no {what} for {int(missing.sum())} {rows} (e.g. "
            f"{list(column.index[missing][:3])}); {fix}."
        )
