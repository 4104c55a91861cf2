"""Plots: training history, GRN edges and embeddings (matplotlib, scanpy)."""

from ._plots import embedding, grn, training_history

__all__ = ["embedding", "grn", "training_history"]
