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
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

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
        raise ValueError(f"key_max must be 'batch' or 'cell', not {key_max!r}.")
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

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention update of ``x``, without the residual.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.

        Returns
        -------
        ``(batch, tokens, dim)`` update.
        """
        h = self.norm(x)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feed-forward update of ``x``, without the residual.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.

        Returns
        -------
        ``(batch, tokens, dim)`` update.
        """
        return self.w2(self.act(self.w1(self.norm(x))))


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

    @property
    def key_max(self) -> KeyMax:
        """The key stabiliser of every layer."""
        return self.layers[0].attention.key_max if len(self.layers) else "batch"

    @key_max.setter
    def key_max(self, value: KeyMax) -> None:
        if value not in ("batch", "cell"):
            raise ValueError(f"key_max must be 'batch' or 'cell', not {value!r}.")
        for layer in self.layers:
            layer.attention.key_max = value

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply all layers.

        Parameters
        ----------
        x
            Tokens, ``(batch, tokens, dim)``.

        Returns
        -------
        ``(batch, tokens, dim)`` output of the last layer.
        """
        for layer in self.layers:
            x = layer(x)
        return x
