"""sclong-scverse: the scLong single-cell foundation model for scanpy and scvi-tools users."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, genes, go, io, model, module, nn, pl, pp, tl
from .model import SCLONG
from .nn import ScLongConfig

try:
    __version__ = version("sclong-scverse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "SCLONG",
    "ScLongConfig",
    "datasets",
    "genes",
    "go",
    "io",
    "model",
    "module",
    "nn",
    "pl",
    "pp",
    "tl",
]
