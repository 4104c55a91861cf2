"""scvi-tools module of scLong: masking and the masked-expression loss around the network."""

from ._module import ScLongModule, choose_masked_positions
from ._training_plan import ScLongTrainingPlan

__all__ = ["ScLongModule", "ScLongTrainingPlan", "choose_masked_positions"]
