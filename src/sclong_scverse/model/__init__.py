"""scvi-tools model class of scLong."""

from ._sclong import SCLONG

__all__ = ["SCLONG"]
