"""Analytic cost of the scLong network: matmul FLOPs and activation sizes per cell.

Counts the multiply-adds of every matrix product (2 FLOPs each) of one forward pass; element-wise
work (exp, GELU, LayerNorm, adds) is left out (a few percent). Used by ``bench_gpu.py`` (the
"on paper" table) and to turn measured seconds into achieved FLOP/s.
"""

from __future__ import annotations


def performer_flops(
    n_tokens: int, dim: int, depth: int, heads: int, dim_head: int, features: int, ff_mult: int = 4
) -> dict[str, float]:
    """Matmul FLOPs of one cell through a FAVOR+ Performer stack, by part."""
    inner = heads * dim_head
    per_layer = {
        "Q/K/V": 2.0 * n_tokens * dim * 3 * inner,
        "output": 2.0 * n_tokens * inner * dim,
        "feed-forward": 2.0 * n_tokens * dim * ff_mult * dim * 2,
        "feature maps": 2.0 * 2 * heads * n_tokens * dim_head * features,
        "KV products": 2.0 * heads * n_tokens * features * (2 * dim_head + 1),
    }
    return {part: depth * flops for part, flops in per_layer.items()}


def network_flops(config) -> dict[str, float]:
    """Matmul FLOPs per cell of a :class:`~sclong_scverse.nn.ScLongConfig`, by component."""
    n, top = config.n_tokens, config.top_seq_len
    low = n - top
    parts = {
        "value embedding": 2.0 * n * config.value_hidden_dim * (1 + config.dim),
        "large encoder in/out": 2.0 * top * config.dim * config.large_dim * 2,
        "head": 2.0 * n * config.dim,
    }
    encoders = {
        "large encoder": (
            top,
            config.large_dim,
            config.large_depth,
            config.large_heads,
            config.large_dim_head,
        ),
        "mini encoder": (
            low,
            config.dim,
            config.mini_depth,
            config.mini_heads,
            config.mini_dim_head,
        ),
        "decoder": (
            n,
            config.dim,
            config.decoder_depth,
            config.decoder_heads,
            config.decoder_dim_head,
        ),
    }
    for name, (tokens, width, depth, heads, dim_head) in encoders.items():
        features = config.features_for(dim_head)
        for part, flops in performer_flops(tokens, width, depth, heads, dim_head, features).items():
            parts[f"{name}: {part}"] = flops
    return parts


def activation_bytes_per_cell(
    config, bytes_per_value: int, training: bool, checkpointing: bool = False
) -> float:
    """Rough activation memory per cell (the tensors alive at the peak), in bytes.

    Inference with the streamed attention keeps a few ``tokens x width`` tensors per encoder
    (input, normalised input, output, merged and decoded tokens). Training keeps, per layer,
    the inputs of every matrix product and the FAVOR+ features (``heads x tokens x features``
    for queries and keys) for the backward pass; with activation checkpointing only each
    layer's input is kept, plus one layer's activations while it is recomputed.
    """
    n, top = config.n_tokens, config.top_seq_len
    low = n - top
    stacks = [
        (top, config.large_dim, config.large_depth, config.large_heads, config.large_dim_head),
        (low, config.dim, config.mini_depth, config.mini_heads, config.mini_dim_head),
        (n, config.dim, config.decoder_depth, config.decoder_heads, config.decoder_dim_head),
    ]
    if not training:
        values = 8 * n * config.dim + 4 * top * config.large_dim
        return float(values * bytes_per_value)

    def layer_values(tokens, width, heads, dim_head):
        inner = heads * dim_head
        features = config.features_for(dim_head)
        return tokens * (4 * width + 4 * inner + 2 * heads * features + 2 * 4 * width)

    total = 6 * n * config.dim
    for tokens, width, depth, heads, dim_head in stacks:
        if checkpointing:
            total += depth * tokens * width
        else:
            total += depth * layer_values(tokens, width, heads, dim_head)
    if checkpointing:  # the largest layer, recomputed during the backward pass
        total += max(layer_values(t, w, h, d) for t, w, _, h, d in stacks)
    return float(total * bytes_per_value)
