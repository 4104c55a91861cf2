"""FAVOR+ Performer layers as used by scLong (pure torch).

The original scLong vendors an older copy of lucidrains' ``performer-pytorch``. This module
computes exactly what that copy computes (pre-LayerNorm FAVOR+ softmax-kernel attention without
q/k/v bias, pre-LayerNorm GELU feed-forward, residuals) with one difference made optional: the
key stabiliser. The original subtracts one maximum over the whole batch of keys
(``key_max="batch"``, the faithful mode); performer-pytorch 1.1.4 subtracts a maximum per cell
and head (``key_max="cell"``), which makes a cell's output independent of its batch-mates.

We do not subclass performer-pytorch: its 1.1.4 release cannot express the faithful stabiliser,
duplicates every weight under ``proj_updater.instance`` in its state dict, and imports
``distutils`` (gone in Python 3.12). The test suite checks that ``key_max="cell"`` gives the same
numbers as performer-pytorch 1.1.4 on the same weights.

Without autograd (inference), attention and feed-forward are streamed by blocks of ``chunk_size``
tokens, so that the ``(batch, heads, tokens, features)`` kernel features and the
``(batch, tokens, 4 * dim)`` hidden layer are never materialised whole. Keys are reduced block by
block with a block-local stabiliser and rescaled to the global one at the end (as flash attention
does for the softmax), so the faithful batch-wide key maximum stays exact. Training (autograd on)
uses the reference computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..errors import ScLongInputError

KeyMax = Literal["batch", "cell"]


def gaussian_orthogonal_random_matrix(
    nb_rows: int,
    nb_columns: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw FAVOR+ projection features: blocks of random orthogonal rows with chi-norms.

    Same distribution as performer-pytorch's ``gaussian_orthogonal_random_matrix(scaling=0)``.

    Parameters
    ----------
    nb_rows
        Number of random features.
    nb_columns
        Head size.
    device
        Device of the result.
    generator
        Optional random generator, for reproducible draws.

    Returns
    -------
    ``(nb_rows, nb_columns)`` float32 tensor.
    """
    blocks = []
    n_blocks = math.ceil(nb_rows / nb_columns)
    for _ in range(n_blocks):
        unstructured = torch.randn((nb_columns, nb_columns), generator=generator)
        q, _ = torch.linalg.qr(unstructured, mode="reduced")
        blocks.append(q.t())
    matrix = torch.cat(blocks)[:nb_rows]
    multiplier = torch.randn((nb_rows, nb_columns), generator=generator).norm(dim=1)
    return (multiplier[:, None] * matrix).to(device)


