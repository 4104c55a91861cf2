"""scvi-tools module of scLong: masking and the masked-expression loss around the network."""

from ._classifier import (
    ScLongClassifierModule,
    backbone_sha256,
    copy_network,
    unfrozen_prefixes,
)
from ._module import ScLongModule, choose_masked_positions
from ._perturbation import PerturbationModule
from ._training_plan import ScLongTrainingPlan

__all__ = [
    "PerturbationModule",
    "ScLongModule",
    "ScLongTrainingPlan",
    "choose_masked_positions",
    "ScLongClassifierModule",
    "backbone_sha256",
    "copy_network",
    "unfrozen_prefixes",
]
