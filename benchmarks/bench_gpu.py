"""scLong on a GPU: cells/s and peak memory of the 1b preset, and the same figures on paper.

Measured (needs CUDA): the official 1b configuration (27,874 genes, 1.0 billion parameters, random
weights: speed does not depend on their values) on real CellBench cells (all 27,875 tokens,
their genes on the first vocabulary positions), inference under ``torch.inference_mode`` with
bf16 autocast at batch 1..64 (the streamed attention of ``nn.performer``), and one training step
(bf16 autocast, AdamW) at small batches with and without activation checkpointing
(``Performer.gradient_checkpointing``). A batch that does not fit prints "out of memory" and ends
its row. Cells/s are measured after a warm-up; peak memory is ``torch.cuda.max_memory_allocated``.

On paper (``--paper``, any machine): matmul FLOPs per cell from ``_cost.py``, the weights' and
activations' memory at fp32 / bf16, the largest batch that fits 80 GB, and the cells/s one H100
would give at 50% of its dense bf16 peak (989 TFLOP/s), next to the original implementation's
~3 cells/s on one H200 (a third-party report, inference).

Usage::

    python benchmarks/bench_gpu.py --paper          # the estimates, no GPU needed
    python benchmarks/bench_gpu.py                  # on a CUDA machine: estimates + measured
    python benchmarks/bench_gpu.py --preset bench   # a smaller network (quick check)
"""

from __future__ import annotations

import argparse
import time

import torch

from _cost import activation_bytes_per_cell, network_flops
from bench_network import real_cells

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM, dense bf16 tensor cores
GPU_MEMORY_GB = 80.0


def paper(preset: str) -> None:
    """Print the on-paper FLOP, memory and throughput figures of ``preset``."""
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    config = ScLongConfig.preset(preset)
    flops = sum(network_flops(config).values())
    with torch.device("meta"):
        n_params = sum(p.numel() for p in ScLongNetwork(config).parameters())
    rate = 0.5 * H100_BF16_DENSE_TFLOPS * 1e12
    print(
        f"On paper: preset {preset!r}, {n_params / 1e9:.3f} billion parameters, "
        f"{config.n_tokens:,} tokens, {flops / 1e12:.2f} TFLOP per cell (forward, matmuls)"
    )
    print(f"{'':<34}{'fp32':>12}{'bf16 autocast':>15}")
    weights32 = n_params * 4 / 1e9
    print(
        f"{'weights (GB)':<34}{weights32:>12.1f}{weights32:>15.1f}  (autocast keeps fp32 weights)"
    )
    train_state = n_params * 16 / 1e9  # weights, gradients, AdamW's two moments (fp32)
    print(f"{'weights + grads + AdamW (GB)':<34}{train_state:>12.1f}{train_state:>15.1f}")
    for label, training, checkpointing in (
        ("activations, inference (GB/cell)", False, False),
        ("activations, training (GB/cell)", True, False),
        ("  with checkpointing (GB/cell)", True, True),
    ):
        a32 = activation_bytes_per_cell(config, 4, training, checkpointing) / 1e9
        a16 = activation_bytes_per_cell(config, 2, training, checkpointing) / 1e9
        print(f"{label:<34}{a32:>12.2f}{a16:>15.2f}")
    for label, base, training, checkpointing in (
        ("largest batch in 80 GB, inference", weights32, False, False),
        ("largest batch in 80 GB, training", train_state, True, False),
        ("  with checkpointing", train_state, True, True),
    ):
        fits = []
        for size in (4, 2):
            per_cell = activation_bytes_per_cell(config, size, training, checkpointing) / 1e9
            fits.append(max(int((GPU_MEMORY_GB - base) // per_cell), 0))
        print(f"{label:<34}{fits[0]:>12,}{fits[1]:>15,}")
    print(
        f"Expected on one H100 at 50% of its dense bf16 peak ({rate / 1e12:.0f} TFLOP/s): "
        f"inference {rate / flops:.0f} cells/s; training (forward + backward = 3x) "
        f"{rate / (3 * flops):.0f} cells/s, {rate / (4 * flops):.0f} with checkpointing "
        "(one more forward). The original implementation: ~3 cells/s on one H200 (inference, "
        "third-party report)."
    )


def _time(step, repeats: int) -> float:
    step()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(preset: str, batches: list[int], train_batches: list[int], repeats: int) -> None:
    """Measure inference and training throughput and peak memory on the current CUDA device."""
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    device = torch.device("cuda")
    config = ScLongConfig.preset(preset)
    torch.manual_seed(0)
    network = ScLongNetwork(config).to(device)
    flops = sum(network_flops(config).values())
    cells = real_cells(max(batches + train_batches), config.n_tokens, None).to(device)
    print(f"\nMeasured on {torch.cuda.get_device_name()}: preset {preset!r}, bf16 autocast")
    print(f"{'mode':<34}{'batch':>7}{'cells/s':>10}{'TFLOP/s':>10}{'peak GB':>10}")
    network.eval()
    for batch in batches:
        x = cells[:batch]

        def infer(x=x):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                network(x)

        try:
            seconds = _time(infer, repeats)
        except torch.OutOfMemoryError:
            print(f"{'inference':<34}{batch:>7}{'out of memory':>30}")
            torch.cuda.empty_cache()
            break
        peak = torch.cuda.max_memory_allocated() / 1e9
        print(
            f"{'inference':<34}{batch:>7}{batch / seconds:>10.1f}"
            f"{batch * flops / seconds / 1e12:>10.1f}{peak:>10.1f}"
        )
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    network.train()
    for checkpointing in (False, True):
        for performer in network.performers:
            performer.gradient_checkpointing = checkpointing
        label = "training step" + (", checkpointing" if checkpointing else "")
        for batch in train_batches:
            x = cells[:batch]

            def step(x=x):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = (network(x)["prediction"] - x).pow(2).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            try:
                seconds = _time(step, max(1, repeats // 2))
            except torch.OutOfMemoryError:
                print(f"{label:<34}{batch:>7}{'out of memory':>30}")
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                break
            peak = torch.cuda.max_memory_allocated() / 1e9
            print(
                f"{label:<34}{batch:>7}{batch / seconds:>10.1f}"
                f"{3 * batch * flops / seconds / 1e12:>10.1f}{peak:>10.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--paper", action="store_true", help="the estimates only (no GPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--train-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    paper(args.preset)
    if args.paper:
        return
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run with --paper for the estimates.")
    measure(args.preset, args.batches, args.train_batches, args.repeats)


if __name__ == "__main__":
    main()