def softmax_kernel_features(
    data: torch.Tensor,
    projection_matrix: torch.Tensor,
    *,
    is_query: bool,
    key_max: KeyMax = "batch",
    eps: float = 1e-4,
    add_eps: bool = True,
) -> torch.Tensor:
    """Positive random features of the softmax kernel (FAVOR+).

    ``ratio * (exp(x·w / d^1/4 - |x|^2 / (2 sqrt(d)) - max) + eps)`` with ``ratio = m^-1/2`` for
    ``m`` features, as in the original scLong and performer-pytorch.

    Parameters
    ----------
    data
        Queries or keys, ``(batch, heads, tokens, head_dim)``.
    projection_matrix
        ``(features, head_dim)`` random projection.
    is_query
        Queries are stabilised by their own row maximum; keys by ``key_max``.
    key_max
        ``"batch"``: one maximum over the whole tensor of keys (the original scLong);
        ``"cell"``: a maximum per cell and head (performer-pytorch 1.1.4).
    eps
        Added after the exponential (times ``ratio``), as in both implementations.
    add_eps
        ``False`` leaves out the constant ``ratio * eps``; :func:`linear_attention` can add it
        implicitly, which saves two passes over the largest tensors.

    Returns
    -------
    ``(batch, heads, tokens, features)`` features.
    """
    normalizer = data.shape[-1] ** -0.25
    ratio = projection_matrix.shape[0] ** -0.5
    projection = (projection_matrix * normalizer).type_as(data)
    data_dash = torch.matmul(data, projection.t())
    diag_data = (data**2).sum(dim=-1, keepdim=True) * (normalizer**2 / 2.0)
    if is_query:
        stabiliser = data_dash.amax(dim=-1, keepdim=True)
    elif key_max == "batch":
        stabiliser = data_dash.amax()
    elif key_max == "cell":
        stabiliser = data_dash.amax(dim=(-1, -2), keepdim=True)
    else:
        raise ScLongInputError(f"key_max must be 'batch' or 'cell', not {key_max!r}.")
    # ratio * exp(z) = exp(z + log ratio): one shift of size (..., tokens, 1), one exp
    shift = diag_data + stabiliser.detach() - math.log(ratio)
    if torch.is_grad_enabled() and data_dash.requires_grad:
        features = torch.exp(data_dash - shift)
    else:  # inference: in place, no temporary of the largest size
        features = data_dash.sub_(shift).exp_()
    return features + ratio * eps if add_eps else features


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: float = 0.0
) -> torch.Tensor:
    """Non-causal linear attention ``D^-1 q' (k'^T v)`` over kernel features.

    Parameters
    ----------
    q, k
        Kernel features ``(batch, heads, tokens, features)``; the features used are
        ``q + offset`` and ``k + offset`` (the FAVOR+ ``eps`` term), added implicitly.
    v
        Values ``(batch, heads, tokens, head_dim)``.
    offset
        Constant added to every feature of ``q`` and ``k``.

    Returns
    -------
    ``(batch, heads, tokens, head_dim)``.
    """
    n_tokens = k.shape[-2]
    k_sum = k.sum(dim=-2) + n_tokens * offset  # (b, h, m)
    context = torch.matmul(k.transpose(-1, -2), v)  # (b, h, m, e)
    if offset:
        context = context + offset * v.sum(dim=-2, keepdim=True)
    normaliser = torch.matmul(q, k_sum.unsqueeze(-1).type_as(q))  # (b, h, n, 1)
    out = torch.matmul(q, context.type_as(q))
    if offset:
        normaliser = normaliser + offset * k_sum.sum(dim=-1)[..., None, None]
        out = out + offset * context.sum(dim=-2, keepdim=True)
    return out / normaliser


def _query_features(q: torch.Tensor, proj_t: torch.Tensor, half_sq: float, ratio: float):
    """FAVOR+ query features ``ratio * exp(q·w - |q|^2/2 - row max)`` (no eps), in place."""
    features = torch.matmul(q, proj_t)
    shift = (q * q).sum(dim=-1, keepdim=True).mul_(half_sq)
    shift.add_(features.amax(dim=-1, keepdim=True)).sub_(math.log(ratio))
    return features.sub_(shift).exp_()


def _attend(features, context, key_sum, context_offset, normaliser_offset) -> torch.Tensor:
    """Queries' features applied to the keys' sums: ``(b, H, c, d)`` -> ``(b, c, H, d)``."""
    numerator = torch.matmul(features, context).add_(context_offset)
    normaliser = torch.matmul(features, key_sum).add_(normaliser_offset)
    return numerator.div_(normaliser).transpose(1, 2)


