"""Readers of DeepCDR's public GDSC / CCLE files (drug responses, SMILES, cell-line annotations)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._cellbench import shared_data_dir

logger = logging.getLogger(__name__)

#: CellBench cell-line labels -> CCLE / DepMap names (the annotation table's ``Name``).
CELLBENCH_CCLE_NAMES = {
    "A549": "A549",
    "H1975": "NCI-H1975",
    "H2228": "NCI-H2228",
    "H838": "NCI-H838",
    "HCC827": "HCC827",
}


def _folder(path: str | os.PathLike | None) -> Path:
    folder = Path(path) if path is not None else shared_data_dir() / "drug" / "deepcdr"
    if not (folder / "GDSC_IC50.csv").exists() and not (folder / "GDSC_IC50.csv.gz").exists():
        raise FileNotFoundError(
            f"DeepCDR's GDSC files are not in {folder} (GDSC_IC50.csv, "
            "GDSC_drug_list_2019-06-24.csv, 223drugs_pubchem_smiles.txt, "
            "Cell_lines_annotations_20181226.txt from GitHub kimmo1019/DeepCDR data/); pass "
            "path=... or set SCLONG_SHARED_DATA."
        )
    return folder


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    return path if path.exists() else folder / f"{name}.gz"


def gdsc_deepcdr(path: str | os.PathLike | None = None) -> dict:
    """GDSC ln IC50 values, drug SMILES and CCLE annotations as DeepCDR ships them.

    Drugs are keyed by PubChem id (as DeepCDR does): GDSC drug ids that share a PubChem id
    (the same compound screened twice) are merged by averaging their ln IC50 per cell line;
    drugs without a SMILES in ``223drugs_pubchem_smiles.txt`` are left out (with a count).
    Cell lines are DepMap ids (``ACH-...``).

    Parameters
    ----------
    path
        The folder of DeepCDR's files (default: ``<shared data>/drug/deepcdr``).

    Returns
    -------
    ``{"ln_ic50": DataFrame (cell lines x PubChem ids, NaN = not measured), "smiles": Series
    (PubChem id -> SMILES), "drugs": DataFrame (PubChem id -> name, GDSC ids, targets, pathway),
    "cell_lines": DataFrame (the CCLE annotations of the matrix's cell lines, by DepMap id),
    "n_dropped_drugs": int}``.
    """
    folder = _folder(path)
    ic50 = pd.read_csv(_file(folder, "GDSC_IC50.csv"), index_col=0)
    listing = pd.read_csv(_file(folder, "GDSC_drug_list_2019-06-24.csv"), dtype={"PubCHEM": str})
    smiles = {}
    with open(_file(folder, "223drugs_pubchem_smiles.txt"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                key, value = line.rstrip("\n").split("\t")
                smiles[key.strip()] = value.strip()
    listing["gdsc"] = "GDSC:" + listing["drug_id"].astype(str)
    listing = listing[listing["gdsc"].isin(ic50.index)]
    kept = listing[listing["PubCHEM"].isin(smiles)]
    dropped = len(listing) - len(kept)
    if dropped:
        logger.info("gdsc_deepcdr: %d GDSC drugs without a PubChem SMILES left out", dropped)
    values = ic50.loc[kept["gdsc"]].set_axis(kept["PubCHEM"].to_numpy(), axis=0)
    merged = values.groupby(level=0, sort=True).mean()  # NaN-aware mean per cell line
    table = merged.T
    table.index.name = "depmap_id"
    table.columns.name = "pubchem_id"
    drugs = kept.groupby("PubCHEM", sort=True).agg(
        name=("Name", "first"),
        gdsc_ids=("gdsc", lambda s: ";".join(s)),
        targets=("Targets", "first"),
        pathway=("Target pathway", "first"),
    )
    drugs.index.name = "pubchem_id"
    annotations = pd.read_csv(
        _file(folder, "Cell_lines_annotations_20181226.txt"), sep="\t", low_memory=False
    )
    annotations = annotations.drop_duplicates("depMapID").set_index("depMapID")
    cell_lines = annotations.reindex(table.index)
    return {
        "ln_ic50": table,
        "smiles": pd.Series({d: smiles[d] for d in table.columns}, name="smiles"),
        "drugs": drugs,
        "cell_lines": cell_lines,
        "n_dropped_drugs": int(dropped),
    }


def depmap_ids(names, annotations: pd.DataFrame) -> pd.Series:
    """DepMap ids of cell-line names through CCLE annotations (``Name`` or ``CCLE_ID`` prefix).

    Parameters
    ----------
    names
        Cell-line names (e.g. ``"NCI-H1975"``, ``"HCC827"``; CellBench's short labels ``H1975``
        are mapped through :data:`CELLBENCH_CCLE_NAMES`).
    annotations
        The CCLE annotation table (``gdsc_deepcdr()["cell_lines"]`` or the whole file), indexed
        by DepMap id, with columns ``Name`` and ``CCLE_ID``.

    Returns
    -------
    name -> DepMap id (NaN where none matches; a warning lists those).
    """
    by_name = {
        str(n).upper(): i
        for i, n in zip(annotations.index, annotations["Name"], strict=True)
        if pd.notna(n)
    }
    by_ccle = {
        str(c).split("_")[0]: i
        for i, c in zip(annotations.index, annotations["CCLE_ID"], strict=True)
        if pd.notna(c)
    }
    out = {}
    for name in names:
        label = CELLBENCH_CCLE_NAMES.get(str(name), str(name))
        key = label.upper()
        out[name] = by_name.get(key, by_ccle.get(key.replace("-", "").replace(" ", ""), np.nan))
    series = pd.Series(out, name="depmap_id", dtype=object)
    if series.isna().any():
        logger.warning("No DepMap id for %s", list(series.index[series.isna()]))
    return series
