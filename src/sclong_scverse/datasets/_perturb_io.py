from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import anndata as ad
import numpy as np

from .._files import PathTypeError, reading, reading_file, shown
from ..pp._perturbation import CONTROL, condition_genes, perturbation_conditions
from ..validation import ScLongInputError

_H5AD_HINT = "give an .h5ad file written by anndata (or the AnnData itself)"


@contextlib.contextmanager
def _read_h5ad(path: str | os.PathLike | ad.AnnData, what: str) -> Iterator[ad.AnnData]:
    """The AnnData to work on: read from ``path``, or a copy of the AnnData given.

    Inside, every failure (of reading the file or of the work on what it holds) names the file.
    """
    if isinstance(path, ad.AnnData):
        yield path.copy()
        return
    if not isinstance(path, str | os.PathLike):
        raise PathTypeError(
            f"the {what} must be given as a path (str or pathlib.Path) or an AnnData, not "
            f"{type(path).__name__} {shown(path)}; pass the path of the {what}."
        )
    with reading_file(path, what, _H5AD_HINT) as path:
        # anndata raises errors of its own for damaged files (IORegistryError, ...)
        with reading(path, what, _H5AD_HINT, also=(Exception,)):
            adata = ad.read_h5ad(path)
        yield adata


def read_gears(path: str | os.PathLike | ad.AnnData) -> ad.AnnData:
    """Read a GEARS ``perturb_processed.h5ad`` (e.g. Norman 2019 as GEARS ships it).

    GEARS files hold log-normalised values in ``X``, ``obs["condition"]`` (``A+ctrl``, ``A+B``,
    ``ctrl``), ``var["gene_name"]`` and ``uns["rank_genes_groups_cov_all"]`` keyed by
    ``{cell_type}_{condition}_{dose}``. Returns an AnnData with gene names as ``var_names``,
    ``obs["condition"]`` in the canonical order of this package (genes of a double sorted) and
    ``uns["rank_genes_groups_cov_all"]`` keyed by condition (the first cell type's list when
    there are several), ready for :func:`~sclong_scverse.pp.perturbation_split` and
    :class:`~sclong_scverse.model.SCLONGPerturbation`. ``uns["top_expressed_genes"]`` is
    computed when absent.

    Parameters
    ----------
    path
        The ``.h5ad`` file (or an AnnData already read).

    Returns
    -------
    A new AnnData.

    Raises
    ------
    ScLongInputError
        No ``obs["condition"]`` or no ``ctrl`` cells.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        ``path`` is not an h5ad file (empty, truncated, damaged, a folder, another format).
    """
    with _read_h5ad(path, "GEARS .h5ad file") as adata:
        return _gears(adata)


def _gears(adata: ad.AnnData) -> ad.AnnData:
    """:func:`read_gears` on an AnnData (modified in place and returned)."""
    if "condition" not in adata.obs.columns:
        raise ScLongInputError(
            "Not a GEARS file: no obs['condition'] (GEARS labels A+ctrl, A+B, ctrl)."
        )
    lookup: dict[str, str] = {}
    if "gene_name" in adata.var.columns:
        lookup = dict(
            zip(adata.var_names.astype(str), adata.var["gene_name"].astype(str), strict=True)
        )
        adata.var_names = adata.var["gene_name"].astype(str).to_numpy()
        adata.var_names_make_unique()
    given = adata.uns.get("rank_genes_groups_cov_all")
    adata.obs["gears_condition"] = adata.obs["condition"].astype(str)
    perturbation_conditions(adata, "gears_condition", control=CONTROL, sep="+")
    if given is not None:
        ranked: dict[str, np.ndarray] = {}
        for key, genes in dict(given).items():
            condition = _condition_of_key(str(key))
            canonical = "+".join(condition_genes(condition)) if condition else ""
            label = f"{canonical}+{CONTROL}" if canonical and "+" not in canonical else canonical
            if label and label not in ranked:
                names = np.asarray(genes).astype(str)
                # GEARS stores the var index (often Ensembl ids) there: map to gene names
                names = np.array([lookup.get(n, n) for n in names])
                ranked[label] = names
        adata.uns["rank_genes_groups_cov_all"] = {
            **adata.uns["rank_genes_groups_cov_all"],
            **ranked,
        }
    return adata


def _condition_of_key(key: str) -> str:
    """``"K562_A+B_1+1"`` -> ``"A+B"`` (GEARS's ``celltype_condition_dose`` keys)."""
    match = re.match(r"^[^_]*_(.+)_[0-9.+]+$", key)
    return match.group(1) if match else key


def read_scperturb(
    path: str | os.PathLike | ad.AnnData,
    perturbation_key: str = "perturbation",
    control: str | None = None,
) -> ad.AnnData:
    """Read an scPerturb h5ad (raw counts in ``X``, ``obs["perturbation"]``, ``"control"``).

    scPerturb (and pertpy's loaders, which serve scPerturb files) label cells in
    ``obs["perturbation"]`` with the target gene(s) joined by ``_`` and ``"control"`` for
    controls. Adds GEARS labels (``obs["condition"]``), DE genes and the most expressed genes
    (:func:`~sclong_scverse.pp.perturbation_conditions`).

    Parameters
    ----------
    path
        The ``.h5ad`` file (or an AnnData already read).
    perturbation_key
        ``obs`` column of the labels.
    control
        The control label (``None``: any known spelling, e.g. ``control``, ``non-targeting``).

    Returns
    -------
    A new AnnData.

    Raises
    ------
    ScLongInputError
        No ``obs[perturbation_key]``, or no control cells.
    ScLongFileNotFound
        No file at ``path``.
    ScLongFileError
        ``path`` is not an h5ad file (empty, truncated, damaged, a folder, another format).
    """
    with _read_h5ad(path, "scPerturb .h5ad file") as adata:
        perturbation_conditions(adata, perturbation_key, control=control)
        return adata