def streamed_favor_attention(
    h: torch.Tensor,
    weight_q: torch.Tensor,
    weight_k: torch.Tensor,
    weight_v: torch.Tensor,
    projection_matrix: torch.Tensor,
    heads: int,
    *,
    key_max: KeyMax = "batch",
    eps: float = 1e-4,
    chunk_size: int = 256,
) -> torch.Tensor:
    """FAVOR+ attention of normalised tokens, streamed by blocks of tokens (no autograd).

    Computes what ``to_q/to_k/to_v`` projections, :func:`softmax_kernel_features` and
    :func:`linear_attention` compute together (before the output projection), in memory
    ``O(batch * heads * chunk_size * features)`` instead of ``O(batch * heads * tokens *
    features)``.
    Keys: each block's features are ``exp(x·w - |x|^2/2 - local max)``; the block's ``k'^T v`` and
    ``sum k'`` are rescaled by ``exp(local max - global max)`` once every block is seen (the global
    maximum is over the whole batch for ``key_max="batch"``, per cell and head for ``"cell"``).
    Queries are stabilised by their own row maximum, a per-token quantity, so blocks are exact.

    Parameters
    ----------
    h
        Normalised tokens, ``(batch, tokens, dim)``.
    weight_q, weight_k, weight_v
        ``(heads * head_dim, dim)`` projection weights (no bias).
    projection_matrix
        ``(features, head_dim)`` FAVOR+ random features.
    heads
        Number of heads.
    key_max
        Key stabiliser, see :func:`softmax_kernel_features`.
    eps
        The FAVOR+ ``eps`` (added to every feature, times ``features^-1/2``).
    chunk_size
        Tokens per block.

    Returns
    -------
    ``(batch, tokens, heads * head_dim)`` attention output, heads concatenated.
    """
    b, n, _ = h.shape
    inner = weight_q.shape[0]
    d = inner // heads
    m = projection_matrix.shape[0]
    normalizer = d**-0.25
    half_sq = normalizer**2 / 2.0
    ratio = m**-0.5
    offset = eps * ratio
    proj_t = (projection_matrix * normalizer).t().to(h.dtype)  # (d, m)
    weight_kv = torch.cat([weight_k, weight_v])
    blocks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]

    # keys and values, block by block: unscaled sums and each block's local maximum
    contexts, key_sums, maxima = [], [], []
    value_sum = None
    for start, stop in blocks:
        kv = F.linear(h[:, start:stop], weight_kv).view(b, stop - start, 2, heads, d)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (b, H, c, d)
        features = torch.matmul(k, proj_t)  # (b, H, c, m)
        if key_max == "batch":
            local = features.amax().reshape(1, 1, 1, 1)
        elif key_max == "cell":
            local = features.amax(dim=(-1, -2), keepdim=True)  # (b, H, 1, 1)
        else:
            raise ScLongInputError(f"key_max must be 'batch' or 'cell', not {key_max!r}.")
        diag = (k * k).sum(dim=-1, keepdim=True).mul_(half_sq)
        features.sub_(diag).sub_(local).exp_()
        contexts.append(torch.matmul(features.transpose(-1, -2), v))  # (b, H, m, d)
        key_sums.append(features.sum(dim=-2))  # (b, H, m)
        maxima.append(local)
        block_values = v.sum(dim=-2)  # (b, H, d)
        value_sum = block_values if value_sum is None else value_sum + block_values
        del kv, k, v, features

    # k' = ratio * exp(. - global max): the global maximum is over the whole batch of keys
    # ("batch") or per cell and head ("cell"); rescale each block, then add the eps terms
    stacked = torch.stack(maxima)  # (blocks, b or 1, H or 1, 1, 1)
    overall = stacked.amax() if key_max == "batch" else stacked.amax(dim=0)
    scales = torch.exp(stacked - overall) * ratio
    context = sum(s * c for s, c in zip(scales, contexts, strict=True))
    key_sum = sum(s[..., 0] * k for s, k in zip(scales, key_sums, strict=True))
    context = context + offset * value_sum.unsqueeze(-2)  # (b, H, m, d)
    key_sum = (key_sum + n * offset).unsqueeze(-1)  # (b, H, m, 1)
    context_offset = offset * context.sum(dim=-2, keepdim=True)  # (b, H, 1, d)
    normaliser_offset = offset * key_sum.sum(dim=-2, keepdim=True)  # (b, H, 1, 1)

    out = torch.empty(b, n, heads, d, dtype=h.dtype, device=h.device)
    for start, stop in blocks:
        q = F.linear(h[:, start:stop], weight_q).view(b, stop - start, heads, d).transpose(1, 2)
        features = _query_features(q, proj_t, half_sq, ratio)  # (b, H, c, m)
        out[:, start:stop] = _attend(features, context, key_sum, context_offset, normaliser_offset)
        del q, features
    return out.view(b, n, inner)


