"""DeepCDR-style drug response network: drug graph branch + cell-line branch (pure torch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._head import HeadModuleMixin


class DrugGraphEncoder(nn.Module):
    """Graph convolutions over drugs' atoms (DeepCDR's drug branch), pooled into one vector each.

    Each layer is ``H' = Dropout(LayerNorm(ReLU(A H W + b)))`` with ``A`` the normalised
    adjacency ``D^-1/2 (A + I) D^-1/2`` of each molecule (DeepCDR's input, see
    :meth:`sclong_scverse.chem.DeepCDRGraph.padded`); the last layer's atom vectors are averaged
    over each molecule's atoms. The graphs are packed (all atoms of all drugs stacked, the
    adjacency as weighted edges), which computes the same as DeepCDR's 100-atom padded matrices
    on the molecule's atoms at a fraction of the cost. DeepCDR: layers of 256, 256, 256 then 100
    units, BatchNorm and average pooling over all 100 rows (padding included); here LayerNorm
    (per atom) and pooling over the real atoms only.

    Parameters
    ----------
    atom_dim
        Atom features (DeepCDR: 75).
    dims
        Output width of each graph convolution.
    dropout
        Dropout after each layer (DeepCDR: 0.1).
    """

    def __init__(
        self, atom_dim: int = 75, dims: Sequence[int] = (256, 256, 256, 100), dropout: float = 0.1
    ):
        super().__init__()
        sizes = [int(atom_dim), *[int(d) for d in dims]]
        self.linears = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.dropout = nn.Dropout(float(dropout))
        self.out_dim = sizes[-1]

    def forward(
        self, atom_features: torch.Tensor, adjacency: torch.Tensor, pooling: torch.Tensor
    ) -> torch.Tensor:
        """Drug vectors ``(n_drugs, out_dim)`` from packed graphs (:func:`pack_graphs`).

        Parameters
        ----------
        atom_features
            ``(n_atoms, atom_dim)``: the atoms of all drugs, stacked.
        adjacency
            ``(n_atoms, n_atoms)`` sparse block-diagonal normalised adjacency.
        pooling
            ``(n_drugs, n_atoms)`` sparse: ``1 / n_atoms(drug)`` on the drug's atoms.
        """
        h = atom_features
        for linear, norm in zip(self.linears, self.norms, strict=True):
            h = self.dropout(norm(torch.relu(torch.sparse.mm(adjacency, linear(h)))))
        return torch.sparse.mm(pooling, h)


def pack_graphs(
    features: Sequence, adjacency: Sequence
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack per-drug graphs into the inputs of :class:`DrugGraphEncoder`.

    Parameters
    ----------
    features
        Per drug, ``(n_atoms, atom_dim)`` atom features.
    adjacency
        Per drug, ``(n_atoms, n_atoms)`` normalised adjacency (self loops included).

    Returns
    -------
    ``atom_features (n_atoms, atom_dim)``, ``adjacency`` (sparse COO, block diagonal),
    ``pooling`` (sparse COO ``(n_drugs, n_atoms)``, rows average a drug's atoms).
    """
    atoms, rows, columns, weights, owner = [], [], [], [], []
    offset = 0
    for x, a in zip(features, adjacency, strict=True):
        a = torch.as_tensor(a, dtype=torch.float32)
        row, column = torch.nonzero(a, as_tuple=True)
        atoms.append(torch.as_tensor(x, dtype=torch.float32))
        rows.append(row + offset)
        columns.append(column + offset)
        weights.append(a[row, column])
        owner.append(torch.arange(offset, offset + a.shape[0]))
        offset += a.shape[0]
    n_atoms = offset
    matrix = torch.sparse_coo_tensor(
        torch.stack([torch.cat(rows), torch.cat(columns)]), torch.cat(weights), (n_atoms, n_atoms)
    ).coalesce()
    drug = torch.cat([torch.full((len(o),), i) for i, o in enumerate(owner)])
    share = torch.cat([torch.full((len(o),), 1.0 / max(len(o), 1)) for o in owner])
    pooling = torch.sparse_coo_tensor(
        torch.stack([drug, torch.cat(owner)]), share, (len(owner), n_atoms)
    ).coalesce()
    return torch.cat(atoms), matrix, pooling


