"""Tools: scanpy-style functions that compute with scLong and write results into AnnData."""

from ._embed import embed, gene_embeddings
from ._grn import cosine_similarity_graph, grn, grn_edges
from ._grn_evaluation import evaluate_grn, expected_random_aupr, read_ground_truth

__all__ = [
    "cosine_similarity_graph",
    "embed",
    "evaluate_grn",
    "expected_random_aupr",
    "gene_embeddings",
    "grn",
    "grn_edges",
    "read_ground_truth",
]