class FavorSelfAttention(nn.Module):
    """Pre-LayerNorm multi-head FAVOR+ self-attention (no q/k/v bias, output bias).

    Parameters
    ----------
    dim
        Token width.
    heads
        Number of heads.
    dim_head
        Head size.
    nb_features
        Random features per head.
    key_max
        Key stabiliser, see :func:`softmax_kernel_features`.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int, key_max: KeyMax):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.key_max = key_max
        self.eps = 1e-4
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.register_buffer(
            "projection_matrix", gaussian_orthogonal_random_matrix(nb_features, dim_head)
        )
        # tokens per block of the streamed inference path; None: always the reference path
        self.chunk_size: int | None = 256

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention update of ``x``, without the residual.

        Without autograd and with ``chunk_size`` set, :func:`streamed_favor_attention` computes
        it (the same numbers up to float rounding, less memory); otherwise the reference path.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.

        Returns
        -------
        ``(batch, tokens, dim)`` update.
        """
        h = self.norm(x)
        if self.chunk_size is not None and not torch.is_grad_enabled():
            out = streamed_favor_attention(
                h,
                self.to_q.weight,
                self.to_k.weight,
                self.to_v.weight,
                self.projection_matrix,
                self.heads,
                key_max=self.key_max,
                eps=self.eps,
                chunk_size=self.chunk_size,
            )
            return self.to_out(out)
        q, k, v = (self._split_heads(f(h)) for f in (self.to_q, self.to_k, self.to_v))
        projection = self.projection_matrix
        q = softmax_kernel_features(q, projection, is_query=True, add_eps=False)
        k = softmax_kernel_features(
            k, projection, is_query=False, key_max=self.key_max, add_eps=False
        )
        out = linear_attention(q, k, v, offset=self.eps * projection.shape[0] ** -0.5)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Pre-LayerNorm feed-forward ``dim -> mult*dim -> GELU -> dim``.

    Parameters
    ----------
    dim
        Token width.
    mult
        Expansion of the hidden layer (4 in scLong).
    """

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.w1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.w2 = nn.Linear(dim * mult, dim)
        # tokens per block without autograd (the hidden layer is never whole); None: one block
        self.chunk_size: int | None = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feed-forward update of ``x``, without the residual.

        ``(batch, tokens, dim)`` in and out, as :meth:`FavorSelfAttention.forward`. Every token
        is independent, so without autograd the tokens go through in blocks of
        ``chunk_size`` (the same numbers, a ``(batch, chunk_size, mult * dim)`` hidden layer).
        """
        n = x.shape[1]
        if self.chunk_size is None or torch.is_grad_enabled() or n <= self.chunk_size:
            return self.w2(self.act(self.w1(self.norm(x))))
        out = torch.empty(*x.shape[:-1], self.w2.out_features, dtype=x.dtype, device=x.device)
        for start in range(0, n, self.chunk_size):
            block = x[:, start : start + self.chunk_size]
            hidden = self.w1(self.norm(block))
            out[:, start : start + self.chunk_size] = self.w2(self.act(hidden))
        return out


class PerformerLayer(nn.Module):
    """One Performer layer: ``x + attention(x)``, then ``x + feed_forward(x)``.

    Parameters
    ----------
    dim
        Token width.
    heads
        Number of attention heads.
    dim_head
        Head size.
    nb_features
        FAVOR+ random features per head.
    ff_mult
        Feed-forward expansion.
    key_max
        Key stabiliser: ``"batch"`` (faithful) or ``"cell"``, see :class:`FavorSelfAttention`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        nb_features: int,
        ff_mult: int,
        key_max: KeyMax,
    ):
        super().__init__()
        self.attention = FavorSelfAttention(dim, heads, dim_head, nb_features, key_max)
        self.feed_forward = FeedForward(dim, ff_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.

        Returns
        -------
        ``(batch, tokens, dim)`` output, residuals included.
        """
        x = x + self.attention(x)
        return x + self.feed_forward(x)


