"""The scLong article's ablations, trained and scored with one budget next to the full model.

Three variants of the ``tiny`` preset, each pretrained with exactly the same cells, epochs,
batch size, learning rate, data split and seed:

- **full**: scLong as published (top genes through the large encoder, all others through the
  mini encoder, full-length decoder, GO-graph gene embeddings);
- **no low-expression branch**: ``SCLONG(..., low_expression_branch=False)``, only each cell's
  ``top_seq_len`` most expressed genes enter and are decoded;
- **no GO graph**: ``SCLONG(..., gene_graph=False)``, gene embeddings without GO edges.

Each is scored on

- held-out masked-expression MSE (``model.evaluate_masked_mse``, the same masked values for
  every variant) on CellBench and PBMC, next to the per-gene-mean baseline;
- zero-shot batch integration of the cell embeddings on CellBench (five batches, five cell lines;
  ``scl.tl.benchmark_integration``, scib-metrics) next to PCA baselines;
- GRN inference on PBMC (2,000 highly variable genes) against TRRUST: the cosine ``scl.tl.grn``
  of contextual gene embeddings scored with ``scl.tl.evaluate_grn(..., tfs=...)`` (pairs with a
  TRRUST transcription factor), next to |Pearson| co-expression and a random ranking;

and writes ``docs/ablation.md`` with ``docs/figures/ablation.csv`` / ``ablation.json``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/report_ablation.py   # about 10 min on 1 CPU thread
    python benchmarks/report_ablation.py --quick             # a minute: checks the pipeline
    python benchmarks/report_ablation.py --page-only         # rewrite the page from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

import sclong_scverse as scl
from sclong_scverse.model import SCLONG

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
RESULTS = FIGURES / "ablation.json"
TABLE = FIGURES / "ablation.csv"

VARIANTS = {
    "full": {},
    "no low-expression branch": {"low_expression_branch": False},
    "no GO graph": {"gene_graph": False},
}
INTEGRATION_COLUMNS = [
    "Total",
    "Bio conservation",
    "Batch correction",
    "Batch ASW",
    "iLISI",
    "KMeans ARI",
    "Silhouette label",
]


# ---------------------------------------------------------------- data
def load_cellbench(n_cells: int, n_genes: int, seed: int) -> sc.AnnData:
    """CellBench: ``n_cells`` random cells (all five batches) on the most detected genes."""
    adata = scl.datasets.cellbench()
    rng = np.random.default_rng(seed)
    if n_cells < adata.n_obs:
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected, kind="stable")[:n_genes])].copy()
    scl.pp.normalize(adata)  # layer "sclong"; X keeps the counts (the baselines read them)
    return adata


def load_pbmc(data: Path, n_genes: int) -> sc.AnnData:
    """celltypist's 559-cell PBMC sample on its ``n_genes`` highly variable genes."""
    adata = sc.read_h5ad(
        data / "scrna" / "pbmc_celltypist_sample" / "celltypist_sample_559cells.h5ad"
    )
    adata.var_names_make_unique()
    sc.pp.filter_genes(adata, min_cells=3)
    logged = adata.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.pp.highly_variable_genes(logged, n_top_genes=n_genes, flavor="seurat")
    adata = adata[:, logged.var["highly_variable"].to_numpy()].copy()
    adata.var["symbol"] = adata.var_names.to_numpy()
    scl.pp.normalize(adata)
    return adata


# ---------------------------------------------------------------- training and scoring
def pretrain(adata: sc.AnnData, variant: str, args, batch_key: str | None) -> tuple[SCLONG, dict]:
    """One variant, pretrained with the shared budget; its record (size, time, masked MSE)."""
    work = adata.copy()
    SCLONG.setup_anndata(work, layer="sclong", batch_key=batch_key)
    scvi.settings.seed = args.seed  # the same data split and initial draws for every variant
    model = SCLONG(work, config=args.preset, **VARIANTS[variant])
    started = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - started
    record = {
        "parameters": int(sum(p.numel() for p in model.module.parameters())),
        "train_seconds": seconds,
        "n_train": int(len(model.train_indices)),
        "n_heldout": int(len(model.validation_indices)),
        "validation_indices": [int(i) for i in model.validation_indices],
    }
    mse = model.evaluate_masked_mse(seed=1)
    record["mse"] = float(mse["model_mse"])
    record["baseline_mse"] = float(mse["baseline_mse"])
    record["n_masked"] = int(mse["n_masked"])
    return model, work, record


