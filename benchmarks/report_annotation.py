"""Cell-type annotation with fine-tuned scLong next to baselines, on real data; writes a docs page.

Tasks (reference -> query):

- CellBench CEL-seq2 -> Drop-seq: the four CEL-seq2 batches (5 cell lines) annotate the Drop-seq
  batch (3 lines);
- CellBench Drop-seq -> CEL-seq2: the Drop-seq batch (3 lines) annotates the CEL-seq2 cells; the
  two lines absent from Drop-seq (A549, H838) are scored apart (their confidence only);
- pbmc68k_reduced ``bulk_labels``: a random 70/30 split (seed 0).

Methods: ``SCLONGClassifier`` in the three fine-tuning modes (frozen, partial = last Performer
layer, LoRA rank 8) on a tiny scLong backbone pretrained (masked expression, no labels) on the
cells of the data set, annotating with ``scl.tl.annotate``'s defaults (calibrated threshold,
out-of-distribution score); the probe the frozen head must match: a logistic regression on the
backbone's own embeddings (same pooling, standardised on the reference); a logistic regression
on 50 principal components of the reference; a 15-nearest-neighbour classifier on a scVI latent
space trained on reference and query together (the batch as covariate). All methods see the
same genes (the most detected ones). Also: the parameters each mode trains (tiny: measured; 1B
preset: counted on the meta device) and the peak memory of a fine-tuning step on the CPU (a
fresh process per mode, batch of 32 cells).

Usage::

    python benchmarks/report_annotation.py           # 384 genes, all cells, pretraining,
                                                     # 12 epochs (not yet run: hours on 2 cores)
    python benchmarks/report_annotation.py --fast    # 128 genes, 5 epochs (frozen: up to 200
                                                     # on cached features), 60 cells per line,
                                                     # no pretraining: about 15 min on 2
                                                     # shared cores, the committed page
    python benchmarks/report_annotation.py --resources-only  # re-measure parameters and memory
    python benchmarks/report_annotation.py --page-only       # rewrite the page from the CSVs

Writes ``docs/annotation.md`` and ``docs/annotation_results.csv`` / ``annotation_resources.csv``.
When ``docs/annotation_results_previous.csv`` exists (the results of an earlier run, kept by
hand with a note in ``annotation_run.json``'s ``previous_note``), the page compares them.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = DOCS / "annotation_results.csv"
RESOURCES = DOCS / "annotation_resources.csv"
RECORD = DOCS / "annotation_run.json"
PREVIOUS = DOCS / "annotation_results_previous.csv"
PROBE = "probe: logistic regression on scLong embedding"
MODES = ("frozen", "partial", "lora")
LR = {"frozen": 1e-2, "partial": 3e-3, "lora": 3e-3}
SEEN_LINES = ("H1975", "H2228", "HCC827")


# ---------------------------------------------------------------------- data
def most_detected(adata, n_genes: int):
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    return adata[:, np.sort(np.argsort(-detected, kind="stable")[:n_genes])].copy()


def load_cellbench(n_genes: int):
    import sclong_scverse as scl

    adata = most_detected(scl.datasets.cellbench(), n_genes)
    scl.pp.normalize(adata)
    return adata


def load_pbmc(n_genes: int):
    import sclong_scverse as scl

    adata = scl.datasets.pbmc68k_counts()
    adata = most_detected(adata, n_genes)
    scl.pp.normalize(adata)
    adata.obs["batch"] = "pbmc68k"
    return adata


def backbone_config(n_genes: int) -> dict:
    import sclong_scverse as scl

    config = scl.ScLongConfig.preset("tiny").to_dict()
    config.pop("n_genes", None)
    config["top_seq_len"] = n_genes // 4
    return config


def pretrain(adata, epochs: int, n_genes: int):
    from sclong_scverse.model import SCLONG

    work = adata.copy()
    SCLONG.setup_anndata(work, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(work, config=backbone_config(n_genes))
    started = time.perf_counter()
    if epochs:
        model.train(
            max_epochs=epochs,
            batch_size=16,
            lr=5e-3,
            accelerator="cpu",
            enable_progress_bar=False,
        )
    return model, time.perf_counter() - started


# ---------------------------------------------------------------------- methods
def scores(truth, predicted) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    truth = np.asarray(truth, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    return {
        "accuracy": accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, labels=np.unique(truth), average="macro"),
    }


def run_sclong(backbone, reference, query, mode: str, epochs: int) -> tuple[dict, ad.AnnData]:
    """Fine-tune in ``mode`` and annotate ``query`` with ``tl.annotate``'s defaults.

    Frozen: the classifier's defaults (the head trains on cached features, up to 200 epochs,
    patience 10, lr 1e-2); partial and LoRA: ``epochs`` epochs, patience 3, lr 3e-3.
    """
    import sclong_scverse as scl
    from sclong_scverse.model import SCLONGClassifier

    reference = reference.copy()
    torch.manual_seed(0)
    model = SCLONGClassifier.from_sclong(
        backbone, reference, labels_key="label", mode=mode, lora_rank=8
    )
    schedule = (
        {}
        if mode == "frozen"
        else {"max_epochs": epochs, "lr": LR[mode], "early_stopping_patience": 3}
    )
    started = time.perf_counter()
    model.train(batch_size=32, accelerator="cpu", enable_progress_bar=False, **schedule)
    seconds = time.perf_counter() - started
    annotated = scl.tl.annotate(query, model, copy=True)
    info = {
        "train_s": seconds,
        "epochs": len(model.history["train_loss"]),
        "trainable": model.module.parameter_counts()["trainable"],
        "threshold": annotated.uns["sclong_label"]["params"]["threshold"],
    }
    return info, annotated


def run_embedding_probe(backbone, reference, query) -> np.ndarray:
    """Logistic regression (balanced) on the backbone's standardised embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sclong_scverse.module._module import DEFAULT_POOLING

    train = backbone.get_latent_representation(reference, pooling=DEFAULT_POOLING)
    test = backbone.get_latent_representation(query, pooling=DEFAULT_POOLING)
    scaler = StandardScaler().fit(train)
    probe = LogisticRegression(max_iter=5000, class_weight="balanced")
    probe.fit(scaler.transform(train), reference.obs["label"].astype(str))
    return probe.predict(scaler.transform(test))