class Performer(nn.Module):
    """A stack of FAVOR+ Performer layers.

    Parameters
    ----------
    dim
        Token width.
    depth
        Number of layers.
    heads
        Heads per layer.
    dim_head
        Head size.
    nb_features
        Random features per head.
    ff_mult
        Feed-forward expansion.
    key_max
        Key stabiliser: ``"batch"`` (faithful) or ``"cell"``.

    Notes
    -----
    The random projection matrices are buffers. They change only through
    :meth:`redraw_projection_matrices`, which pretraining may call; loading weights and
    fine-tuning never redraw them.

    ``gradient_checkpointing = True`` keeps only each layer's input during training and
    recomputes the layer in the backward pass (``torch.utils.checkpoint``): activation memory
    of one layer instead of all, for about a third more compute. The same gradients.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        nb_features: int,
        ff_mult: int = 4,
        key_max: KeyMax = "batch",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                PerformerLayer(dim, heads, dim_head, nb_features, ff_mult, key_max)
                for _ in range(depth)
            ]
        )
        # kept for the official checkpoint layout; counts forward calls since the last redraw
        self.register_buffer("calls_since_last_redraw", torch.tensor(0))
        # recompute each layer's activations in the backward pass instead of keeping them
        self.gradient_checkpointing = False

    @property
    def key_max(self) -> KeyMax:
        """The key stabiliser of every layer."""
        return self.layers[0].attention.key_max if len(self.layers) else "batch"

    @key_max.setter
    def key_max(self, value: KeyMax) -> None:
        if value not in ("batch", "cell"):
            raise ScLongInputError(f"key_max must be 'batch' or 'cell', not {value!r}.")
        for layer in self.layers:
            layer.attention.key_max = value

    @property
    def chunk_size(self) -> int | None:
        """Tokens per block of the streamed inference path (``None``: the reference path)."""
        return self.layers[0].attention.chunk_size if len(self.layers) else None

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        if value is not None and (int(value) != value or value < 1):
            raise ScLongInputError(f"chunk_size must be a positive integer or None, not {value!r}.")
        for layer in self.layers:
            layer.attention.chunk_size = value
            layer.feed_forward.chunk_size = value

    @torch.no_grad()
    def redraw_projection_matrices(self, generator: torch.Generator | None = None) -> None:
        """Draw new random features for every layer (pretraining only).

        Parameters
        ----------
        generator
            Optional random generator, for reproducible draws.
        """
        for layer in self.layers:
            buffer = layer.attention.projection_matrix
            buffer.copy_(gaussian_orthogonal_random_matrix(*buffer.shape, generator=generator))
        self.calls_since_last_redraw.zero_()

    def forward(
        self,
        x: torch.Tensor,
        first_attention: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Apply all layers.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.
        first_attention
            Computes the first layer's attention output before its output projection, in
            place of the layer's own (e.g. :func:`cached_first_layer_attention`).

        Returns
        -------
        ``(batch, tokens, dim)`` output of the last layer.
        """
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        for index, layer in enumerate(self.layers):
            if index == 0 and first_attention is not None:
                x = x + layer.attention.to_out(first_attention(x))
                x = x + layer.feed_forward(x)
            elif checkpointing:
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class ZeroTokenCache:
    """First-layer attention terms of zero-valued tokens, computed once per set of weights.

    A zero-valued gene's token at a Performer's first layer is its gene embedding plus the
    embedding of the value 0: the same in every cell. So are its LayerNorm, its query, key and
    value projections and its FAVOR+ features (queries are stabilised per token; keys are kept
    relative to a reference maximum and rescaled to a batch's own maximum when used, which is
    exact). :func:`cached_first_layer_attention` uses them: a cell's key sums over its
    zero-valued tokens are the cached totals minus its other tokens' terms.

    Parameters
    ----------
    attention
        The first layer's attention module.
    tokens
        ``(n_tokens, dim)`` first-layer input of every position holding the value 0.
    fingerprint
        What the cached values depend on (weights' storage and versions), to tell when to
        rebuild; see :meth:`valid_for`.

    Notes
    -----
    Memory: two ``heads x n_tokens x features`` tables (key and query features) plus
    ``heads x n_tokens x head_dim`` values; for the official mini encoder (8 heads of 64, 266
    features, 27,875 tokens) about 0.5 GB in float32.
    """

    def __init__(self, attention: FavorSelfAttention, tokens: torch.Tensor, fingerprint: tuple):
        self.fingerprint = fingerprint
        heads = attention.heads
        h = attention.norm(tokens)  # (n, dim)
        n = h.shape[0]
        q, k, v = (
            f(h).view(n, heads, -1).transpose(0, 1).contiguous()
            for f in (attention.to_q, attention.to_k, attention.to_v)
        )  # (H, n, d)
        d = q.shape[-1]
        m = attention.projection_matrix.shape[0]
        normalizer = d**-0.25
        half_sq = normalizer**2 / 2.0
        proj_t = (attention.projection_matrix * normalizer).t().to(h.dtype)
        self.ratio = m**-0.5
        data_dash = torch.matmul(k, proj_t)  # (H, n, m)
        self.key_max = data_dash.amax(dim=-1)  # (H, n): a token's share of the stabiliser
        # keys relative to a reference maximum (over everything for the batch-wide
        # stabiliser, per head for the per-cell one); rescaled to the batch's own when used
        if attention.key_max == "batch":
            self.reference = self.key_max.amax()  # ()
            shift = self.reference
        else:
            self.reference = self.key_max.amax(dim=1)  # (H,)
            shift = self.reference[:, None, None]
        diag = (k * k).sum(dim=-1, keepdim=True).mul_(half_sq)
        self.key_features = data_dash.sub_(diag).sub_(shift).exp_()
        self.values = v
        self.context_total = torch.matmul(self.key_features.transpose(-1, -2), v)  # (H, m, d)
        self.key_sum_total = self.key_features.sum(dim=1)  # (H, m)
        self.value_total = v.sum(dim=1)  # (H, d)
        self.query_features = _query_features(q, proj_t, half_sq, self.ratio)  # (H, n, m)

    def valid_for(self, fingerprint: tuple) -> bool:
        """Whether the cache was built from the weights that ``fingerprint`` describes."""
        return self.fingerprint == fingerprint


