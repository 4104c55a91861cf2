"""Readers of L1000 signatures: DeepCE's CSV files, GCTx (HDF5) files, DeepCE's gene vectors.

Signatures are z-scores (L1000 Level 5: each gene's change against its plate, in robust
standard deviations). They are *not* expression: fed to scLong as expression, every value at
or below -1 would be read as a mask token. The AnnData objects returned here carry
``uns["sclong_signatures"]``, and the package refuses them where expression is expected
(:func:`check_not_signatures`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._files import as_path, existing_file, reading, reading_file
from ..errors import ScLongFileNotFound
from ..validation import ScLongInputError
from ._cellbench import shared_data_dir

logger = logging.getLogger(__name__)

#: The metadata columns of DeepCE's signature files, in their order, before the 978 genes.
DEEPCE_COLUMNS = ("sig_id", "pert_id", "pert_type", "cell_id", "pert_idose")
#: Signatures (GCTx columns) read per block by :func:`read_gctx`.
GCTX_BLOCK = 4096
#: ``adata.uns`` key marking signature (z-score) data.
SIGNATURES_KEY = "sclong_signatures"
_UNITS = {"um": 1.0, "µm": 1.0, "μm": 1.0, "nm": 1e-3, "mm": 1e3, "pm": 1e-6}
_SIGNATURES_HINT = (
    "give a CSV in DeepCE's layout (sig_id, pert_id, pert_type, cell_id, pert_idose, then genes)"
)
_GCTX_HINT = "give an L1000 GCTx file (HDF5, e.g. GSE92742 Level 5 from GEO)"
_VECTORS_HINT = "give DeepCE's data/gene_vector.csv (GitHub pth1993/DeepCE)"
_SMILES_HINT = "give DeepCE's data/drugs_smiles.csv (GitHub pth1993/DeepCE)"
_DOSE = re.compile(r"^\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*([a-zA-Zµμ]*)\s*$")


def parse_dose(values, unit: str = "um", missing: str = "raise") -> np.ndarray:
    """Doses in µM from L1000 labels (``"10.0 um"``, ``"500 nM"``, ``"1.11 µM"``) or numbers.

    Parameters
    ----------
    values
        Dose labels or numbers (numbers are read in ``unit``).
    unit
        Unit of plain numbers (``"um"``, ``"nm"``, ``"mm"``).
    missing
        What to do with L1000's missing-value code ``-666``: ``"raise"`` or ``"nan"``.

    Returns
    -------
    ``(n,)`` float64 array of µM.

    Raises
    ------
    ScLongInputError
        A label that is not ``<number> <unit>`` with a known unit (all such labels listed, up to
        10), e.g. L1000's missing-value code ``-666``, or a negative dose.
    """
    values = list(values)
    out = np.empty(len(values), dtype=np.float64)
    bad = []
    for i, value in enumerate(values):
        if missing == "nan" and str(value).strip() in ("-666", "-666.0"):
            out[i] = np.nan
            continue
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            number, label = float(value), unit
        else:
            match = _DOSE.match(str(value))
            if match is None:
                bad.append(value)
                continue
            number, label = float(match.group(1)), match.group(2) or unit
        factor = _UNITS.get(label.lower())
        if factor is None or not np.isfinite(number) or number < 0 or number == -666:
            bad.append(value)
            continue
        out[i] = number * factor
    if bad:
        shown = sorted({str(b) for b in bad})[:10]
        raise ScLongInputError(
            f"{len(bad)} dose labels cannot be read as '<number> <unit>' (units: um, nm, mm): "
            f"{shown}. L1000 writes '-666' for a missing dose; drop those rows first."
        )
    return out


def check_not_signatures(adata, where: str = "this function") -> None:
    """Refuse signature (z-score) data where scLong expects expression.

    Parameters
    ----------
    adata
        The AnnData about to be read as expression.
    where
        What is reading it (for the message).

    Raises
    ------
    ScLongInputError
        ``adata`` carries ``uns["sclong_signatures"]`` (made by the L1000 readers) or holds
        negative values.
    """
    from ..validation import summarize_values

    marked = SIGNATURES_KEY in getattr(adata, "uns", {})
    negative = False
    if not marked:
        negative = summarize_values(adata.X).n_negative > 0 if adata.X is not None else False
    if marked or negative:
        why = (
            "it carries uns['sclong_signatures'] (L1000 / DeepCE signatures)"
            if marked
            else "it holds negative values"
        )
        raise ScLongInputError(
            f"{where} reads expression, but this AnnData looks like perturbation signatures "
            f"({why}). Signatures are z-scores: scLong would read every value <= -1 as a mask "
            "token, so they are never fed to scLong as expression. Pass log-normalised "
            "expression of cells (scl.pp.normalize) instead; signatures are the targets of "
            "scl.SCLONGChemPerturbation, not its input."
        )


def _ids(values: Sequence[str] | None, what: str) -> list[str] | None:
    """``values`` as a list of strings (``None`` stays ``None``); one string is refused."""
    if values is None:
        return None
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ScLongInputError(
            f"{what} must be a list of ids, not {type(values).__name__} {str(values)[:40]!r}."
        )
    return [str(v) for v in values]


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, low_memory=False)


def _median_rank_replicate(values: np.ndarray) -> int:
    """The replicate whose genes sit closest to the middle rank on average (DeepCE's choice)."""
    n = values.shape[0]
    ranks = np.argsort(np.argsort(values, axis=0, kind="stable"), axis=0, kind="stable")
    distance = (ranks.mean(axis=1) - (n - 1) / 2) ** 2
    return int(np.argmin(distance))


def read_deepce_signatures(
    path: str | os.PathLike,
    genes: Sequence[str] | None = None,
    pert_type: str | None = "trt_cp",
    time: str | None = None,
    replicates: str = "median_rank",
) -> ad.AnnData:
    """Read a DeepCE signature file (``signature_train.csv`` and the like) as an AnnData.

    DeepCE's published layout: a header, then one row per L1000 Level 5 signature with the
    columns ``sig_id, pert_id, pert_type, cell_id, pert_idose`` followed by the 978 landmark
    genes' z-scores (983 columns). Columns are found by name (the metadata columns may be in
    any order); genes keep the file's order unless ``genes`` is given.

    Profiles with a NaN value are dropped, with a count in the log and in
    ``uns["sclong_signatures"]["n_dropped_nan"]`` (never imputed). Replicates (same drug, type,
    cell line and dose) are merged as ``replicates`` says.

    Parameters
    ----------
    path
        The CSV file (or ``.csv.gz``).
    genes
        The genes to keep, in this order (e.g. :func:`deepce_landmark_genes`); every one must be
        a column. ``None``: all columns after the metadata.
    pert_type
        Keep this perturbation type (DeepCE: ``"trt_cp"``, compounds); ``None``: all.
    time
        Keep signatures whose ``sig_id`` contains this text (DeepCE: ``"24H"``); ``None``: all.
    replicates
        ``"median_rank"`` (DeepCE: the replicate whose genes are closest to the middle rank),
        ``"mean"`` (average) or ``"keep"`` (all rows).

    Returns
    -------
    Profiles x genes AnnData: ``X`` the z-scores (float32), ``obs`` the metadata columns plus
    ``dose_um`` (parsed dose; NaN for L1000's missing dose ``-666``) and ``n_replicates``,
    ``uns["sclong_signatures"]`` (source, counts).

    Raises
    ------
    ScLongInputError
        Metadata columns missing, ``genes`` not all in the file, non-numeric gene values,
        unreadable doses, or an unknown ``replicates``.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not a CSV file (a folder, empty, not text, damaged).
    """
    if replicates not in ("median_rank", "mean", "keep"):
        raise ScLongInputError(
            f"replicates must be 'median_rank', 'mean' or 'keep', not {replicates!r}."
        )
    genes = _ids(genes, "genes")
    with reading_file(path, "DeepCE signature file", _SIGNATURES_HINT) as path:
        return _deepce_signatures(path, genes, pert_type, time, replicates)


def _deepce_signatures(
    path: Path,
    genes: Sequence[str] | None,
    pert_type: str | None,
    time: str | None,
    replicates: str,
) -> ad.AnnData:
    """:func:`read_deepce_signatures` once its arguments are checked."""
    table = _read_table(path)
    missing = [c for c in DEEPCE_COLUMNS if c not in table.columns]
    if missing:
        raise ScLongInputError(
            f"{path.name} lacks the columns {missing} of DeepCE's signature layout "
            f"({', '.join(DEEPCE_COLUMNS)}, then the genes); its first columns are "
            f"{list(table.columns[:6])}."
        )
    gene_columns = [c for c in table.columns if c not in DEEPCE_COLUMNS]
    if genes is not None:
        absent = [g for g in genes if g not in gene_columns]
        if absent:
            raise ScLongInputError(
                f"{len(absent)} of the {len(genes)} requested genes are not columns of "
                f"{path.name} (e.g. {absent[:10]})."
            )
        extra = len(gene_columns) - len(genes)
        if extra:
            logger.info("read_deepce_signatures: %d gene columns not requested, dropped", extra)
        gene_columns = genes
    if not gene_columns:
        raise ScLongInputError(f"{path.name} has no gene columns after the metadata.")
    meta = table[list(DEEPCE_COLUMNS)].astype(str)
    try:
        values = table[gene_columns].to_numpy(dtype=np.float64)
    except ValueError as error:
        raise ScLongInputError(f"{path.name}: gene values must be numbers ({error}).") from None
    n_read = len(table)
    keep = np.ones(n_read, dtype=bool)
    if pert_type is not None:
        keep &= (meta["pert_type"] == pert_type).to_numpy()
    if time is not None:
        keep &= meta["sig_id"].str.contains(time, regex=False).to_numpy()
    n_filtered = int((~keep).sum())
    has_nan = np.isnan(values).any(axis=1) & keep
    n_nan = int(has_nan.sum())
    if n_nan:
        logger.warning(
            "read_deepce_signatures: %d of %d profiles hold NaN values and are dropped "
            "(never imputed)",
            n_nan,
            int(keep.sum()),
        )
    keep &= ~has_nan
    meta, values = meta[keep].reset_index(drop=True), values[keep]
    meta["dose_um"] = parse_dose(meta["pert_idose"], missing="nan")
    meta["n_replicates"] = 1
    n_profiles = len(meta)
    if replicates != "keep" and len(meta):
        groups = meta.groupby(["pert_id", "pert_type", "cell_id", "pert_idose"], sort=True).indices
        rows, merged = [], []
        for _, index in groups.items():
            index = np.sort(index)
            if replicates == "mean":
                merged.append(values[index].mean(axis=0))
                rows.append(index[0])
            else:
                choice = (
                    index[_median_rank_replicate(values[index])] if len(index) > 1 else index[0]
                )
                merged.append(values[choice])
                rows.append(choice)
            meta.loc[rows[-1], "n_replicates"] = len(index)
        meta = meta.loc[rows].reset_index(drop=True)
        values = np.vstack(merged)
    obs = meta.set_index("sig_id", drop=False)
    obs.index = obs.index.astype(str)
    if obs.index.has_duplicates:
        obs.index = pd.Index([f"{s}-{i}" for i, s in enumerate(obs.index)])
    adata = ad.AnnData(
        X=values.astype(np.float32),
        obs=obs.drop(columns="sig_id").assign(sig_id=obs["sig_id"].to_numpy()),
        var=pd.DataFrame(index=pd.Index([str(g) for g in gene_columns], name="gene")),
    )
    adata.uns[SIGNATURES_KEY] = {
        "kind": "z-score signatures (L1000 Level 5, DeepCE layout)",
        "source": str(path),
        "n_read": n_read,
        "n_filtered": n_filtered,
        "n_dropped_nan": n_nan,
        "n_profiles_before_merging": n_profiles,
        "replicates": replicates,
    }
    return adata


def _strings(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SO":
        return np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)],
            dtype=object,
        ).reshape(values.shape)
    return values