def counts_matrix(adata):
    from scipy import sparse

    return sparse.csr_matrix(adata.X, dtype=np.float32)


def run_pca_logreg(reference, query) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    def lognorm(adata):
        x = counts_matrix(adata).toarray()
        x = x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4
        return np.log1p(x)

    ref, qry = lognorm(reference), lognorm(query)
    mean, std = ref.mean(axis=0), ref.std(axis=0) + 1e-6
    pca = PCA(n_components=50, random_state=0).fit((ref - mean) / std)
    classifier = LogisticRegression(max_iter=2000, class_weight="balanced")
    classifier.fit(pca.transform((ref - mean) / std), reference.obs["label"].astype(str))
    return classifier.predict(pca.transform((qry - mean) / std))


def run_scvi_knn(reference, query, epochs: int) -> np.ndarray:
    import anndata as ad
    import scvi
    from sklearn.neighbors import KNeighborsClassifier

    scvi.settings.seed = 0
    both = ad.concat(
        [reference, query], label="_part", keys=["reference", "query"], index_unique="-"
    )
    both = ad.AnnData(X=counts_matrix(both), obs=both.obs[["batch", "_part"]].copy())
    both.obs["batch"] = both.obs["batch"].astype(str)
    scvi.model.SCVI.setup_anndata(both, batch_key="batch")
    model = scvi.model.SCVI(both, n_latent=10)
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
    latent = model.get_latent_representation()
    is_ref = (both.obs["_part"] == "reference").to_numpy()
    knn = KNeighborsClassifier(n_neighbors=15).fit(
        latent[is_ref], reference.obs["label"].astype(str).to_numpy()
    )
    return knn.predict(latent[~is_ref])


# ---------------------------------------------------------------------- tasks
def stratified(adata, per_class: int | None, seed: int = 0):
    """``adata`` (copy) with at most ``per_class`` random cells of each cell line."""
    if per_class is None:
        return adata.copy()
    rng = np.random.default_rng(seed)
    groups = adata.obs.groupby("label", observed=True).indices.values()
    rows = [rng.choice(r, min(per_class, len(r)), replace=False) for r in groups]
    return adata[np.sort(np.concatenate(rows))].copy()


