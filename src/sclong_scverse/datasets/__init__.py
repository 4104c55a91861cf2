"""Loaders for public single-cell data sets used in tests, tutorials and benchmarks."""

from ._cellbench import CELLBENCH_BATCHES, CELLBENCH_SHA256, cellbench, shared_data_dir
from ._combinations import DEEPDDS_COLUMNS, read_deepdds_combinations, read_deepdds_drugs
from ._download import DatasetDownloadError, data_cache_dir, fetch_file
from ._drugs import CELLBENCH_CCLE_NAMES, depmap_ids, gdsc_deepcdr
from ._l1000 import (
    DEEPCE_COLUMNS,
    check_not_signatures,
    deepce_landmark_genes,
    parse_dose,
    read_deepce_gene_vectors,
    read_deepce_signatures,
    read_deepce_smiles,
    read_gctx,
)
from ._papalexi import PAPALEXI_NON_TARGETING, papalexi2021
from ._pbmc import pbmc68k_counts
from ._perturb_io import read_gears, read_scperturb

__all__ = [
    "CELLBENCH_BATCHES",
    "CELLBENCH_SHA256",
    "DatasetDownloadError",
    "data_cache_dir",
    "fetch_file",
    "CELLBENCH_CCLE_NAMES",
    "PAPALEXI_NON_TARGETING",
    "cellbench",
    "depmap_ids",
    "gdsc_deepcdr",
    "papalexi2021",
    "pbmc68k_counts",
    "read_gears",
    "read_scperturb",
    "shared_data_dir",
    "DEEPCE_COLUMNS",
    "check_not_signatures",
    "deepce_landmark_genes",
    "parse_dose",
    "read_deepce_gene_vectors",
    "read_deepce_signatures",
    "read_deepce_smiles",
    "read_gctx",
    "DEEPDDS_COLUMNS",
    "read_deepdds_combinations",
    "read_deepdds_drugs",
]
