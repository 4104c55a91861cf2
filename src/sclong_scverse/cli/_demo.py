"""``sclong demo``: pretrain, embed, cluster and build a GRN on scanpy's pbmc68k_reduced."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

from .._settings import quiet_libraries
from ._common import (
    _add_accelerator,
    _add_progress,
    _final_losses,
    _output_folder,
    _say,
    count_int,
    non_negative_float,
    positive_float,
    positive_int,
)
from ._grn import _edge_table
from ._staging import _staged, _Staging

NAME = "demo"
HELP = "offline demo on scanpy's bundled pbmc68k_reduced (a few minutes on a laptop CPU)"
DESCRIPTION = (
    "Pretrain the tiny preset on scanpy's bundled pbmc68k_reduced (700 PBMCs, "
    "765 genes, integer counts recovered), embed, UMAP + Leiden, GRN; write demo.h5ad, PNG "
    "plots and summary.txt. Offline, no GPU needed."
)


def _leiden(adata, neighbors_key: str, seed: int) -> str:
    import scanpy as sc

    try:
        import igraph  # noqa: F401

        sc.tl.leiden(
            adata,
            neighbors_key=neighbors_key,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        return "Leiden (igraph)"
    except ImportError:
        pass
    try:
        import leidenalg  # noqa: F401
    except ImportError:
        return ""
    sc.tl.leiden(adata, neighbors_key=neighbors_key, flavor="leidenalg", random_state=seed)
    return "Leiden (leidenalg; igraph's own Leiden unavailable)"


def run_demo(
    out: str = "sclong_demo",
    epochs: int = 12,
    max_train_minutes: float | None = None,
    max_cells: int | None = None,
    batch_size: int = 16,
    lr: float = 5e-3,
    top_k: int = 20,
    seed: int = 0,
    progress: bool = True,
    accelerator: str = "auto",
) -> Path:
    """Pretrain, embed, cluster and build a GRN on ``pbmc68k_reduced``; write files to ``out``.

    Parameters
    ----------
    out
        Output folder (created).
    epochs
        Pretraining epochs of the tiny preset.
    max_train_minutes
        Stop pretraining after this many minutes even if ``epochs`` are not done. ``None``
        (default): no limit, so the result does not depend on how busy the machine is.
    max_cells
        Use a random subset of cells (for quick checks).
    batch_size, lr
        Pretraining batch size and learning rate.
    top_k
        Partners kept per gene in the GRN.
    seed
        Seed of training, UMAP and Leiden.
    progress
        Show the training progress bar.
    accelerator
        Lightning accelerator.

    Returns
    -------
    The output folder, holding ``demo.h5ad`` (``layers["sclong"]``, ``obsm["X_sclong"]``,
    ``obsm["X_sclong_umap"]``, ``obs["leiden"]``, ``varp["sclong_grn"]``), ``umap.png``,
    ``training.png``, ``grn_heatmap.png``, ``grn_network.png``, ``grn_edges.csv`` and
    ``summary.txt``.
    """
    folder = _output_folder(out)
    with _staged() as staging:  # every file is renamed into ``folder`` at the end
        text = _demo_files(
            staging, folder, epochs, max_train_minutes, max_cells, batch_size, lr, top_k, seed,
            progress, accelerator,
        )  # fmt: skip
    _say()
    _say(text)
    _say(f"wrote {folder}/")
    return folder


def _demo_files(
    staging: _Staging,
    folder: Path,
    epochs: int,
    max_train_minutes: float | None,
    max_cells: int | None,
    batch_size: int,
    lr: float,
    top_k: int,
    seed: int,
    progress: bool,
    accelerator: str,
) -> str:
    """The demo's work (see :func:`run_demo`): its files go to ``staging``; returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc
    import scvi
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from .. import pl, pp, tl
    from ..datasets import pbmc68k_counts
    from ..model import SCLONG
    from ..module._module import DEFAULT_POOLING
    from ..pl._plots import record_embedding_source

    def dest(name: str) -> Path:
        return staging.path(folder / name)

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        """Record and print how long the stage ``name`` took (a line per stage)."""
        now = time.perf_counter()
        timings[name] = now - since
        _say(f"  {name}: {timings[name]:.1f} s")
        return now

    tick = time.perf_counter()
    adata = pbmc68k_counts(max_cells=max_cells, seed=seed)
    _say(f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes (integer counts)")
    pp.normalize(adata, layer="counts")
    scvi.settings.seed = seed
    SCLONG.setup_anndata(adata, layer="sclong", labels_key="bulk_labels")
    model = SCLONG(adata, config="tiny")
    _say(model._model_summary_string)
    tick = lap("load + normalise + build", tick)

    _say(f"pretraining the tiny preset for {epochs} epoch(s) ...")
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        accelerator=accelerator,
        enable_progress_bar=progress,
        simple_progress_bar=False,  # a bar over the steps of each epoch, with time left
        **({"max_time": timedelta(minutes=max_train_minutes)} if max_train_minutes else {}),
    )
    tick = lap("pretraining", tick)
    done = model.history.get("masked_mse_train")
    epochs_done = len(done) if done is not None else epochs
    _say("held-out masked MSE against the per-gene mean ...")
    validation = model.evaluate_masked_mse(seed=seed, batch_size=64, progress_bar=progress)
    tick = lap("held-out masked MSE", tick)

    _say(f"embedding {adata.n_obs} cells (tl.embed) ...")
    tl.embed(adata, model, pooling=DEFAULT_POOLING, batch_size=64, progress_bar=progress)
    tick = lap("embedding", tick)
    _say("neighbours, UMAP and Leiden on X_sclong ...")
    sc.pp.neighbors(adata, use_rep="X_sclong", key_added="X_sclong_neighbors", random_state=seed)
    sc.tl.umap(
        adata, neighbors_key="X_sclong_neighbors", key_added="X_sclong_umap", random_state=seed
    )
    # recorded as pl.embedding records its own: the figure below draws this UMAP, not another
    record_embedding_source(adata, "X_sclong")
    leiden_method = _leiden(adata, "X_sclong_neighbors", seed)
    tick = lap("UMAP + Leiden", tick)

    # centred cosine: a small self-pretrained model's gene embeddings share a large common
    # component (plain cosine ~0.98 for every pair); see tl.grn
    _say(f"gene network over {adata.n_vars} genes (tl.grn) ...")
    tl.grn(adata, model, center=True, top_k=top_k, batch_size=64, progress_bar=progress)
    edges = _edge_table(adata, "sclong_grn", 100)
    edges.to_csv(dest("grn_edges.csv"), index=False)
    tick = lap("GRN", tick)

    _say("plots ...")
    colors = ["bulk_labels"] + (["leiden"] if leiden_method else [])
    pl.embedding(adata, colors, basis="X_sclong", show=False, wspace=0.6)
    plt.gcf().savefig(dest("umap.png"), dpi=120, bbox_inches="tight")
    plt.close("all")
    pl.training_history(
        model, baseline=validation["baseline_mse"], show=False, save=dest("training.png")
    )
    plt.close("all")
    for kind in ("heatmap", "network"):
        pl.grn(adata, n_top=30, kind=kind, show=False, save=dest(f"grn_{kind}.png"))
        plt.close("all")
    tick = lap("plots", tick)

    _say("writing demo.h5ad ...")
    adata.obs["leiden"] = adata.obs["leiden"] if leiden_method else "n/a"
    adata.write_h5ad(dest("demo.h5ad"))
    lap("writing", tick)
    total = time.perf_counter() - start

    labels = adata.obs["bulk_labels"].astype(str)
    lines = [
        "sclong demo: scLong (tiny preset) pretrained on scanpy's pbmc68k_reduced",
        "",
        "[data]",
        f"cells: {adata.n_obs}",
        f"genes: {adata.n_vars}",
        f"cell types (bulk_labels): {labels.nunique()}",
        "",
        "[model]",
        model._model_summary_string.replace("\n", " "),
        f"GO graph: {model.gene_graph_summary}",
        "",
        "[training]",
        f"epochs: {epochs_done} of {epochs}"
        + ("" if epochs_done >= epochs else f" (stopped at the {max_train_minutes}-minute limit)")
        + f", batch size {batch_size}, lr {lr}",
    ]
    for name, value in _final_losses(model.history):
        lines.append(f"final {name} masked MSE: {'n/a' if value is None else f'{value:.4f}'}")
    lines += [
        f"held-out cells, all chosen values masked: model MSE {validation['model_mse']:.4f} vs "
        f"per-gene mean baseline {validation['baseline_mse']:.4f} "
        f"({validation['n_masked']} values)",
        "model beats the per-gene mean baseline: "
        + (
            "yes"
            if validation["model_mse"] < validation["baseline_mse"]
            else "NO (train longer: --epochs; the embedding and GRN below are not to be trusted)"
        ),
        "",
        "[clustering]",
    ]
    if leiden_method:
        leiden = adata.obs["leiden"].astype(str)
        lines += [
            f"method: {leiden_method} on the kNN graph of X_sclong ({DEFAULT_POOLING} pooling)",
            f"clusters: {leiden.nunique()}",
            f"ARI (Leiden vs bulk_labels): {adjusted_rand_score(labels, leiden):.3f}",
            f"NMI (Leiden vs bulk_labels): {normalized_mutual_info_score(labels, leiden):.3f}",
        ]
    else:
        lines.append("Leiden skipped: install igraph (or leidenalg)")
    if "louvain" in adata.obs:
        reference = adata.obs["louvain"].astype(str)
        lines.append(
            "for reference, the dataset's own PCA Louvain vs bulk_labels: "
            f"ARI {adjusted_rand_score(labels, reference):.3f}, "
            f"NMI {normalized_mutual_info_score(labels, reference):.3f}"
        )
    lines += [
        "",
        "[GRN] cosine similarity of centred contextual gene embeddings (tl.grn(center=True)), "
        f"top {top_k} per gene",
    ]
    lines += ["top 10 edges:"] + [
        f"  {row.source} - {row.target}: {row.score:.4f}"
        for row in edges.head(10).itertuples(index=False)
    ]
    lines += ["", "[runtime]"]
    lines += [f"{name}: {seconds:.1f} s" for name, seconds in timings.items()]
    lines += [f"total: {total:.1f} s", "", "[files]"]
    lines += [
        "demo.h5ad, umap.png, training.png, grn_heatmap.png, grn_network.png, grn_edges.csv",
    ]
    text = "\n".join(lines) + "\n"
    dest("summary.txt").write_text(text)
    return text


