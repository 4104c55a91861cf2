"""Forward cost of the scLong network vs sequence length, and of the GO-GCN (CSR vs edge list).

Prints a table: seconds per cell and peak memory (RSS increase over the loaded model) for
- the tiny preset at 2k, 8k and 27,875 tokens, FAVOR+ (faithful) and a dense-attention control;
- the "bench" configuration of issue #2 (27,875 tokens, ~2,500 non-zero genes per cell,
  d=200, top 4,096, large encoder 2 x 4 x 64 at width 256, official mini encoder and decoder),
  batch 4, fp32 -- the original implementation needs about 10.2 s per cell and 5.9 GB peak here;
- one GCN forward on a 28k-node, 1M-edge graph: cached CSR vs torch-geometric's edge list.

``--profile`` prints instead where the time of the "bench" forward goes: seconds and analytic
matmul FLOPs per component (value / gene embedding, GO-GCN, routing, each encoder's norms,
attention, output projection and feed-forward, the head) and
the achieved GFLOP/s of each as a fraction of this CPU's fp32 matmul peak, measured in the same
run (a 2048^3 matmul). Components are timed by forward hooks and by wrapping the FAVOR+
functions, in one forward pass of the batch after a warm-up; element-wise work (exp, GELU,
LayerNorm, adds) is counted as 0 FLOPs, so a component dominated by it shows a low fraction.
Inference streams the attention (``nn.performer.streamed_favor_attention``: Q/K/V projections,
feature maps and KV products fused per block of tokens), timed as one component; ``--reference``
profiles the reference path instead (``chunk_size=None``, as under autograd), whose parts are
timed separately.

Cells are real: CellBench log-normalised profiles (``SCLONG_SHARED_DATA``), their genes placed
on the first positions of the vocabulary. Each measurement runs in a fresh process.

The mini encoder's first layer reads its zero-valued tokens (the same in every cell) from the
network's zero-token cache (``ScLongNetwork.zero_token_cache``, built during the warm-up, kept
for every later batch); the table also has the bench configuration without it.

Usage: python benchmarks/bench_network.py [--quick | --profile [--reference]]
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


def measure_network(queue, preset, n_tokens, top, batch, nonzero, dense, repeats, zero_cache=True):
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = ScLongConfig.preset(preset, n_genes=n_tokens - 1, top_seq_len=top)
    network = ScLongNetwork(config).eval()
    network.zero_token_cache = zero_cache
    if dense:
        dense_control(network)
    x = real_cells(batch, n_tokens, nonzero)
    with torch.no_grad():
        network(x[:1])  # warm-up (builds the zero-token cache, kept for every later batch)
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


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a ``size``^3 fp32 matmul on this process's threads (best of runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class ComponentTimer:
    """Exclusive wall time and matmul FLOPs per named component of one forward pass."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.flops: dict[str, float] = {}
        self.encoder = "?"

    def add(self, name: str, seconds: float, flops: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.flops[name] = self.flops.get(name, 0.0) + flops

    def hook(self, module: torch.nn.Module, name, flops_of) -> None:
        """Time ``module``'s forward as ``name`` (a string, or a callable of the timer)."""
        starts: list[float] = []

        def before(_module, _inputs):
            starts.append(time.perf_counter())

        def after(_module, inputs, output):
            label = name(self) if callable(name) else name
            self.add(label, time.perf_counter() - starts.pop(), flops_of(inputs, output))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def _linear_flops(module: torch.nn.Linear):
    def flops(inputs, _output) -> float:
        rows = inputs[0].numel() / module.in_features
        return 2.0 * rows * module.in_features * module.out_features

    return flops


def _no_flops(_inputs, _output) -> float:
    return 0.0


def profile_network(queue, preset, n_tokens, top, batch, nonzero, reference=False):
    """Per-component seconds and FLOPs of one forward pass (see the module docstring)."""
    import sclong_scverse.nn.performer as performer
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    torch.manual_seed(0)
    torch.set_num_threads(2)
    peak = matmul_peak_gflops()
    config = ScLongConfig.preset(preset, n_genes=n_tokens - 1, top_seq_len=top)
    network = ScLongNetwork(config).eval()
    if reference:
        for stack in network.performers:
            stack.chunk_size = None
    timer = ComponentTimer()
    encoders = {
        "large encoder": network.large_encoder,
        "mini encoder": network.mini_encoder,
        "decoder": network.decoder,
    }
    for label, encoder in encoders.items():

        def enter(_module, _inputs, label=label):
            timer.encoder = label

        encoder.register_forward_pre_hook(enter)
        for layer in encoder.layers:
            attention, ff = layer.attention, layer.feed_forward
            for norm in (attention.norm, ff.norm):
                timer.hook(norm, lambda t: f"{t.encoder}: norms", _no_flops)
            for linear in (attention.to_q, attention.to_k, attention.to_v):
                timer.hook(linear, lambda t: f"{t.encoder}: Q/K/V", _linear_flops(linear))
            timer.hook(
                attention.to_out, lambda t: f"{t.encoder}: output", _linear_flops(attention.to_out)
            )
            for linear in (ff.w1, ff.w2):
                timer.hook(linear, lambda t: f"{t.encoder}: feed-forward", _linear_flops(linear))
            timer.hook(ff.act, lambda t: f"{t.encoder}: feed-forward", _no_flops)

    features, attention = performer.softmax_kernel_features, performer.linear_attention

    def timed_features(data, projection_matrix, **kwargs):
        start = time.perf_counter()
        out = features(data, projection_matrix, **kwargs)
        b, h, n, d = data.shape
        flops = 2.0 * b * h * n * d * projection_matrix.shape[0]
        timer.add(f"{timer.encoder}: FAVOR+ feature maps", time.perf_counter() - start, flops)
        return out

    def timed_attention(q, k, v, offset=0.0):
        start = time.perf_counter()
        out = attention(q, k, v, offset)
        b, h, n, m = q.shape
        flops = 2.0 * b * h * n * m * (2 * v.shape[-1] + 1)
        timer.add(f"{timer.encoder}: KV products", time.perf_counter() - start, flops)
        return out

    streamed = performer.streamed_favor_attention

    def timed_streamed(h, weight_q, weight_k, weight_v, projection_matrix, heads, **kwargs):
        start = time.perf_counter()
        out = streamed(h, weight_q, weight_k, weight_v, projection_matrix, heads, **kwargs)
        b, n, width = h.shape
        inner, m = weight_q.shape[0], projection_matrix.shape[0]
        d = inner // heads
        flops = 2.0 * b * n * width * 3 * inner  # Q/K/V projections
        flops += 2.0 * 2 * b * heads * n * d * m  # feature maps of queries and keys
        flops += 2.0 * b * heads * n * m * (2 * d + 1)  # KV products and normaliser
        label = f"{timer.encoder}: streamed attention (Q/K/V, features, KV)"
        timer.add(label, time.perf_counter() - start, flops)
        return out

    import sclong_scverse.nn.network as network_module

    cached_attention = network_module.cached_first_layer_attention

    def timed_cached(attention_module, x, positions, cached, cache, n_positions):
        start = time.perf_counter()
        out = cached_attention(attention_module, x, positions, cached, cache, n_positions)
        b, n, width = x.shape
        heads, m = attention_module.heads, attention_module.projection_matrix.shape[0]
        inner = attention_module.to_q.weight.shape[0]
        d = inner // heads
        computed = int((~cached).sum())  # expressed / masked tokens: the usual work
        others = int((n_positions - cached.sum(dim=1)).sum())  # key terms taken off the totals
        flops = 2.0 * b * heads * n * m * (d + 1)  # queries' features x context, normaliser
        flops += 2.0 * heads * others * m * (d + 1)
        flops += computed * (2.0 * width * 3 * inner + 2.0 * 2 * heads * d * m)
        label = f"{timer.encoder}: first-layer attention, zero-token cache"
        timer.add(label, time.perf_counter() - start, flops)
        return out

    performer.softmax_kernel_features = timed_features
    performer.linear_attention = timed_attention
    performer.streamed_favor_attention = timed_streamed
    network_module.cached_first_layer_attention = timed_cached

    gene = network.gene_embedding
    go_embedding = gene.go_embedding

    def timed_go():
        start = time.perf_counter()
        out = go_embedding()
        nnz = gene.normalized_adjacency()._nnz() if len(gene.go_convs) else 0
        dim = out.shape[-1]
        flops = len(gene.go_convs) * (2.0 * nnz * dim + 2.0 * out.shape[0] * dim * dim)
        timer.add("GO-GCN (sparse propagation + linear)", time.perf_counter() - start, flops)
        return out

    gene.go_embedding = timed_go
    route = network.route

    def timed_route(x):
        start = time.perf_counter()
        out = route(x)
        timer.add("routing (top-k, low-set sort)", time.perf_counter() - start, 0.0)
        return out

    network.route = timed_route
    timer.hook(
        network.value_embedding,
        "value embedding (MLP 1 -> 50 -> dim)",
        lambda i, o: 2.0 * i[0].numel() * 50 * (1 + o.shape[-1]),
    )
    timer.hook(network.token_norm, "token norm", _no_flops)
    for linear in (network.large_in, network.large_out):
        timer.hook(linear, "large encoder: in/out projections", _linear_flops(linear))
    for norm in (network.large_in_norm, network.large_out_norm):
        timer.hook(norm, "large encoder: in/out projections", _no_flops)
    timer.hook(network.decoder_norm, "head (norm + expression)", _no_flops)
    timer.hook(
        network.expression_head, "head (norm + expression)", _linear_flops(network.expression_head)
    )

    x = real_cells(batch, n_tokens, nonzero)
    with torch.no_grad():
        network(x[:1])  # warm-up
        timer.seconds.clear()
        timer.flops.clear()
        start = time.perf_counter()
        network(x)
        total = time.perf_counter() - start
    # the gene-embedding module includes the GO-GCN: keep its own part exclusive
    queue.put((dict(timer.seconds), dict(timer.flops), total, peak))


def print_profile(batch: int, reference: bool = False) -> None:
    seconds, flops, total, peak = in_fresh_process(
        profile_network, "bench", 27_875, 4096, batch, 2500, reference
    )
    other = total - sum(seconds.values())
    print(
        f"'bench' configuration, 27,875 tokens, batch {batch}, fp32, 2 threads"
        f"{', reference attention path' if reference else ''}: "
        f"{total / batch:.2f} s per cell; matmul peak {peak:.0f} GFLOP/s (2048^3, same run)"
    )
    header = (
        f"{'component':<58}{'s/cell':>8}{'share':>7}{'GFLOP/cell':>12}{'GFLOP/s':>9}{'of peak':>9}"
    )
    print(header)
    for name in sorted(seconds, key=seconds.get, reverse=True):
        t, f = seconds[name], flops.get(name, 0.0)
        rate = f / t / 1e9 if t > 0 else 0.0
        print(
            f"{name:<58}{t / batch:>8.3f}{t / total:>7.1%}{f / batch / 1e9:>12.1f}"
            f"{rate:>9.1f}{rate / peak:>9.1%}"
        )
    all_flops = sum(flops.values())
    print(
        f"{'other (gathers, scatters, residual adds)':<58}{other / batch:>8.3f}"
        f"{other / total:>7.1%}"
    )
    print(
        f"{'total':<58}{total / batch:>8.3f}{1:>7.0%}{all_flops / batch / 1e9:>12.1f}"
        f"{all_flops / total / 1e9:>9.1f}{all_flops / total / 1e9 / peak:>9.1%}"
    )


def _matmul_peak(queue) -> None:
    torch.set_num_threads(2)
    queue.put(matmul_peak_gflops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 'bench' configuration")
    parser.add_argument(
        "--profile", action="store_true", help="where the time of the 'bench' forward goes"
    )
    parser.add_argument(
        "--reference", action="store_true", help="profile the reference (unstreamed) attention"
    )
    args = parser.parse_args()
    if args.profile:
        print_profile(batch=4, reference=args.reference)
        return

    rows = []
    for n_tokens in (2_048, 8_192, 27_875):
        for dense in (False, True):
            result = in_fresh_process(measure_network, "tiny", n_tokens, 512, 4, None, dense, 2)
            name = "tiny, dense attention" if dense else "tiny, FAVOR+ faithful"
            rows.append((name, n_tokens, 4, *result))
    if not args.quick:
        # 3 forwards each (one is noisy on a shared virtual machine); the mean is printed
        result = in_fresh_process(measure_network, "bench", 27_875, 4096, 4, 2500, False, 3)
        rows.append(("bench (original: 10.2 s, 5.9 GB)", 27_875, 4, *result))
        result = in_fresh_process(measure_network, "bench", 27_875, 4096, 4, 2500, False, 3, False)
        rows.append(("bench, without zero-token cache", 27_875, 4, *result))

    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"2 threads; load average at the end: {load} (this benchmark alone gives about 2)")
    header = f"{'network':<36}{'tokens':>8}{'batch':>7}{'s/cell':>10}{'cpu s/cell':>12}"
    print(header + f"{'peak MB':>10}")
    for name, n_tokens, batch, seconds, cpu, peak in rows:
        print(f"{name:<36}{n_tokens:>8}{batch:>7}{seconds:>10.3f}{cpu:>12.3f}{peak:>10.0f}")

    if not args.quick:
        from _cost import network_flops
        from sclong_scverse.nn import ScLongConfig

        bench = ScLongConfig.preset("bench", n_genes=27_874, top_seq_len=4096)
        work = sum(network_flops(bench).values()) / 1e9
        peak = in_fresh_process(_matmul_peak)
        print(
            f"\nbench: {work:.1f} GFLOP of matrix products per cell (analytic, the network "
            f"without the zero-token cache); fp32 matmul peak {peak:.0f} GFLOP/s (2048^3, 2 "
            "threads, fresh process)"
        )
        for name, _, _, seconds, _, _ in rows:
            if name.startswith("bench"):
                rate = work / seconds
                print(f"{name:<36}{rate:>8.1f} GFLOP/s{rate / peak:>8.1%} of peak")
        print("(with the cache the network does less work: these rates are 'effective' ones)")

    print(f"\n{'GO-GCN forward, 28k nodes, 1M edges':<44}{'ms':>8}{'peak MB':>10}")
    for use_csr, name in ((True, "cached CSR (ours)"), (False, "torch-geometric edge list")):
        seconds, peak = in_fresh_process(measure_gcn, use_csr)
        print(f"{name:<44}{seconds * 1e3:>8.0f}{peak:>10.0f}")


if __name__ == "__main__":
    main()