def mlp(sizes: Sequence[int], dropout: float, norm: bool) -> nn.Sequential:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``, each Linear, ReLU, [LayerNorm,] Dropout."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if norm:
            layers.append(nn.LayerNorm(b))
        layers.append(nn.Dropout(float(dropout)))
    return nn.Sequential(*layers)


class DrugGraphHeadMixin:
    """A head whose drugs go through a :class:`DrugGraphEncoder` (``self.drug_encoder``).

    Its :meth:`forward` reads ``drug_vectors`` ``(n_drugs, d)`` (from :meth:`drug_embedding`)
    and ``cell_features`` ``(n_cell_lines, n_cell_features)``, and rows of the two tables.
    """

    def _build_encoders(
        self,
        n_cell_features: int,
        atom_dim: int,
        graph_dims: Sequence[int],
        cell_dims: Sequence[int],
        dropout: float,
    ) -> int:
        """Build the drug branch ``drug_encoder`` and the cell-line MLP ``cell_encoder``.

        Returns the width of the cell-line vector.
        """
        self.drug_encoder = DrugGraphEncoder(atom_dim, graph_dims, dropout)
        sizes = [int(n_cell_features), *[int(d) for d in cell_dims]]
        self.cell_encoder = mlp(sizes, dropout, norm=True)
        return sizes[-1]

    def drug_embedding(
        self, atom_features: torch.Tensor, adjacency: torch.Tensor, pooling: torch.Tensor
    ) -> torch.Tensor:
        """Drug vectors ``(n_drugs, graph_dims[-1])`` of packed graphs (:func:`pack_graphs`)."""
        return self.drug_encoder(atom_features, adjacency, pooling)

    def context_drugs(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The drugs' packed graphs set as context and their vectors (for ``training_loss``).

        Reads the context ``atoms``, ``adjacency``, ``pooling`` (:meth:`set_context`).

        Returns
        -------
        The graphs ``(atoms, adjacency, pooling)`` and the drug vectors (:meth:`drug_embedding`).
        """
        graphs = tuple(self.context(name) for name in ("atoms", "adjacency", "pooling"))
        return graphs, self.drug_embedding(*graphs)


class DrugResponseModule(DrugGraphHeadMixin, HeadModuleMixin, nn.Module):
    """Regression of ln IC50 from a drug graph and a cell-line feature vector (DeepCDR-style).

    Drug branch: :class:`DrugGraphEncoder`. Cell-line branch: an MLP on the cell line's feature
    vector (scLong's pooled representation, or any per-cell-line table, standardised by the
    model class). Fusion: the two vectors concatenated, then an MLP to one value (DeepCDR:
    1-d convolutions over the concatenation; here dense layers), plus a constant offset (the
    training mean of ln IC50).

    Parameters
    ----------
    n_cell_features
        Width of the cell-line feature vector.
    atom_dim
        Atom features of the drug graphs.
    graph_dims
        Widths of the graph convolutions (the last one is the drug vector's).
    cell_dims
        Widths of the cell-line MLP (the last one is the cell-line vector's; DeepCDR: 256, 100).
    fusion_dims
        Hidden widths of the fusion MLP.
    dropout
        Dropout of all branches.
    offset
        Added to the output (set to the training mean before training).
    n_drugs
        Drugs of the model (the wide part's per-drug term); only with ``residual``.
    residual
        Wide & deep: a linear ("wide") part over the standardised cell-line features, a per-drug
        term and the drug's mean atom features, set by the model class to the ridge probe
        fitted on the training pairs and kept fixed; the deep part (zero-initialised output
        layer) learns its residual. The model starts as the probe and is selected on
        validation, so it does not fall below the linear probe on its own inputs.
    """

    def __init__(
        self,
        n_cell_features: int,
        atom_dim: int = 75,
        graph_dims: Sequence[int] = (256, 256, 256, 100),
        cell_dims: Sequence[int] = (256, 100),
        fusion_dims: Sequence[int] = (300, 100),
        dropout: float = 0.1,
        offset: float = 0.0,
        n_drugs: int = 0,
        residual: bool = False,
    ):
        super().__init__()
        cell_dim = self._build_encoders(n_cell_features, atom_dim, graph_dims, cell_dims, dropout)
        sizes = [self.drug_encoder.out_dim + cell_dim, *[int(d) for d in fusion_dims]]
        # one flat Sequential (the state dict's keys: fusion.0 ... fusion.N)
        fusion = [*mlp(sizes, dropout, norm=False), nn.Linear(sizes[-1], 1)]
        self.fusion = nn.Sequential(*fusion)
        self.register_buffer("offset", torch.tensor(float(offset)))
        self.residual = bool(residual)
        if self.residual:
            nn.init.zeros_(fusion[-1].weight)
            nn.init.zeros_(fusion[-1].bias)
            # the wide part: fitted in closed form (set_wide), never by the optimiser
            self.register_buffer("wide_cell", torch.zeros(int(n_cell_features)))
            self.register_buffer("wide_drug", torch.zeros(int(n_drugs)))
            self.register_buffer("wide_atoms", torch.zeros(int(atom_dim)))

    def set_wide(
        self, cell: torch.Tensor, drug: torch.Tensor, atoms: torch.Tensor, intercept: float
    ) -> None:
        """Set the wide part: coefficients of the cell features, per-drug terms, atom means.

        ``intercept`` goes to :attr:`offset`.
        """
        self._set_wide_buffers(wide_cell=cell, wide_drug=drug, wide_atoms=atoms, offset=intercept)

    def wide_drug_terms(
        self, atom_features: torch.Tensor, pooling: torch.Tensor, known: bool = True
    ) -> torch.Tensor:
        """Per drug of a packed batch: its wide term (0 without ``residual``).

        ``known``: the drugs are the model's own, in order (their per-drug terms apply); new
        drugs get only their mean-atom term.
        """
        n = pooling.shape[0]
        if not self.residual:
            return atom_features.new_zeros(n)
        mean_atoms = torch.sparse.mm(pooling, atom_features)
        terms = mean_atoms @ self.wide_atoms
        return terms + self.wide_drug if known else terms

    def forward(
        self,
        drug_vectors: torch.Tensor,
        cell_features: torch.Tensor,
        drug_index: torch.Tensor,
        cell_index: torch.Tensor,
        drug_terms: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted ln IC50 of the pairs ``(drug_index[i], cell_index[i])``.

        Parameters
        ----------
        drug_vectors, cell_features
            The drug and cell-line tables (see :class:`DrugGraphHeadMixin`).
        drug_index, cell_index
            ``(n_pairs,)`` rows of the two tables.
        drug_terms
            ``(n_drugs,)`` wide terms of the drugs (:meth:`wide_drug_terms`; with ``residual``).

        Returns
        -------
        ``(n_pairs,)``.
        """
        cells = self.cell_encoder(cell_features)
        joint = torch.cat([drug_vectors[drug_index], cells[cell_index]], dim=1)
        out = self.fusion(joint).squeeze(-1) + self.offset
        if self.residual:
            out = out + (cell_features @ self.wide_cell)[cell_index]
            if drug_terms is not None:
                out = out + drug_terms[drug_index]
        return out

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error of a batch of pairs (``drug``, ``cell``, ``y``).

        Reads the context ``cells`` (standardised cell-line features) and the drugs
        (:meth:`context_drugs`).
        """
        graphs, vectors = self.context_drugs()
        terms = self.wide_drug_terms(graphs[0], graphs[2])
        prediction = self(vectors, self.context("cells"), batch["drug"], batch["cell"], terms)
        return torch.mean((prediction - batch["y"]) ** 2)
