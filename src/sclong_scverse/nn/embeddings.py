"""Value and gene embeddings of scLong (pure torch + torch-geometric)."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch_geometric.nn import SGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from ..errors import ScLongInputError


class ValueEmbedding(nn.Module):
    """Scalar expression value -> vector: ``Linear(1, hidden) -> ReLU -> Linear(hidden, dim)``.

    Parameters
    ----------
    dim
        Output width.
    hidden_dim
        Hidden width (50 in scLong).
    """

    def __init__(self, dim: int, hidden_dim: int = 50):
        super().__init__()
        self.fc1 = nn.Linear(1, hidden_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Embed scalar values.

        Parameters
        ----------
        values
            ``(batch, tokens)`` expression values.

        Returns
        -------
        ``(batch, tokens, dim)`` embeddings.
        """
        return self.fc2(self.act(self.fc1(values.unsqueeze(-1))))


class GeneEmbedding(nn.Module):
    """Gene embedding = identity table + SGConv(GO table) over the Gene Ontology graph.

    Two separate trainable ``(n_tokens, dim)`` tables. The second goes through
    ``go_num_layers`` ``torch_geometric.nn.SGConv(dim, dim, K=1, add_self_loops=False)`` layers
    with the GO Jaccard weights as edge weights (GCN-normalised by in-degree).

    Parameters
    ----------
    n_tokens
        Vocabulary size including the pad token.
    dim
        Embedding width.
    go_num_layers
        Number of SGConv layers.
    edge_index
        ``(2, n_edges)`` source/target token positions of the GO graph, or ``None`` for no edges.
    edge_weight
        ``(n_edges,)`` edge weights (Jaccard indices).

    Notes
    -----
    The GCN-normalised adjacency is computed once and cached as a sparse CSR matrix (rows =
    targets); the forward pass is one sparse-dense product per layer, for all genes at once.
    The graph itself is stored in the state dict (``edge_index``, ``edge_weight``).
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        go_num_layers: int = 1,
        edge_index: torch.Tensor | None = None,
        edge_weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_tokens = n_tokens
        self.identity = nn.Embedding(n_tokens, dim)
        self.go_table = nn.Embedding(n_tokens, dim)
        self.go_convs = nn.ModuleList(
            [SGConv(dim, dim, K=1, add_self_loops=False) for _ in range(go_num_layers)]
        )
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))
        self._adjacency: torch.Tensor | None = None
        if edge_index is not None:
            self.set_graph(edge_index, edge_weight)

    def set_graph(self, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> None:
        """Replace the GO graph.

        Parameters
        ----------
        edge_index
            ``(2, n_edges)`` integer tensor of (source, target) token positions.
        edge_weight
            ``(n_edges,)`` weights; ones when ``None``.
        """
        edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ScLongInputError(
                f"edge_index must have shape (2, n_edges), got {tuple(edge_index.shape)}."
            )
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1])
        edge_weight = torch.as_tensor(edge_weight, dtype=torch.float32)
        if edge_weight.shape != (edge_index.shape[1],):
            raise ScLongInputError(
                f"edge_weight must have shape ({edge_index.shape[1]},), "
                f"got {tuple(edge_weight.shape)}."
            )
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= self.n_tokens):
            raise ScLongInputError(
                f"edge_index refers to positions outside 0..{self.n_tokens - 1} "
                f"(found {int(edge_index.min())}..{int(edge_index.max())})."
            )
        device = self.identity.weight.device
        self.edge_index = edge_index.to(device)
        self.edge_weight = edge_weight.to(device)
        self._adjacency = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the graph buffers may differ in size from the ones at construction
        for name in ("edge_index", "edge_weight"):
            key = prefix + name
            if key in state_dict:
                setattr(
                    self, name, torch.empty_like(state_dict[key], device=self.edge_index.device)
                )
        self._adjacency = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalized_adjacency(self) -> torch.Tensor:
        """The GCN-normalised GO adjacency as a sparse CSR ``(n_tokens, n_tokens)`` matrix.

        Entry ``[t, s] = w_st / sqrt(deg_in(s) * deg_in(t))``, the normalisation of
        ``SGConv(add_self_loops=False)``. Computed once and cached.
        """
        if self._adjacency is None or self._adjacency.device != self.edge_index.device:
            # a normal tensor even when first built under torch.inference_mode(): the cache
            # is reused by later training steps
            with torch.inference_mode(False), torch.no_grad():
                self._adjacency = self._build_adjacency()
        return self._adjacency

    def _build_adjacency(self) -> torch.Tensor:
        edge_index, weight = gcn_norm(
            self.edge_index,
            self.edge_weight.float(),
            self.n_tokens,
            improved=False,
            add_self_loops=False,
        )
        coo = torch.sparse_coo_tensor(
            edge_index.flip(0),  # rows = targets, columns = sources
            weight,
            (self.n_tokens, self.n_tokens),
            check_invariants=True,
        ).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return coo.to_sparse_csr()

    def go_embedding(self) -> torch.Tensor:
        """The GO table after the SGConv layers, ``(n_tokens, dim)``."""
        h = self.go_table.weight
        if not self.go_convs:
            return h
        adjacency = self.normalized_adjacency()
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            for conv in self.go_convs:
                # SGConv's K=1 propagation on the cached normalised adjacency, then its Linear
                h = conv.lin(conv.propagate(adjacency, x=h, edge_weight=None))
        return h

    def forward(self) -> torch.Tensor:
        """Embedding of every gene of the vocabulary, ``(n_tokens, dim)``; once per forward."""
        return self.identity.weight + self.go_embedding()