def run(args: argparse.Namespace) -> None:
    """Run ``sclong demo``."""
    _output_folder(args.out)  # before the libraries load: a path error answers at once
    with quiet_libraries(True):  # no Lightning accelerator lines or third-party tips
        run_demo(
            out=args.out,
            epochs=args.epochs,
            max_train_minutes=args.max_train_minutes or None,
            max_cells=args.max_cells,
            batch_size=args.batch_size,
            lr=args.lr,
            top_k=args.top_k,
            seed=args.seed,
            progress=args.progress,
            accelerator=args.accelerator,
        )


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong demo``."""
    parser.add_argument("--out", default="sclong_demo", metavar="DIR", help="output folder")
    parser.add_argument(
        "--epochs", type=positive_int, default=12, metavar="N", help="pretraining epochs"
    )
    parser.add_argument(
        "--max-train-minutes",
        type=non_negative_float,
        default=0.0,
        metavar="M",
        help="stop pretraining after M minutes (0: no limit, the default, so that the result "
        "does not depend on the machine's load)",
    )
    parser.add_argument("--seed", type=count_int, default=0, help="random seed")
    _add_accelerator(parser)
    _add_progress(parser)
    parser.add_argument("--max-cells", type=positive_int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=positive_int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=positive_float, default=5e-3, help=argparse.SUPPRESS)
    parser.add_argument("--top-k", type=positive_int, default=20, help=argparse.SUPPRESS)
