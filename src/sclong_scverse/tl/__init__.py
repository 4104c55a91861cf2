"""Tools: scanpy-style functions that compute with scLong and write results into AnnData."""

from ..metrics import PRECISION_KS, signature_metrics, synergy_metrics
from ._annotate import annotate
from ._benchmark import benchmark_integration
from ._benchmark_grn import benchmark_grn
from ._decoupler import tf_activities, tf_network
from ._drugs import cell_line_embedding
from ._embed import embed, gene_embeddings
from ._grn import cosine_similarity_graph, deepsem_seed, grn, grn_edges
from ._grn_baselines import coexpression_grn, genie3_grn
from ._grn_evaluation import evaluate_grn, expected_random_aupr, read_ground_truth
from ._in_silico import benjamini_hochberg, in_silico_perturb, in_silico_vs_screen
from ._perturbation import PERTURBATION_METRICS, benchmark_perturbation, perturbation_metrics

__all__ = [
    "benchmark_grn",
    "benchmark_integration",
    "coexpression_grn",
    "cosine_similarity_graph",
    "deepsem_seed",
    "embed",
    "evaluate_grn",
    "expected_random_aupr",
    "gene_embeddings",
    "genie3_grn",
    "grn",
    "grn_edges",
    "read_ground_truth",
    "tf_activities",
    "tf_network",
    "annotate",
    "PERTURBATION_METRICS",
    "benchmark_perturbation",
    "perturbation_metrics",
    "benjamini_hochberg",
    "cell_line_embedding",
    "PRECISION_KS",
    "signature_metrics",
    "synergy_metrics",
    "in_silico_perturb",
    "in_silico_vs_screen",
]
