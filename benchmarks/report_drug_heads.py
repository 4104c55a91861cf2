"""The chemical perturbation and drug combination heads next to linear probes on the same inputs.

Runs the two heads exactly as ``tests/test_drug_heads.py`` does (real SMILES of 200 L1000
compounds, real scLong gene and cell-line vectors from a tiny scLong pretrained 2 epochs on the
CellBench Drop-seq cells, targets that are documented functions of real inputs, not biology;
``leave_drug_out``), and next to them the probes of issue 27:

- chemical perturbation: a ridge regression of the 978 genes on ``[drug ; cell line ; dose]``
  (drug: a 1024-bit Morgan fingerprint, or the mean of its DeepCE atom features, the head's
  input), the ridge penalty chosen on the validation split;
- drug combination: a logistic regression on ``[drug 1 + drug 2 ; drug 1 * drug 2 ; cell line]``
  (the head's symmetric pair; drug: Morgan, or the mean of its DeepCDR atom features), C
  chosen on the validation split.

Prints one table per head (test split) and the training time; writes
``benchmarks/_out/drug_heads.csv`` and, for a full run (no ``--quick``, ``--tag`` or
``--only``), ``docs/figures/drug_heads.csv`` (read by ``docs/drugs.md`` and
``benchmarks/scoreboard.py``). Works with the heads before and after their port onto the
shared head base (issue 25), to give before / after figures.

Usage::

    python benchmarks/report_drug_heads.py            # the tests' settings (30 epochs per head)
    python benchmarks/report_drug_heads.py --quick    # 3 epochs per head: checks the pipeline
    python benchmarks/report_drug_heads.py --reuse    # reuse the scLong vectors of a former run
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import sclong_scverse as scl  # noqa: E402
from sclong_scverse.genes import GeneVocabulary  # noqa: E402
from sclong_scverse.model import (  # noqa: E402
    SCLONGChemPerturbation,
    SCLONGDrugCombination,
    sclong_gene_features,
)
from test_drug_heads import (  # noqa: E402
    CHEM_SIZES,
    CHEM_TRAIN,
    COMBO_SIZES,
    COMBO_TRAIN,
    DEEPCE,
    TEST_DATA,
    _lines,
    chem_probe,
    combination_probe,
    descriptor_profiles,
    logp_synergy,
)

OUT = REPO / "benchmarks" / "_out"


def _train_kwargs(model) -> dict:
    accepted = inspect.signature(model.train).parameters
    extra = {"accelerator": "cpu"}
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        extra["enable_progress_bar"] = False
    return extra


def _validation_column(history: pd.DataFrame) -> str:
    return "validation_loss" if "validation_loss" in history else "validation_mse"


def inputs(reuse: bool = False):
    """The tests' SMILES, scLong gene vectors and cell-line vectors (cached in ``_out``)."""
    cache = OUT / "drug_heads_inputs.pkl"
    if reuse and cache.exists():
        return pd.read_pickle(cache)
    landmarks = scl.datasets.deepce_landmark_genes(DEEPCE)
    smiles = scl.datasets.read_deepce_smiles(DEEPCE)
    cells = scl.datasets.cellbench(TEST_DATA, batches=("sc_dropseq",))
    positions = GeneVocabulary(list(cells.var_names)).align(landmarks, min_coverage=0.0)
    positions = positions.var_positions
    genes = sorted(set(np.asarray(cells.var_names)[positions[positions >= 0]]))
    cells = cells[:, genes].copy()
    scl.pp.normalize(cells)
    scl.SCLONG.setup_anndata(cells, layer="sclong")
    torch.manual_seed(0)
    model = scl.SCLONG(cells, config="tiny")
    model.train(max_epochs=2, batch_size=16, lr=5e-3, accelerator="cpu", enable_progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gene_vectors = sclong_gene_features(model, landmarks)
    line_vectors = scl.tl.cell_line_embedding(cells, model, groupby="cell_line")
    OUT.mkdir(parents=True, exist_ok=True)
    pd.to_pickle((smiles, gene_vectors, line_vectors), cache)
    return smiles, gene_vectors, line_vectors


def run_chem(smiles, gene_vectors, line_vectors, settings: dict) -> pd.DataFrame:
    signatures = descriptor_profiles(smiles, gene_vectors, line_vectors.index)
    SCLONGChemPerturbation.setup_anndata(signatures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = SCLONGChemPerturbation(
            signatures,
            smiles=smiles,
            gene_features=gene_vectors,
            cell_features=line_vectors,
            **CHEM_SIZES,
        )
    model.split("leave_drug_out", seed=0)
    start = time.perf_counter()
    history = model.train(**settings, **_train_kwargs(model))
    seconds = time.perf_counter() - start
    scores = model.evaluate(splits=("test",)).set_index("method")
    rows = [
        {
            "head": "chem",
            "method": method,
            **scores.loc[method, ["pearson", "spearman", "rmse"]].to_dict(),
        }
        for method in scores.index
    ]
    for name, drug in (("ridge_morgan", "morgan"), ("ridge_mean_atoms", "deepce")):
        rows.append({"head": "chem", "method": name, **chem_probe(model, drug=drug)})
    out = pd.DataFrame(rows)
    out["train_s"] = np.where(out["method"] == "model", seconds, np.nan)
    out["epochs"] = np.where(out["method"] == "model", len(history), np.nan)
    out["best_validation_loss"] = np.where(
        out["method"] == "model", history[_validation_column(history)].min(), np.nan
    )
    return out


def run_combination(smiles, line_vectors, settings: dict) -> pd.DataFrame:
    adata = _lines(line_vectors, logp_synergy(smiles, line_vectors.index))
    SCLONGDrugCombination.setup_anndata(adata)
    model = SCLONGDrugCombination(adata, smiles=smiles, **COMBO_SIZES)
    model.split("leave_drug_out", seed=0)
    start = time.perf_counter()
    history = model.train(**settings, **_train_kwargs(model))
    seconds = time.perf_counter() - start
    scores = model.evaluate(splits=("test",)).set_index("method")
    rows = [
        {"head": "combination", "method": m, **scores.loc[m, ["auroc", "aupr"]].to_dict()}
        for m in scores.index
    ]
    for name, drug in (("logistic_morgan", "morgan"), ("logistic_mean_atoms", "deepcdr")):
        rows.append({"head": "combination", "method": name, **combination_probe(model, drug=drug)})
    out = pd.DataFrame(rows)
    out["train_s"] = np.where(out["method"] == "model", seconds, np.nan)
    out["epochs"] = np.where(out["method"] == "model", len(history), np.nan)
    out["best_validation_loss"] = np.where(
        out["method"] == "model", history[_validation_column(history)].min(), np.nan
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs per head")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (tests: 2)")
    parser.add_argument("--tag", default="", help="suffix of the CSV file name")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the scLong vectors of a former run"
    )
    parser.add_argument("--only", choices=("chem", "combination"), help="run one head")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = {"max_epochs": 3} if args.quick else {}
    smiles, gene_vectors, line_vectors = inputs(args.reuse)
    parts = []
    if args.only in (None, "chem"):
        parts.append(run_chem(smiles, gene_vectors, line_vectors, {**CHEM_TRAIN, **quick}))
    if args.only in (None, "combination"):
        parts.append(run_combination(smiles, line_vectors, {**COMBO_TRAIN, **quick}))
    table = pd.concat(parts, ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"drug_heads{args.tag}.csv"
    table.to_csv(path, index=False)
    if not args.quick and not args.tag and args.only is None:
        # the full run is the one the docs and the scoreboard read
        figures = REPO / "docs" / "figures" / "drug_heads.csv"
        table.to_csv(figures, index=False, float_format="%.4f")
        print(f"written {figures}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    print(f"written {path}")


if __name__ == "__main__":
    main()