def tasks(cellbench, pbmc, per_line: int | None):
    cel = cellbench[cellbench.obs["batch"] != "sc_dropseq"].copy()
    drop = cellbench[cellbench.obs["batch"] == "sc_dropseq"].copy()
    for adata in (cel, drop):
        adata.obs["label"] = adata.obs["cell_line"].astype(str)
    cel_reference = stratified(cel, per_line)
    cel_query = stratified(cel, per_line, seed=1)
    held_out = np.random.default_rng(0).random(pbmc.n_obs) < 0.3
    pbmc = pbmc.copy()
    pbmc.obs["label"] = pbmc.obs["bulk_labels"].astype(str)
    return [
        ("CellBench CEL-seq2 -> Drop-seq", "cellbench", cel_reference, drop),
        ("CellBench Drop-seq -> CEL-seq2", "cellbench", drop, cel_query),
        (
            "pbmc68k bulk_labels (70/30 split)",
            "pbmc",
            pbmc[~held_out].copy(),
            pbmc[held_out].copy(),
        ),
    ]


def evaluate(task, method, truth, predicted, annotated=None, extra=None) -> dict:
    """Accuracy and macro-F1 (seen lines); with ``annotated``, the confidence, the OOD score
    and the fraction labelled unknown, of seen and of unseen lines."""
    truth = np.asarray(truth, dtype=str)
    seen = np.isin(truth, SEEN_LINES) if task.startswith("CellBench Drop") else None
    mask = np.ones(len(truth), dtype=bool) if seen is None else seen
    record = {"task": task, "method": method, "n_query": int(mask.sum())}
    record.update(scores(truth[mask], np.asarray(predicted, dtype=str)[mask]))
    if annotated is not None:
        obs = annotated.obs
        columns = {
            "confidence_median": obs["sclong_label_confidence"].to_numpy(),
            "ood_median": obs["sclong_label_ood"].to_numpy(),
            "unknown": (obs["sclong_label"].astype(str) == "unknown").to_numpy(float),
        }
        for name, values in columns.items():
            summary = np.mean if name == "unknown" else np.median
            record[name] = float(summary(values[mask]))
            if seen is not None and (~seen).any():
                record[f"{name}_unseen_lines"] = float(summary(values[~seen]))
    record.update(extra or {})
    return record


