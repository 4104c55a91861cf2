"""Plots: training history, GRN edges, embeddings and benchmark results (matplotlib, scanpy)."""

from ._annotate import confusion_matrix
from ._benchmark import benchmark, grn_benchmark
from ._perturbation import perturbation, perturbation_benchmark
from ._plots import embedding, grn, training_history

__all__ = [
    "benchmark",
    "embedding",
    "grn",
    "grn_benchmark",
    "training_history",
    "confusion_matrix",
    "perturbation",
    "perturbation_benchmark",
]
