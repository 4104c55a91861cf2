"""DeepDDS-style drug combination network: one shared drug graph network + a cell-line vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._drug_response import DrugGraphHeadMixin, mlp
from ._head import HeadModuleMixin


class DrugCombinationModule(DrugGraphHeadMixin, HeadModuleMixin, nn.Module):
    """Synergy logit of (drug 1, drug 2, cell line) (DeepDDS-style, graph convolutions).

    Both drugs go through the same :class:`~sclong_scverse.module.DrugGraphEncoder` (one set of
    weights); the cell line's feature vector (scLong's pooled representation, an expression
    profile, or a one-hot id) through an MLP. With ``symmetric=True`` the two drug vectors are
    combined as ``[d1 + d2 ; d1 * d2]``, so that the prediction does not depend on which drug is
    listed first (DeepDDS concatenates ``[d1 ; d2]``, order-dependent; ``symmetric=False``).
    Fusion: an MLP to one logit (DeepDDS: two-class softmax, the same model).

    Parameters
    ----------
    n_cell_features
        Width of the cell-line feature vector.
    atom_dim
        Atom features of the drug graphs (DeepCDR's featuriser: 75).
    graph_dims
        Widths of the graph convolutions (the last is the drug vector's).
    cell_dims
        Widths of the cell-line MLP (DeepDDS: 2048, 512, 256, 128 on 954 genes).
    fusion_dims
        Hidden widths of the fusion MLP (DeepDDS: 1024, 512, 128).
    dropout
        Dropout of all branches (DeepDDS: 0.2).
    symmetric
        Order-invariant combination of the two drugs.
    """

    def __init__(
        self,
        n_cell_features: int,
        atom_dim: int = 75,
        graph_dims: Sequence[int] = (128, 128, 128),
        cell_dims: Sequence[int] = (512, 128),
        fusion_dims: Sequence[int] = (512, 128),
        dropout: float = 0.2,
        symmetric: bool = True,
    ):
        super().__init__()
        cell_dim = self._build_encoders(n_cell_features, atom_dim, graph_dims, cell_dims, dropout)
        self.symmetric = bool(symmetric)
        sizes = [2 * self.drug_encoder.out_dim + cell_dim, *[int(d) for d in fusion_dims]]
        self.fusion = nn.Sequential(mlp(sizes, dropout, norm=False), nn.Linear(sizes[-1], 1))

    def forward(
        self,
        drug_vectors: torch.Tensor,
        cell_features: torch.Tensor,
        drug1_index: torch.Tensor,
        drug2_index: torch.Tensor,
        cell_index: torch.Tensor,
    ) -> torch.Tensor:
        """Synergy logits ``(n_triples,)``.

        Parameters
        ----------
        drug_vectors, cell_features
            The drug and cell-line tables (see :class:`DrugGraphHeadMixin`).
        drug1_index, drug2_index, cell_index
            ``(n_triples,)`` rows of the two tables.
        """
        d1, d2 = drug_vectors[drug1_index], drug_vectors[drug2_index]
        pair = torch.cat([d1 + d2, d1 * d2] if self.symmetric else [d1, d2], dim=1)
        cells = self.cell_encoder(cell_features)[cell_index]
        return self.fusion(torch.cat([pair, cells], dim=1)).squeeze(-1)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of a batch of triples (``drug1``, ``drug2``, ``cell``, ``y``).

        Reads the context ``cells`` (standardised cell-line features) and the drugs
        (:meth:`context_drugs`).
        """
        _, vectors = self.context_drugs()
        logits = self(vectors, self.context("cells"), batch["drug1"], batch["drug2"], batch["cell"])
        return nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])
