"""Readers of DeepCDR's public GDSC / CCLE files (drug responses, SMILES, cell-line annotations)."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._files import as_path, reading
from ..errors import ScLongFileError, ScLongFileNotFound
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


_FILES_HINT = (
    "DeepCDR's data/ folder (GitHub kimmo1019/DeepCDR) holds GDSC_IC50.csv, "
    "GDSC_drug_list_2019-06-24.csv, 223drugs_pubchem_smiles.txt and "
    "Cell_lines_annotations_20181226.txt (each may be .gz)"
)
_LIST_COLUMNS = ("drug_id", "Name", "PubCHEM", "Targets", "Target pathway")


def _folder(path: str | os.PathLike | None) -> Path:
    if path is None:
        folder = shared_data_dir() / "drug" / "deepcdr"
    else:
        folder = as_path(path, "folder of DeepCDR's GDSC files")
    if folder.is_file():
        raise ScLongFileError(
            f"{folder} is a file; give the folder of DeepCDR's GDSC files ({_FILES_HINT})."
        )
    if not (folder / "GDSC_IC50.csv").exists() and not (folder / "GDSC_IC50.csv.gz").exists():
        raise ScLongFileNotFound(
            f"DeepCDR's GDSC files are not in {folder} (GDSC_IC50.csv, "
            "GDSC_drug_list_2019-06-24.csv, 223drugs_pubchem_smiles.txt, "
            "Cell_lines_annotations_20181226.txt from GitHub kimmo1019/DeepCDR data/); pass "
            "path=... or set SCLONG_SHARED_DATA."
        )
    return folder


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if path.exists():
        return path
    if (folder / f"{name}.gz").exists():
        return folder / f"{name}.gz"
    raise ScLongFileNotFound(f"{name} (or {name}.gz) not found in {folder}; {_FILES_HINT}.")


def _read_ic50(path: Path) -> pd.DataFrame:
    with reading(path, "DeepCDR GDSC IC50 table", _FILES_HINT):
        ic50 = pd.read_csv(path, index_col=0)
        if ic50.index.has_duplicates:
            raise ScLongFileError(
                f"{path} lists drugs twice: {list(ic50.index[ic50.index.duplicated()][:5])}."
            )
        return ic50.astype(np.float64)


def _read_drug_list(path: Path) -> pd.DataFrame:
    with reading(path, "DeepCDR GDSC drug list", _FILES_HINT):
        listing = pd.read_csv(path, dtype={"PubCHEM": str})
        missing = [c for c in _LIST_COLUMNS if c not in listing.columns]
        if missing:
            raise ScLongFileError(
                f"{path} lacks the columns {missing}; it has {list(listing.columns)[:8]}."
            )
        return listing


def _read_smiles(path: Path) -> dict[str, str]:
    smiles = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with (
        reading(path, "DeepCDR SMILES file", _FILES_HINT),
        opener(path, "rt", encoding="utf-8") as handle,
    ):
        for number, line in enumerate(handle, start=1):
            if line.strip():
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 2:
                    raise ScLongFileError(
                        f"{path}, line {number}: expected '<PubChem id><TAB><SMILES>', found "
                        f"{len(fields)} tab-separated fields."
                    )
                smiles[fields[0].strip()] = fields[1].strip()
    return smiles


def _read_cell_lines(path: Path) -> pd.DataFrame:
    with reading(path, "DeepCDR cell-line annotations", _FILES_HINT):
        annotations = pd.read_csv(path, sep="\t", low_memory=False)
        if "depMapID" not in annotations.columns:
            raise ScLongFileError(
                f"{path} lacks the column 'depMapID'; it has {list(annotations.columns)[:8]}."
            )
        return annotations.drop_duplicates("depMapID").set_index("depMapID")


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

    Raises
    ------
    ScLongFileNotFound
        The folder, or one of its four files, does not exist.
    ScLongFileError
        A file that is not what it should be (columns missing, not text, empty, damaged), named.
    """
    folder = _folder(path)
    ic50 = _read_ic50(_file(folder, "GDSC_IC50.csv"))
    listing = _read_drug_list(_file(folder, "GDSC_drug_list_2019-06-24.csv"))
    smiles = _read_smiles(_file(folder, "223drugs_pubchem_smiles.txt"))
    annotations = _read_cell_lines(_file(folder, "Cell_lines_annotations_20181226.txt"))
    with reading(folder, "folder of DeepCDR's GDSC files", _FILES_HINT):
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