# ---------------------------------------------------------------------- resources
def memory_child(mode: str, n_genes: int) -> None:
    """Run in a fresh process: peak RSS increase over 3 fine-tuning steps of 32 cells."""
    from scvi import REGISTRY_KEYS

    from sclong_scverse.model import SCLONG, SCLONGClassifier

    torch.manual_seed(0)
    adata = load_cellbench(n_genes)
    adata.obs["label"] = adata.obs["cell_line"].astype(str)
    SCLONG.setup_anndata(adata, layer="sclong")
    backbone = SCLONG(adata, config=backbone_config(n_genes))
    work = adata.copy()
    model = SCLONGClassifier.from_sclong(backbone, work, labels_key="label", mode=mode)
    module = model.module
    x = torch.as_tensor(work.layers["sclong"][:96].toarray())
    codes = torch.as_tensor(
        np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))[:96]
    )
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        module.inference(x[:32])  # caches (GO adjacency) before the measurement
    del adata, backbone
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    rss_before = _status_mb("VmRSS")
    module.train()
    started = time.perf_counter()
    for step in range(3):
        rows = slice(32 * step, 32 * (step + 1))
        out = module.inference(x[rows])
        loss = module.loss({REGISTRY_KEYS.LABELS_KEY: codes[rows]}, out, {}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - started) / 3
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "mode": mode,
                "step_peak_mb": peak - rss_before,
                "process_peak_mb": peak,
                "step_s": seconds,
                **module.parameter_counts(),
            }
        )
    )


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def resources(n_genes: int, n_classes: int) -> pd.DataFrame:
    from sclong_scverse.module import ScLongClassifierModule
    from sclong_scverse.nn import ScLongConfig, ScLongNetwork

    rows = []
    for mode in MODES:
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", mode, "--genes", str(n_genes)],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append({"preset": f"tiny ({n_genes} genes)", **measured})
    config = ScLongConfig.preset("1b", n_genes=27874)
    for mode in MODES:
        with torch.device("meta"):
            network = ScLongNetwork(config)
        module = ScLongClassifierModule(
            network,
            torch.zeros(1, dtype=torch.long),
            torch.arange(n_classes),
            n_classes,
            mode=mode,
        )
        rows.append({"preset": "1b (27,874 genes; meta device)", "mode": mode})
        rows[-1].update(module.parameter_counts())
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- page
def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append("" if np.isnan(value) else f"{value:.{digits}f}")
            elif isinstance(value, int | np.integer):
                cells.append(f"{int(value):,}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Why the classifier and ``tl.annotate`` behave as they do (issue 27), measured once while
#: choosing; ``tests/test_annotation.py`` holds the outcome on every run.
DEFAULTS_SECTION = [
    "## How the defaults were chosen",
    "",
    "**Frozen head.** A reviewer found the frozen classifier below a logistic-regression probe "
    "on the same backbone's embeddings (0.59 vs 0.71 on a cross-batch pancreas query). The "
    "cause was under-training: each step ran scLong forward, so runs were short (5-6 epochs, "
    "learning rate 3e-3 in the tests and 5 epochs here), and the head's standardisation used "
    "batch statistics. On the tests' seeded tiny backbone (256 genes, not pretrained) the "
    "previous code scored 0.40-0.54 against the probe's 0.69-0.81 on three cross-batch "
    "CellBench splits with those settings, and matched it only at its 20-epoch default. With "
    "the backbone fixed, the pooled decodings are now computed once and the head trains on "
    "them through the same scvi-tools / Lightning trainer until the validation loss stops "
    "improving (up to 200 epochs, patience 10, AdamW at 1e-2, balanced class weights), then "
    "again from its initial weights on every reference cell for the best epoch's number of "
    "epochs (the probe, too, sees every reference cell), its standardisation fitted on the "
    "cells it trains on as scikit-learn's `StandardScaler`. Without that refit the head "
    "matched the probe on average over four seeds on this page's set-up (0.566 vs 0.551 and "
    "0.596 vs 0.600 on the two CellBench tasks), but 3 of the 8 runs fell more than 0.02 "
    "below it (which 20% of a small reference is held out matters); with it, over four seeds: "
    "CEL-seq2 -> Drop-seq 0.578-0.609 vs the probe's 0.551, Drop-seq -> CEL-seq2 0.589-0.622 "
    "vs 0.600; on the tests' set-up (256 genes, whole batches) Drop-seq -> CEL-seq2 "
    "0.740-0.807 vs 0.713 and CEL-seq2 (3-line batch) -> Drop-seq 0.751-0.764 vs 0.698. "
    "`tests/test_annotation.py` holds frozen >= probe - 0.02 on the first of these. Open: on "
    "pbmc68k (10 types, random 70/30 split, no batch shift) the head stays slightly below its "
    "probe, 0.487-0.508 over four seeds vs 0.513 (0.451-0.513 without the refit).",
    "",
    "**Threshold.** A fixed 0.5 labelled every cell `unknown` with 5 classes and a model "
    'whose median confidence was 0.36. `threshold="auto"` is calibrated on the validation '
    "cells (cells like the reference's that the head did not train on): the confidence below "
    "which 5% of them fall. It follows the number of classes and how sure the model is; with "
    "no validation cells it is `1/k + 0.25 (1 - 1/k)` for `k` classes.",
    "",
    '**Out-of-distribution score.** `obs["sclong_label_ood"]` is the Mahalanobis distance '
    "(Lee et al. 2018) of a cell's pooled decodings to the nearest training class (standardised "
    "features, one Ledoit-Wolf-shrunk covariance shared by the classes). Compared on the tiny "
    "backbone's embeddings in 21 held-out settings (each of the five lines left out of CEL-seq2 "
    "plates 1-2 and scored on plate 3; Drop-seq -> CEL-seq2 and CEL-seq2 3-line -> 5-line "
    "plates with A549 and H838 unseen; max, mean and max+mean pooling), the median score of the "
    "unseen cells was above the seen cells' in 21 of 21 for the Mahalanobis distance, 20 for "
    "the energy score and for the mean distance to 10 nearest training cells, 18 for the "
    "relative Mahalanobis distance and 17 for one minus the highest class probability (the "
    "confidence), which fails across protocols. Through the classifier (frozen, plates 1-2 "
    "without one line, two seeds per line): 10 of 10 runs rank the held-out line as more "
    "out-of-distribution by median.",
    "",
]


def read_previous() -> pd.DataFrame | None:
    """The results of an earlier run kept for comparison (``None`` when there are none)."""
    return pd.read_csv(PREVIOUS) if PREVIOUS.exists() else None


def previous_section(results: pd.DataFrame, previous: pd.DataFrame, note: str) -> list[str]:
    """Accuracy of the scLong modes in an earlier run next to this one."""
    keys = ["task", "method"]
    merged = previous[keys + ["accuracy"]].merge(
        results[keys + ["accuracy"]], on=keys, suffixes=("_before", "_now")
    )
    merged = merged[merged["method"].str.startswith("scLong")]
    merged["change"] = merged["accuracy_now"] - merged["accuracy_before"]
    return [
        "## Before and after",
        "",
        note,
        "",
        markdown_table(merged),
        "",
    ]


def write_page(
    results: pd.DataFrame,
    resources_table: pd.DataFrame,
    record: dict,
    previous: pd.DataFrame | None = None,
) -> None:
    parts = [
        "# Cell-type annotation",
        "",
        "`scl.SCLONGClassifier` fine-tunes scLong to predict cell labels and "
        "`scl.tl.annotate` writes them with a confidence per cell (tutorial: "
        "`tutorials/04_cell_type_annotation.ipynb`). This page measures it on real data next to "
        "two standard baselines. It was written by `benchmarks/report_annotation.py"
        f"{' --fast' if record['fast'] else ''}`; the numbers are as measured, in one run "
        "(seed 0).",
        "",
        "## Set-up",
        "",
        f"- Genes: the {record['genes']} genes detected in the most cells of each data set, the "
        "same for every method.",
        f"- Backbone: scLong `tiny` preset (top {record['genes'] // 4} genes to the large "
        "encoder), "
        + (
            f"{record['pretrain_epochs']} epoch(s) of masked-expression pretraining on all "
            "cells of the data set (no labels)"
            if record["pretrain_epochs"]
            else "**not pretrained** (random initialisation: the `--fast` run)"
        )
        + ". The official 1B weights are not used here (they need a GPU to be fine-tuned in "
        "reasonable time), so these numbers say how the fine-tuning code behaves, not what "
        "pretrained scLong is worth.",
        "- scLong fine-tuning: `frozen` (head only), `partial` (the decoder's last Performer "
        "layer and its norm), `lora` (rank-8 adapters on every attention projection); "
        f"`{record.get('pooling', 'max')}` pooling (the package default); balanced class "
        "weights; 80/20 validation split; the best epoch's weights kept. `frozen`: the "
        "classifier's defaults: the pooled decodings are computed once and the head "
        "(standardisation fitted on the cells it trains on, linear layer) trains on them, up "
        "to 200 epochs with early stopping (patience 10), learning rate 1e-2, then again on "
        "every reference cell for the best epoch's number of epochs (`refit`); `partial` and "
        f"`lora`: at most {record['epochs']} epochs, patience 3, learning rate 3e-3.",
        '- Annotation: `scl.tl.annotate` with its defaults: `threshold="auto"` (a cell is '
        "`unknown` below the confidence under which 5% of the validation cells fall; the "
        '`threshold` column), and the out-of-distribution score `obs["sclong_label_ood"]` '
        "(Mahalanobis distance of the pooled decodings to the nearest training class). "
        "`unknown` = fraction of query cells labelled unknown.",
        f"- `{PROBE}`: the probe the frozen head must match (issue 27): scikit-learn "
        "`StandardScaler` + `LogisticRegression` (balanced class weights) on the backbone's "
        "own embeddings with the same pooling (`get_latent_representation`).",
        (
            f"- CellBench cells: at most {record['per_line']} random cells per cell line in "
            "the CEL-seq2 reference (CEL-seq2 -> Drop-seq) and in the CEL-seq2 query "
            "(Drop-seq -> CEL-seq2), to keep the run short on a shared CPU."
            if record.get("per_line")
            else "- CellBench cells: all of them."
        ),
        "- Baselines: logistic regression (balanced class weights) on 50 principal components "
        "of the reference's log-normalised, standardised values; 15-nearest-neighbour "
        f"classifier on a scVI latent space (10 dimensions, {record['scvi_epochs']} epochs) "
        "trained on reference and query together with the batch as covariate.",
        "- Drop-seq -> CEL-seq2: the CEL-seq2 batches hold two cell lines (A549, H838) that "
        "Drop-seq lacks; accuracy and macro-F1 are over the three shared lines, and the "
        "`*_unseen_lines` columns give the median confidence, the median out-of-distribution "
        "score and the fraction labelled unknown of the cells of the two unseen lines.",
        f"- Machine: {record['machine']}; total run time {record['minutes']:.1f} min.",
        "",
        "## Accuracy and macro-F1",
        "",
    ]
    for task, frame in results.groupby("task", sort=False):
        columns = ["method", "accuracy", "macro_f1"]
        for name in ("confidence_median", "ood_median", "unknown"):
            columns.append(name)
            if f"{name}_unseen_lines" in frame and frame[f"{name}_unseen_lines"].notna().any():
                columns.append(f"{name}_unseen_lines")
        columns += ["threshold", "train_s", "epochs"]
        table = frame[[c for c in columns if c in frame]].copy()
        if "epochs" in table:
            table["epochs"] = table["epochs"].astype("Int64").astype(str).replace("<NA>", "")
        table["train_s"] = table["train_s"].round(1)
        best = frame.loc[frame["accuracy"].idxmax()]
        best_sclong = frame[frame["method"].str.startswith("scLong")]["accuracy"].max()
        best_baseline = frame[~frame["method"].str.startswith("scLong")]["accuracy"].max()
        parts += [f"### {task} ({int(frame['n_query'].iloc[0]):,} query cells)", ""]
        parts += [markdown_table(table), ""]
        verdict = (
            "a baseline is more accurate than every scLong mode"
            if best_baseline > best_sclong
            else "scLong is at least as accurate as the baselines"
        )
        parts += [
            f"Most accurate: {best['method']} ({best['accuracy']:.3f}); {verdict} "
            f"(best scLong {best_sclong:.3f}, best baseline {best_baseline:.3f}).",
            "",
        ]
        frozen = frame[frame["method"] == "scLong frozen"]["accuracy"]
        probe = frame[frame["method"] == PROBE]["accuracy"]
        if len(frozen) and len(probe):
            gap = float(frozen.iloc[0] - probe.iloc[0])
            parts += [
                f"Frozen head vs the probe on its own embeddings: {frozen.iloc[0]:.3f} vs "
                f"{probe.iloc[0]:.3f} ({gap:+.3f}; the bar is -0.02).",
                "",
            ]
        if (
            "confidence_median_unseen_lines" in table
            and table["confidence_median_unseen_lines"].notna().any()
        ):
            sclong = frame[frame["method"].str.startswith("scLong")]
            lower = (sclong["confidence_median_unseen_lines"] < sclong["confidence_median"]).sum()
            farther = more = 0
            if "ood_median_unseen_lines" in sclong:  # absent from runs before issue 27
                farther = (sclong["ood_median_unseen_lines"] > sclong["ood_median"]).sum()
                more = (sclong["unknown_unseen_lines"] > sclong["unknown"]).sum()
            parts += [
                f"Cells of the unseen lines: a higher median out-of-distribution score than the "
                f"seen lines' in {farther} of {len(sclong)} scLong modes, a lower median "
                f"confidence in {lower}, and a larger fraction labelled `unknown` in {more}.",
                "",
            ]
    parts += DEFAULTS_SECTION
    if previous is not None:
        parts += previous_section(results, previous, record.get("previous_note", ""))
    parts += [
        "## Parameters and memory per fine-tuning mode",
        "",
        "`trainable`: parameters the mode trains (head included); `total`: all parameters "
        "(backbone, adapters, head). Tiny: measured on the CPU in a fresh process per mode, "
        "`step_peak_mb` = peak resident memory during three training steps of 32 cells "
        "(forward, backward, AdamW) above the memory before them (model and data loaded; "
        "`/proc/self/status` VmHWM after a reset), `step_s` = seconds per step on a shared "
        "CPU; 1B: counted on PyTorch's meta device "
        "(no memory allocated), 5 classes. A saved fine-tuned model stores only the trainable "
        "part and the backbone's checksum (`save(save_backbone=False)`, the default).",
        "",
        markdown_table(
            resources_table[
                [
                    c
                    for c in (
                        "preset",
                        "mode",
                        "trainable",
                        "total",
                        "head",
                        "step_peak_mb",
                        "step_s",
                    )
                    if c in resources_table
                ]
            ],
            digits=2,
        ),
        "",
        "The frozen mode runs the backbone without autograd, so its step memory is that of "
        "inference; partial and LoRA keep the activations of the layers they train through "
        "(LoRA: every layer, since adapters sit in all of them).",
        "",
    ]
    (DOCS / "annotation.md").write_text("\n".join(parts))


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--page-only", action="store_true")
    parser.add_argument(
        "--resources-only", action="store_true", help="measure resources again; rewrite the page"
    )
    parser.add_argument("--memory-child", choices=MODES)
    parser.add_argument("--genes", type=int, default=None)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.genes)
        return
    if args.resources_only:
        record = json.loads(RECORD.read_text())
        table = resources(record["genes"], n_classes=5)
        table.to_csv(RESOURCES, index=False)
        write_page(
            pd.read_csv(RESULTS),
            table,
            record,
            read_previous(),
        )
        return
    if args.page_only:
        write_page(
            pd.read_csv(RESULTS),
            pd.read_csv(RESOURCES),
            json.loads(RECORD.read_text()),
            read_previous(),
        )
        return
    import warnings

    warnings.filterwarnings("ignore")
    import scvi

    # scvi-tools' train/validation split of the partial and LoRA runs (numpy, unseeded by
    # default) would change from run to run
    scvi.settings.seed = 0
    started = time.perf_counter()
    n_genes = 128 if args.fast else 384
    pretrain_epochs = 0 if args.fast else 2
    epochs = 5 if args.fast else 12
    scvi_epochs = 50 if args.fast else 200
    per_line = 60 if args.fast else None
    cellbench, pbmc = load_cellbench(n_genes), load_pbmc(n_genes)
    backbones = {}
    for name, adata in (("cellbench", cellbench), ("pbmc", pbmc)):
        backbones[name], seconds = pretrain(adata, pretrain_epochs, n_genes)
        print(
            f"backbone {name}: pretrained {pretrain_epochs} epochs in {seconds:.0f} s", flush=True
        )
    rows = []
    for task, data, reference, query in tasks(cellbench, pbmc, per_line):
        truth = query.obs["label"].astype(str).to_numpy()
        for mode in MODES:
            info, annotated = run_sclong(backbones[data], reference, query, mode, epochs)
            probabilities = annotated.obsm["sclong_label_probabilities"]
            predicted = np.asarray(probabilities.columns)[probabilities.to_numpy().argmax(axis=1)]
            rows.append(evaluate(task, f"scLong {mode}", truth, predicted, annotated, info))
            print(rows[-1], flush=True)
        t0 = time.perf_counter()
        rows.append(
            evaluate(
                task,
                PROBE,
                truth,
                run_embedding_probe(backbones[data], reference, query),
                extra={"train_s": time.perf_counter() - t0},
            )
        )
        print(rows[-1], flush=True)
        t0 = time.perf_counter()
        rows.append(
            evaluate(
                task,
                "PCA + logistic regression",
                truth,
                run_pca_logreg(reference, query),
                extra={"train_s": time.perf_counter() - t0},
            )
        )
        print(rows[-1], flush=True)
        t0 = time.perf_counter()
        predicted = run_scvi_knn(reference, query, scvi_epochs)
        rows.append(
            evaluate(
                task,
                "scVI latent + kNN",
                truth,
                predicted,
                extra={"train_s": time.perf_counter() - t0},
            )
        )
        print(rows[-1], flush=True)
    results = pd.DataFrame(rows)
    for column in ("confidence_median_unseen_lines", "ood_median_unseen_lines"):
        if column not in results:
            results[column] = np.nan
    resources_table = resources(n_genes, n_classes=5)
    from sclong_scverse.module._module import DEFAULT_POOLING

    earlier = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    record = {
        "fast": bool(args.fast),
        "pooling": DEFAULT_POOLING,
        "genes": n_genes,
        "pretrain_epochs": pretrain_epochs,
        "epochs": epochs,
        "scvi_epochs": scvi_epochs,
        "per_line": per_line,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "minutes": (time.perf_counter() - started) / 60,
    }
    if earlier.get("previous_note"):
        record["previous_note"] = earlier["previous_note"]
    results.to_csv(RESULTS, index=False)
    resources_table.to_csv(RESOURCES, index=False)
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    write_page(results, resources_table, record, read_previous())
    print(f"wrote {DOCS / 'annotation.md'} in {record['minutes']:.1f} min")


if __name__ == "__main__":
    main()
