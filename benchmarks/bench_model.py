"""SCLONG on real data: training and inference throughput, peak memory, streaming embeddings.

For the tiny preset on CellBench (``SCLONG_SHARED_DATA``) restricted to its 2k, 8k and all
(28.5k) most frequently detected genes, prints training cells/s (one epoch over 256 cells),
inference cells/s (``get_latent_representation``) and the peak RSS increase of each; then the
peak memory of ``get_latent_representation`` on 1x and 10x as many cells (should stay flat:
results stream batch by batch, never a cells x genes x dim array); then the time to build a
model twice on all CellBench genes with the default GO graph (the second build reuses the graph
built by the first).

With ``--presets`` (issue 14, item 4): for the tiny, small and bench presets on real CellBench
cells with all 28.5k genes, ``scl.tl.embed`` cells/s and ``SCLONG.train`` cells/s (one epoch),
and the cost of a query whose genes differ from the model's (its values are re-aligned to the
model's genes with a sparse copy on every call): the time of that alignment next to the whole
``tl.embed`` call.

Each measurement runs in a fresh process. Usage:
python benchmarks/bench_model.py [--quick] [--presets [tiny small bench]]
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


#: cells embedded / trained per preset (whole transcriptome): enough for a steady rate
PRESET_CELLS = {"tiny": (64, 32), "small": (32, 16), "bench": (8, 4)}


def end_to_end(queue, preset):
    """tl.embed and SCLONG.train cells/s of a preset on all CellBench genes; re-alignment cost."""
    import torch

    import sclong_scverse as scl
    from sclong_scverse.model import SCLONG

    torch.set_num_threads(2)
    n_embed, n_train = PRESET_CELLS[preset]
    adata = prepared(None, max(n_embed, n_train))
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config=preset, gene_graph=False)
    embed_cells = adata[:n_embed].copy()
    start = time.perf_counter()
    scl.tl.embed(embed_cells, model, batch_size=4)
    embed_rate = n_embed / (time.perf_counter() - start)
    # a query with the same genes in another order: aligned to the model's genes on every call
    query = embed_cells[:, ::-1].copy()
    start = time.perf_counter()
    aligned = model._query(query)
    align_seconds = time.perf_counter() - start
    model._per_instance_manager_store.get(model.id, {}).pop(aligned.uns.get("_scvi_uuid"), None)
    start = time.perf_counter()
    scl.tl.embed(query, model, batch_size=4)
    query_seconds = time.perf_counter() - start
    train_cells = adata[:n_train].copy()
    SCLONG.setup_anndata(train_cells, layer="sclong")
    torch.manual_seed(0)
    trainee = SCLONG(train_cells, config=preset, gene_graph=False)
    start = time.perf_counter()
    trainee.train(
        max_epochs=1,
        batch_size=4,
        train_size=1.0,
        accelerator="cpu",
        enable_progress_bar=False,
        redraw_interval=None,
    )
    train_rate = n_train / (time.perf_counter() - start)
    queue.put(
        {
            "preset": preset,
            "genes": adata.n_vars,
            "parameters": sum(p.numel() for p in model.module.parameters()),
            "tl.embed cells/s": embed_rate,
            "train cells/s": train_rate,
            "re-alignment (s)": align_seconds,
            "embed of that query (s)": query_seconds,
            "re-alignment share": align_seconds / query_seconds,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k genes only")
    parser.add_argument(
        "--presets",
        nargs="*",
        choices=tuple(PRESET_CELLS),
        help="only the end-to-end figures of these presets (all when none is named)",
    )
    args = parser.parse_args()
    if args.presets is not None:
        import pandas as pd

        rows = []
        for preset in args.presets or PRESET_CELLS:
            rows.append(in_fresh_process(end_to_end, preset))
            print(rows[-1], flush=True)
        print()
        print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))
        return
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