def integration(adata: sc.AnnData, models: dict, quick: bool) -> pd.DataFrame:
    keys = {}
    for variant, (model, work, _) in models.items():
        key = f"X_sclong_{variant.replace(' ', '_').replace('-', '_')}"
        adata.obsm[key] = model.get_latent_representation(work)  # max pooling, the default
        keys[key] = variant
    table = scl.tl.benchmark_integration(
        adata,
        list(keys),
        batch_key="batch",
        label_key="cell_line",
        baselines=["pca", "hvg_pca"],
        n_top_genes=min(2000, adata.n_vars // 2),
        progress_bar=False,
    )
    names = {**keys, "X_pca_unintegrated": "PCA (unintegrated)", "X_pca_hvg": "HVG PCA"}
    table = table.rename(index=names)
    return table[[c for c in INTEGRATION_COLUMNS if c in table.columns]]


def grn(adata: sc.AnnData, models: dict, trrust: pd.DataFrame) -> pd.DataFrame:
    tfs = sorted(set(trrust["source"]) & set(adata.var["symbol"]))
    rows = []

    def score(label: str, key: str) -> None:
        result = scl.tl.evaluate_grn(adata, trrust, key=key, tfs=tfs, gene_symbols="symbol")
        rows.append({"method": label, **result})

    for variant, (model, _, _) in models.items():
        for center in (False, True):
            key = f"grn_{len(rows)}"
            scl.tl.grn(adata, model, center=center, key_added=key, progress_bar=False)
            score(f"{variant}{' (centred cosine)' if center else ''}", key)
    scl.tl.coexpression_grn(adata, method="pearson")
    score("|Pearson| co-expression", "pearson_grn")
    table = pd.DataFrame(rows).set_index("method")
    random = scl.tl.expected_random_aupr(
        int(table["n_candidates"].iloc[0]), int(table["n_positives"].iloc[0])
    )
    table.loc["random ranking", "aupr_ratio"] = random / table["positive_rate"].iloc[0]
    return table


# ---------------------------------------------------------------- page
def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def write_page(results: dict) -> None:
    args, records = results["args"], results["records"]
    integ = pd.DataFrame(results["integration"]).T
    grn_table = pd.DataFrame(results["grn"]).T
    cb, pb = records["CellBench"], records["PBMC"]
    lines = [
        "| variant | parameters (CellBench / PBMC) | training s (CellBench + PBMC) | "
        "held-out masked MSE (CellBench / PBMC) | integration Total | Batch ASW | "
        "GRN AUPR ratio (TRRUST) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        c, p = cb[variant], pb[variant]
        lines.append(
            f"| {variant} | {c['parameters']:,} / {p['parameters']:,} | "
            f"{c['train_seconds']:.0f} + {p['train_seconds']:.0f} | "
            f"{_number(c['mse'])} / {_number(p['mse'])} | "
            f"{_number(integ.loc[variant, 'Total'])} | "
            f"{_number(integ.loc[variant, 'Batch ASW'])} | "
            f"{_number(grn_table.loc[variant, 'aupr_ratio'])} |"
        )
    lines.append(
        f"| per-gene mean (baseline) | – | – | {_number(cb['full']['baseline_mse'])} / "
        f"{_number(pb['full']['baseline_mse'])} | – | – | – |"
    )
    for name in ("PCA (unintegrated)", "HVG PCA"):
        lines.append(
            f"| {name} (baseline) | – | – | – | {_number(integ.loc[name, 'Total'])} | "
            f"{_number(integ.loc[name, 'Batch ASW'])} | – |"
        )
    for name in ("|Pearson| co-expression", "random ranking"):
        lines.append(
            f"| {name.replace('|', '&#124;')} (baseline) | – | – | – | – | – | "
            f"{_number(grn_table.loc[name, 'aupr_ratio'])} |"
        )
    main_table = "\n".join(lines)

    mse_lines = [
        "| data | variant | training cells | held-out cells | masked values | model MSE | "
        "per-gene mean MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for data, record in records.items():
        for variant in VARIANTS:
            r = record[variant]
            mse_lines.append(
                f"| {data} | {variant} | {r['n_train']} | {r['n_heldout']} | {r['n_masked']:,} | "
                f"{_number(r['mse'])} | {_number(r['baseline_mse'])} |"
            )
    integ_lines = ["| embedding | " + " | ".join(integ.columns) + " |"]
    integ_lines.append("|---|" + "---|" * len(integ.columns))
    for name, row in integ.sort_values("Total", ascending=False).iterrows():
        integ_lines.append(f"| {name} | " + " | ".join(_number(v) for v in row) + " |")
    grn_lines = ["| method | AUPR ratio | EPR |", "|---|---|---|"]
    for name, row in grn_table.iterrows():
        grn_lines.append(
            f"| {name.replace('|', '&#124;')} | {_number(row['aupr_ratio'])} | "
            f"{_number(row.get('epr'))} |"
        )
    counts = grn_table.iloc[0]
    quick = (
        "\n> **Quick run** (`--quick`): pipeline check only, not the published numbers.\n"
        if args["quick"]
        else ""
    )
    text = f"""# Ablations: without the low-expression branch, without the GO graph

The scLong article shows what each part of the model buys by removing it. Both ablations are
options of the model:

```python
scl.SCLONG(adata, config="tiny")                               # full scLong
scl.SCLONG(adata, config="tiny", low_expression_branch=False)  # no low-expression branch
scl.SCLONG(adata, config="tiny", gene_graph=False)             # no GO graph
```

- **No low-expression branch** (`low_expression_branch=False`, a field of `ScLongConfig`, saved
  and loaded with the model): only each cell's `top_seq_len` most expressed genes enter; there is
  no mini encoder, and the decoder runs over the top genes alone (a sequence of `top_seq_len`
  tokens instead of the whole vocabulary). The network predicts and represents only those genes:
  cell embeddings pool them, a gene's contextual embedding averages the cells where it is among
  the top genes (NaN if it never is: no GRN edges), `predict` gives NaN elsewhere. Its
  masked-expression objective draws the masks as the full model does (15% of all non-zero
  values) and routes the chosen genes into the top set first, the cell's highest other values
  filling the remaining places: a masked value, written as the mask token, would otherwise drop
  out of the top set, where nothing predicts it. So both variants are asked the same values
  with the same information about them, and differ in the context only (the top genes, or the
  whole transcriptome). Masking only genes of the top set instead would tell the network that
  each masked value is among the cell's highest, a hint the full model never gets. The loss
  counts only positions the network predicts.
- **No GO graph** (`gene_graph=False`): the gene embeddings get no Gene Ontology edges; the
  graph convolution then passes nothing between genes (each gene keeps its identity embedding
  plus one shared learned vector).

## Results

Produced by `OMP_NUM_THREADS=1 python benchmarks/report_ablation.py` ({results["minutes"]:.1f}
min on {results["machine"]}). Numbers as measured, whichever variant they favour.
{quick}
**Budget, the same for every variant:** the `{args["preset"]}` preset (top
{results["top_seq_len"]} genes), {args["epochs"]} epochs, batch size {args["batch_size"]},
learning rate {args["lr"]}, seed {args["seed"]} (the same split into training and held-out cells,
the same masks in evaluation); CellBench: {results["n_cells"]["CellBench"]} random cells of the
five batches on their {results["n_genes"]["CellBench"]:,} most detected genes; PBMC: the
{results["n_cells"]["PBMC"]} cells of celltypist's sample on {results["n_genes"]["PBMC"]:,}
highly variable genes. Median non-zero genes per cell: CellBench
{results["nonzero_per_cell"]["CellBench"]:.0f}, PBMC {results["nonzero_per_cell"]["PBMC"]:.0f};
cells with more non-zero genes than the top set ({results["top_seq_len"]}): CellBench
{100 * results["cells_above_top"]["CellBench"]:.0f}%, PBMC
{100 * results["cells_above_top"]["PBMC"]:.0f}% (for the other cells the variant without the
low-expression branch still sees every expressed gene, and loses only zeros). Each variant is
pretrained twice, once on each data set (GRN scores come
from the PBMC models, integration from the CellBench models). These are tiny models trained for
a minute or two, not the article's billion-parameter model pretrained on 48 million cells: the
table says what removing each part does at this budget, not at the article's. One training run
per variant and data set (seed {args["seed"]}); how much the scores move between seeds was not
measured, so small differences may be noise.

{main_table}

- *Masked MSE*: `model.evaluate_masked_mse(seed=1)` on the held-out cells: 15% of each
  cell's non-zero values masked, the same values for every variant and for the baseline (each
  value predicted by its gene's mean non-zero value over the training cells). The full model
  routes the masked genes to its mini encoder, as the original does; the variant without the
  low-expression branch routes them into its top set, where they take places of top genes.
- *Integration*: scib-metrics' total score (0.6 bio conservation + 0.4 batch correction) and
  scIB's batch ASW of the max-pooled cell embeddings, CellBench batches and cell lines.
- *GRN*: cosine similarity of contextual gene embeddings (`scl.tl.grn`, the article's plain
  cosine), scored by `scl.tl.evaluate_grn(..., tfs=...)` over the {int(counts["n_candidates"]):,}
  pairs of ground-truth genes with a TRRUST TF ({int(counts["n_positives"])} positives; AUPR
  ratio = AUPR / positive rate).

### Held-out masked MSE

{chr(10).join(mse_lines)}

### Batch integration (CellBench)

{chr(10).join(integ_lines)}

### GRN inference (PBMC against TRRUST)

"Centred" rows subtract the mean gene embedding before the cosine (`center=True`, not in the
article). EPR: precision of the top K (K = number of positives) over the positive rate.

{chr(10).join(grn_lines)}

Raw results: `figures/ablation.csv`, `figures/ablation.json`.
"""
    (DOCS / "ablation.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cellbench-cells", type=int, default=800)
    parser.add_argument("--cellbench-genes", type=int, default=2048)
    parser.add_argument("--pbmc-genes", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a minute: checks the pipeline")
    parser.add_argument("--page-only", action="store_true", help="rewrite the page from the JSON")
    args = parser.parse_args()
    if args.page_only:
        write_page(json.loads(RESULTS.read_text()))
        return
    if args.quick:
        args.epochs, args.cellbench_cells, args.cellbench_genes, args.pbmc_genes = 1, 200, 600, 600
    started = time.perf_counter()
    data = scl.datasets.shared_data_dir()
    trrust = scl.tl.read_ground_truth(data / "grn" / "trrust" / "trrust_rawdata.human.tsv")
    datasets = {
        "CellBench": (
            load_cellbench(args.cellbench_cells, args.cellbench_genes, args.seed),
            "batch",
        ),
        "PBMC": (load_pbmc(data, args.pbmc_genes), None),
    }
    records: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name, (adata, batch_key) in datasets.items():
        models = {}
        for variant in VARIANTS:
            models[variant] = pretrain(adata, variant, args, batch_key)
            record = models[variant][2]
            print(name, variant, {k: v for k, v in record.items() if k != "validation_indices"})
        held_out = {tuple(m[2]["validation_indices"]) for m in models.values()}
        assert len(held_out) == 1, "the variants must share their held-out cells"
        records[name] = {v: m[2] for v, m in models.items()}
        for record in records[name].values():
            record.pop("validation_indices")
        if name == "CellBench":
            tables["integration"] = integration(adata, models, args.quick)
            print(tables["integration"].round(3).to_string())
        else:
            tables["grn"] = grn(adata, models, trrust)
            print(tables["grn"][["aupr_ratio", "epr"]].round(3).to_string())
        top_seq_len = next(iter(models.values()))[0].module.config.top_seq_len
    results = {
        "args": vars(args),
        "records": records,
        "integration": tables["integration"].T.to_dict(),
        "grn": tables["grn"].T.to_dict(),
        "n_cells": {k: int(a.n_obs) for k, (a, _) in datasets.items()},
        "n_genes": {k: int(a.n_vars) for k, (a, _) in datasets.items()},
        "nonzero_per_cell": {
            k: float(np.median(np.asarray((a.layers["sclong"] > 0).sum(axis=1)).ravel()))
            for k, (a, _) in datasets.items()
        },
        "cells_above_top": {
            k: float(
                (np.asarray((a.layers["sclong"] > 0).sum(axis=1)).ravel() > top_seq_len).mean()
            )
            for k, (a, _) in datasets.items()
        },
        "top_seq_len": int(top_seq_len),
        "minutes": (time.perf_counter() - started) / 60,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} cores, torch {torch.__version__}",
    }
    rows = [
        {"data": data_name, "variant": variant, **record}
        for data_name, per_variant in records.items()
        for variant, record in per_variant.items()
    ]
    if args.quick:
        print(json.dumps(results, indent=1, default=float)[:3000])
        return
    FIGURES.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(TABLE, index=False)
    RESULTS.write_text(json.dumps(results, indent=1, default=float))
    write_page(results)


if __name__ == "__main__":
    main()
