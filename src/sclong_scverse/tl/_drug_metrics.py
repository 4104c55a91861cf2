"""Deprecated location of the drug metrics: they live in :mod:`sclong_scverse.metrics`.

A re-export kept while code still imports ``tl._drug_metrics``; import from
``sclong_scverse.metrics`` (or the public names from ``sclong_scverse.tl``) instead.
"""

from ..metrics._drugs import PRECISION_KS, _row_correlations, signature_metrics, synergy_metrics

__all__ = ["PRECISION_KS", "_row_correlations", "signature_metrics", "synergy_metrics"]
