"""scvi-tools module of scLong: masking and the masked-expression loss around the network."""

from ._chem_perturbation import (
    ChemPerturbationModule,
    GeneAtomAttentionLayer,
    NeuralFingerprint,
    pack_bond_graphs,
)
from ._classifier import (
    ScLongClassifierModule,
    backbone_sha256,
    copy_network,
    unfrozen_prefixes,
)
from ._deepsem import (
    DeepSEM,
    DeepSEMConfig,
    GramAccumulator,
    default_adjacency,
    gram_seed,
    train_deepsem,
)
from ._drug_combination import DrugCombinationModule
from ._drug_response import DrugGraphEncoder, DrugResponseModule, pack_graphs
from ._head import HeadModuleMixin, HeadTrainingPlan, RestoreBestWeights
from ._module import ScLongModule, choose_masked_positions
from ._perturbation import PerturbationModule
from ._training_plan import ScLongPretrainingPlan, ScLongTrainingPlan

__all__ = [
    "DeepSEM",
    "DeepSEMConfig",
    "GramAccumulator",
    "default_adjacency",
    "gram_seed",
    "train_deepsem",
    "DrugGraphEncoder",
    "DrugResponseModule",
    "pack_graphs",
    "ChemPerturbationModule",
    "GeneAtomAttentionLayer",
    "NeuralFingerprint",
    "pack_bond_graphs",
    "DrugCombinationModule",
    "PerturbationModule",
    "HeadModuleMixin",
    "HeadTrainingPlan",
    "RestoreBestWeights",
    "ScLongModule",
    "ScLongPretrainingPlan",
    "ScLongTrainingPlan",
    "choose_masked_positions",
    "ScLongClassifierModule",
    "backbone_sha256",
    "copy_network",
    "unfrozen_prefixes",
]
