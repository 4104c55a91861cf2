"""What scLong embeddings and GRNs pretrained here are worth, next to baselines, on real data.

Pretrains scLong models on CellBench (1,408 cells of five lung-adenocarcinoma cell lines in five
batches, the most detected genes), then

- integration: scores their cell embeddings (mean / max / sum pooling) with
  ``scl.tl.benchmark_integration`` (scib-metrics) next to unintegrated PCA, HVG PCA and scVI;
- GRN: scores their gene-gene networks with ``scl.tl.benchmark_grn`` against TRRUST, BEELINE
  human STRING and the BEELINE hESC non-specific ChIP-seq network, next to |Pearson|,
  |Spearman| co-expression and a GENIE3-like random forest, over the same candidate pairs;

and writes ``docs/benchmarks.md`` (tables), PNG figures and CSV results into ``docs/``.

Usage::

    python benchmarks/report_downstream.py                 # tiny + small (25 min) models
    python benchmarks/report_downstream.py --quick         # minutes: checks the pipeline
    python benchmarks/report_downstream.py --reuse         # reuse models saved by a former run
    python benchmarks/report_downstream.py --page-only     # rewrite the page from the saved CSVs

Models are saved under ``benchmarks/_out/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import torch

import sclong_scverse as scl
from sclong_scverse.model import SCLONG

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "_out"
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
POOLINGS = ("mean", "max", "sum")


def load_cellbench(n_genes: int) -> sc.AnnData:
    adata = scl.datasets.cellbench()
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected)[:n_genes])].copy()
    scl.pp.normalize(adata)
    adata.var["symbol"] = scl.genes.map_gene_ids(adata.var_names, to="symbol").fillna("").values
    return adata


def pretrain(adata, name: str, preset: str, epochs: int, minutes: float | None, reuse: bool):
    """A pretrained model and its record (time, held-out masked MSE)."""
    folder = OUT / f"model_{name}"
    record_file = folder / "record.json"
    work = adata.copy()
    SCLONG.setup_anndata(work, layer="sclong", batch_key="batch", labels_key="cell_line")
    if reuse and record_file.exists():
        model = SCLONG.load(str(folder), adata=work)
        return model, work, json.loads(record_file.read_text())
    torch.manual_seed(0)
    model = SCLONG(work, config=preset)
    n_params = sum(p.numel() for p in model.module.parameters())
    started = time.perf_counter()
    kwargs = {"max_time": {"minutes": minutes}} if minutes else {}
    model.train(
        max_epochs=epochs,
        batch_size=16,
        lr=5e-3 if preset == "tiny" else 2e-3,
        accelerator="cpu",
        enable_progress_bar=True,
        **kwargs,
    )
    seconds = time.perf_counter() - started
    mse = model.evaluate_masked_mse(seed=1)
    history = model.history
    record = {
        "name": name,
        "preset": preset,
        "parameters": int(n_params),
        "genes": int(adata.n_vars),
        "epochs": int(model.trainer.current_epoch),
        "train_seconds": seconds,
        "heldout_masked_mse": float(mse["model_mse"]),
        "per_gene_mean_mse": float(mse["baseline_mse"]),
        "validation_curve": [
            float(v) for v in history["masked_mse_validation"].iloc[:, 0].to_numpy()
        ],
    }
    model.save(str(folder), overwrite=True)
    record_file.write_text(json.dumps(record, indent=1))
    return model, work, record


def integration(adata, models, quick: bool) -> pd.DataFrame:
    keys = []
    for name, (model, work, _) in models.items():
        for pooling in POOLINGS:
            key = f"X_sclong_{name}_{pooling}"
            adata.obsm[key] = model.get_latent_representation(work, pooling=pooling)
            keys.append(key)
    return scl.tl.benchmark_integration(
        adata,
        keys,
        batch_key="batch",
        label_key="cell_line",
        baselines=["pca", "hvg_pca", "scvi"],
        n_top_genes=min(2000, adata.n_vars // 2),
        scvi_kwargs={"max_epochs": 20 if quick else 200},
    )


def grn(adata, models, truths, quick: bool) -> pd.DataFrame:
    tfs = sorted(set(truths["TRRUST"]["source"]) & set(adata.var["symbol"]))
    methods = {}
    for name, (model, work, _) in models.items():
        table = model.get_gene_embeddings(kind="contextual", adata=work).to_numpy()
        for center in (False, True):
            key = f"sclong_{name}{'_centred' if center else ''}_grn"
            adata.varp[key] = scl.tl.cosine_similarity_graph(table, center=center)
            methods[f"scLong {name}{' centred' if center else ''}"] = key
    scl.tl.coexpression_grn(adata, method="pearson")
    scl.tl.coexpression_grn(adata, method="spearman")
    started = time.perf_counter()
    scl.tl.genie3_grn(
        adata,
        regulators=adata.var_names[adata.var["symbol"].isin(tfs)],
        n_estimators=20 if quick else 50,
    )
    print(f"GENIE3-like forest: {time.perf_counter() - started:.0f} s")
    methods.update({"Pearson (abs)": "pearson_grn", "Spearman (abs)": "spearman_grn"})
    methods["GENIE3-like RF"] = "genie3_grn"
    return scl.tl.benchmark_grn(adata, truths, methods, tfs=tfs, gene_symbols="symbol")


def umaps(adata, keys: list[str], path: Path) -> None:
    fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys), 6.2))
    for column, key in enumerate(keys):
        sc.pp.neighbors(adata, use_rep=key, key_added="bench")
        sc.tl.umap(adata, neighbors_key="bench", random_state=0)
        for row, colour in enumerate(["cell_line", "batch"]):
            sc.pl.umap(
                adata,
                color=colour,
                ax=axes[row, column],
                show=False,
                legend_loc="none" if column < len(keys) - 1 else "right margin",
                title=f"{key}\n{colour}" if row == 0 else colour,
                frameon=False,
                size=12,
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    frame = frame.copy()
    header = "| " + " | ".join([frame.index.name or "", *map(str, frame.columns)]) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    columns = []  # formatted column by column: iterrows() would turn integer columns into floats
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_integer_dtype(values):
            columns.append([f"{int(v)}" for v in values])
        elif pd.api.types.is_float_dtype(values):
            columns.append([f"{v:.{digits}f}" for v in values])
        else:
            columns.append([str(v) for v in values])
    rows = [
        "| " + " | ".join([str(index), *cells]) + " |"
        for index, cells in zip(frame.index, zip(*columns, strict=True), strict=True)
    ]
    return "\n".join([header, rule, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genes", type=int, default=2048, help="most detected genes kept")
    parser.add_argument("--tiny-epochs", type=int, default=10)
    parser.add_argument("--small-minutes", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="minutes, to check the pipeline")
    parser.add_argument("--reuse", action="store_true", help="reuse saved models")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where benchmarks.md goes")
    parser.add_argument(
        "--page-only",
        action="store_true",
        help="only rewrite benchmarks.md from the CSV/JSON results of a former run",
    )
    args = parser.parse_args()
    docs, figures = args.docs, args.docs / "figures"
    if args.page_only:
        rewrite_page(docs, figures)
        return
    figures.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = scl.datasets.shared_data_dir()
    adata = load_cellbench(args.genes)
    plans = {"tiny": ("tiny", 2 if args.quick else args.tiny_epochs, None)}
    plans["small"] = ("small", 1000, 1.0 if args.quick else args.small_minutes)
    models = {
        name: pretrain(adata, name, preset, epochs, minutes, args.reuse)
        for name, (preset, epochs, minutes) in plans.items()
    }
    records = pd.DataFrame([m[2] for m in models.values()]).set_index("name")

    table = integration(adata, models, args.quick)
    totals = table["Total"]
    chosen = {
        name: max(POOLINGS, key=lambda p, n=name: totals[f"X_sclong_{n}_{p}"]) for name in models
    }
    scl.pl.benchmark(adata, save=figures / "benchmark_integration.png", show=False)
    plt.close("all")
    best = [f"X_sclong_{n}_{chosen[n]}" for n in models]
    umaps(adata, [*best, "X_pca_hvg", "X_scVI"], figures / "benchmark_umaps.png")

    truths = {
        "TRRUST": scl.tl.read_ground_truth(data / "grn/trrust/trrust_rawdata.human.tsv"),
        "BEELINE STRING": scl.tl.read_ground_truth(
            data / "grn/beeline_human_string/STRING-network.csv"
        ),
        "BEELINE hESC ChIP": scl.tl.read_ground_truth(
            data / "grn/beeline_hesc/Non-Specific/BL--network.csv"
        ),
    }
    grn_table = grn(adata, models, truths, args.quick)
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    scl.pl.grn_benchmark(grn_table, metric="aupr_ratio", ax=axes[0], show=False)
    scl.pl.grn_benchmark(grn_table, metric="epr", ax=axes[1], show=False)
    fig.tight_layout()
    fig.savefig(figures / "benchmark_grn.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    table.to_csv(figures / "benchmark_integration.csv")
    grn_table.to_csv(figures / "benchmark_grn.csv", index=False)
    records.drop(columns="validation_curve").to_csv(figures / "benchmark_models.csv")
    summary = {
        "pooling": chosen,
        "minutes": (time.perf_counter() - started) / 60,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "quick": args.quick,
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
    }
    (figures / "benchmark_summary.json").write_text(json.dumps(summary, indent=1))
    write_page(docs / "benchmarks.md", records, table, grn_table, summary)
    print(table.round(3).to_string())
    print(grn_table.round(3).to_string())
    print(json.dumps(summary, indent=1))


def rewrite_page(docs: Path, figures: Path) -> None:
    """Write ``benchmarks.md`` again from the results a former run saved in ``figures/``."""
    records = pd.read_csv(figures / "benchmark_models.csv", index_col=0)
    table = pd.read_csv(figures / "benchmark_integration.csv", index_col=0)
    grn_table = pd.read_csv(figures / "benchmark_grn.csv")
    summary = json.loads((figures / "benchmark_summary.json").read_text())
    write_page(docs / "benchmarks.md", records, table, grn_table, summary)


def write_page(path, records, table, grn_table, summary) -> None:
    n_cells, n_genes = summary["n_cells"], summary["n_genes"]
    models = records.copy()
    models["train minutes"] = models.pop("train_seconds") / 60
    models = models[
        [
            "preset",
            "parameters",
            "genes",
            "epochs",
            "train minutes",
            "heldout_masked_mse",
            "per_gene_mean_mse",
        ]
    ].rename(
        columns={
            "heldout_masked_mse": "held-out masked MSE",
            "per_gene_mean_mse": "per-gene mean MSE",
        }
    )
    models.index.name = "model"
    main_columns = [
        "Bio conservation",
        "Batch correction",
        "Total",
        "Batch ASW",
        "KMeans ARI",
        "Silhouette label",
        "iLISI",
    ]
    integ = table[main_columns].sort_values("Total", ascending=False)
    integ.index.name = "embedding"
    grn_wide = grn_table.pivot(index="method", columns="ground_truth", values="aupr_ratio")
    epr_wide = grn_table.pivot(index="method", columns="ground_truth", values="epr")
    order = list(pd.unique(grn_table["method"]))
    truths = list(pd.unique(grn_table["ground_truth"]))
    grn_wide, epr_wide = grn_wide.loc[order, truths], epr_wide.loc[order, truths]
    counts = grn_table.drop_duplicates("ground_truth").set_index("ground_truth")[
        ["n_genes", "n_tfs", "n_candidates", "n_positives", "expected_random_aupr_ratio"]
    ]
    pooling = ", ".join(f"{name}: **{p}**" for name, p in summary["pooling"].items())
    quick = (
        "\n> **Quick run** (`--quick`): pipeline check only, not the published numbers.\n"
        if summary["quick"]
        else ""
    )
    text = f"""# Benchmarks: integration and GRN inference

