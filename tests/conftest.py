"""Shared locations of the real data and the parity release (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import sclong_scverse as scl
from sclong_scverse.model import SCLONG

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCLONG_SHARED", REPO.parent / "shared"))
PARITY_DIR = Path(os.environ.get("SCLONG_PARITY_DIR", SHARED / "parity"))
DATA_DIR = Path(os.environ.get("SCLONG_SHARED_DATA", SHARED / "data"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY_DIR / "tiny_ckpt.pth").exists():
        pytest.skip(f"parity release not found in {PARITY_DIR} (set SCLONG_PARITY_DIR)")
    return PARITY_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared real data not found in {DATA_DIR} (set SCLONG_SHARED_DATA)")
    return DATA_DIR


N_GENES = 2048  # the most frequently detected CellBench genes: keeps CI pretraining in a minute


@pytest.fixture(scope="session")
def cellbench_top(data_dir):
    """CellBench (1,408 cells, 5 batches) on its 2,048 most detected genes, normalised."""
    adata = scl.datasets.cellbench(data_dir)
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected)[:N_GENES])].copy()
    scl.pp.normalize(adata)
    return adata


@pytest.fixture(scope="session")
def trained(cellbench_top):
    """Tiny scLong pretrained 4 epochs on CellBench: (model, adata, MSE after, MSE before)."""
    adata = cellbench_top.copy()
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="batch", labels_key="cell_line")
    torch.manual_seed(0)
    model = SCLONG(adata, config="tiny")
    initial_state = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.train(max_epochs=4, batch_size=16, lr=5e-3, accelerator="cpu", enable_progress_bar=False)
    trained_state = {k: v.clone() for k, v in model.module.state_dict().items()}
    after = model.evaluate_masked_mse(seed=1)  # the held-out (validation) cells
    model.module.load_state_dict(initial_state)
    before = model.evaluate_masked_mse(seed=1)
    model.module.load_state_dict(trained_state)
    return model, adata, after, before
