"""scvi-tools model class of scLong."""

from ._saving import ModelIntegrityError
from ._sclong import SCLONG

__all__ = ["SCLONG", "ModelIntegrityError"]