Generated by `python benchmarks/report_downstream.py` ({summary["minutes"]:.0f} minutes on
{summary["machine"]}; CPU only). Every number below is measured, none is copied from the paper.
{quick}
**Read this first.** The scLong models here were pretrained on this CPU on CellBench alone:
{n_cells:,} cells of five lung-adenocarcinoma cell lines, their {n_genes:,} most detected
genes. The official scLong was pretrained on 48 million cells over 27,874 genes with a
billion parameters. A model pretrained on 1,400 cells is not expected to beat PCA or scVI, and
it does not: these tables measure the package's pipeline and what small self-pretrained models
give, not the published model. With the official weights (`SCLONG.from_official`, see the
tutorial) or a pretraining corpus of millions of cells the scLong rows are the ones to re-measure;
the baselines would not change.

## Pretrained models

{markdown_table(models)}

Held-out masked MSE: masked-expression error on held-out cells (15% of the values masked), against
predicting each gene's mean expression.

## Zero-shot batch integration (scib-metrics)

`scl.tl.benchmark_integration(adata, batch_key="batch", label_key="cell_line",
baselines=["pca", "hvg_pca", "scvi"])` on the five CellBench batches (three protocols: CEL-seq2,
Drop-seq, and CEL-seq2 on three plates). Bio conservation, batch correction and their 0.4/0.6
total are scib-metrics' aggregates (kBET off). "Batch ASW" is scIB's silhouette batch score,
the "batch ASW" of the scLong article, reported but not aggregated (scib-metrics' BRAS replaces it).
scLong embeddings are zero-shot (no batch information); scVI is trained with the batch as
covariate.

{markdown_table(integ)}

![integration benchmark](figures/benchmark_integration.png)

![UMAPs of the embeddings](figures/benchmark_umaps.png)

### Pooling of cell embeddings

scLong gives one vector per gene; a cell embedding pools them. By total score on this benchmark
the best pooling is {pooling}. Every cell has all genes, so sum pooling is mean pooling times the
number of genes: the same embedding up to scale, and the same scores (the metrics are
scale-invariant). Mean pooling averages gene vectors that share a large gene-identity part (each
token adds its gene's embedding), which dilutes what differs between cells; max pooling keeps the
strongest per-feature responses.

## Gene regulatory network inference

`scl.tl.benchmark_grn` scores every method over the same candidate pairs, its default: TF rows
x all genes, directed (the DREAM / BEELINE protocol), from every TRRUST transcription factor of
the data to every one of its {n_genes:,} genes with a symbol (the GENIE3-like forest regresses
each gene on these TFs, so it is scored on exactly the rows it scores). Over all pairs among the
truth's genes (`candidates="truth_genes"`) a method that scores only TF rows is refused without
`tfs=`: its zeros elsewhere would inflate it several-fold, see the [GRN page](grn.md). scLong:
cosine similarity of contextual gene embeddings (decodings averaged over the cells), as in the
scLong article;
"centred" rows first subtract the mean gene embedding (`scl.tl.grn(..., center=True)`, not in
the article), which removes the component all gene embeddings share (the plain cosine of
almost every pair is close to 1 for these small models).
Baselines on the same cells: absolute Pearson and Spearman correlation of log-normalised
expression, and a GENIE3-like random forest (scikit-learn, 50 trees per target,
the TFs as regulators). A random
predictor scores about 1 (the analytic expectation is in the last table).

AUPR ratio (AUPR / positive rate):

{markdown_table(grn_wide.rename_axis("method"))}

Early precision ratio (precision of the top K = number of positives, over the positive rate):

{markdown_table(epr_wide.rename_axis("method"))}

Candidate pairs:

{markdown_table(counts.rename_axis("ground truth"), digits=3)}

![GRN benchmark](figures/benchmark_grn.png)

The BEELINE hESC network is a ChIP-seq network of embryonic stem cells; the cells here are lung
cancer lines, so it is a weak, cell-type-mismatched reference (the BEELINE hESC expression data
are not available offline). TRRUST is small here (few positives): its ratios are noisy.

## Raw results

`figures/benchmark_integration.csv`, `figures/benchmark_grn.csv`,
`figures/benchmark_models.csv`, `figures/benchmark_summary.json`.
"""
    path.write_text(text)


if __name__ == "__main__":
    main()
