"""Tools: scanpy-style functions that compute with scLong and write results into AnnData."""

from ._grn_evaluation import evaluate_grn, expected_random_aupr, read_ground_truth

__all__ = ["evaluate_grn", "expected_random_aupr", "read_ground_truth"]
