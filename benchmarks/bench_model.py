"""SCLONG on real data: training and inference throughput, peak memory, streaming embeddings.

For the tiny preset on CellBench (``SCLONG_SHARED_DATA``) restricted to its 2k, 8k and all
(28.5k) most frequently detected genes, prints training cells/s (one epoch over 256 cells),
inference cells/s (``get_latent_representation``) and the peak RSS increase of each; then the
peak memory of ``get_latent_representation`` on 1x and 10x as many cells (should stay flat:
results stream batch by batch, never a cells x genes x dim array); then the time to build a
model twice on all CellBench genes with the default GO graph (the second build reuses the graph
built by the first).

Each measurement runs in a fresh process. Usage: python benchmarks/bench_model.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _measure import in_fresh_process, peak_mb, reset_peak, rss_mb


def prepared(n_genes: int | None, n_cells: int, repeat: int = 1):
    import anndata as ad

    import sclong_scverse as scl

    adata = scl.datasets.cellbench()
    if n_genes is not None:
        detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
        adata = adata[:, np.sort(np.argsort(-detected)[:n_genes])].copy()
    adata = adata[:n_cells].copy()
    if repeat > 1:
        adata = ad.concat([adata] * repeat, index_unique="-")
    scl.pp.normalize(adata)
    return adata


def throughput(queue, n_genes):
    import torch

    from sclong_scverse.model import SCLONG

    torch.set_num_threads(2)
    adata = prepared(n_genes, 256)
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    base = rss_mb()
    reset_peak()
    start = time.perf_counter()
    model.train(
        max_epochs=1, batch_size=8, train_size=1.0, accelerator="cpu", enable_progress_bar=False
    )
    train_rate = adata.n_obs / (time.perf_counter() - start)
    train_peak = peak_mb() - base
    start = time.perf_counter()
    model.get_latent_representation(batch_size=16)
    infer_rate = adata.n_obs / (time.perf_counter() - start)
    queue.put((adata.n_vars, train_rate, train_peak, infer_rate))


def streaming(queue, repeat):
    import torch

    from sclong_scverse.model import SCLONG

    torch.set_num_threads(2)
    adata = prepared(2048, 200, repeat)
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    base = rss_mb()
    reset_peak()
    latent = model.get_latent_representation(batch_size=16)
    queue.put((latent.shape[0], peak_mb() - base))


def construction(queue):
    import torch

    from sclong_scverse.model import SCLONG

    torch.set_num_threads(2)
    adata = prepared(None, 64)
    SCLONG.setup_anndata(adata, layer="sclong")
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        model = SCLONG(adata, config="tiny")
        seconds.append(time.perf_counter() - start)
    queue.put((adata.n_vars, model.module.network.gene_embedding.edge_weight.numel(), *seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k genes only")
    args = parser.parse_args()
    sizes = (2048,) if args.quick else (2048, 8192, None)
    print(f"{'genes':>7}{'train cells/s':>15}{'train peak MB':>15}{'infer cells/s':>15}")
    for n_genes in sizes:
        n_vars, train_rate, train_peak, infer_rate = in_fresh_process(throughput, n_genes)
        print(f"{n_vars:>7}{train_rate:>15.1f}{train_peak:>15.0f}{infer_rate:>15.1f}")
    print(f"\n{'cells embedded':>15}{'peak MB':>10}   (get_latent_representation, 2,048 genes)")
    for repeat in (1, 10):
        n_cells, peak = in_fresh_process(streaming, repeat)
        print(f"{n_cells:>15}{peak:>10.0f}")
    n_vars, n_edges, first, second = in_fresh_process(construction)
    print(f"\nSCLONG(adata, config='tiny'), {n_vars:,} genes, default GO graph ({n_edges:,} edges)")
    print(f"first build {first:.1f} s, second build {second:.1f} s (graph reused)")


if __name__ == "__main__":
    main()
