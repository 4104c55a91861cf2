"""DeepCE-style chemical perturbation network: drug atoms, attention from genes, 978-gene output.

Pure torch (no AnnData): the model class :class:`~sclong_scverse.SCLONGChemPerturbation` builds
the inputs (packed drug graphs, the gene feature table, cell-line and dose indices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ScLongInputError
from ._head import HeadModuleMixin

#: The packed drug graph tensors (:func:`pack_bond_graphs`), the module's context when training.
GRAPH_KEYS = ("atoms", "edge_index", "bonds", "degree", "owner", "slots")


def pack_bond_graphs(
    atom_features: Sequence, bond_features: Sequence, edge_index: Sequence
) -> dict[str, torch.Tensor]:
    """Pack per-drug graphs with bond features (DeepCE's inputs) into flat tensors.

    Parameters
    ----------
    atom_features
        Per drug, ``(n_atoms, atom_dim)`` (e.g. :func:`sclong_scverse.chem.deepce_graph`'s
        ``atom_features``).
    bond_features
        Per drug, ``(n_bonds, bond_dim)``.
    edge_index
        Per drug, ``(2, n_bonds)``: begin and end atom of each bond (positions in the drug).

    Returns
    -------
    ``atoms (n_atoms, atom_dim)``, ``edge_index (2, 2 n_bonds)`` (both directions, positions in
    the stacked atoms), ``bonds (2 n_bonds, bond_dim)``, ``degree (n_atoms,)``, ``owner
    (n_atoms,)`` (drug of each atom) and ``slots (n_drugs, max_atoms)``: the stacked position of
    each drug's atoms, ``-1`` after its last atom.
    """
    atoms, bonds, sources, targets, owner = [], [], [], [], []
    offset = 0
    sizes = []
    for i, (x, b, e) in enumerate(zip(atom_features, bond_features, edge_index, strict=True)):
        x = torch.as_tensor(x, dtype=torch.float32)
        b = torch.as_tensor(b, dtype=torch.float32)
        e = torch.as_tensor(e, dtype=torch.int64).reshape(2, -1)
        atoms.append(x)
        bonds += [b, b]
        sources += [e[0] + offset, e[1] + offset]
        targets += [e[1] + offset, e[0] + offset]
        owner.append(torch.full((x.shape[0],), i, dtype=torch.int64))
        sizes.append(x.shape[0])
        offset += x.shape[0]
    n_atoms = offset
    source, target = torch.cat(sources), torch.cat(targets)
    degree = torch.zeros(n_atoms, dtype=torch.int64).index_add_(0, target, torch.ones_like(target))
    slots = torch.full((len(sizes), max(sizes) if sizes else 0), -1, dtype=torch.int64)
    start = 0
    for i, size in enumerate(sizes):
        slots[i, :size] = torch.arange(start, start + size)
        start += size
    return {
        "atoms": torch.cat(atoms),
        "edge_index": torch.stack([source, target]),
        "bonds": torch.cat(bonds),
        "degree": degree,
        "owner": torch.cat(owner),
        "slots": slots,
    }


class NeuralFingerprint(nn.Module):
    """Neural graph fingerprint over atoms and bonds (Duvenaud et al. 2015; DeepCE's drug branch).

    Each layer: ``h_i' = LayerNorm(ReLU(W h_i + V_deg(i) sum_j [h_j ; e_ij] + b))`` over the
    neighbours ``j`` of atom ``i`` and the features ``e_ij`` of their bonds, with neighbour
    weights ``V`` specific to the atom's degree (0 to ``max_degree``), as the neural fingerprint.
    The atom's output vector sums a readout of every layer (the input included), each a softmax
    of a linear map (the fingerprint's "smoothed" atom activations). DeepCE: conv sizes 16, 16,
    output 128, BatchNorm; here LayerNorm (per atom).

    Parameters
    ----------
    atom_dim, bond_dim
        Input features (DeepCE: 62 and 6).
    conv_dims
        Widths of the graph convolutions.
    out_dim
        Width of each atom's output vector.
    max_degree
        Largest degree with its own weights (higher degrees share the last).
    """

    def __init__(
        self,
        atom_dim: int = 62,
        bond_dim: int = 6,
        conv_dims: Sequence[int] = (16, 16),
        out_dim: int = 128,
        max_degree: int = 5,
    ):
        super().__init__()
        sizes = [int(atom_dim), *[int(d) for d in conv_dims]]
        self.max_degree = int(max_degree)
        self.self_linears = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.neighbour_weights = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            weight = torch.empty(self.max_degree + 1, a + int(bond_dim), b)
            for d in range(self.max_degree + 1):
                nn.init.xavier_uniform_(weight[d])
            self.neighbour_weights.append(nn.Parameter(weight))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.readouts = nn.ModuleList(nn.Linear(s, int(out_dim)) for s in sizes)
        self.out_dim = int(out_dim)

    def forward(
        self,
        atoms: torch.Tensor,
        edge_index: torch.Tensor,
        bonds: torch.Tensor,
        degree: torch.Tensor,
    ) -> torch.Tensor:
        """Atom vectors ``(n_atoms, out_dim)`` of packed graphs (:func:`pack_bond_graphs`)."""
        h = atoms
        out = torch.softmax(self.readouts[0](h), dim=-1)
        source, target = edge_index
        degree = degree.clamp(max=self.max_degree)
        for i, (linear, weight, norm) in enumerate(
            zip(self.self_linears, self.neighbour_weights, self.norms, strict=True)
        ):
            messages = torch.cat([h[source], bonds], dim=1)
            summed = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
            summed = summed.index_add(0, target, messages)
            by_degree = torch.einsum("ni,dio->ndo", summed, weight)
            neighbours = by_degree[torch.arange(h.shape[0], device=h.device), degree]
            h = norm(torch.relu(linear(h) + neighbours))
            out = out + torch.softmax(self.readouts[i + 1](h), dim=-1)
        return out


class GeneAtomAttentionLayer(nn.Module):
    """Genes attend to a drug's atoms (and, optionally, to each other), then a feed-forward block.

    ``g' = LayerNorm(g + Dropout(ReLU(W [attn(g -> atoms) ; attn(g -> g)])))`` followed by
    ``g'' = LayerNorm(g' + Dropout(FFN(g')))``, as DeepCE's drug-gene attention layer.

    Parameters
    ----------
    dim
        Width of the gene and atom vectors.
    n_heads
        Attention heads (``dim`` must be divisible by it).
    ff_dim
        Hidden width of the feed-forward block.
    dropout
        Dropout.
    self_attention
        Also attend from genes to genes (DeepCE does; ``978^2`` per profile).
    """

    def __init__(
        self, dim: int, n_heads: int, ff_dim: int, dropout: float, self_attention: bool = True
    ):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.self_attention = (
            nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
            if self_attention
            else None
        )
        self.merge = nn.Linear(dim * (2 if self_attention else 1), dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, genes: torch.Tensor, atoms: torch.Tensor, atom_padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, n_genes, dim)`` updated genes and the attention ``(batch, n_genes, n_atoms)``.

        Parameters
        ----------
        genes
            ``(batch, n_genes, dim)``.
        atoms
            ``(batch, max_atoms, dim)``.
        atom_padding
            ``(batch, max_atoms)`` bool, True at padding positions.
        """
        attended, weights = self.cross(genes, atoms, atoms, key_padding_mask=atom_padding)
        parts = [attended]
        if self.self_attention is not None:
            parts.append(self.self_attention(genes, genes, genes, need_weights=False)[0])
        update = torch.relu(self.merge(torch.cat(parts, dim=-1)))
        genes = self.norm1(genes + self.dropout(update))
        genes = self.norm2(genes + self.dropout(self.feed_forward(genes)))
        return genes, weights


class ChemPerturbationModule(HeadModuleMixin, nn.Module):
    """DeepCE-style network: a drug's atoms, the landmark genes' vectors, cell line and dose.

    1. Drug: :class:`NeuralFingerprint` atom vectors (``d_model``), layer-normalised
       (``normalize_atoms``); the drug vector is their sum.
    2. Genes: a fixed table of gene features (scLong gene embeddings, or DeepCE's gene vectors)
       projected to ``d_model``; genes without features (NaN rows, e.g. symbols absent from the
       scLong vocabulary) get zeros, or, with ``learn_missing``, a learned vector each.
    3. ``n_layers`` of :class:`GeneAtomAttentionLayer` (genes attend to the drug's atoms).
    4. Per gene: ``[gene vector ; drug vector ; cell-line embedding ; dose embedding]`` ->
       ReLU -> Linear(``hidden_dim``) -> ReLU -> Linear(1), plus a per-gene offset (the
       training mean profile, set by the model class).

    The cell-line embedding is a linear map of a cell-line feature vector (e.g. scLong's pooled
    representation) or, with ``n_cell_features=None``, a learned vector per cell line (DeepCE: a
    linear map of the one-hot cell id); the dose embedding is a learned vector per dose level
    (DeepCE: one-hot dose).

    Parameters
    ----------
    gene_features
        ``(n_genes, gene_dim)`` float tensor; NaN rows = no features.
    n_cell_lines
        Number of cell lines (rows of the cell-line table).
    n_doses
        Number of dose levels.
    n_cell_features
        Width of the cell-line feature vectors (``None``: learned per cell line).
    atom_dim, bond_dim, conv_dims
        Drug graph inputs and convolutions (DeepCE: 62, 6, (16, 16)).
    d_model
        Width of atom and gene vectors (DeepCE: 128).
    n_layers, n_heads, ff_dim
        Attention layers, heads, feed-forward width (DeepCE: 2, 4, 512).
    embedding_dim
        Width of the cell-line and dose embeddings (DeepCE: 4).
    hidden_dim
        Hidden width of the per-gene output MLP (DeepCE: 128).
    dropout
        Dropout (DeepCE: 0.1).
    gene_self_attention
        Genes also attend to each other in each layer (DeepCE: yes).
    learn_missing
        A learned vector for each gene without features (else zeros).
    normalize_atoms
        LayerNorm on the atom vectors before the attention and the sum. The fingerprint's
        summed softmax readouts are nearly the same for every atom at initialisation (their
        spread across atoms is ~1/5 of their mean), so without it the attention starts blind
        to the drug and the drug vector is ~97% atom count (measured on 197 L1000 compounds).
        DeepCE: none (``False``).
    chunk_size
        Profiles per forward pass in :meth:`training_loss` (bounds the memory of large
        validation batches: each profile holds ``n_genes x d_model`` activations).
    residual
        Wide & deep: a linear ("wide") part, per gene, over the drug's mean atom features
        (:meth:`mean_atom_inputs`), the cell line (its feature vector, or a per-line term with
        learned cell-line vectors) and the dose level, fitted in closed form by the model class
        (:meth:`set_wide`: the ridge probe on these inputs) and kept fixed; the network's output
        layer starts at zero and learns the residual, so training starts from the probe.
        DeepCE: none (``False``).
    """

    def __init__(
        self,
        gene_features: torch.Tensor,
        n_cell_lines: int,
        n_doses: int,
        n_cell_features: int | None = None,
        atom_dim: int = 62,
        bond_dim: int = 6,
        conv_dims: Sequence[int] = (16, 16),
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        ff_dim: int = 512,
        embedding_dim: int = 4,
        hidden_dim: int = 128,
        dropout: float = 0.1,
        gene_self_attention: bool = True,
        learn_missing: bool = True,
        normalize_atoms: bool = True,
        chunk_size: int = 256,
        residual: bool = False,
    ):
        super().__init__()
        self.chunk_size = int(chunk_size)
        self.residual = bool(residual)
        gene_features = torch.as_tensor(gene_features, dtype=torch.float32)
        missing = torch.isnan(gene_features).all(dim=1)
        self.register_buffer("gene_features", torch.nan_to_num(gene_features, nan=0.0))
        self.register_buffer("gene_missing", missing)
        self.register_buffer("offset", torch.zeros(gene_features.shape[0]))
        self.n_genes = int(gene_features.shape[0])
        self.drug_encoder = NeuralFingerprint(atom_dim, bond_dim, conv_dims, d_model)
        self.atom_norm = nn.LayerNorm(d_model) if normalize_atoms else None
        self.gene_projection = nn.Linear(gene_features.shape[1], d_model)
        self.missing_embedding = (
            nn.Parameter(torch.randn(self.n_genes, d_model) * 0.1) if learn_missing else None
        )
        self.layers = nn.ModuleList(
            GeneAtomAttentionLayer(d_model, n_heads, ff_dim, dropout, gene_self_attention)
            for _ in range(int(n_layers))
        )
        if n_cell_features is None:
            self.cell_embedding: nn.Module = nn.Embedding(int(n_cell_lines), embedding_dim)
        else:
            self.cell_embedding = nn.Linear(int(n_cell_features), embedding_dim)
        self.uses_cell_features = n_cell_features is not None
        self.dose_embedding = nn.Embedding(int(n_doses), embedding_dim)
        self.output = nn.Sequential(
            nn.ReLU(),
            nn.Linear(2 * d_model + 2 * embedding_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )
        if self.residual:
            nn.init.zeros_(self.output[-1].weight)
            nn.init.zeros_(self.output[-1].bias)
            n_cell_terms = int(n_cell_lines) if n_cell_features is None else int(n_cell_features)
            # the wide part: fitted in closed form (set_wide), never by the optimiser
            self.register_buffer("wide_atoms", torch.zeros(int(atom_dim), self.n_genes))
            self.register_buffer("wide_cells", torch.zeros(n_cell_terms, self.n_genes))
            self.register_buffer("wide_doses", torch.zeros(int(n_doses), self.n_genes))

    @staticmethod
    def mean_atom_inputs(graphs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per drug, the mean of its atoms' input features ``(n_drugs, atom_dim)``."""
        atoms, owner = graphs["atoms"], graphs["owner"]
        n_drugs = graphs["slots"].shape[0]
        total = atoms.new_zeros(n_drugs, atoms.shape[1]).index_add_(0, owner, atoms)
        count = torch.bincount(owner, minlength=n_drugs).clamp(min=1).to(atoms.dtype)
        return total / count.unsqueeze(1)

    def set_wide(
        self, atoms: torch.Tensor, cells: torch.Tensor, doses: torch.Tensor, intercept: torch.Tensor
    ) -> None:
        """Set the wide part and the offset (the probe's intercept).

        Per-gene coefficients of the mean atom features ``(atom_dim, n_genes)``, of the cell
        line (its features, or per-line terms) and of the dose levels.
        """
        self._set_wide_buffers(
            wide_atoms=atoms, wide_cells=cells, wide_doses=doses, offset=intercept
        )

    def wide(
        self,
        drug_inputs: torch.Tensor,
        drug_index: torch.Tensor,
        cells: torch.Tensor,
        cell_index: torch.Tensor,
        dose_index: torch.Tensor,
    ) -> torch.Tensor:
        """The wide part's profiles ``(batch, n_genes)`` (without the offset)."""
        out = drug_inputs[drug_index] @ self.wide_atoms + self.wide_doses[dose_index]
        if self.uses_cell_features:
            return out + cells[cell_index] @ self.wide_cells
        return out + self.wide_cells[cell_index]

    def atom_vectors(self, graphs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Atom vectors ``(n_atoms, d_model)`` of all packed drugs (:func:`pack_bond_graphs`)."""
        atoms = self.drug_encoder(
            graphs["atoms"], graphs["edge_index"], graphs["bonds"], graphs["degree"]
        )
        return atoms if self.atom_norm is None else self.atom_norm(atoms)

    def gene_vectors(self) -> torch.Tensor:
        """The genes' input vectors ``(n_genes, d_model)``."""
        genes = self.gene_projection(self.gene_features)
        if self.missing_embedding is not None:
            mask = self.gene_missing.unsqueeze(1).to(genes.dtype)
            genes = genes * (1 - mask) + self.missing_embedding * mask
        else:
            genes = genes.masked_fill(self.gene_missing.unsqueeze(1), 0.0)
        return genes

    def forward(
        self,
        atom_vectors: torch.Tensor,
        slots: torch.Tensor,
        drug_index: torch.Tensor,
        cells: torch.Tensor,
        cell_index: torch.Tensor,
        dose_index: torch.Tensor,
        return_attention: bool = False,
        drug_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predicted profiles ``(batch, n_genes)``.

        Parameters
        ----------
        atom_vectors
            ``(n_atoms, d_model)`` from :meth:`atom_vectors`.
        slots
            ``(n_drugs, max_atoms)`` from :func:`pack_bond_graphs`.
        drug_index, cell_index, dose_index
            ``(batch,)`` rows of the drug, cell-line and dose tables.
        cells
            ``(n_cell_lines, n_cell_features)`` cell-line features (ignored, may be empty, with
            learned cell-line vectors).
        return_attention
            Also return the last layer's attention ``(batch, n_genes, max_atoms)``.
        drug_inputs
            ``(n_drugs, atom_dim)`` mean atom features (:meth:`mean_atom_inputs`); needed with
            ``residual``.
        """
        batch_slots = slots[drug_index]
        padding = batch_slots < 0
        atoms = atom_vectors[batch_slots.clamp(min=0)] * (~padding).unsqueeze(-1)
        drug = atoms.sum(dim=1)
        genes = self.gene_vectors().unsqueeze(0).expand(len(drug_index), -1, -1)
        attention = None
        for layer in self.layers:
            genes, attention = layer(genes, atoms, padding)
        if self.uses_cell_features:
            cell = self.cell_embedding(cells[cell_index])
        else:
            cell = self.cell_embedding(cell_index)
        dose = self.dose_embedding(dose_index)
        context = torch.cat([drug, cell, dose], dim=1).unsqueeze(1)
        joint = torch.cat([genes, context.expand(-1, genes.shape[1], -1)], dim=-1)
        out = self.output(joint).squeeze(-1) + self.offset
        if self.residual:
            if drug_inputs is None:
                raise ScLongInputError("A residual module needs drug_inputs (mean_atom_inputs).")
            out = out + self.wide(drug_inputs, drug_index, cells, cell_index, dose_index)
        if return_attention:
            return out, attention
        return out

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error over genes and profiles (batch: ``drug``, ``cell``, ``dose``, ``y``).

        Reads the context: the drugs' packed graphs (:data:`GRAPH_KEYS`) and ``cells`` (the
        standardised cell-line features, ``(n_cell_lines, 0)`` with learned cell-line vectors).
        Profiles go through the network :attr:`chunk_size` at a time.
        """
        graphs = {key: self.context(key) for key in GRAPH_KEYS}
        atoms = self.atom_vectors(graphs)
        drug_inputs = self.mean_atom_inputs(graphs) if self.residual else None
        cells = self.context("cells")
        n = len(batch["y"])
        total = batch["y"].new_zeros(())
        for start in range(0, n, self.chunk_size):
            part = slice(start, start + self.chunk_size)
            prediction = self(
                atoms,
                graphs["slots"],
                batch["drug"][part],
                cells,
                batch["cell"][part],
                batch["dose"][part],
                drug_inputs=drug_inputs,
            )
            total = total + torch.sum((prediction - batch["y"][part]) ** 2)
        return total / batch["y"].numel()