def cached_first_layer_attention(
    attention: FavorSelfAttention,
    x: torch.Tensor,
    positions: torch.Tensor,
    cached: torch.Tensor,
    cache: ZeroTokenCache,
    n_positions: int,
) -> torch.Tensor:
    """:func:`streamed_favor_attention` of a first layer, zero-valued tokens from a cache.

    The same numbers as ``attention``'s streamed path up to float rounding, for inference:
    tokens marked ``cached`` take their projections and features from ``cache``; the others
    (expressed or masked genes) are computed as usual.

    Parameters
    ----------
    attention
        The first layer's attention (its weights built ``cache``).
    x
        ``(batch, tokens, dim)`` the layer's input.
    positions
        ``(batch, tokens)`` each token's position in the cache (its gene).
    cached
        ``(batch, tokens)`` bool: the token holds the value 0 (its input is the cached one).
    cache
        The :class:`ZeroTokenCache` of these weights.
    n_positions
        Positions in the cache (``n_tokens`` of the network).

    Returns
    -------
    ``(batch, tokens, heads * head_dim)`` attention output before the output projection.
    """
    b, n, _ = x.shape
    heads = attention.heads
    weight_q, weight_k, weight_v = (
        f.weight for f in (attention.to_q, attention.to_k, attention.to_v)
    )
    inner = weight_q.shape[0]
    d = inner // heads
    m = attention.projection_matrix.shape[0]
    normalizer = d**-0.25
    half_sq = normalizer**2 / 2.0
    ratio = cache.ratio
    offset = attention.eps * ratio
    proj_t = (attention.projection_matrix * normalizer).t().to(x.dtype)
    chunk = attention.chunk_size or 256
    batch_max = attention.key_max == "batch"

    # tokens computed as usual (expressed, masked): gathered, padded per cell
    computed = ~cached
    n_computed = computed.sum(dim=1)
    width = int(n_computed.max()) if b else 0
    order = torch.sort(computed.to(torch.uint8), dim=1, descending=True, stable=True).indices
    own = order[:, :width]  # (b, width) token index within x
    own_valid = torch.arange(width, device=x.device)[None, :] < n_computed[:, None]
    if width:
        h = attention.norm(torch.gather(x, 1, own.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
        q, k, v = (
            F.linear(h, w).view(b, width, heads, d).transpose(1, 2)
            for w in (weight_q, weight_k, weight_v)
        )  # (b, H, width, d)
        own_dash = torch.matmul(k, proj_t)  # (b, H, width, m)
        own_diag = (k * k).sum(dim=-1, keepdim=True).mul_(half_sq)
        invalid = ~own_valid[:, None, :, None]
        own_max = own_dash.masked_fill(invalid, -torch.inf).amax(dim=-1)  # (b, H, width)
        v = v.masked_fill(invalid, 0.0)
    # the stabiliser: the maximum of the keys' data over the batch ("batch") or per cell and
    # head ("cell"), zero-valued tokens' shares taken from the cache
    cached_max = cache.key_max[:, positions]  # (H, b, n)
    cached_max = cached_max.masked_fill(~cached[None], -torch.inf).permute(1, 0, 2).amax(dim=-1)
    overall = cached_max if not width else torch.maximum(cached_max, own_max.amax(dim=-1))
    overall = overall.amax().reshape(1, 1) if batch_max else overall  # (1, 1) or (b, H)

    # cached tokens' key sums: the totals minus the terms of every position not cached in a cell
    is_cached = torch.zeros(b, n_positions, dtype=torch.bool, device=x.device)
    is_cached.scatter_(1, positions, cached)
    n_other = n_positions - is_cached.sum(dim=1)
    width_other = int(n_other.max()) if b else 0
    others = torch.sort((~is_cached).to(torch.uint8), dim=1, descending=True, stable=True).indices
    context = cache.context_total.unsqueeze(0).expand(b, -1, -1, -1).clone()  # (b, H, m, d)
    key_sum = cache.key_sum_total.unsqueeze(0).expand(b, -1, -1).clone()  # (b, H, m)
    value_sum = cache.value_total.unsqueeze(0).expand(b, -1, -1).clone()  # (b, H, d)
    for start in range(0, width_other, chunk):
        stop = min(start + chunk, width_other)
        index = others[:, start:stop]  # (b, c)
        valid = (torch.arange(start, stop, device=x.device)[None, :] < n_other[:, None]).to(x.dtype)
        flat = index.reshape(-1)
        features = cache.key_features.index_select(1, flat).view(heads, b, stop - start, m)
        features = features.permute(1, 0, 2, 3) * valid[:, None, :, None]  # (b, H, c, m)
        values = cache.values.index_select(1, flat).view(heads, b, stop - start, d)
        values = values.permute(1, 0, 2, 3) * valid[:, None, :, None]
        context -= torch.matmul(features.transpose(-1, -2), values)
        key_sum -= features.sum(dim=-2)
        value_sum -= values.sum(dim=-2)
    scale = torch.exp(cache.reference - overall) * ratio  # (1 or b, H)
    context = context * scale[..., None, None]
    key_sum = key_sum * scale[..., None]
    if width:
        own_features = own_dash.sub_(own_diag).sub_(overall[..., None, None]).exp_()
        own_features = own_features.masked_fill(invalid, 0.0) * ratio
        context += torch.matmul(own_features.transpose(-1, -2), v)
        key_sum += own_features.sum(dim=-2)
        value_sum += v.sum(dim=-2)
    context = context + offset * value_sum.unsqueeze(-2)
    key_sum = (key_sum + n * offset).unsqueeze(-1)  # (b, H, m, 1)
    context_offset = offset * context.sum(dim=-2, keepdim=True)
    normaliser_offset = offset * key_sum.sum(dim=-2, keepdim=True)

    # queries: cached features for every token (computed tokens are overwritten below)
    out = torch.empty(b, n, heads, d, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        flat = positions[:, start:stop].reshape(-1)
        features = cache.query_features.index_select(1, flat).view(heads, b, stop - start, m)
        features = features.permute(1, 0, 2, 3)  # (b, H, c, m)
        out[:, start:stop] = _attend(features, context, key_sum, context_offset, normaliser_offset)
    if width:
        features = _query_features(q, proj_t, half_sq, ratio)
        own_out = _attend(features, context, key_sum, context_offset, normaliser_offset)
        rows = torch.arange(b, device=x.device)[:, None].expand(-1, width)
        out[rows[own_valid], own[own_valid]] = own_out[own_valid]
    return out.view(b, n, inner)