def _gctx_meta(group, n: int) -> pd.DataFrame:
    columns = {}
    for key in group:
        values = group[key][()]
        if values.ndim != 1 or len(values) != n:
            continue
        column = pd.Series(_strings(values))
        if str(key) != "id":
            if column.dtype == object:
                try:
                    column = pd.to_numeric(column)
                except (ValueError, TypeError):
                    column = column.mask(column == "-666")
            if column.dtype != object:
                column = column.mask(column == -666)
        columns[str(key)] = column
    ids = [str(i) for i in columns.pop("id")]
    frame = pd.DataFrame(columns)
    frame.index = pd.Index(ids)
    return frame


def _positions(ids: pd.Index, wanted: Sequence[str] | None, what: str) -> np.ndarray:
    if wanted is None:
        return np.arange(len(ids))
    lookup = {v: i for i, v in enumerate(ids)}
    wanted = [str(w) for w in wanted]
    unknown = [w for w in wanted if w not in lookup]
    if unknown:
        raise ScLongInputError(
            f"{len(unknown)} {what} ids are not in the file (e.g. {unknown[:10]})."
        )
    return np.array([lookup[w] for w in wanted], dtype=np.int64)


def read_gctx(
    path: str | os.PathLike,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    row_metadata: pd.DataFrame | None = None,
    col_metadata: pd.DataFrame | None = None,
) -> ad.AnnData:
    """Read a GCTx file (L1000's HDF5 matrices, e.g. GSE92742 / GSE70138 Level 5) with h5py.

    GCTx layout: ``/0/DATA/0/matrix`` stored as ``(n_cols, n_rows)`` (columns = signatures,
    rows = genes), ``/0/META/ROW/id`` and ``/0/META/COL/id`` the ids, other datasets under
    ``/0/META/ROW`` and ``/0/META/COL`` the metadata fields (``-666`` = missing, read as NaN).
    No cmapPy needed; only the requested rows and columns are read.

    Parameters
    ----------
    path
        The ``.gctx`` file.
    rows, cols
        Gene (row) and signature (column) ids to read, in this order (``None``: all). For the
        978 landmark genes of the Broad files, pass their Entrez ids (``pr_gene_id`` where
        ``pr_is_lm == 1`` in ``gene_info.txt``).
    row_metadata, col_metadata
        Tables to join on the ids (e.g. ``gene_info.txt`` indexed by ``pr_gene_id``,
        ``sig_info.txt`` indexed by ``sig_id``); their index is compared as text.

    Returns
    -------
    Signatures x genes AnnData (``X`` float32), with the file's metadata (and the joined
    tables) in ``obs`` and ``var`` and ``uns["sclong_signatures"]``.

    Raises
    ------
    ScLongInputError
        Not a GCTx file (no ``/0/DATA/0/matrix``), a matrix whose shape differs from the id
        lists, or unknown ids.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not an HDF5 file (a folder, empty, truncated, damaged).
    """
    rows, cols = _ids(rows, "rows"), _ids(cols, "cols")
    with reading_file(path, "GCTx file", _GCTX_HINT) as path:
        return _read_gctx(path, rows, cols, row_metadata, col_metadata)


