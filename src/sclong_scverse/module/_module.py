from __future__ import annotations

from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data

from ..errors import ScLongInputError
from ..nn import ScLongConfig, ScLongNetwork


def choose_masked_positions(
    x: torch.Tensor,
    mask_fraction: float = 0.15,
    replace_fraction: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the positions of the masked-expression objective, as the original scLong.

    Per cell, exactly ``ceil(mask_fraction * number of non-zero values)`` non-zero positions
    are chosen at random (zeros never); each chosen position is replaced by the mask token with
    probability ``replace_fraction`` and kept otherwise.

    Parameters
    ----------
    x
        ``(batch, n_tokens)`` values.
    mask_fraction
        Fraction of each cell's non-zero values to choose (0.15).
    replace_fraction
        Probability that a chosen value is replaced by the mask token (0.9).
    generator
        Random generator (on ``x``'s device), for reproducible masks.

    Returns
    -------
    chosen
        ``(batch, n_tokens)`` bool: positions whose values enter the loss.
    replaced
        ``(batch, n_tokens)`` bool: chosen positions replaced by the mask token.
    """
    nonzero = x > 0
    n_choose = torch.ceil(nonzero.sum(dim=1) * mask_fraction).long()
    scores = torch.rand(x.shape, generator=generator, device=x.device)
    scores = scores.masked_fill(~nonzero, -1.0)
    max_choose = int(n_choose.max()) if x.shape[0] else 0
    chosen = torch.zeros_like(nonzero)
    if max_choose > 0:
        top = torch.topk(scores, max_choose, dim=1).indices
        keep = torch.arange(max_choose, device=x.device)[None, :] < n_choose[:, None]
        chosen.scatter_(1, top, keep)
    coin = torch.rand(x.shape, generator=generator, device=x.device)
    replaced = chosen & (coin < replace_fraction)
    return chosen, replaced


#: Poolings of per-gene decodings into a cell embedding (:func:`pool_decoded`):
#:
#: - ``"max"``, ``"mean"``, ``"sum"``: over genes, ``(batch, dim)``;
#: - ``"max+mean"``: max and mean over genes, each divided by its own L2 norm per cell and
#:   concatenated, ``(batch, 2 * dim)``;
#: - ``"feature_sum"``: the original scLong's zero-shot cell embedding, one value per gene
#:   (its decoding summed over the ``dim`` features, plus its predicted value when given),
#:   ``(batch, n_genes)``.
POOLINGS = ("max", "mean", "sum", "max+mean", "feature_sum")
#: Type of a pooling name (one of :data:`POOLINGS`).
Pooling = Literal["max", "mean", "sum", "max+mean", "feature_sum"]
#: The pooling every cell-embedding query and head uses unless told otherwise: the original
#: scLong's per-gene ``"feature_sum"``, the only pooling within 0.02 of the best on both
#: integration bio conservation and a cross-batch linear probe, on CellBench and pbmc68k
#: (``docs/pooling.md``, ``benchmarks/bench_pooling.py``). Its width is the model's number of
#: genes (27,874 for the official 1B model: 111 kB per cell in float32); pass
#: ``pooling="max"`` for a ``dim``-wide embedding.
DEFAULT_POOLING = "feature_sum"
#: The pooling of the heads that learn from cell embeddings (the annotation classifier, the
#: cell-line vectors of the drug heads: :func:`~sclong_scverse.tl.cell_line_embedding`):
#: ``"max"``, ``dim`` wide. A head's features are fitted on (a linear layer per feature, the
#: classifier's Mahalanobis out-of-distribution score needs their covariance: width squared,
#: 6 GB in float64 at the 1B model's 27,874 genes), so heads keep a compact pooling; pass
#: ``pooling="feature_sum"`` to a head to use the per-gene embedding.
HEAD_POOLING = "max"


def pooled_dim(pooling: str, dim: int, n_genes: int) -> int:
    """Width of the cell embedding that :func:`pool_decoded` returns.

    Parameters
    ----------
    pooling
        One of :data:`POOLINGS`.
    dim
        Width of the decodings (``config.dim``).
    n_genes
        Number of pooled gene positions (``config.n_genes``, pad token excluded).

    Returns
    -------
    ``dim`` for ``"max"``, ``"mean"``, ``"sum"``; ``2 * dim`` for ``"max+mean"``;
    ``n_genes`` for ``"feature_sum"``.
    """
    _check_pooling(pooling)
    if pooling == "max+mean":
        return 2 * dim
    if pooling == "feature_sum":
        return n_genes
    return dim


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ScLongInputError(f"pooling must be one of {POOLINGS}, not {pooling!r}.")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm (rows of zeros stay zero)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-12)


def pool_decoded(
    decodings: torch.Tensor,
    decoded: torch.Tensor | None,
    pooling: str,
    prediction: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool per-gene decodings over each cell's genes into one cell embedding.

    The one place every cell embedding of the package is pooled (``SCLONG``'s queries,
    :func:`~sclong_scverse.tl.embed`, the heads).

    Parameters
    ----------
    decodings
        ``(batch, n_genes, dim)`` decodings.
    decoded
        ``(batch, n_genes)`` bool, the genes to pool (a network without the low-expression
        branch has decodings only at the genes it sees); ``None``: every gene.
    pooling
        One of :data:`POOLINGS`:

        - ``"max"``, ``"mean"``, ``"sum"``: over genes, per feature. With every gene decoded,
          sum is mean times the number of genes (the same embedding up to scale).
        - ``"max+mean"``: the max and the mean, each divided by its own L2 norm in each cell,
          then concatenated. The per-cell norm is chosen so that neither half dominates
          distances by its scale (the mean of decodings that share a large gene-identity part
          has a much larger norm than its differences between cells) while a cell's embedding
          still depends on that cell alone (a per-dataset scaling would change with the
          batch-mates). Each half has norm 1, the embedding norm sqrt(2).
        - ``"feature_sum"``: the original scLong's cell embedding for zero-shot batch
          integration: per gene, the sum over the ``dim`` features of its decoding, plus its
          predicted value when ``prediction`` is given; one value per gene. (The original's
          zero-shot script calls a ``get_cell_emb`` its release lacks and notes the result as
          one value per gene; reconstructions of the article's methods concatenate the
          predicted expression to the decodings, then sum.) Genes a cell did not decode are 0.
    prediction
        ``(batch, n_genes)`` the network's predicted values, added by ``"feature_sum"``
        (ignored by the other poolings).

    Returns
    -------
    ``(batch, width)`` with the width of :func:`pooled_dim`; 0 for a cell without decoded
    genes.
    """
    _check_pooling(pooling)
    if pooling == "max+mean":
        pooled_max = pool_decoded(decodings, decoded, "max")
        pooled_mean = pool_decoded(decodings, decoded, "mean")
        return torch.cat([_unit(pooled_max), _unit(pooled_mean)], dim=-1)
    if pooling == "feature_sum":
        values = decodings.sum(dim=-1)
        if prediction is not None:
            values = values + prediction.to(values.dtype)
        return values if decoded is None else values.masked_fill(~decoded, 0.0)
    if decoded is None:
        if pooling == "max":
            return decodings.amax(dim=1)
        if pooling == "sum":
            return decodings.sum(dim=1)
        return decodings.mean(dim=1)
    weight = decoded.unsqueeze(-1).to(decodings.dtype)
    if pooling == "max":
        pooled = decodings.masked_fill(~decoded.unsqueeze(-1), -torch.inf).amax(dim=1)
        return torch.nan_to_num(pooled, neginf=0.0)
    total = (decodings * weight).sum(dim=1)
    if pooling == "sum":
        return total
    return total / weight.sum(dim=1).clamp(min=1)


class NoGenerativeModel:
    """scvi-tools' generative step of a module without one (scLong, its classifier).

    scLong is trained by masked-value reconstruction and its heads by supervised losses:
    :meth:`generative` returns nothing, and ``loss`` reads the inference outputs.
    """

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        return {}

    def generative(self, **kwargs) -> dict:
        """No generative model.

        Parameters
        ----------
        **kwargs
            Ignored.

        Returns
        -------
        An empty dictionary.
        """
        return {}


class VocabularyInputMixin:
    """Places the registered data's genes on the vocabulary (scLong, its classifier).

    The module holds ``network`` (an :class:`~sclong_scverse.nn.ScLongNetwork`) and
    ``var_positions`` (a buffer: the vocabulary position of each registered gene, ``-1`` for
    genes outside it).
    """

    @property
    def config(self) -> ScLongConfig:
        """The network configuration."""
        return self.network.config

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Place data values on vocabulary positions.

        Parameters
        ----------
        x
            ``(batch, n_vars)`` values in the registered genes' order.

        Returns
        -------
        ``(batch, n_tokens)`` values; vocabulary genes absent from the data and the pad token
        are 0, data genes outside the vocabulary are left out.
        """
        kept = self.var_positions >= 0
        tokens = x.new_zeros(x.shape[0], self.config.n_tokens)
        tokens[:, self.var_positions[kept]] = x[:, kept].to(tokens.dtype)
        return tokens


class ScLongModule(VocabularyInputMixin, NoGenerativeModel, BaseModuleClass):
    """scLong as an scvi-tools module: places data genes on the vocabulary, masks, computes MSE.

    Parameters
    ----------
    config
        Network configuration (``config.n_genes`` = vocabulary size).
    var_positions
        ``(n_vars,)`` vocabulary position of each gene of the registered data (``-1``: the gene
        is not in the vocabulary and is ignored).
    edge_index, edge_weight
        The GO gene graph over vocabulary positions.
    mask_fraction
        Fraction of each cell's non-zero values chosen for the objective (0.15).
    replace_fraction
        Fraction of chosen values replaced by the mask token (0.9); the rest are kept.
    network
        An existing network to wrap (e.g. loaded official weights) instead of a new one.

    Notes
    -----
    Without the low-expression branch (``config.low_expression_branch=False``) the network
    predicts only the ``top_seq_len`` positions it routes to its encoder. Routed as the
    original routes (by the masked input, where a masked value is ``config.mask_value``, below
    every real value), every masked gene would leave that set and nothing would predict it;
    the only chosen positions left in the loss would be the 10% kept unmasked, an identity
    task. Masking only genes of the cell's top set instead (and routing by the unmasked
    values) would tell the network that each masked value is among the cell's highest, a hint
    about the very value it predicts that the published network never gets, and would ask it
    about other values than the published objective does.

    So the masks are drawn exactly as for the published network (``ceil(mask_fraction x
    non-zero values)`` among all non-zero values) and the *chosen positions are routed into
    the set first*: the network routes by the unmasked values with the chosen positions ranked
    above all others (``route_values``), so its ``top_seq_len`` places hold every chosen gene
    (as a mask token, or with its value for the 10% kept) and the cell's highest other values
    in the remaining places. The task and the information about each masked value are the
    published network's; only the context differs (the top genes instead of the whole
    transcriptome), which is what the ablation is to measure; the price is that the chosen
    genes take places of top genes during training and masked evaluation. The loss counts the
    chosen positions that the network predicts (``outputs["predicted"]``): all of them, except
    in a cell with more chosen values than ``top_seq_len``, whose surplus (by ``torch.topk``'s
    order of ties) is left out. The published network (default) masks and routes as the
    original, unchanged.
    """

    def __init__(
        self,
        config: ScLongConfig,
        var_positions: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_weight: torch.Tensor | None = None,
        mask_fraction: float = 0.15,
        replace_fraction: float = 0.9,
        network: ScLongNetwork | None = None,
    ):
        super().__init__()
        self.network = (
            network if network is not None else ScLongNetwork(config, edge_index, edge_weight)
        )
        self.mask_fraction = mask_fraction
        self.replace_fraction = replace_fraction
        positions = torch.as_tensor(var_positions, dtype=torch.long)
        if positions.max() >= self.network.config.n_genes:
            raise ScLongInputError("var_positions point beyond the vocabulary.")
        self.register_buffer("var_positions", positions)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        mask: bool = True,
        generator: torch.Generator | None = None,
        mask_fraction: float | None = None,
        replace_fraction: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the network on data values, with or without masking.

        Parameters
        ----------
        x
            ``(batch, n_vars)`` log-normalised values in the registered genes' order.
        mask
            Apply the masked-expression masking (training and validation losses); queries
            (embeddings, predictions) pass ``False``.
        generator
            Random generator for the masks.
        mask_fraction, replace_fraction
            Override the module's fractions for this call (e.g. evaluation masks every chosen
            value: ``replace_fraction=1``).

        Returns
        -------
        The network's outputs plus ``tokens`` (unmasked input on vocabulary positions) and,
        when masking, ``chosen`` / ``replaced`` position masks.
        """
        tokens = self.to_tokens(x.float())
        outputs: dict[str, torch.Tensor] = {"tokens": tokens}
        if mask:
            chosen, replaced = choose_masked_positions(
                tokens,
                self.mask_fraction if mask_fraction is None else mask_fraction,
                self.replace_fraction if replace_fraction is None else replace_fraction,
                generator,
            )
            outputs.update(chosen=chosen, replaced=replaced)
            outputs.update(self.masked_forward(tokens, chosen, replaced))
            return outputs
        outputs.update(self.network(tokens))
        return outputs

    def masked_forward(
        self, tokens: torch.Tensor, chosen: torch.Tensor, replaced: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The network on values whose ``replaced`` positions are masked.

        The published network reads the masked values and routes as the original; without the
        low-expression branch the chosen positions are routed into the top set first (see the
        class notes). Use this with masks drawn elsewhere (e.g. by a data loader).

        Parameters
        ----------
        tokens
            ``(batch, n_tokens)`` unmasked values on vocabulary positions.
        chosen
            ``(batch, n_tokens)`` bool, the positions of the objective.
        replaced
            ``(batch, n_tokens)`` bool, the chosen positions replaced by the mask token.

        Returns
        -------
        The network's outputs (:meth:`~sclong_scverse.nn.ScLongNetwork.forward`).
        """
        network_input = tokens.masked_fill(replaced, self.config.mask_value)
        if self.config.low_expression_branch:
            return self.network(network_input)
        return self.network(network_input, route_values=tokens.masked_fill(chosen, torch.inf))

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        """Mean squared error between predicted and true values on the chosen positions.

        Parameters
        ----------
        tensors
            The mini-batch (unused: the targets are in ``inference_outputs``).
        inference_outputs
            Output of :meth:`inference` with masking: ``prediction``, ``tokens`` and ``chosen``.
        generative_outputs
            Output of :meth:`generative` (empty).
        **kwargs
            Ignored.

        Returns
        -------
        :class:`scvi.module.base.LossOutput` with the MSE over all chosen positions of the
        batch that the network predicts (all of them, but for chosen positions outside the top
        set of a network without the low-expression branch) as ``loss``, the per-cell MSE as
        ``reconstruction_loss`` and ``masked_mse`` as an extra metric.
        """
        chosen = inference_outputs["chosen"]
        predicted = inference_outputs.get("predicted")
        if predicted is not None:
            chosen = chosen & predicted
        target = inference_outputs["tokens"]
        squared = (inference_outputs["prediction"].float() - target) ** 2
        squared = squared * chosen
        n_chosen = chosen.sum(dim=1)
        loss = squared.sum() / n_chosen.sum().clamp(min=1)
        per_cell = squared.sum(dim=1) / n_chosen.clamp(min=1)
        return LossOutput(
            loss=loss,
            reconstruction_loss=per_cell,
            n_obs_minibatch=target.shape[0],
            extra_metrics={"masked_mse": loss.detach()},
        )
