"""GEARS-style perturbation head on scLong gene features (pure torch, no AnnData)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ScLongInputError
from ..nn import ScLongNetwork
from ._head import HeadModuleMixin


def _mlp(sizes: list[int], last_activation: bool = False) -> nn.Sequential:
    """Linear layers with LayerNorm + ReLU between them (GEARS's ``MLP`` with LayerNorm)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.LayerNorm(sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers)


class GOGraphConv(nn.Module):
    """One simplified graph convolution (GEARS's ``SGConv``, K=1) over the GO gene graph.

    ``out = D^-1/2 (A + I) D^-1/2 x W`` with the Jaccard weights as ``A`` (self loops added where
    the graph has none).

    Parameters
    ----------
    n_nodes
        Number of genes (nodes).
    edge_index
        ``(2, n_edges)`` source, target node positions.
    edge_weight
        ``(n_edges,)`` weights.
    in_dim, out_dim
        Feature sizes.
    """

    def __init__(
        self,
        n_nodes: int,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor,
        in_dim: int,
        out_dim: int,
    ):
        super().__init__()
        index = torch.as_tensor(edge_index, dtype=torch.long).reshape(2, -1)
        weight = torch.as_tensor(edge_weight, dtype=torch.float32).reshape(-1)
        keep = index[0] != index[1]
        loops = torch.arange(n_nodes)
        index = torch.cat([index[:, keep], torch.stack([loops, loops])], dim=1)
        weight = torch.cat([weight[keep], torch.ones(n_nodes)])
        degree = torch.zeros(n_nodes).index_add_(0, index[1], weight)
        norm = degree[index[0]].rsqrt() * weight * degree[index[1]].rsqrt()
        self.register_buffer("edge_index", index)
        self.register_buffer("edge_norm", norm)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Propagate ``(n_nodes, in_dim)`` features once and transform them."""
        source, target = self.edge_index
        out = torch.zeros_like(x).index_add_(0, target, x[source] * self.edge_norm[:, None])
        return self.linear(out)


class PerturbationModule(HeadModuleMixin, nn.Module):
    """GEARS as scLong used it: per-gene features + GO perturbation branch + per-gene decoder.

    For a batch of (control cell, perturbation) pairs, each measured gene ``g`` of the control
    cell gets an embedding from

    - its gene features: scLong's per-gene decodings of the control cell through a trainable
      ``Linear(d -> hidden)`` (the backbone is frozen unless ``freeze_backbone=False``), or,
      for the scLong-free ablation (``backbone=None``), a learned gene embedding;
    - its input ``[control value, perturbation flag]`` through ``Linear(2 -> hidden)``;

    plus the perturbation embedding: a learned embedding per perturbable gene, propagated over
    the GO graph (``n_go_layers`` graph convolutions, GEARS's ``sim_layers``), summed over the
    perturbed genes and passed through an MLP (``pert_fuse``). A per-gene decoder (GEARS's
    ``indv_w1``, ``cross_gene_state``, ``indv_w2``) gives the change, added to the control
    values (the residual on control).

    Training (:meth:`training_loss`) reads a mini-batch of perturbed (or control) cells and the
    context tensors set by the model class (:meth:`set_context`): ``pool_values`` (the control
    pool's values), ``pool_inputs`` (their frozen backbone features, their backbone tokens, or an
    empty tensor for the ablation), ``indicator`` (conditions x perturbable genes, 0/1),
    ``nonzero`` (conditions x genes, the genes entering GEARS's loss) and ``control_mean``.

    Parameters
    ----------
    n_genes
        Measured genes (outputs).
    n_perturbation_genes
        Genes that can be perturbed (nodes of the GO graph).
    go_edge_index, go_edge_weight
        The GO graph over the perturbable genes.
    gene_flag_index
        ``(n_genes,)`` position of each measured gene among the perturbable genes (``-1``: it
        is never perturbed), for the perturbation flag.
    hidden_dim
        Width (GEARS: 64; scLong's variant: 1024).
    backbone
        A scLong network whose decodings are the gene features (``None``: the ablation with
        learned gene embeddings).
    backbone_positions
        ``(n_genes,)`` vocabulary position of each measured gene in ``backbone``.
    freeze_backbone
        Keep the backbone's weights fixed (its random features are never redrawn either way).
    n_go_layers
        Graph convolutions of the perturbation branch (GEARS: 1).
    uncertainty_free_gamma
        Exponent offset of the autofocus loss: ``|error|^(2 + gamma)`` (GEARS: 2).
    direction_lambda
        Weight of the direction term (GEARS: 0.1).
    direction_temperature
        GEARS compares ``sign(pred - ctrl)`` with ``sign(truth - ctrl)``; ``sign`` has no
        gradient, so the term never trained. Here the prediction's side is
        ``tanh((pred - ctrl) / direction_temperature)``, a differentiable stand-in.
    residual
        Wide & deep: a linear ("wide") change per condition, the perturbed genes' input vectors
        (``wide_dim`` wide, e.g. their pooled scLong features) summed and mapped linearly to
        the genes, plus an intercept when some gene is perturbed; fitted in closed form by the
        model class (:meth:`set_wide`: the ridge probe on these inputs), kept fixed (persistent
        buffers, never optimised) and added to every prediction. The decoder's last weights
        (``indv_w2``, ``indv_b2``) start at zero, so training starts from the probe and the
        network learns the residual. GEARS: none (``False``).
    wide_dim
        Width of the wide part's input vector per perturbable gene (``0``: an intercept only,
        the mean change of the training conditions).
    """

    def __init__(
        self,
        n_genes: int,
        n_perturbation_genes: int,
        go_edge_index: torch.Tensor,
        go_edge_weight: torch.Tensor,
        gene_flag_index: torch.Tensor,
        hidden_dim: int = 64,
        backbone: ScLongNetwork | None = None,
        backbone_positions: torch.Tensor | None = None,
        freeze_backbone: bool = True,
        n_go_layers: int = 1,
        uncertainty_free_gamma: float = 2.0,
        direction_lambda: float = 0.1,
        direction_temperature: float = 0.1,
        residual: bool = False,
        wide_dim: int = 0,
    ):
        super().__init__()
        self.n_genes = int(n_genes)
        self.n_perturbation_genes = int(n_perturbation_genes)
        self.gamma = float(uncertainty_free_gamma)
        self.direction_lambda = float(direction_lambda)
        self.direction_temperature = float(direction_temperature)
        self.freeze_backbone = bool(freeze_backbone)
        hidden = int(hidden_dim)
        self.register_buffer("gene_flag_index", torch.as_tensor(gene_flag_index, dtype=torch.long))
        self.backbone = backbone
        if backbone is not None:
            if backbone_positions is None:
                raise ScLongInputError("backbone_positions are needed with a backbone.")
            checked = np.asarray(backbone_positions)  # on the host (also under a meta build)
            positions = torch.as_tensor(backbone_positions, dtype=torch.long)
            if checked.shape != (self.n_genes,) or int(checked.min()) < 0:
                raise ScLongInputError(
                    "backbone_positions must give a vocabulary position per gene."
                )
            self.register_buffer("backbone_positions", positions)
            self.feature_proj = nn.Linear(backbone.config.dim, hidden)
            if self.freeze_backbone:
                backbone.requires_grad_(False)
        else:
            self.gene_embedding = nn.Embedding(self.n_genes, hidden)
        self.input_proj = nn.Linear(2, hidden)
        self.emb_trans = _mlp([hidden, hidden, hidden])
        self.pert_embedding = nn.Embedding(self.n_perturbation_genes, hidden)
        self.go_layers = nn.ModuleList(
            GOGraphConv(self.n_perturbation_genes, go_edge_index, go_edge_weight, hidden, hidden)
            for _ in range(int(n_go_layers))
        )
        self.pert_fuse = _mlp([hidden, hidden, hidden])
        self.base_norm = nn.LayerNorm(hidden)
        self.recovery_w = _mlp([hidden, 2 * hidden, hidden])
        self.indv_w1 = nn.Parameter(torch.empty(self.n_genes, hidden))
        self.indv_b1 = nn.Parameter(torch.zeros(self.n_genes))
        self.cross_gene_state = _mlp([self.n_genes, hidden, hidden])
        self.indv_w2 = nn.Parameter(torch.empty(self.n_genes, hidden + 1))
        self.indv_b2 = nn.Parameter(torch.zeros(self.n_genes))
        nn.init.xavier_normal_(self.indv_w1)
        nn.init.xavier_normal_(self.indv_w2)
        self.residual = bool(residual)
        self.wide_dim = int(wide_dim)
        if self.residual:
            nn.init.zeros_(self.indv_w2)  # the network's change starts at 0: at the probe
            # the wide part: fitted in closed form (set_wide), never by the optimiser
            n_inputs = (self.n_perturbation_genes, self.wide_dim)
            self.register_buffer("wide_inputs", torch.zeros(n_inputs))
            self.register_buffer("wide_coef", torch.zeros(self.wide_dim, self.n_genes))
            self.register_buffer("wide_intercept", torch.zeros(self.n_genes))

    def set_wide(self, inputs: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor) -> None:
        """Set the wide part: the probe's inputs, coefficients and intercept.

        Parameters
        ----------
        inputs
            ``(n_perturbation_genes, wide_dim)`` input vector of each perturbable gene.
        coef
            ``(wide_dim, n_genes)`` coefficients.
        intercept
            ``(n_genes,)`` change of any perturbation besides its genes' terms.

        Raises
        ------
        RuntimeError
            The module was built without ``residual``.
        """
        self._set_wide_buffers(wide_inputs=inputs, wide_coef=coef, wide_intercept=intercept)

    def wide(self, perturbed: torch.Tensor) -> torch.Tensor:
        """The wide part's change ``(batch, n_genes)`` (zero without a perturbed gene).

        Parameters
        ----------
        perturbed
            ``(batch, n_perturbation_genes)`` 0/1 indicator of the perturbed genes.
        """
        perturbed = perturbed.to(self.wide_coef.dtype)
        has_perturbation = (perturbed.sum(dim=1, keepdim=True) > 0).to(perturbed.dtype)
        return (perturbed @ self.wide_inputs) @ self.wide_coef + has_perturbation * (
            self.wide_intercept
        )

    @property
    def uses_backbone(self) -> bool:
        """Whether the gene features come from a scLong backbone."""
        return self.backbone is not None

    def backbone_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The scLong decodings of cells at the measured genes: ``(batch, n_genes, d)``.

        Parameters
        ----------
        tokens
            ``(batch, n_tokens)`` backbone inputs (values on vocabulary positions).
        """
        if self.backbone is None:
            raise RuntimeError("This module has no backbone (the scLong-free ablation).")
        self.backbone.eval()  # no dropout, random features never redrawn
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            decodings = self.backbone(tokens)["decodings"]
        return decodings[:, self.backbone_positions]

    def perturbation_embedding(self) -> torch.Tensor:
        """``(n_perturbation_genes, hidden)`` GO-propagated perturbation embeddings."""
        embedding = self.pert_embedding.weight
        for i, layer in enumerate(self.go_layers):
            embedding = layer(embedding)
            if i < len(self.go_layers) - 1:
                embedding = torch.relu(embedding)
        return embedding

    def forward(
        self,
        control: torch.Tensor,
        perturbed: torch.Tensor,
        features: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted expression of the perturbed cells.

        Parameters
        ----------
        control
            ``(batch, n_genes)`` values of the paired control cells.
        perturbed
            ``(batch, n_perturbation_genes)`` 0/1 indicator of the perturbed genes.
        features
            ``(batch, n_genes, d)`` precomputed backbone features of the control cells (frozen
            backbone); otherwise computed from ``tokens``.
        tokens
            ``(batch, n_tokens)`` backbone inputs of the control cells.

        Returns
        -------
        ``(batch, n_genes)`` predictions (control values + predicted change; with
        ``residual``, + the wide part's change).
        """
        batch = control.shape[0]
        if self.backbone is not None:
            if features is None:
                if tokens is None:
                    raise ScLongInputError("Give the control cells' backbone features or tokens.")
                features = self.backbone_features(tokens)
            base = self.feature_proj(features.to(control.dtype))
        else:
            base = self.gene_embedding.weight.unsqueeze(0).expand(batch, -1, -1)
        flag = torch.zeros_like(control)
        measured = self.gene_flag_index >= 0
        flag[:, measured] = perturbed[:, self.gene_flag_index[measured]].to(control.dtype)
        base = self.emb_trans(base + self.input_proj(torch.stack([control, flag], dim=-1)))
        track = perturbed.to(control.dtype) @ self.perturbation_embedding()
        has_perturbation = (perturbed.sum(dim=1, keepdim=True) > 0).to(control.dtype)
        base = base + (self.pert_fuse(track) * has_perturbation).unsqueeze(1)
        base = self.recovery_w(torch.relu(self.base_norm(base)))
        out = (base * self.indv_w1).sum(dim=-1) + self.indv_b1
        cross = self.cross_gene_state(out).unsqueeze(1).expand(-1, self.n_genes, -1)
        out = (torch.cat([out.unsqueeze(-1), cross], dim=-1) * self.indv_w2).sum(-1)
        out = out + self.indv_b2 + control
        if self.residual:
            out = out + self.wide(perturbed).to(out.dtype)
        return out

    def loss(
        self,
        prediction: torch.Tensor,
        truth: torch.Tensor,
        control_mean: torch.Tensor,
        gene_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GEARS's loss: autofocus ``|error|^(2+gamma)`` + ``direction_lambda`` x direction term.

        Parameters
        ----------
        prediction, truth
            ``(batch, n_genes)``.
        control_mean
            ``(n_genes,)`` mean control expression (the reference of the direction term).
        gene_mask
            ``(batch, n_genes)`` genes entering the loss (GEARS: genes not zero in the
            perturbation's cells); default all.
        """
        if gene_mask is None:
            gene_mask = torch.ones_like(truth, dtype=torch.bool)
        weight = gene_mask.to(truth.dtype)
        n = weight.sum().clamp(min=1.0)
        autofocus = ((prediction - truth).abs() ** (2.0 + self.gamma) * weight).sum() / n
        direction = torch.sign(truth - control_mean) - torch.tanh(
            (prediction - control_mean) / self.direction_temperature
        )
        return autofocus + self.direction_lambda * ((direction**2) * weight).sum() / n

    def forward_pool(self, pool: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        """Predictions for control cells of the pool (context ``pool_values``, ``pool_inputs``).

        Parameters
        ----------
        pool
            ``(batch,)`` positions in the control pool.
        perturbed
            ``(batch, n_perturbation_genes)`` 0/1 indicator of the perturbed genes.

        Returns
        -------
        ``(batch, n_genes)`` predictions (see :meth:`forward`).
        """
        control = self.context("pool_values")[pool]
        features = tokens = None
        if self.backbone is not None:
            inputs = self.context("pool_inputs")
            if inputs.ndim == 3:
                features = inputs[pool]
            else:
                tokens = inputs[pool]
        return self(control, perturbed.to(control.dtype), features=features, tokens=tokens)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """GEARS's loss (:meth:`loss`) of a batch of cells, each paired with a control cell.

        Parameters
        ----------
        batch
            ``pool`` (``(batch,)`` positions of the paired control cells in the pool), ``code``
            (``(batch,)`` condition codes: rows of the context ``indicator`` and ``nonzero``)
            and ``truth`` (``(batch, n_genes)`` the cells' values).
        """
        code = batch["code"]
        prediction = self.forward_pool(batch["pool"], self.context("indicator")[code])
        truth = batch["truth"].to(prediction.dtype)
        return self.loss(
            prediction, truth, self.context("control_mean"), self.context("nonzero")[code]
        )
