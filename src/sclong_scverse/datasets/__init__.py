"""Loaders for public single-cell data sets used in tests, tutorials and benchmarks."""

from ._cellbench import CELLBENCH_BATCHES, cellbench, shared_data_dir

__all__ = ["CELLBENCH_BATCHES", "cellbench", "shared_data_dir"]
