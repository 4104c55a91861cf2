"""One scoreboard: the best scLong variant next to the best baseline, per task and metric.

Reads the results every task's benchmark report writes (integration and GRN:
``report_downstream.py`` / ``report_grn.py``; annotation: ``report_annotation.py``; genetic
perturbation: ``report_perturbation.py``; drug response: ``report_drug_response.py``; pooling:
``bench_pooling.py``), keeps for each task, data set and metric the best scLong variant and the
best baseline, and writes ``docs/scoreboard.md`` with one table (the gap is positive where
scLong wins) and ``docs/figures/scoreboard.png``. Numbers as they come, including where the
baseline wins (it mostly does: the models here are small and pretrained for minutes on a CPU,
not the published 1B model).

Usage::

    python benchmarks/scoreboard.py              # the scoreboard of the committed results
    python benchmarks/scoreboard.py --rerun fast # rerun every report in its fast mode first
                                                 # (about 1.5 h on 2 CPU cores; rewrites the
                                                 # reports' own pages with fast-mode figures)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"

#: Fast mode of each report (``--rerun fast``) and its full mode (``--rerun full``).
REPORTS = {
    "integration": (["report_downstream.py", "--quick"], ["report_downstream.py"]),
    "pooling": (["bench_pooling.py", "--fast"], ["bench_pooling.py"]),
    "annotation": (["report_annotation.py", "--fast"], ["report_annotation.py"]),
    "GRN": (["report_grn.py", "--quick"], ["report_grn.py"]),
    "perturbation": (["report_perturbation.py", "--quick"], ["report_perturbation.py"]),
    "drug response": (["report_drug_response.py", "--quick"], ["report_drug_response.py"]),
    "drug heads": (["report_drug_heads.py", "--quick"], ["report_drug_heads.py"]),
}


def _best(
    frame: pd.DataFrame,
    task: str,
    data: str,
    metric: str,
    is_sclong: Callable[[str], bool],
    higher: bool = True,
    source: str = "",
) -> dict | None:
    """The best scLong method and the best baseline of ``frame`` (columns method, value)."""
    frame = frame.dropna(subset=["value"])
    mine = frame[frame["method"].map(is_sclong)]
    theirs = frame[~frame["method"].map(is_sclong)]
    if mine.empty or theirs.empty:
        return None
    pick = (
        (lambda part: part.loc[part["value"].idxmax()])
        if higher
        else (lambda part: part.loc[part["value"].idxmin()])
    )
    a, b = pick(mine), pick(theirs)
    gap = float(a["value"] - b["value"]) if higher else float(b["value"] - a["value"])
    return {
        "task": task,
        "data": data,
        "metric": metric + ("" if higher else " (lower is better)"),
        "scLong": str(a["method"]),
        "scLong value": float(a["value"]),
        "baseline": str(b["method"]),
        "baseline value": float(b["value"]),
        "gap": gap,
        "source": source,
    }


def integration_rows() -> list[dict]:
    path = FIGURES / "benchmark_integration.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    rows = []
    for metric in ("Bio conservation", "Batch correction", "Total"):
        frame = table.rename(columns={"Embedding": "method", metric: "value"})
        row = _best(
            frame[["method", "value"]],
            "integration",
            "CellBench (5 batches)",
            metric,
            lambda m: "sclong" in m.lower(),
            source="report_downstream.py",
        )
        rows += [row] if row else []
    return rows


def pooling_rows() -> list[dict]:
    path = FIGURES / "pooling.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    lower = {c.lower(): c for c in table.columns}
    method = lower.get("pooling") or lower.get("method")
    data = lower.get("data") or lower.get("dataset")
    if method is None:
        return []
    rows = []
    metrics = [c for c in table.columns if c not in (method, data) and table[c].dtype.kind == "f"]
    for name, part in table.groupby(data) if data else [("", table)]:
        for metric in metrics:
            if "time" in metric.lower() or "second" in metric.lower():
                continue
            frame = part.rename(columns={method: "method", metric: "value"})
            row = _best(
                frame[["method", "value"]],
                "cell embedding (pooling)",
                str(name),
                metric,
                lambda m: "pca" not in m.lower(),
                source="bench_pooling.py",
            )
            rows += [row] if row else []
    return rows


def annotation_rows() -> list[dict]:
    path = DOCS / "annotation_results.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    rows = []
    for task, part in table.groupby("task", sort=False):
        for metric in ("accuracy", "macro_f1"):
            frame = part.rename(columns={metric: "value"})
            row = _best(
                frame[["method", "value"]],
                "annotation",
                str(task),
                metric,
                lambda m: m.lower().startswith("sclong"),
                source="report_annotation.py",
            )
            rows += [row] if row else []
    return rows


def grn_rows() -> list[dict]:
    path = FIGURES / "grn_report.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    protocol = "TF rows x all genes"
    if not table["label"].str.contains("scLong").any():
        # a fast (baselines-only) run: scLong and its baselines from the last full run, which
        # used the former candidate set (pairs with a TF among the truth's genes)
        full = FIGURES / "grn_report_full.csv"
        if not full.exists():
            return []
        table, protocol = pd.read_csv(full), "former set: TF pairs among the truth's genes"
    table = table[~table["label"].str.contains("mean of")]
    table = table.groupby(["dataset", "ground_truth", "label"], as_index=False)["aupr_ratio"].mean()
    rows = []
    for (dataset, truth), part in table.groupby(["dataset", "ground_truth"], sort=False):
        frame = part.rename(columns={"label": "method", "aupr_ratio": "value"})
        row = _best(
            frame[["method", "value"]],
            "GRN",
            f"{dataset} vs {truth} ({protocol})",
            "AUPR ratio (mean over seeds)",
            lambda m: "sclong" in m.lower(),
            source="report_grn.py",
        )
        rows += [row] if row else []
    return rows


def perturbation_rows() -> list[dict]:
    path = FIGURES / "perturbation_papalexi.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    rows = []
    for metric, higher in (("pearson_delta_de", True), ("mse_de", False)):
        means = table.groupby("method", as_index=False)[metric].mean()
        frame = means.rename(columns={metric: "value"})
        row = _best(
            frame,
            "genetic perturbation",
            "Papalexi (unseen single knock-outs, mean over conditions)",
            metric,
            lambda m: "sclong" in m.lower(),
            higher=higher,
            source="report_perturbation.py",
        )
        rows += [row] if row else []
    return rows


def drug_rows() -> list[dict]:
    path = FIGURES / "drug_response.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    table = table[table["split_name"] == "test"]
    rows = []
    for (experiment, split), part in table.groupby(["experiment", "split"], sort=False):
        label = "A: scLong cell-line vectors" if experiment == "A" else "B: tissue one-hot"
        for metric, higher in (("pearson", True), ("rmse", False)):
            frame = part.rename(columns={metric: "value"})
            row = _best(
                frame[["method", "value"]],
                "drug response",
                f"GDSC {label}, {split}",
                f"test {metric}",
                lambda m: m in ("model", "network"),
                higher=higher,
                source="report_drug_response.py",
            )
            rows += [row] if row else []
    return rows


def drug_head_rows() -> list[dict]:
    path = FIGURES / "drug_heads.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path)
    rows = []
    metrics = {
        "chem": (("pearson", True), ("rmse", False)),
        "combination": (("auroc", True), ("aupr", True)),
    }
    data = {
        "chem": "L1000 compounds (test data), leave_drug_out",
        "combination": "drug pairs (test data), leave_drug_out",
    }
    for head, part in table.groupby("head", sort=False):
        task = "chemical perturbation" if head == "chem" else "drug combination"
        for metric, higher in metrics.get(head, ()):
            row = _best(
                part.rename(columns={metric: "value"})[["method", "value"]],
                task,
                data[head],
                f"test {metric}",
                lambda m: m == "model",
                higher=higher,
                source="report_drug_heads.py",
            )
            rows += [row] if row else []
    return rows


COLLECTORS = (
    integration_rows,
    pooling_rows,
    annotation_rows,
    grn_rows,
    perturbation_rows,
    drug_rows,
    drug_head_rows,
)


def rerun(mode: str) -> None:
    for task, (fast, full) in REPORTS.items():
        command = [sys.executable, str(REPO / "benchmarks" / (fast if mode == "fast" else full)[0])]
        command += (fast if mode == "fast" else full)[1:]
        print(f"[scoreboard] {task}: {' '.join(command[1:])}", flush=True)
        if not Path(command[1]).exists():
            print(f"[scoreboard] {command[1]} not found; skipped", flush=True)
            continue
        subprocess.run(command, check=True, cwd=REPO)


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{t}: {d[:38]} | {m[:24]}" for t, d, m in table[["task", "data", "metric"]].values]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(table) + 1.2))
    colours = ["tab:green" if g >= 0 else "tab:red" for g in table["gap"]]
    ax.barh(np.arange(len(table)), table["gap"], color=colours)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(np.arange(len(table)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("best scLong minus best baseline (green: scLong ahead; metric units)")
    ax.set_title("Scoreboard: scLong variants vs baselines, per task and metric")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_page(table: pd.DataFrame, mode: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    wins = int((table["gap"] > 0).sum())
    lines = [
        "# Scoreboard",
        "",
        "Every task's benchmark in one table: per task, data set and metric, the best scLong "
        "variant next to the best baseline, and the gap (positive where scLong is ahead, in the "
        "metric's units). Generated by `python benchmarks/scoreboard.py"
        + (f" --rerun {mode}" if mode != "none" else "")
        + f"` on {datetime.date.today().isoformat()} ({platform.machine()}, load average "
        f"{load:.1f}) from the results each report wrote (column *source*; each report's page "
        "says how it was run). Numbers as they come.",
        "",
        f"**scLong ahead in {wins} of {len(table)} rows.** The models here are tiny scLong "
        "networks pretrained for minutes on a CPU (the published results come from the 1B "
        "model); the baselines (PCA, scVI, co-expression, forests, means, linear probes) are "
        "strong at this scale. Where a head's own linear probe is the best baseline, the head "
        "should at least match it (issue 27); the gap says by how much it does or does not.",
        "",
        "![scoreboard](figures/scoreboard.png)",
        "",
        "| task | data | metric | best scLong | value | best baseline | value | gap | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['task']} | {r['data']} | {r['metric']} | {r['scLong']} | "
            f"{r['scLong value']:.3f} | {r['baseline']} | {r['baseline value']:.3f} | "
            f"{r['gap']:+.3f} | `{r['source']}` |"
        )
    lines += [
        "",
        "Rows: integration from scib-metrics (`docs/benchmarks.md`); cell-embedding poolings "
        "(`docs/pooling.md`); annotation on held-out batches (`docs/annotation.md`); GRN AUPR "
        "ratio over the TF-rows candidate set (`docs/grn.md`); genetic perturbation on "
        "unseen knock-outs (`docs/perturbation.md`); drug response on held-out pairs, drugs "
        "and cell lines (`docs/drug_response.md`); chemical perturbation and drug combination "
        "on held-out compounds of the test data, targets that are functions of real inputs, "
        "not biology (`docs/drugs.md`). The genetic perturbation rows come from the last full "
        "run of `report_perturbation.py`, made before the head became wide & deep (its page "
        "has the newer quick-run and test figures).",
        "",
    ]
    (DOCS / "scoreboard.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rerun",
        choices=("none", "fast", "full"),
        default="none",
        help="rerun every report first (fast: each report's fast mode)",
    )
    args = parser.parse_args(argv)
    if args.rerun != "none":
        rerun(args.rerun)
    rows = [row for collect in COLLECTORS for row in collect()]
    if not rows:
        raise SystemExit("No benchmark results found under docs/; run the reports first.")
    table = pd.DataFrame(rows)
    FIGURES.mkdir(parents=True, exist_ok=True)
    table.to_csv(FIGURES / "scoreboard.csv", index=False)
    figure(table, FIGURES / "scoreboard.png")
    write_page(table, args.rerun)
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(table.drop(columns="source").to_string(index=False, float_format="%.3f"))
    return table


if __name__ == "__main__":
    main()
