"""Loaders for public single-cell data sets used in tests, tutorials and benchmarks."""

from ._cellbench import CELLBENCH_BATCHES, cellbench, shared_data_dir
from ._pbmc import pbmc68k_counts

__all__ = ["CELLBENCH_BATCHES", "cellbench", "pbmc68k_counts", "shared_data_dir"]
