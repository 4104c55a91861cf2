"""sclong-scverse: the scLong single-cell foundation model for scanpy and scvi-tools users."""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("sclong-scverse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "SCLONG",
    "ScLongConfig",
    "chem",
    "data",
    "datasets",
    "errors",
    "genes",
    "go",
    "io",
    "model",
    "module",
    "nn",
    "pl",
    "pp",
    "tl",
    "settings",
    "SCLONGClassifier",
    "SCLONGPerturbation",
    "SCLONGDrugResponse",
    "SCLONGChemPerturbation",
    "SCLONGDrugCombination",
]
_ATTRIBUTES = {"SCLONG": "model", "ScLongConfig": "nn", "settings": "_settings"}
_SUBMODULES = {name for name in __all__ if name.islower()} - set(_ATTRIBUTES)  # subpackages
_ATTRIBUTES["SCLONGClassifier"] = "model"  # cell-type annotation (fine-tuning)
_ATTRIBUTES["SCLONGPerturbation"] = "model"  # genetic perturbation (GEARS-style head)
_ATTRIBUTES["SCLONGDrugResponse"] = "model"  # drug response (DeepCDR-style head)
_ATTRIBUTES["SCLONGChemPerturbation"] = "model"  # chemical perturbation (DeepCE-style head)
_ATTRIBUTES["SCLONGDrugCombination"] = "model"  # drug combination (DeepDDS-style head)

if TYPE_CHECKING:  # static analysers and IDEs see the eager names
    from . import chem, data, datasets, errors, genes, go, io, model, module, nn, pl, pp, tl
    from ._settings import settings
    from .model import (
        SCLONG,
        SCLONGChemPerturbation,
        SCLONGClassifier,
        SCLONGDrugCombination,
        SCLONGDrugResponse,
        SCLONGPerturbation,
    )
    from .nn import ScLongConfig


def __getattr__(name: str):
    """Import submodules and the main classes on first use (PEP 562).

    ``import sclong_scverse`` and the ``sclong`` command line then start without importing
    torch or scvi-tools (``sclong --help`` answers in a fraction of a second).
    """
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_ATTRIBUTES))
