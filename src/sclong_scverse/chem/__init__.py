"""Drug features from SMILES (RDKit, the optional ``[chem]`` extra): DeepCDR and DeepCE graphs."""

from ._featurize import (
    DEEPCDR_ATOM_DIM,
    DEEPCDR_MAX_ATOMS,
    DEEPCE_ATOM_DIM,
    DEEPCE_BOND_DIM,
    DeepCDRGraph,
    DrugFeatureError,
    deepcdr_graph,
    deepce_graph,
    featurize_drugs,
    read_deepcdr_graph_features,
)

__all__ = [
    "DEEPCDR_ATOM_DIM",
    "DEEPCDR_MAX_ATOMS",
    "DEEPCE_ATOM_DIM",
    "DEEPCE_BOND_DIM",
    "DeepCDRGraph",
    "DrugFeatureError",
    "deepcdr_graph",
    "deepce_graph",
    "featurize_drugs",
    "read_deepcdr_graph_features",
]
