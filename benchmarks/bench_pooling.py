"""Which pooling of scLong's per-gene decodings makes the best cell embedding, for both uses.

scLong gives one vector per gene and cell (the merged decodings); a cell embedding pools them
(``sclong_scverse.module._module.pool_decoded``). This benchmark pretrains one tiny scLong per
data set (seeded; the same model for every pooling), embeds the cells once and pools the same
decodings every way, then scores each pooling on the two uses a cell embedding has:

- integration: ``scl.tl.benchmark_integration`` (scib-metrics) bio conservation, batch
  correction and total, over all batches;
- a cross-batch linear probe: scikit-learn ``LogisticRegression`` on standardised features,
  trained on one batch and tested on all the others (accuracy, macro-F1), averaged over the
  training batches that hold every label.

PCA (50 components of the log-normalised expression of the same genes the model reads) is the
baseline row of both. Data sets (real, ``scl.datasets``):

- ``cellbench``: 1,408 cells of 5 lung-adenocarcinoma cell lines, 5 batches (3 protocols), the
  2,048 most detected genes; label ``cell_line``. Probe trained on each 5-line plate.
- ``pbmc68k``: scanpy's 700 ``pbmc68k_reduced`` cells, all 765 genes, label ``bulk_labels``.
  It has no batch column (one 10x run; ``phase`` is biology and depth is confounded with cell
  type), so the cells are split at random (seed 0) into three equal pseudo-batches
  ``split_0..2``: the probe then measures transfer to unseen cells of the same run, and batch
  correction is only a sanity check there.
- ``papalexi``: THP-1 ECCITE-seq CRISPR screen (Papalexi et al. 2021), 299 genes. Label: the
  knock-out of the IFN-gamma receptor pathway (``IFNGR1``, ``IFNGR2``, ``JAK2``, ``STAT1``:
  cells that lose the IFN-gamma response, the strongest transcriptome effect of the screen)
  against non-targeting controls; batches: the 3 biological replicates; 300 cells per label
  and replicate drawn at random (seed 0).

The default pooling is chosen by the rule of issue 27: within 0.02 of the best pooling on both
integration bio conservation and probe accuracy, on both CellBench and pbmc68k; if none is,
the pooling whose largest shortfall from the best is smallest. The rule's verdict is printed
and written to the page.

Usage::

    python benchmarks/bench_pooling.py                     # ~15-20 min on 2 CPU cores
    python benchmarks/bench_pooling.py --quick             # minutes: checks the pipeline
    python benchmarks/bench_pooling.py --write-docs        # also writes docs/pooling.md
    python benchmarks/bench_pooling.py --reuse             # reuse the models a run saved
    python benchmarks/bench_pooling.py --page-only         # page from the saved CSV

Results and models are saved under ``benchmarks/_out/pooling/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sclong_scverse as scl
from sclong_scverse.model import SCLONG
from sclong_scverse.module._module import DEFAULT_POOLING, POOLINGS, pool_decoded, pooled_dim
from sclong_scverse.nn import ScLongConfig

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "_out" / "pooling"
PAGE = REPO / "docs" / "pooling.md"
#: ``pooling.csv`` here (means over seeds) feeds ``benchmarks/scoreboard.py``.
FIGURES = REPO / "docs" / "figures"
#: Poolings scored. "sum" is left out: with every gene decoded it is mean times the number of
#: genes, and every score here is scale-invariant (same numbers as "mean").
SCORED = tuple(p for p in POOLINGS if p != "sum")
#: Diagnostic row: max and mean concatenated without the per-cell scaling of "max+mean".
UNSCALED = "max|mean unscaled"
PCA = "PCA"
RULE_DATASETS = ("cellbench", "pbmc68k")
RULE_METRICS = ("Bio conservation", "Probe accuracy")
TOLERANCE = 0.02
IFNG_PATHWAY = ("IFNGR1", "IFNGR2", "JAK2", "STAT1")
#: Pretraining epochs per data set (tiny preset, batch 16, lr 5e-3).
EPOCHS = {"cellbench": 4, "pbmc68k": 8, "papalexi": 6}
#: Cells per forward pass when embedding.
BATCH = 64


#: What the page says when the per-gene pooling is chosen.
FEATURE_SUM_COST = (
    "**What `feature_sum` costs.** Its width is the model's number of genes, not `dim`: "
    "27,874 values per cell for the official 1B model (111 kB per cell in float32, 1.1 GB for "
    "10,000 cells; `SCLONG.embed_corpus` writes that much per cell too). "
    '`sc.pp.neighbors(adata, use_rep="X_sclong")` works on it as on any representation; for a '
    'compact embedding pass `pooling="max"` (`dim` values) or run `sc.pp.pca` on it. It is '
    "also the original scLong's own zero-shot embedding, so the default is the faithful one."
)
#: ... and why the heads keep ``max`` (``HEAD_POOLING``).
HEADS_KEEP_MAX = (
    "**The heads keep `max`** (`HEAD_POOLING`): the annotation classifier and the cell-line "
    "vectors of the drug heads (`tl.cell_line_embedding`) fit layers on their features, and "
    "the classifier's out-of-distribution score a covariance of the width squared (27,874² "
    "values for the 1B model with `feature_sum`, 6 GB); on the tests' untrained backbone "
    "`feature_sum` also gave the frozen classifier 0.31 accuracy against 0.75 with `max` "
    '(Drop-seq to CEL-seq2). Pass `pooling="feature_sum"` to a head to try it.'
)


def load(name: str, seed: int = 0) -> tuple[ad.AnnData, dict]:
    """A normalised AnnData with ``obs["batch"]`` and ``obs["label"]``, and its task record."""
    if name == "cellbench":
        adata = scl.datasets.cellbench()
        detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
        adata = adata[:, np.sort(np.argsort(-detected)[:2048])].copy()
        adata.obs["label"] = adata.obs["cell_line"].astype(str)
        task = {"epochs": EPOCHS[name], "top_seq_len": 512}
    elif name == "pbmc68k":
        adata = scl.datasets.pbmc68k_counts()
        rng = np.random.default_rng(seed)
        split = np.arange(adata.n_obs) % 3
        adata.obs["batch"] = [f"split_{i}" for i in rng.permutation(split)]
        adata.obs["label"] = adata.obs["bulk_labels"].astype(str)
        task = {"epochs": EPOCHS[name], "top_seq_len": 512}
    elif name == "papalexi":
        full = scl.datasets.papalexi2021()
        pert = full.obs["perturbation"].astype(str)
        label = np.where(pert.isin(IFNG_PATHWAY), "IFNG pathway KO", "control")
        keep = (pert.isin(IFNG_PATHWAY) | (pert == "control")).to_numpy()
        rng = np.random.default_rng(seed)
        rows = []
        replicates = full.obs["replicate"].astype(str).to_numpy()
        for replicate in sorted(set(replicates)):
            for value in ("IFNG pathway KO", "control"):
                pool = np.flatnonzero(keep & (replicates == replicate) & (label == value))
                rows.extend(rng.choice(pool, min(300, len(pool)), replace=False))
        adata = full[np.sort(rows)].copy()
        adata.obs["batch"] = adata.obs["replicate"].astype(str)
        adata.obs["label"] = label[np.sort(rows)]
        del adata.obsm["grna_counts"]
        task = {"epochs": EPOCHS[name], "top_seq_len": 128}
    else:
        raise ValueError(name)
    scl.pp.normalize(adata)
    task.update(cells=int(adata.n_obs), genes=int(adata.n_vars))
    return adata, task


def pretrain(
    adata: ad.AnnData, task: dict, seed: int, quick: bool, folder: Path, reuse: bool
) -> tuple[SCLONG, dict]:
    """A tiny scLong pretrained on ``adata`` (seeded) and saved in ``folder``, with its record.

    With ``reuse``, a model saved there by a former run with the same settings is loaded.
    """
    scvi.settings.seed = seed
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="batch")
    record_file = folder / "record.json"
    if reuse and record_file.exists():
        record = json.loads(record_file.read_text())
        if record.get("epochs") == (1 if quick else task["epochs"]):
            print(f"reusing the model in {folder}", flush=True)
            return SCLONG.load(str(folder), adata=adata), record
    config = ScLongConfig.preset("tiny", top_seq_len=task["top_seq_len"])
    model = SCLONG(adata, config=config)
    started = time.perf_counter()
    model.train(
        max_epochs=1 if quick else task["epochs"],
        batch_size=16,
        lr=5e-3,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    mse = model.evaluate_masked_mse(seed=1)
    record = {
        "epochs": 1 if quick else task["epochs"],
        "train_s": time.perf_counter() - started,
        "masked_mse": float(mse["model_mse"]),
        "gene_mean_mse": float(mse["baseline_mse"]),
    }
    model.save(str(folder), overwrite=True)
    record_file.write_text(json.dumps(record, indent=1))
    return model, record


def embed_all(model: SCLONG, adata: ad.AnnData) -> dict[str, np.ndarray]:
    """Every pooling of the same decodings (one forward pass), plus the unscaled diagnostic."""
    config = model.module.config
    n_genes = config.n_genes
    parts: dict[str, list[torch.Tensor]] = {p: [] for p in (*SCORED, UNSCALED)}
    for outputs in model._batches(adata, None, BATCH, progress_bar=False):
        decodings = outputs["decodings"][:, :n_genes].float()
        decoded = None if config.low_expression_branch else outputs["predicted"][:, :n_genes]
        prediction = outputs["prediction"][:, :n_genes].float()
        for pooling in SCORED:
            pooled = pool_decoded(decodings, decoded, pooling, prediction=prediction)
            assert pooled.shape[1] == pooled_dim(pooling, config.dim, n_genes)
            parts[pooling].append(pooled)
        halves = [pool_decoded(decodings, decoded, p) for p in ("max", "mean")]
        parts[UNSCALED].append(torch.cat(halves, dim=1))
    embeddings = {k: torch.cat(v).numpy() for k, v in parts.items()}
    # The benchmark pools as the package does: the query path gives the same max pooling (on
    # the same first batch: FAVOR+ keys are stabilised over the batch, as in the original).
    cells = np.arange(min(BATCH, adata.n_obs))
    reference = model.get_latent_representation(adata, cells, batch_size=BATCH, pooling="max")
    np.testing.assert_allclose(embeddings["max"][cells], reference, rtol=1e-4, atol=1e-4)
    return embeddings


def probe(features: np.ndarray, adata: ad.AnnData) -> tuple[float, float, list[str]]:
    """Logistic regression trained on one batch, tested on the others; mean over batches."""
    labels = adata.obs["label"].to_numpy()
    batches = adata.obs["batch"].astype(str).to_numpy()
    classes = set(labels)
    train_batches = [b for b in sorted(set(batches)) if set(labels[batches == b]) == classes]
    accuracy, macro_f1 = [], []
    for batch in train_batches:
        train = batches == batch
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        classifier.fit(features[train], labels[train])
        predicted = classifier.predict(features[~train])
        accuracy.append(accuracy_score(labels[~train], predicted))
        macro_f1.append(f1_score(labels[~train], predicted, average="macro"))
    return float(np.mean(accuracy)), float(np.mean(macro_f1)), train_batches


def run_dataset(name: str, seed: int, quick: bool, reuse: bool = False) -> pd.DataFrame:
    """Scores of every pooling and PCA on one data set with one pretraining seed."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    adata, task = load(name)
    folder = OUT / f"model_{name}_seed{seed}{'_quick' if quick else ''}"
    model, record = pretrain(adata, task, seed, quick, folder, reuse)
    print(
        f"[{name} seed {seed}] {task['cells']} cells x {task['genes']} genes; pretrained "
        f"{1 if quick else task['epochs']} epochs in {record['train_s']:.0f} s (held-out "
        f"masked MSE {record['masked_mse']:.3f} vs per-gene mean {record['gene_mean_mse']:.3f})",
        flush=True,
    )
    embeddings = embed_all(model, adata)
    keys = {}
    for pooling, values in embeddings.items():
        key = "X_sclong_" + pooling.replace("+", "_").replace("|", "_").replace(" ", "_")
        adata.obsm[key] = values
        keys[key] = pooling
    scored_at = time.perf_counter()
    table = scl.tl.benchmark_integration(
        adata,
        list(keys),
        batch_key="batch",
        label_key="label",
        baselines=["pca"],
        n_comps=50,
        progress_bar=False,
    )
    scib_s = time.perf_counter() - scored_at
    keys["X_pca_unintegrated"] = PCA
    rows = []
    for key, pooling in keys.items():
        accuracy, macro_f1, trained_on = probe(np.asarray(adata.obsm[key]), adata)
        rows.append(
            {
                "dataset": name,
                "seed": seed,
                "pooling": pooling,
                "width": int(adata.obsm[key].shape[1]),
                "Bio conservation": float(table.loc[key, "Bio conservation"]),
                "Batch correction": float(table.loc[key, "Batch correction"]),
                "Total": float(table.loc[key, "Total"]),
                "Probe accuracy": accuracy,
                "Probe macro-F1": macro_f1,
                "probe_trained_on": " ".join(trained_on),
                "epochs": 1 if quick else task["epochs"],
                "masked_mse": record["masked_mse"],
                "train_s": record["train_s"],
                "scib_s": scib_s,
                "dataset_s": time.perf_counter() - started,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
        )
    frame = pd.DataFrame(rows)
    print(_format(frame), flush=True)
    print(
        f"[{name} seed {seed}] {time.perf_counter() - started:.0f} s (scib {scib_s:.0f} s); "
        f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return frame


def _format(frame: pd.DataFrame) -> str:
    columns = ["pooling", "width", *METRICS]
    return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


METRICS = ("Bio conservation", "Batch correction", "Total", "Probe accuracy", "Probe macro-F1")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean (and standard deviation over seeds) per data set and pooling."""
    grouped = results.groupby(["dataset", "pooling"], sort=False)
    mean = grouped[list(METRICS)].mean()
    mean["width"] = grouped["width"].first()
    mean["seeds"] = grouped["seed"].nunique()
    spread = grouped[list(METRICS)].std(ddof=0).add_suffix(" sd")
    return mean.join(spread).reset_index()


def choose(summary: pd.DataFrame) -> tuple[str, pd.DataFrame, bool]:
    """The issue's rule: within TOLERANCE of the best on every rule data set and metric."""
    candidates = [p for p in SCORED if p in set(summary["pooling"])]
    shortfall = pd.DataFrame(index=pd.Index(candidates, name="pooling"))
    for dataset in RULE_DATASETS:
        part = summary[(summary["dataset"] == dataset) & summary["pooling"].isin(candidates)]
        if part.empty:
            continue
        part = part.set_index("pooling")
        for metric in RULE_METRICS:
            shortfall[f"{dataset}: {metric}"] = part[metric].max() - part[metric]
    shortfall["worst"] = shortfall.max(axis=1)
    passing = shortfall.index[shortfall["worst"] <= TOLERANCE + 1e-12]
    if len(passing):
        return str(shortfall.loc[passing, "worst"].idxmin()), shortfall, True
    return str(shortfall["worst"].idxmin()), shortfall, False


def write_page(results: pd.DataFrame, command: str, seconds: float) -> None:
    """docs/pooling.md from the results."""
    summary = summarise(results)
    chosen, shortfall, meets = choose(summary)
    seeds = sorted(results["seed"].unique())
    epochs = dict(EPOCHS)
    if "epochs" in results:
        epochs.update(results.groupby("dataset")["epochs"].first().astype(int).to_dict())
    lines = [
        "# Pooling of cell embeddings",
        "",
        "scLong gives one vector per gene and cell (the merged decodings, width `dim`); a cell "
        "embedding pools them. `scl.tl.embed(adata, model, pooling=...)`, "
        "`SCLONG.get_latent_representation`, `scl.tl.cell_line_embedding` and the classifier "
        "head all pool through one routine (`sclong_scverse.module._module.pool_decoded`); cell "
        "embeddings (`tl.embed`, `get_latent_representation`, `embed_corpus`, `sclong embed`) "
        "share one default, `DEFAULT_POOLING`, the heads another, `HEAD_POOLING` (below). The "
        "poolings (`POOLINGS`):",
        "",
        "| pooling | width | what |",
        "|---|---|---|",
        "| `max` | `dim` | per feature, the largest value over the cell's genes |",
        "| `mean` | `dim` | per feature, the mean over genes |",
        "| `sum` | `dim` | the sum over genes: `mean` times the number of genes (same scores) |",
        "| `max+mean` | `2 dim` | `max` and `mean`, each divided by its own L2 norm in each cell, "
        "concatenated |",
        "| `feature_sum` | `n_genes` | the original scLong's zero-shot embedding: per gene, the "
        "decoding summed over its features plus the predicted value |",
        "",
        "**Scaling of `max+mean`.** Mean pooling averages decodings that share a large "
        "gene-identity part, so its vector is long and varies little between cells; the max "
        "vector differs. Concatenated as they are, one half would set the distances (the row "
        "`max|mean unscaled` below shows what that gives). Each half is therefore divided by its "
        "own norm in each cell, so both have norm 1. The scaling is per cell on purpose: a "
        "per-data-set scaling (e.g. standardising each feature over the cells) would make a "
        "cell's embedding depend on the cells it is embedded with.",
        "",
        "**The original's pooling.** The original repository has no cell-embedding function: "
        "its zero-shot integration script (`zero-shot-batch/scLong_zero_shot.py`) calls a "
        "`model.get_cell_emb(x)` that the released `DualEncoderSCFM` does not define, and notes "
        "the result as `(n_cells, seq_len)`: one value per gene, the decodings collapsed over "
        "their features, not over genes. The article's methods (as reconstructions of that "
        "script read them) add the predicted expression to the decodings before summing. "
        "`feature_sum` is that recipe on the vocabulary's genes; genes a network without the "
        "low-expression branch does not decode are 0.",
        "",
        f"## Measured (`{command}`)",
        "",
        "One tiny scLong per data set (seed"
        + ("s " if len(seeds) > 1 else " ")
        + ", ".join(str(s) for s in seeds)
        + "), pretrained on that data set, embeds every cell once; every pooling pools the same "
        "decodings. Integration: `scl.tl.benchmark_integration` (scib-metrics, kBET off) over "
        "all batches. Probe: logistic regression on standardised features, trained on one "
        "batch, tested on all others, averaged over the training batches that hold every "
        "label. PCA: 50 components of the log-normalised expression of the same genes. "
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} threads, shared with "
        f"other work (load average {results['load_before'].min():.1f}-"
        f"{results['load_after'].max():.1f} during the runs); {seconds / 60:.0f} minutes in "
        "all.",
        "",
        "- **cellbench**: 1,408 cells, 5 cell lines, 5 batches (3 protocols), the 2,048 most "
        f"detected genes; {epochs['cellbench']} epochs. Probe trained on each 5-line plate "
        "(p1, p2, p3).",
        "- **pbmc68k**: 700 cells of `pbmc68k_reduced`, 765 genes, `bulk_labels` (10 types); "
        f"{epochs['pbmc68k']} epochs. No batch column exists (one 10x run; `phase` is "
        "biology and sequencing depth is confounded with cell type), so the cells are split "
        "at random (seed 0) into 3 pseudo-batches: the probe measures transfer to unseen "
        "cells, batch correction is only a sanity check.",
        "- **papalexi**: THP-1 CRISPR screen, 299 genes, 1,800 cells; IFN-gamma pathway "
        "knock-out (IFNGR1, IFNGR2, JAK2, STAT1) vs non-targeting control, 3 replicates as "
        f"batches; {epochs['papalexi']} epochs. Not part of the rule (a check on a third "
        "kind of data).",
        "",
    ]
    order = [*SCORED, UNSCALED, PCA]
    for dataset in summary["dataset"].unique():
        part = summary[summary["dataset"] == dataset].set_index("pooling")
        part = part.loc[[p for p in order if p in part.index]]
        lines += [f"### {dataset}", ""]
        lines.append("| pooling | width | " + " | ".join(METRICS) + " |")
        lines.append("|---|---|" + "---|" * len(METRICS))
        for pooling, row in part.iterrows():
            cells = []
            for metric in METRICS:
                text = f"{row[metric]:.3f}"
                if row["seeds"] > 1:
                    text += f" ± {row[metric + ' sd']:.3f}"
                cells.append(text)
            name = pooling.replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| {name} | {int(row['width'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## The default",
        "",
        f"Rule (issue 27): within {TOLERANCE} of the best pooling on both integration bio "
        "conservation and cross-batch probe accuracy, on CellBench and on pbmc68k. Shortfall of "
        "each pooling from the best (0 = best):",
        "",
        "| pooling | " + " | ".join(shortfall.columns) + " |",
        "|---|" + "---|" * len(shortfall.columns),
    ]
    for pooling, row in shortfall.iterrows():
        lines.append(f"| {pooling} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines.append("")
    if meets:
        verdict = (
            f"**Default: `{chosen}`**: it meets the rule (largest shortfall "
            f"{shortfall.loc[chosen, 'worst']:.3f})."
        )
    else:
        verdict = (
            f"**Default: `{chosen}`, a compromise: no pooling meets the rule.** `{chosen}` has "
            f"the smallest largest shortfall ({shortfall.loc[chosen, 'worst']:.3f}); the others "
            "are further from the best on at least one of the two uses."
        )
    lines += [verdict, ""]
    if chosen == "feature_sum":
        lines += [FEATURE_SUM_COST, "", HEADS_KEEP_MAX, ""]
    if chosen != DEFAULT_POOLING:
        lines += [
            f"(The code's `DEFAULT_POOLING` is `{DEFAULT_POOLING}`: it differs from this run's "
            "choice.)",
            "",
        ]
    PAGE.write_text("\n".join(lines))
    table = summary[summary["pooling"] != UNSCALED][["dataset", "pooling", "width", *METRICS]]
    table.to_csv(FIGURES / "pooling.csv", index=False, float_format="%.4f")
    print(f"wrote {PAGE} and {FIGURES / 'pooling.csv'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cellbench", "pbmc68k", "papalexi"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--quick", "--fast", action="store_true", help="1 epoch: checks the pipeline"
    )
    parser.add_argument("--write-docs", action="store_true", help="write docs/pooling.md")
    parser.add_argument("--reuse", action="store_true", help="reuse models a former run saved")
    parser.add_argument("--page-only", action="store_true", help="page from the saved CSV")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    csv = OUT / ("results_quick.csv" if args.quick else "results.csv")
    command = "python benchmarks/bench_pooling.py" + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else ""
    )
    command += " --quick" if args.quick else ""
    if args.page_only:
        results = pd.read_csv(csv)
        write_page(results, command, float(results.groupby("dataset")["dataset_s"].max().sum()))
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"{platform.machine()}, torch threads {torch.get_num_threads()}, load {os.getloadavg()}")
    started = time.perf_counter()
    frames = []
    for dataset in args.datasets:
        for seed in args.seeds:
            frames.append(run_dataset(dataset, seed, args.quick, args.reuse))
            pd.concat(frames).to_csv(csv, index=False)
    results = pd.concat(frames, ignore_index=True)
    seconds = time.perf_counter() - started
    summary = summarise(results)
    chosen, shortfall, meets = choose(summary)
    print("\nShortfall from the best pooling (rule metrics):")
    print(shortfall.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nRule choice: {chosen} ({'meets the rule' if meets else 'compromise: none meets it'}); "
        f"DEFAULT_POOLING in the code: {DEFAULT_POOLING}; {seconds / 60:.1f} min in all"
    )
    if args.write_docs and not args.quick:
        write_page(results, command, seconds)


if __name__ == "__main__":
    main()