def _read_gctx(
    path: Path,
    rows: Sequence[str] | None,
    cols: Sequence[str] | None,
    row_metadata: pd.DataFrame | None,
    col_metadata: pd.DataFrame | None,
) -> ad.AnnData:
    """:func:`read_gctx` on an existing file."""
    import h5py

    with h5py.File(path, "r") as f:
        if "0/DATA/0/matrix" not in f or "0/META/ROW/id" not in f or "0/META/COL/id" not in f:
            raise ScLongInputError(
                f"{path.name} is not a GCTx file: it needs /0/DATA/0/matrix, /0/META/ROW/id and "
                "/0/META/COL/id."
            )
        matrix = f["0/DATA/0/matrix"]
        row_meta = _gctx_meta(f["0/META/ROW"], len(f["0/META/ROW/id"]))
        col_meta = _gctx_meta(f["0/META/COL"], len(f["0/META/COL/id"]))
        if matrix.shape != (len(col_meta), len(row_meta)):
            raise ScLongInputError(
                f"{path.name}: the matrix is {matrix.shape}, but there are {len(col_meta)} column "
                f"and {len(row_meta)} row ids (GCTx stores (n_cols, n_rows))."
            )
        r = _positions(row_meta.index, rows, "row")
        c = _positions(col_meta.index, cols, "column")
        # h5py reads increasing indices, one fancy axis at a time: read sorted blocks of
        # signatures (bounded memory), keep the requested genes, then restore the order
        r_sorted, r_back = np.unique(r, return_inverse=True)
        c_sorted, c_back = np.unique(c, return_inverse=True)
        all_rows = len(r_sorted) == matrix.shape[1]
        blocks = []
        for start in range(0, len(c_sorted), GCTX_BLOCK):
            chunk = c_sorted[start : start + GCTX_BLOCK]
            block = np.asarray(matrix[chunk, :], dtype=np.float32)
            blocks.append(block if all_rows else block[:, r_sorted])
        values = np.vstack(blocks) if blocks else np.zeros((0, len(r_sorted)), np.float32)
        values = values[c_back][:, r_back]
    var = row_meta.iloc[r].copy()
    obs = col_meta.iloc[c].copy()
    for frame, extra in ((var, row_metadata), (obs, col_metadata)):
        if extra is not None:
            extra = extra.set_axis(extra.index.astype(str), axis=0)
            extra = extra.loc[~extra.index.duplicated()]
            new = [col for col in extra.columns if col not in frame.columns]
            frame[new] = extra.reindex(frame.index)[new].to_numpy()
    adata = ad.AnnData(X=values, obs=obs, var=var)
    adata.uns[SIGNATURES_KEY] = {
        "kind": "L1000 GCTx values (Level 5: z-score signatures)",
        "source": str(path),
    }
    return adata


