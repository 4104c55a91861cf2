"""The scLong network (``DualEncoderSCFM`` in the original), pure torch."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ScLongInputError
from .config import ScLongConfig
from .embeddings import GeneEmbedding, ValueEmbedding
from .performer import Performer, ZeroTokenCache, cached_first_layer_attention


def _key_max(attention_mode: str) -> str:
    """The Performers' key stabiliser of an attention mode: over the batch or per cell."""
    return "batch" if attention_mode == "faithful" else "cell"


def _performer(config: ScLongConfig, dim: int, depth: int, heads: int, dim_head: int) -> Performer:
    """A Performer of the network: its own sizes, the config's features, ``ff_mult`` and mode.

    Parameters
    ----------
    config
        The network's sizes and options.
    dim, depth, heads, dim_head
        Token width, layers, attention heads and head size of this Performer.

    Returns
    -------
    The new Performer.
    """
    return Performer(
        dim,
        depth,
        heads,
        dim_head,
        config.features_for(dim_head),
        config.ff_mult,
        _key_max(config.attention_mode),
    )


class ScLongNetwork(nn.Module):
    """scLong: dual Performer encoder over the whole transcriptome, GO-enriched gene embeddings.

    For each cell, the ``top_seq_len`` highest input values are routed to a large Performer,
    all other positions (masked ones included) to a small one; both outputs are scattered back to
    gene order, the gene embedding is added again, and a full-length Performer decodes every
    gene. A linear head predicts the expression value of each gene.

    With ``config.low_expression_branch=False`` (the article's ablation without the
    low-expression branch) there is no small Performer: only the ``top_seq_len`` highest
    positions enter, the decoder runs over them alone and the head predicts only them (see
    :meth:`forward`).

    Parameters
    ----------
    config
        Sizes and options; ``config.n_genes`` must be set.
    edge_index, edge_weight
        The GO gene graph over token positions (``(2, n_edges)`` source/target and weights), as
        in the official ``G_go`` / ``G_go_weight``; ``None`` for a graph without edges.

    Notes
    -----
    Input: ``(batch, n_tokens)`` log-normalised values, ``n_tokens = n_genes + 1`` (the last
    position is the pad token, value 0). Values ``<= config.mask_threshold`` are mask tokens.
    """

    def __init__(
        self,
        config: ScLongConfig,
        edge_index: torch.Tensor | None = None,
        edge_weight: torch.Tensor | None = None,
    ):
        super().__init__()
        c = config
        n_tokens = c.n_tokens
        if not 0 < c.top_seq_len < n_tokens:
            raise ScLongInputError(
                f"top_seq_len ({c.top_seq_len}) must be between 1 and "
                f"n_tokens - 1 ({n_tokens - 1})."
            )
        self.config = config

        self.value_embedding = ValueEmbedding(c.dim, c.value_hidden_dim)
        self.mask_embedding = nn.Embedding(1, c.dim)
        self.token_norm = nn.LayerNorm(c.dim)
        self.gene_embedding = GeneEmbedding(
            n_tokens, c.dim, c.go_num_layers, edge_index, edge_weight
        )

        self.large_in = nn.Linear(c.dim, c.large_dim)
        self.large_in_norm = nn.LayerNorm(c.large_dim)
        self.large_encoder = _performer(
            c, c.large_dim, c.large_depth, c.large_heads, c.large_dim_head
        )
        self.large_out = nn.Linear(c.large_dim, c.dim)
        self.large_out_norm = nn.LayerNorm(c.dim)
        # the ablation without the low-expression branch builds no mini encoder (no weights)
        self.mini_encoder = (
            _performer(c, c.dim, c.mini_depth, c.mini_heads, c.mini_dim_head)
            if c.low_expression_branch
            else None
        )
        self.decoder = _performer(c, c.dim, c.decoder_depth, c.decoder_heads, c.decoder_dim_head)
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.expression_head = nn.Linear(c.dim, 1)
        #: inference only: the mini encoder's first layer reads zero-valued tokens (the same in
        #: every cell) from a cache built once per set of weights (see ZeroTokenCache)
        self.zero_token_cache = True
        self._zero_cache: ZeroTokenCache | None = None

    # ------------------------------------------------------------------ options
    @property
    def performers(self) -> tuple[Performer, ...]:
        """The large encoder, mini encoder and decoder (no mini encoder without the low branch)."""
        return tuple(
            p for p in (self.large_encoder, self.mini_encoder, self.decoder) if p is not None
        )

    @property
    def low_expression_branch(self) -> bool:
        """Whether the low-expression branch exists (:class:`~sclong_scverse.nn.ScLongConfig`)."""
        return self.config.low_expression_branch

    @property
    def attention_mode(self) -> str:
        """``"faithful"`` or ``"per_cell"``, see :class:`~sclong_scverse.nn.ScLongConfig`."""
        return self.config.attention_mode

    @attention_mode.setter
    def attention_mode(self, mode: str) -> None:
        self.config = self.config.replace(attention_mode=mode)
        for performer in self.performers:
            performer.key_max = _key_max(mode)

    def redraw_projection_matrices(self, generator: torch.Generator | None = None) -> None:
        """Draw new FAVOR+ random features in all Performers (pretraining only).

        Each Performer draws with :meth:`Performer.redraw_projection_matrices` and ``generator``.
        """
        for performer in self.performers:
            performer.redraw_projection_matrices(generator)

    def set_gene_graph(self, edge_index: torch.Tensor, edge_weight: torch.Tensor | None) -> None:
        """Replace the GO graph, see :meth:`GeneEmbedding.set_graph`.

        Parameters
        ----------
        edge_index
            ``(2, n_edges)`` (source, target) token positions.
        edge_weight
            ``(n_edges,)`` edge weights (Jaccard indices); ones when ``None``.
        """
        self.gene_embedding.set_graph(edge_index, edge_weight)

    # ------------------------------------------------------------------ pieces
    def mask_vector(self) -> torch.Tensor:
        """The learned mask vector, renormalised to ``config.mask_max_norm`` like the lookup.

        ``nn.Embedding(1, d, max_norm=1)`` renormalises its row in place at every lookup; this
        gives the same vector without modifying the parameter.
        """
        # in float32 also where the weights are held in bfloat16 (a no-op in float32)
        vector = self.mask_embedding.weight[0].float()
        max_norm = self.config.mask_max_norm
        if max_norm is None:
            return vector
        norm = vector.detach().norm()
        scale = torch.where(norm > max_norm, max_norm / (norm + 1e-7), torch.ones_like(norm))
        return vector * scale

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split positions into the high-expression and low-expression sets.

        Parameters
        ----------
        x
            ``(batch, n_tokens)`` input values (masked positions hold values <= threshold).

        Returns
        -------
        top_indices
            ``(batch, top_seq_len)`` positions of the highest values, highest first.
        low_indices
            ``(batch, n_tokens - top_seq_len)`` all other positions, in gene order.
        """
        k = self.config.top_seq_len
        if self.config.attention_mode == "faithful":
            top_indices = torch.topk(x, k, dim=1).indices
        else:  # ties go to the earlier gene: deterministic
            top_indices = torch.sort(x, dim=1, descending=True, stable=True).indices[:, :k]
        is_low = torch.ones_like(x, dtype=torch.bool).scatter_(1, top_indices, False)
        low_indices = torch.sort(is_low.to(torch.uint8), dim=1, descending=True, stable=True)
        low_indices = low_indices.indices[:, : x.shape[1] - k]
        return top_indices, low_indices

    def encode_tokens(self, x: torch.Tensor, gene_embedding: torch.Tensor) -> torch.Tensor:
        """Token = LayerNorm(value embedding or mask vector) + gene embedding.

        Parameters
        ----------
        x
            ``(batch, n_tokens)`` input values; ``<= config.mask_threshold`` marks a mask token.
        gene_embedding
            ``(n_tokens, dim)`` gene embeddings, as returned by :class:`GeneEmbedding`.

        Returns
        -------
        ``(batch, n_tokens, dim)`` tokens.
        """
        is_masked = x <= self.config.mask_threshold
        values = self.value_embedding(x.masked_fill(is_masked, 0.0))
        values = torch.where(is_masked.unsqueeze(-1), self.mask_vector().to(values.dtype), values)
        return self.token_norm(values) + gene_embedding

    # ------------------------------------------------------------------ zero-token cache
    def _zero_token_cache_applies(self, low: torch.Tensor) -> bool:
        """Inference in float32 through the streamed path (see :attr:`zero_token_cache`)."""
        return (
            self.zero_token_cache
            and not torch.is_grad_enabled()
            and low.dtype == torch.float32
            and not torch.is_autocast_enabled(low.device.type)
            and len(self.mini_encoder.layers) > 0
            and self.mini_encoder.chunk_size is not None
            and self._first_attention_held_in_float32()
        )

    def _first_attention_held_in_float32(self) -> bool:
        """Whether the cache may fingerprint the first attention's weights: float32, held.

        Not while they are held in bfloat16 or widened for one forward
        (:func:`~sclong_scverse.nn._precision.widened_weights`: inference tensors, new each
        time); the mini encoder then runs without the cache.
        """
        weight = self.mini_encoder.layers[0].attention.to_q.weight
        return weight.dtype == torch.float32 and not weight.is_inference()

    def _zero_token_cache(self, gene_embedding: torch.Tensor) -> ZeroTokenCache:
        """The mini encoder's first-layer cache, rebuilt when a weight it depends on changed."""
        attention = self.mini_encoder.layers[0].attention
        parts = [
            *self.gene_embedding.parameters(),
            *self.gene_embedding.buffers(),
            *self.value_embedding.parameters(),
            *self.token_norm.parameters(),
            *attention.parameters(),
            *attention.buffers(),
        ]
        # in-place updates (optimiser steps, load_state_dict, redraws) bump a tensor's version
        fingerprint = (
            attention.key_max,
            gene_embedding.dtype,
            gene_embedding.device,
            *((part.data_ptr(), part._version) for part in parts),
        )
        cache = self._zero_cache
        if cache is None or not cache.valid_for(fingerprint):
            self._zero_cache = None  # free the old tables before building new ones
            zeros = gene_embedding.new_zeros(1, self.config.n_tokens)
            tokens = self.encode_tokens(zeros, gene_embedding)[0]
            cache = self._zero_cache = ZeroTokenCache(attention, tokens, fingerprint)
        return cache

    def _mini_encoder_with_cache(
        self,
        x: torch.Tensor,
        low: torch.Tensor,
        low_indices: torch.Tensor,
        gene_embedding: torch.Tensor,
    ) -> torch.Tensor:
        """The mini encoder, its first attention reading zero-valued tokens from the cache."""
        cache = self._zero_token_cache(gene_embedding)
        attention = self.mini_encoder.layers[0].attention
        cached = torch.gather(x, 1, low_indices) == 0
        n_tokens = self.config.n_tokens

        def first_attention(h: torch.Tensor) -> torch.Tensor:
            return cached_first_layer_attention(attention, h, low_indices, cached, cache, n_tokens)

        return self.mini_encoder(low, first_attention=first_attention)

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: torch.Tensor, route_values: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Run scLong on a batch of cells.

        Parameters
        ----------
        x
            ``(batch, n_tokens)`` values; ``<= config.mask_threshold`` marks a mask token.
        route_values
            ``(batch, n_tokens)`` values that decide the routing (:meth:`route`); default ``x``
            itself, as in the original (masked positions then always go to the low set). The
            masked-expression objective of the network without the low-expression branch
            passes the unmasked values with the chosen positions set to ``inf``, so that the
            genes it is to predict enter the top set
            (:class:`~sclong_scverse.module.ScLongModule`).

        Returns
        -------
        A dictionary with

        - ``prediction``: ``(batch, n_tokens)`` predicted expression (the head's output);
        - ``decodings``: ``(batch, n_tokens, dim)`` merged decodings, the per-gene representation;
        - ``predicted``: ``(batch, n_tokens)`` bool, the positions the network decodes and
          predicts (all ``True`` with the low-expression branch);
        - ``merged_encodings``: ``(batch, n_tokens, dim)`` both encoders' outputs in gene order
          plus the gene embedding (the decoder's input);
        - ``top_encodings``: ``(batch, top_seq_len, dim)`` large-encoder output;
        - ``low_encodings``: ``(batch, n_tokens - top_seq_len, dim)`` mini-encoder output;
        - ``top_indices``, ``low_indices``: the routing (positions of both sets).

        Without the low-expression branch (``config.low_expression_branch=False``) only the
        top set is encoded and decoded: ``merged_encodings`` is the decoder's input of
        ``(batch, top_seq_len, dim)`` (top encodings plus gene embedding, in ``top_indices``
        order), there are no ``low_encodings``, and ``predicted`` is ``True`` at
        ``top_indices`` only. ``prediction`` and ``decodings`` keep their full-length shapes
        so that per-gene consumers need no second code path, and hold exact zeros (constants,
        no gradient) at the positions the network does not see: use ``predicted`` to leave
        them out (the module's loss, :class:`~sclong_scverse.model.SCLONG`'s queries and the
        GRN functions do).
        """
        n_tokens = self.config.n_tokens
        if x.ndim != 2 or x.shape[1] != n_tokens:
            raise ScLongInputError(
                f"Expected input of shape (batch, {n_tokens}) (n_genes + 1 pad token), "
                f"got {tuple(x.shape)}."
            )
        if route_values is not None and route_values.shape != x.shape:
            raise ScLongInputError(
                f"route_values must have the shape of x {tuple(x.shape)}, "
                f"got {tuple(route_values.shape)}."
            )
        gene_embedding = self.gene_embedding()
        tokens = self.encode_tokens(x, gene_embedding)
        top_indices, low_indices = self.route(x if route_values is None else route_values)
        dim = tokens.shape[-1]

        top = torch.gather(tokens, 1, top_indices.unsqueeze(-1).expand(-1, -1, dim))
        top = self.large_in_norm(self.large_in(top))
        top = self.large_out_norm(self.large_out(self.large_encoder(top)))
        if self.mini_encoder is None:
            return self._decode_top_only(x, top, top_indices, low_indices, gene_embedding)
        low = torch.gather(tokens, 1, low_indices.unsqueeze(-1).expand(-1, -1, dim))
        if self._zero_token_cache_applies(low):
            low = self._mini_encoder_with_cache(x, low, low_indices, gene_embedding)
        else:
            low = self.mini_encoder(low)

        dtype = torch.promote_types(top.dtype, low.dtype)
        merged = torch.empty(x.shape[0], n_tokens, dim, dtype=dtype, device=x.device)
        merged.scatter_(1, top_indices.unsqueeze(-1).expand(-1, -1, dim), top.to(dtype))
        merged.scatter_(1, low_indices.unsqueeze(-1).expand(-1, -1, dim), low.to(dtype))
        merged = merged + gene_embedding

        decodings = self.decoder_norm(self.decoder(merged))
        prediction = self.expression_head(decodings).squeeze(-1)
        return {
            "prediction": prediction,
            "decodings": decodings,
            "predicted": torch.ones_like(x, dtype=torch.bool),
            "merged_encodings": merged,
            "top_encodings": top,
            "low_encodings": low,
            "top_indices": top_indices,
            "low_indices": low_indices,
        }

    def _decode_top_only(
        self,
        x: torch.Tensor,
        top: torch.Tensor,
        top_indices: torch.Tensor,
        low_indices: torch.Tensor,
        gene_embedding: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The decoder over the top set alone (no low-expression branch), see :meth:`forward`."""
        dim = top.shape[-1]
        index = top_indices.unsqueeze(-1).expand(-1, -1, dim)
        merged = top + gene_embedding[top_indices]  # (batch, top_seq_len, dim)
        decoded = self.decoder_norm(self.decoder(merged))
        predicted_top = self.expression_head(decoded).squeeze(-1)
        shape = (x.shape[0], self.config.n_tokens)
        decodings = decoded.new_zeros(*shape, dim).scatter(1, index, decoded)
        prediction = predicted_top.new_zeros(shape).scatter(1, top_indices, predicted_top)
        predicted = torch.zeros(shape, dtype=torch.bool, device=x.device)
        predicted.scatter_(1, top_indices, True)
        return {
            "prediction": prediction,
            "decodings": decodings,
            "predicted": predicted,
            "merged_encodings": merged,
            "top_encodings": top,
            "top_indices": top_indices,
            "low_indices": low_indices,
        }
