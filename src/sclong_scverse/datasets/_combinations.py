"""Reader of drug combination labels in DeepDDS's published layout (O'Neil et al. 2016)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .._files import existing_file, reading, reading_file
from ..validation import ScLongInputError

logger = logging.getLogger(__name__)

#: Columns of DeepDDS's ``new_labels_0_10.csv`` (drugs as SMILES, cell line name, 0/1 label).
DEEPDDS_COLUMNS = ("drug1", "drug2", "cell", "label")
_DRUGS_HINT = "give DeepDDS's drugs_0_10.csv (no header: name, SMILES, ...)"
_LABELS_HINT = "give DeepDDS's new_labels_0_10.csv (header drug1,drug2,cell,label)"


def read_deepdds_drugs(path: str | os.PathLike) -> pd.Series:
    """DeepDDS's drug table (``drugs_0_10.csv``: no header; name, SMILES, then other columns).

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    Drug name -> SMILES.

    Raises
    ------
    ScLongInputError
        Fewer than two columns, or a name listed twice with different SMILES.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not a CSV file (a folder, empty, not text, damaged).
    """
    with reading_file(path, "DeepDDS drug table", _DRUGS_HINT) as path:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
        if table.shape[1] < 2:
            raise ScLongInputError(f"{path.name} needs at least two columns (name, SMILES).")
        table = table.drop_duplicates(subset=[0, 1])
        if table[0].duplicated().any():
            raise ScLongInputError(
                f"{path.name} gives some drugs two SMILES: "
                f"{sorted(table.loc[table[0].duplicated(), 0])[:5]}."
            )
        return pd.Series(table[1].to_numpy(), index=pd.Index(table[0].to_numpy(), name="drug"))


def read_deepdds_combinations(
    path: str | os.PathLike,
    drugs: Mapping[str, str] | pd.Series | str | os.PathLike | None = None,
) -> dict:
    """Read drug combination labels in DeepDDS's layout (``new_labels_0_10.csv``).

    DeepDDS's published file (labels that DeepDDS derived from the synergy scores of the O'Neil
    et al. 2016 screen; the ``0_10`` of the file name refers to its two cut-offs) has the header
    ``drug1,drug2,cell,label``; ``drug1`` and ``drug2`` are SMILES and ``cell`` a cell-line
    name. Columns are found by name.

    Parameters
    ----------
    path
        The CSV file.
    drugs
        DeepDDS's drug table (a path to ``drugs_0_10.csv``, or a mapping name -> SMILES): the
        SMILES of the file are replaced by these names (and names in the file are accepted).
        ``None``: drugs are named by their SMILES.

    Returns
    -------
    ``{"combinations": DataFrame (drug1, drug2, cell_line, label int), "smiles": Series (drug
    name -> SMILES), "n_dropped": int}``. Rows without a label (NaN) are dropped with a count
    (never imputed).

    Raises
    ------
    ScLongInputError
        A column missing, a label other than 0 / 1, empty drug or cell fields, or (with
        ``drugs``) drugs that are in neither the names nor the SMILES of ``drugs``.
    ScLongFileNotFound
        No file at ``path`` (or at ``drugs``).
    ScLongFileError
        Not a CSV file (a folder, empty, not text, damaged).
    """
    path = existing_file(path, "DeepDDS label file", _LABELS_HINT)
    if isinstance(drugs, str | os.PathLike):
        drugs = read_deepdds_drugs(drugs)
    elif drugs is not None and not isinstance(drugs, Mapping | pd.Series):
        raise ScLongInputError(
            "drugs must be DeepDDS's drug table (a path, or a mapping name -> SMILES) or None, "
            f"not {type(drugs).__name__}."
        )
    with reading(path, "DeepDDS label file", _LABELS_HINT):
        return _combinations(path, drugs)


def _combinations(path: Path, drugs: Mapping[str, str] | pd.Series | None) -> dict:
    """:func:`read_deepdds_combinations` on an existing file, ``drugs`` read."""
    table = pd.read_csv(path, dtype={"drug1": str, "drug2": str, "cell": str})
    missing = [c for c in DEEPDDS_COLUMNS if c not in table.columns]
    if missing:
        raise ScLongInputError(
            f"{path.name} lacks the columns {missing} of DeepDDS's layout "
            f"({','.join(DEEPDDS_COLUMNS)}); it has {list(table.columns)[:8]}."
        )
    table = table[list(DEEPDDS_COLUMNS)]
    labels = pd.to_numeric(table["label"], errors="coerce")
    unreadable = table["label"].notna() & labels.isna()
    if unreadable.any() or not labels.dropna().isin([0, 1]).all():
        bad = sorted(set(table.loc[unreadable | ~labels.isin([0, 1]) & labels.notna(), "label"]))
        raise ScLongInputError(
            f"{path.name}: labels must be 0 or 1 (1: synergistic); found "
            f"{[str(b) for b in bad[:10]]}. Binarise synergy scores first."
        )
    n_dropped = int(labels.isna().sum())
    if n_dropped:
        logger.warning(
            "read_deepdds_combinations: %d of %d rows have no label and are dropped (never "
            "imputed)",
            n_dropped,
            len(table),
        )
    keep = labels.notna().to_numpy()
    table, labels = table[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    for column in ("drug1", "drug2", "cell"):
        empty = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if empty.any():
            raise ScLongInputError(
                f"{path.name}: {int(empty.sum())} rows have an empty {column!r} field (e.g. row "
                f"{int(np.flatnonzero(empty.to_numpy())[0]) + 2} of the file)."
            )
    if drugs is None:
        names = sorted(set(table["drug1"]) | set(table["drug2"]))
        smiles = pd.Series(names, index=pd.Index(names, name="drug"))
        drug1, drug2 = table["drug1"], table["drug2"]
    else:
        smiles = pd.Series(dict(drugs), dtype=object)
        smiles.index = smiles.index.astype(str)
        by_smiles = {v: k for k, v in smiles.items()}

        def name(value: str) -> str | None:
            return value if value in smiles.index else by_smiles.get(value)

        drug1, drug2 = table["drug1"].map(name), table["drug2"].map(name)
        unknown = sorted(set(table["drug1"][drug1.isna()]) | set(table["drug2"][drug2.isna()]))
        if unknown:
            raise ScLongInputError(
                f"{len(unknown)} drugs of {path.name} are neither names nor SMILES of the drug "
                f"table (e.g. {unknown[:3]})."
            )
        used = sorted(set(drug1) | set(drug2))
        smiles = smiles.loc[used]
        smiles.index.name = "drug"
    combinations = pd.DataFrame(
        {
            "drug1": drug1.astype(str).to_numpy(),
            "drug2": drug2.astype(str).to_numpy(),
            "cell_line": table["cell"].astype(str).to_numpy(),
            "label": labels.astype(np.int64).to_numpy(),
        }
    )
    return {"combinations": combinations, "smiles": smiles.rename("smiles"), "n_dropped": n_dropped}
