"""Forward cost of the scLong network vs sequence length, and of the GO-GCN (CSR vs edge list).

Prints a table: seconds per cell and peak memory (RSS increase over the loaded model) for
- the tiny preset at 2k, 8k and 27,875 tokens, FAVOR+ (faithful) and a dense-attention control;
- the "bench" configuration of issue #2 (27,875 tokens, ~2,500 non-zero genes per cell,
  d=200, top 4,096, large encoder 2 x 4 x 64 at width 256, official mini encoder and decoder),
  batch 4, fp32 -- the original implementation needs about 10.2 s per cell and 5.9 GB peak here;
- one GCN forward on a 28k-node, 1M-edge graph: cached CSR vs torch-geometric's edge list.

Cells are real: CellBench log-normalised profiles (``SCLONG_SHARED_DATA``), their genes placed
on the first positions of the vocabulary. Each measurement runs in a fresh process.

Usage: python benchmarks/bench_network.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from _measure import cpu_seconds, in_fresh_process, peak_mb, reset_peak, rss_mb


def real_cells(n_cells: int, n_tokens: int, nonzero: int | None) -> torch.Tensor:
    """CellBench cells, log-normalised to max 10, on the first vocabulary positions."""
    from sclong_scverse.datasets import cellbench

    adata = cellbench(batches=("sc_celseq2",))
    counts = adata.X[:n_cells].toarray()
    values = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    values = values / values.max(1, keepdims=True) * 10
    if nonzero is not None:  # keep the `nonzero` highest genes of each cell
        cut = -np.sort(-values, axis=1)[:, nonzero - 1 : nonzero]
        values = np.where(values >= cut, values, 0.0)
    x = np.zeros((n_cells, n_tokens), dtype=np.float32)
    width = min(values.shape[1], n_tokens - 1)
    x[:, :width] = values[:, :width]
    return torch.from_numpy(x)


def dense_control(network) -> None:
    """Replace FAVOR+ by exact softmax attention (scaled_dot_product_attention)."""
    from sclong_scverse.nn.performer import FavorSelfAttention

    def forward(self, x):
        h = self.norm(x)
        q, k, v = (self._split_heads(f(h)) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    for module in network.modules():
        if isinstance(module, FavorSelfAttention):
            module.forward = forward.__get__(module)


def measure_network(queue, preset, n_tokens, top, batch, nonzero, dense, repeats):
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = ScLongConfig.preset(preset, n_genes=n_tokens - 1, top_seq_len=top)
    network = ScLongNetwork(config).eval()
    if dense:
        dense_control(network)
    x = real_cells(batch, n_tokens, nonzero)
    with torch.no_grad():
        network(x[:1])  # warm-up
        base = rss_mb()
        reset_peak()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for _ in range(repeats):
            network(x)
        seconds = (time.perf_counter() - start) / repeats / batch
        cpu = (cpu_seconds() - cpu_start) / repeats / batch
    queue.put((seconds, cpu, max(peak_mb() - base, 0.0)))


def measure_gcn(queue, use_csr, n_nodes=28_000, n_edges=1_000_000):
    from torch_geometric.nn import SGConv

    from sclong_scverse.nn import GeneEmbedding

    torch.manual_seed(0)
    torch.set_num_threads(2)
    edge_index = torch.randint(0, n_nodes, (2, n_edges))
    weight = torch.rand(n_edges)
    embedding = GeneEmbedding(n_nodes, 200, 1, edge_index, weight)
    conv: SGConv = embedding.go_convs[0]
    table = embedding.go_table.weight
    with torch.no_grad():
        embedding.go_embedding() if use_csr else conv(table, edge_index, weight)  # warm-up
        base = rss_mb()
        reset_peak()
        start = time.perf_counter()
        for _ in range(5):
            embedding.go_embedding() if use_csr else conv(table, edge_index, weight)
        seconds = (time.perf_counter() - start) / 5
    queue.put((seconds, max(peak_mb() - base, 0.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 'bench' configuration")
    args = parser.parse_args()

    rows = []
    for n_tokens in (2_048, 8_192, 27_875):
        for dense in (False, True):
            result = in_fresh_process(measure_network, "tiny", n_tokens, 512, 4, None, dense, 2)
            name = "tiny, dense attention" if dense else "tiny, FAVOR+ faithful"
            rows.append((name, n_tokens, 4, *result))
    if not args.quick:
        result = in_fresh_process(measure_network, "bench", 27_875, 4096, 4, 2500, False, 1)
        rows.append(("bench (original: 10.2 s, 5.9 GB)", 27_875, 4, *result))

    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"2 threads; load average at the end: {load} (this benchmark alone gives about 2)")
    header = f"{'network':<36}{'tokens':>8}{'batch':>7}{'s/cell':>10}{'cpu s/cell':>12}"
    print(header + f"{'peak MB':>10}")
    for name, n_tokens, batch, seconds, cpu, peak in rows:
        print(f"{name:<36}{n_tokens:>8}{batch:>7}{seconds:>10.3f}{cpu:>12.3f}{peak:>10.0f}")

    print(f"\n{'GO-GCN forward, 28k nodes, 1M edges':<44}{'ms':>8}{'peak MB':>10}")
    for use_csr, name in ((True, "cached CSR (ours)"), (False, "torch-geometric edge list")):
        seconds, peak = in_fresh_process(measure_gcn, use_csr)
        print(f"{name:<44}{seconds * 1e3:>8.0f}{peak:>10.0f}")


if __name__ == "__main__":
    main()
