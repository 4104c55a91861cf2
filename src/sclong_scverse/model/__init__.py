"""scvi-tools model class of scLong."""

from ._chem_perturbation import CHEM_BASELINES, SCLONGChemPerturbation, sclong_gene_features
from ._classifier import BackboneMismatchError, SCLONGClassifier, prepare_query_anndata
from ._drug_combination import (
    COMBINATION_BASELINES,
    COMBINATION_SPLITS,
    SCLONGDrugCombination,
    split_combinations,
)
from ._drug_response import SCLONGDrugResponse
from ._perturbation import SCLONGPerturbation
from ._pretrained import (
    PretrainedRelease,
    pretrained_models,
    register_pretrained,
    resolve_pretrained,
)
from ._saving import ModelIntegrityError
from ._sclong import SCLONG

__all__ = [
    "SCLONG",
    "ModelIntegrityError",
    "PretrainedRelease",
    "pretrained_models",
    "register_pretrained",
    "resolve_pretrained",
    "BackboneMismatchError",
    "SCLONGClassifier",
    "prepare_query_anndata",
    "SCLONGPerturbation",
    "SCLONGDrugResponse",
    "SCLONGChemPerturbation",
    "sclong_gene_features",
    "CHEM_BASELINES",
    "SCLONGDrugCombination",
    "split_combinations",
    "COMBINATION_BASELINES",
    "COMBINATION_SPLITS",
]
