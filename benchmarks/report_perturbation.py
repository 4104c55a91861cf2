"""Genetic perturbation on the real Papalexi 2021 screen: scLong head vs ablation vs baselines.

The THP-1 ECCITE-seq knock-out screen (Papalexi et al. 2021; 26 targets + non-targeting guides,
299 response genes; Katsevich-Lab/sceptredata, MIT) with held-out targets (GEARS "simulation"
split, seed 1: 75% of the targets seen in training). Steps:

1. cells assigned to one gRNA (``scl.datasets.papalexi2021``), log-normalised values
   (``log1p`` of counts per 10,000) and scLong's input (``scl.pp.normalize``);
2. a tiny scLong pretrained on the control cells (10 epochs), vocabulary = the 299 response genes +
   the targets that are not measured (their GO-graph embeddings still exist);
3. ``scl.SCLONGPerturbation`` on its frozen decodings (the scLong head) and the same head with
   learned gene embeddings (the scLong-free ablation), with GEARS's loss (autofocus
   ``|error|^4`` + direction) and with its MSE form (``uncertainty_free_gamma=0``);
4. ``scl.tl.benchmark_perturbation`` on the held-out targets next to the no-change, mean of
   training perturbations, PCA-linear and scLong-embedding-linear baselines, and the linear
   probe on the head's own scLong features (ridge from the perturbed gene's frozen decoding,
   averaged over the head's control cells, to the condition's change:
   ``SCLONGPerturbation.gene_features``);

and writes ``docs/perturbation.md`` (one table; the page says which method wins each metric
and how the scLong head compares with its probe) and ``docs/figures/perturbation_papalexi.csv``
(per condition and method).

Usage::

    python benchmarks/report_perturbation.py            # ~30 min on 2 CPU cores
    python benchmarks/report_perturbation.py --quick    # a few minutes: checks the pipeline
    python benchmarks/report_perturbation.py --quick --out /tmp/pert  # page and CSVs elsewhere
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import scanpy as sc
import torch

import sclong_scverse as scl
from sclong_scverse.model import SCLONG, SCLONGPerturbation

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
METRIC_NAMES = {
    "mse_de": "MSE top-20 DE (lower better)",
    "pearson_de": "Pearson top-20 DE",
    "pearson_delta": "Pearson delta (all genes)",
    "pearson_delta_de": "Pearson delta top-20 DE",
    "l2_top_expressed": "L2 top-1000 expressed (lower better)",
    "direction_de": "direction accuracy top-20 DE",
}
DESCRIPTIONS = {
    "sclong_head": "scLong head: GEARS-style head on frozen scLong decodings",
    "ablation": "ablation: the same head, learned gene embeddings (no scLong)",
    "sclong_head_mse": "scLong head, MSE loss (GEARS loss with gamma 0, no autofocus)",
    "ablation_mse": "ablation, MSE loss",
    "no_change": "baseline: no change (control mean)",
    "train_mean": "baseline: mean of training perturbations",
    "linear_pca": "baseline: linear, PCA of training effects",
    "linear_sclong": "baseline: linear on scLong static gene embeddings",
    "linear_probe": "probe: linear on the head's own scLong features (decodings over its controls)",
}
#: The head whose probe is ``linear_probe`` (issue 27: a head at least matches its probe).
PROBED = ("sclong_head", "sclong_head_mse")
#: Metrics of the head vs probe comparison (GEARS's MSE on the DE genes; Ahlmann-Eltze et al.'s
#: Pearson delta and L2).
PROBE_METRICS = ("mse_de", "pearson_delta", "l2_top_expressed")
#: How far below the probe still counts as matching it (Pearson; relative for the errors).
PROBE_TOLERANCE = 0.02


def load_screen() -> sc.AnnData:
    adata = scl.datasets.papalexi2021()
    log = adata.copy()
    sc.pp.normalize_total(log, target_sum=1e4)
    sc.pp.log1p(log)
    adata.layers["log1p"] = log.X
    scl.pp.normalize(adata)
    scl.pp.perturbation_conditions(adata, "perturbation", layer="log1p")
    scl.pp.perturbation_split(adata, "simulation", seed=1)
    return adata


def pretrain(adata, n_cells: int, epochs: int) -> tuple[SCLONG, dict]:
    control = np.flatnonzero(adata.obs["condition"] == "ctrl")
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(control, size=min(n_cells, len(control)), replace=False))
    cells = adata[chosen].copy()
    targets = sorted(
        {g for c in adata.obs["condition"].cat.categories for g in scl.pp.condition_genes(c)}
    )
    vocabulary = [*adata.var_names, *[g for g in targets if g not in set(adata.var_names)]]
    SCLONG.setup_anndata(cells, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(cells, config="tiny", vocabulary=vocabulary)
    started = time.perf_counter()
    model.train(
        max_epochs=epochs, batch_size=16, lr=5e-3, accelerator="cpu", enable_progress_bar=False
    )
    mse = model.evaluate_masked_mse(seed=1)
    record = {
        "cells": len(chosen),
        "epochs": epochs,
        "vocabulary": len(vocabulary),
        "seconds": time.perf_counter() - started,
        **mse,
    }
    return model, record


LOAD = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=DOCS, help="folder of the page and figures/ (default docs/)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    settings = {
        # all ~1,900 control cells, 10 epochs: the masked MSE then beats the per-gene mean
        # (2 epochs on 800 cells did not: 1.56 vs 0.92)
        "pretrain_cells": 400 if args.quick else 2000,
        "pretrain_epochs": 1 if args.quick else 10,
        # lr 3e-4, the head's default: the wide & deep head starts at its ridge probe and at
        # 1e-3 or 5e-3 the network drifted below it (docs/perturbation.md; the network alone
        # needed 5e-3 to train in this budget)
        "epochs": 4 if args.quick else 6,
        "lr": 3e-4,
        "cells_per_condition": 60 if args.quick else 120,
        "hidden_dim": 64,
        "control_cells": 128 if args.quick else 256,
        "in_silico_cells": 64 if args.quick else 256,
        "in_silico_null": 5 if args.quick else 20,
    }
    adata = load_screen()
    record = adata.uns["split"]
    print(f"{adata.n_obs} cells; test targets {list(record['test_genes'])}", flush=True)
    sclong, pre = pretrain(adata, settings["pretrain_cells"], settings["pretrain_epochs"])
    print(f"pretrained: {pre}", flush=True)

    SCLONGPerturbation.setup_anndata(adata, layer="log1p")
    models, times = {}, {}
    variants = (
        ("sclong_head", sclong, 2.0),
        ("ablation", None, 2.0),
        ("sclong_head_mse", sclong, 0.0),
        ("ablation_mse", None, 0.0),
    )
    for name, backbone, gamma in variants:
        t0 = time.perf_counter()
        model = SCLONGPerturbation(
            adata,
            sclong=backbone,
            hidden_dim=settings["hidden_dim"],
            n_control_cells=settings["control_cells"],
            uncertainty_free_gamma=gamma,
        )
        history = model.train(
            max_epochs=settings["epochs"],
            batch_size=64,
            lr=settings["lr"],
            max_cells_per_condition=settings["cells_per_condition"],
            enable_progress_bar=False,
        )
        times[name] = time.perf_counter() - t0
        models[name] = model
        print(f"{name}: {times[name]:.0f} s; loss {history.iloc[[0, -1]].to_dict()}", flush=True)
    embeddings = {"sclong": sclong, "probe": models["sclong_head"].gene_features()}
    result = scl.tl.benchmark_perturbation(adata, models, layer="log1p", gene_embeddings=embeddings)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    result.to_csv(figures / "perturbation_papalexi.csv", index=False, float_format="%.5g")
    t0 = time.perf_counter()
    in_silico = scl.tl.in_silico_vs_screen(
        adata,
        sclong,
        layer="log1p",
        n_cells=settings["in_silico_cells"],
        n_null=settings["in_silico_null"],
        n_bins=5,
        seed=0,
        batch_size=64,
    )
    times["in_silico"] = time.perf_counter() - t0
    print(in_silico.to_string(float_format="%.3f"), flush=True)
    in_silico.to_csv(figures / "perturbation_in_silico_papalexi.csv", float_format="%.5g")
    skipped = list(adata.uns["sclong_in_silico_screen"]["skipped"])
    write_page(
        result,
        record,
        pre,
        settings,
        times,
        time.perf_counter() - started,
        args.quick,
        in_silico,
        skipped,
        out,
    )


def probe_section(summary) -> list[str]:
    """The scLong heads next to their linear probe (issue 27), as Markdown lines."""
    lines = [
        "## The head vs a linear probe on its own features",
        "",
        "The probe: ridge regression (`scl.tl.benchmark_perturbation`'s `linear_<name>`, penalty "
        "1 per training condition on standardised features) from the perturbed gene's scLong "
        "feature to the condition's mean change over control, where the feature is the frozen "
        "backbone's decoding of that gene averaged over the head's control cells "
        "(`SCLONGPerturbation.gene_features()`): the vectors the head's feature projection "
        "reads, pooled over cells, and defined for unmeasured targets too.",
        "",
    ]
    probe = summary.loc["linear_probe"]
    for head in PROBED:
        row = summary.loc[head]
        parts = []
        for metric in PROBE_METRICS:
            # the head's advantage, positive when it is better
            sign = 1.0 if scl.tl.PERTURBATION_METRICS[metric] else -1.0
            advantage = sign * (row[metric] - probe[metric])
            tolerance = PROBE_TOLERANCE * (1.0 if sign > 0 else abs(probe[metric]))
            verdict = (
                "better"
                if advantage > 0
                else "matches, within the tolerance"
                if advantage >= -tolerance
                else "loses"
            )
            parts.append(
                f"{METRIC_NAMES[metric]} {row[metric]:.3f} vs {probe[metric]:.3f} ({verdict})"
            )
        lines.append(f"- {DESCRIPTIONS[head]}: " + "; ".join(parts) + ".")
    lines += [
        "",
        f"Tolerance: {PROBE_TOLERANCE:g} of Pearson, {PROBE_TOLERANCE:.0%} of an error metric.",
        "",
    ]
    return lines


def write_page(
    result, split, pre, settings, times, seconds, quick, in_silico, skipped, out=DOCS
) -> None:
    metrics = list(METRIC_NAMES)
    summary = result.groupby("method", sort=False)[metrics].mean()
    order = [m for m in DESCRIPTIONS if m in summary.index]
    summary = summary.loc[order]
    higher = scl.tl.PERTURBATION_METRICS
    lines = [
        "# Genetic perturbation (Papalexi 2021, held-out targets)",
        "",
        "Generated by `python benchmarks/report_perturbation.py`"
        + (" --quick (pipeline check, not a result)" if quick else "")
        + f" in {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads "
        f"({platform.processor() or platform.machine()}; load average {LOAD[0]:.1f} at the "
        "start, the cores were shared). Numbers as they came out.",
        "",
        "Data: THP-1 ECCITE-seq CRISPR knock-out screen (Papalexi et al., Nat Genet 2021; "
        "Katsevich-Lab/sceptredata, MIT), cells assigned to one gRNA "
        "(`scl.datasets.papalexi2021`), 299 response genes, log-normalised. Split: GEARS "
        f"`simulation`, seed {split['seed']}; {len(split['train_genes'])} training targets, "
        f"{len(split['val_genes'])} validation, {len(split['test_genes'])} held out: "
        f"{', '.join(split['test_genes'])}. Metrics are means over the held-out conditions "
        "(`scl.tl.benchmark_perturbation`); DE genes: top 20 by |Welch t| vs control "
        "(`scl.pp.perturbation_conditions`).",
        "",
        f"scLong: `tiny` preset pretrained {pre['epochs']} epoch(s) on {pre['cells']} control "
        f"cells ({pre['seconds']:.0f} s; held-out masked MSE {pre['model_mse']:.3f} vs per-gene "
        f"mean {pre['baseline_mse']:.3f}), vocabulary {pre['vocabulary']} genes (response "
        "genes + unmeasured targets). Heads: `scl.SCLONGPerturbation`, hidden "
        f"{settings['hidden_dim']}, GEARS loss (autofocus + direction) or its MSE form, "
        f"at most {settings['epochs']} epochs (lr {settings['lr']:g}, trained through Lightning, "
        "the best validation epoch kept) "
        f"on at most {settings['cells_per_condition']} cells per training condition, "
        f"{settings['control_cells']} control cells; training times "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k != "in_silico")
        + ". Linear baselines: ridge regression of the change on the perturbed gene's "
        "embedding; a gene without one (unmeasured for PCA) falls back to the training mean.",
        "",
        "| method | " + " | ".join(METRIC_NAMES[m] for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    fallbacks = result.groupby("method", sort=False)["fallback"].sum()
    for method in summary.index:
        row = [f"{summary.loc[method, m]:.3f}" for m in metrics]
        note = ""
        if fallbacks.get(method, 0):
            note = f" ({int(fallbacks[method])} of {result['condition'].nunique()} fell back)"
        lines.append(f"| {DESCRIPTIONS[method]}{note} | " + " | ".join(row) + " |")
    lines += ["", "Best per metric (NaN: undefined, e.g. Pearson of the all-zero no-change):", ""]
    models = {"sclong_head", "ablation", "sclong_head_mse", "ablation_mse"}
    verdicts = []
    for m in metrics:
        column = summary[m].dropna()
        best = column.idxmax() if higher[m] else column.idxmin()
        lines.append(f"- {METRIC_NAMES[m]}: {DESCRIPTIONS[best]} ({column[best]:.3f})")
        verdicts.append(best in models)
    lines.append("")
    if not any(verdicts):
        lines.append(
            "**The baselines win every metric here**: on these held-out targets neither the "
            "scLong head nor its ablation beats a simple baseline, in line with Ahlmann-Eltze "
            "et al. (Nat Methods 2025) for deep perturbation models."
        )
    elif all(verdicts):
        lines.append("The learned heads win every metric here.")
    else:
        lines.append(
            f"A learned head wins {sum(verdicts)} of {len(verdicts)} metrics; baselines win "
            "the others."
        )
    lines.append("")
    for suffix, loss in (("", "GEARS loss"), ("_mse", "MSE loss")):
        head, ablation = summary.loc[f"sclong_head{suffix}"], summary.loc[f"ablation{suffix}"]
        lines.append(
            f"- scLong head vs ablation, {loss} (what scLong's features add): Pearson delta "
            f"{head['pearson_delta']:.3f} vs {ablation['pearson_delta']:.3f}, MSE top-20 DE "
            f"{head['mse_de']:.3f} vs {ablation['mse_de']:.3f}."
        )
    lines += [
        "",
        "Caveats: a small screen (25 assigned targets, many with weak effects on the 299 "
        "response genes), one split, a tiny scLong pretrained for minutes rather than the "
        "published 1B model; the GEARS loss (|error|^4 on single cells) fits the centre of each "
        "gene's range rather than its mean, which the L2 and MSE metrics penalise. Per "
        "condition: `docs/figures/perturbation_papalexi.csv`.",
        "",
    ]
    lines += probe_section(summary)
    lines += in_silico_section(in_silico, skipped, settings, times["in_silico"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "perturbation.md").write_text("\n".join(lines))
    print("\n".join(lines))


def in_silico_section(table, skipped, settings, seconds) -> list[str]:
    """The in-silico deletion vs real knock-out comparison, as Markdown lines."""
    lines = [
        "## In-silico deletion vs the real knock-outs",
        "",
        "Training-free, Geneformer's bar: each measured target is deleted (input value 0) in "
        f"{settings['in_silico_cells']} control cells and the pretrained scLong's predicted "
        "change of every other gene is compared with the observed change (knock-out cells minus "
        "control cells, log-normalised): the fraction of the condition's top-20 DE genes (the "
        "target left out) whose direction is predicted right (a predicted change of exactly 0 "
        "counts as wrong), and the Pearson correlation over "
        f"all genes. Null: {settings['in_silico_null']} random genes of the target's expression "
        "bin (5 bins) deleted the same way and scored against the same observed changes "
        f"(`scl.tl.in_silico_vs_screen`, {seconds:.0f} s). Targets not among the 299 measured "
        f"genes cannot be deleted in silico ({len(skipped)}: {', '.join(skipped)}).",
        "",
        "| target | knock-out cells | observed change of the target | direction agreement "
        "top DE | null mean (std) | p | FDR | Pearson all genes | null Pearson |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, row in table.iterrows():
        lines.append(
            f"| {target} | {int(row['n_knockout_cells'])} | "
            f"{row['observed_target_change']:.2f} | {row['direction_agreement']:.2f} | "
            f"{row['null_agreement_mean']:.2f} ({row['null_agreement_std']:.2f}) | "
            f"{row['p_value']:.3f} | {row['fdr']:.3f} | {row['pearson']:.3f} | "
            f"{row['null_pearson_mean']:.3f} |"
        )
    mean = table["direction_agreement"].mean()
    null = table["null_agreement_mean"].mean()
    significant = int((table["fdr"] < 0.1).sum())
    lines += [
        "",
        f"Mean direction agreement {mean:.2f} vs {null:.2f} for the random-gene null; "
        f"{significant} of {len(table)} targets above their null at FDR < 0.1. "
        + (
            "In-silico deletion with this small scLong does not reproduce the knock-outs' "
            "effects better than deleting a random gene of the same expression level."
            if significant == 0
            else "Where a target passes, deleting it moves the predicted expression in the "
            "knock-out's direction more often than deleting random genes does."
        )
        + " Per target: `docs/figures/perturbation_in_silico_papalexi.csv`.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
