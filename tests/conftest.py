"""Shared locations of the real data and the parity release (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
