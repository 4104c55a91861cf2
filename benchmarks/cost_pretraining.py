"""Pretraining at scale on paper: FLOPs, memory, cells/s per GPU, GPU-days, what FSDP shards.

For a preset (default ``1b``, the published size) and bf16 mixed precision (fp32 master
weights, bf16 matmuls): matmul FLOPs per cell from ``_cost.py`` (training = forward + backward
= 3 forwards; with activation checkpointing one more forward), memory of the training state
(weights, gradients and AdamW's two moments in fp32: 16 bytes per parameter) and of the
activations per cell, the largest batch per GPU, throughput at a stated fraction of an H100's
dense bf16 peak (model FLOP utilisation, MFU), GPU-days for the article's 48 million cells, and
the per-GPU state under DDP (replicated) and FSDP full sharding (``SCLONG.pretrain(...,
strategy="fsdp")`` wraps each Performer layer: a GPU holds 1/N of everything and gathers one
layer's weights at a time).

Estimates, not measurements: no GPU was available to this project's sessions
(``bench_gpu.py`` measures one when there is). Run: ``python benchmarks/cost_pretraining.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cost import activation_bytes_per_cell, network_flops

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM, dense bf16 tensor cores
GPU_MEMORY_GB = 80.0
ATLAS_CELLS = 48e6  # the article's pretraining corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--mfu", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64, 256])
    args = parser.parse_args()

    from sclong_scverse.nn import ScLongConfig, ScLongNetwork
    from sclong_scverse.nn.performer import PerformerLayer

    config = ScLongConfig.preset(args.preset)
    with torch.device("meta"):
        network = ScLongNetwork(config)
    n_params = sum(p.numel() for p in network.parameters())
    layer_params = [
        sum(p.numel() for p in module.parameters())
        for module in network.modules()
        if isinstance(module, PerformerLayer)
    ]
    forward = sum(network_flops(config).values())
    state_gb = n_params * 16 / 1e9
    act = activation_bytes_per_cell(config, 2, training=True) / 1e9
    act_ckpt = activation_bytes_per_cell(config, 2, training=True, checkpointing=True) / 1e9

    print(f"## Preset {args.preset!r}: {n_params / 1e9:.3f} billion parameters, "
          f"{config.n_tokens:,} tokens per cell, bf16 mixed precision\n")  # fmt: skip
    print("| per cell | value |\n|:--|--:|")
    print(f"| forward, matmul FLOPs | {forward / 1e12:.2f} TFLOP |")
    print(f"| training step (3 forwards) | {3 * forward / 1e12:.1f} TFLOP |")
    print(f"| training step with checkpointing (4 forwards) | {4 * forward / 1e12:.1f} TFLOP |")
    print(f"| activations kept for the backward pass | {act:.2f} GB |")
    print(f"| with activation checkpointing | {act_ckpt:.2f} GB |")
    print()
    print(f"Training state (fp32 weights + gradients + AdamW moments): {state_gb:.1f} GB. "
          f"Largest Performer layer: {max(layer_params) / 1e6:.1f} M parameters "
          f"({len(layer_params)} layers); outside the layers: "
          f"{(n_params - sum(layer_params)) / 1e6:.1f} M.\n")  # fmt: skip

    print("### Cells/s per H100 and GPU-days for 48 million cells\n")
    print("| MFU | checkpointing | cells/s per GPU | "
          + " | ".join(f"GPU-days, {e} epoch{'s' if e > 1 else ''}" for e in args.epochs)
          + " |")  # fmt: skip
    print("|--:|:--|--:|" + "--:|" * len(args.epochs))
    for mfu in args.mfu:
        rate = mfu * H100_BF16_DENSE_TFLOPS * 1e12
        for checkpointing, passes in ((False, 3), (True, 4)):
            cells_per_s = rate / (passes * forward)
            days = [ATLAS_CELLS * epochs / cells_per_s / 86400 for epochs in args.epochs]
            print(f"| {mfu:.0%} | {'yes' if checkpointing else 'no'} | {cells_per_s:.1f} | "
                  + " | ".join(f"{d:,.0f}" for d in days) + " |")  # fmt: skip
    print()
    print("### Memory per 80 GB GPU: DDP (replicated) vs FSDP (full shard)\n")
    print("| GPUs | strategy | state per GPU (GB) | largest batch per GPU | "
          "with checkpointing |\n|--:|:--|--:|--:|--:|")  # fmt: skip
    # unsharded while in use: the root unit (embeddings, GO graph network, heads: everything
    # outside the Performer layers) and one layer, bf16 weights + gradients
    root = n_params - sum(layer_params)
    gathered = (root + max(layer_params)) * 2 * 2 / 1e9
    for gpus in args.gpus:
        for strategy, state in (("ddp", state_gb), ("fsdp", state_gb / gpus + gathered)):
            free = GPU_MEMORY_GB - state
            batch = max(int(free // act), 0)
            batch_ckpt = max(int(free // act_ckpt), 0)
            print(f"| {gpus} | {strategy} | {state:.1f} | {batch} | {batch_ckpt} |")
    print(
        "\nFSDP (strategy='fsdp') shards parameters, gradients and optimiser state over the "
        "GPUs, one Performer layer per unit; each GPU gathers one layer's weights for its "
        "forward and backward. For the 1b preset the replicated state (about 16 GB) fits an "
        "80 GB GPU, so DDP is enough there and FSDP frees that memory for more cells per GPU; "
        "FSDP becomes necessary when the state approaches the GPU's memory: 40 GB GPUs with "
        "large batches, or presets above ~3 billion parameters (48 GB of state)."
    )


if __name__ == "__main__":
    main()