def _deepce_folder(path) -> Path:
    return Path(path) if path is not None else shared_data_dir() / "drug" / "deepce"


def read_deepce_gene_vectors(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """DeepCE's gene vectors (``gene_vector.csv``): one row per landmark gene, no header.

    DeepCE represents each of the 978 L1000 landmark genes by a 128-d vector (first column: the
    gene symbol). Use it as the baseline gene representation of
    :class:`~sclong_scverse.SCLONGChemPerturbation` (``gene_features=``), next to scLong's.

    Parameters
    ----------
    path
        The file, or the folder holding it (default: ``<shared data>/drug/deepce``; a ``.gz``
        copy is read too).

    Returns
    -------
    DataFrame ``(n_genes, dim)`` indexed by gene symbol, in the file's order.

    Raises
    ------
    ScLongInputError
        Duplicated genes or non-numeric values.
    ScLongFileNotFound
        No file at ``path`` (nor a ``.gz`` copy).
    ScLongFileError
        Not a CSV file (empty, not text, damaged).
    """
    path = _deepce_file(path, "gene_vector.csv", "DeepCE gene-vector file", _VECTORS_HINT)
    with reading(path, "DeepCE gene-vector file", _VECTORS_HINT):
        return _gene_vectors(path)


def _deepce_file(path: str | os.PathLike | None, name: str, what: str, hint: str) -> Path:
    """A DeepCE file given as itself or its folder (default: the shared one); ``.gz`` too."""
    path = as_path(path, what) if path is not None else _deepce_folder(None)
    if path.is_dir():
        path = path / name
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    if not path.exists():
        raise ScLongFileNotFound(f"{path} not found; {hint}.")
    return existing_file(path, what, hint)


def _gene_vectors(path: Path) -> pd.DataFrame:
    """:func:`read_deepce_gene_vectors` on an existing file."""
    table = pd.read_csv(path, header=None, index_col=0)
    table.index = table.index.astype(str)
    table.index.name = "gene"
    if table.index.has_duplicates:
        raise ScLongInputError(
            f"{path.name} lists genes twice: {list(table.index[table.index.duplicated()][:5])}."
        )
    try:
        table = table.astype(np.float32)
    except ValueError as error:
        raise ScLongInputError(f"{path.name}: gene vectors must be numbers ({error}).") from None
    table.columns = [f"deepce_{i}" for i in range(table.shape[1])]
    return table


def deepce_landmark_genes(path: str | os.PathLike | None = None) -> list[str]:
    """The 978 L1000 landmark genes in DeepCE's order (the first column of ``gene_vector.csv``).

    Parameters
    ----------
    path
        As :func:`read_deepce_gene_vectors`.

    Returns
    -------
    Gene symbols (DeepCE's output order).
    """
    return list(read_deepce_gene_vectors(path).index)


def read_deepce_smiles(path: str | os.PathLike | None = None) -> pd.Series:
    """DeepCE's ``drugs_smiles.csv`` (no header: ``pert_id,SMILES``) as a Series.

    Parameters
    ----------
    path
        The file, or its folder (default: ``<shared data>/drug/deepce``).

    Returns
    -------
    ``pert_id`` -> SMILES.

    Raises
    ------
    ScLongInputError
        Duplicated ids, or rows without two fields.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        Not a CSV file (empty, not text, damaged).
    """
    path = _deepce_file(path, "drugs_smiles.csv", "DeepCE SMILES file", _SMILES_HINT)
    with reading(path, "DeepCE SMILES file", _SMILES_HINT):
        return _smiles(path)


def _smiles(path: Path) -> pd.Series:
    """:func:`read_deepce_smiles` on an existing file."""
    table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if table.shape[1] != 2:
        raise ScLongInputError(
            f"{path.name} must have two columns (pert_id, SMILES), not {table.shape[1]}."
        )
    series = pd.Series(table[1].to_numpy(), index=pd.Index(table[0].to_numpy(), name="pert_id"))
    if series.index.has_duplicates:
        raise ScLongInputError(
            f"{path.name} lists drugs twice: {list(series.index[series.index.duplicated()][:5])}."
        )
    return series.rename("smiles")
