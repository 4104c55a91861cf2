"""Metrics the models and tools share, below both (models never import ``tl``).

Users reach them as ``scl.tl.signature_metrics``, ``scl.tl.synergy_metrics`` and
``scl.tl.PRECISION_KS`` (:mod:`sclong_scverse.tl` re-exports them).
"""

from ._drugs import PRECISION_KS, signature_metrics, synergy_metrics

__all__ = ["PRECISION_KS", "signature_metrics", "synergy_metrics"]
