"""Plots: training history, GRN edges, embeddings and benchmark results (matplotlib, scanpy)."""

from ._benchmark import benchmark, grn_benchmark
from ._plots import embedding, grn, training_history

__all__ = ["benchmark", "embedding", "grn", "grn_benchmark", "training_history"]
