"""Locations of the real data and the parity release, and the shared CellBench fixtures.

Data come from the project's shared folder beside the checkout when it is there
(``../shared/data``, ``../shared/parity``; ``SCLONG_SHARED``, ``SCLONG_SHARED_DATA`` and
``SCLONG_PARITY_DIR`` override those paths), else from ``tests/data/``: small real subsets of the
same files, derived by ``scripts/build_test_data.py`` (sources and licences in
``tests/data/PROVENANCE.md``), so that a clone without the shared folder runs every test. The
folders chosen are exported as ``SCLONG_SHARED_DATA`` / ``SCLONG_PARITY_DIR``, so that the
package's defaults (``scl.datasets.shared_data_dir()``), the command line and the tutorials read
the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

import sclong_scverse as scl
from sclong_scverse.model import SCLONG

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # see tests/data/PROVENANCE.md
SHARED = Path(os.environ.get("SCLONG_SHARED", REPO.parent / "shared"))

# hypothesis profiles of the property suites (tests/test_properties.py, test_fuzz_readers.py,
# test_saved_trust.py): SCLONG_HYPOTHESIS_PROFILE=ci (default: derandomized, few examples) or
# long (random, 10-20 times more)
_HYPOTHESIS_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=10, **_HYPOTHESIS_COMMON
)
settings.register_profile("long", max_examples=200, **_HYPOTHESIS_COMMON)
HYPOTHESIS_PROFILE = os.environ.get("SCLONG_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)


def _first_present(candidates: list[Path], marker: str) -> Path:
    """The first folder that holds ``marker``; the last candidate when none does."""
    for folder in candidates:
        if (folder / marker).exists():
            return folder
    return candidates[-1]


def _candidates(variable: str, shared: Path, fallback: Path) -> list[Path]:
    given = [Path(os.environ[variable])] if os.environ.get(variable) else []
    return [*given, shared, fallback]


#: the parity release (a miniature official scLong release with reference outputs)
PARITY_DIR = _first_present(
    _candidates("SCLONG_PARITY_DIR", SHARED / "parity", TEST_DATA / "parity"), "tiny_ckpt.pth"
)
#: the real data (CellBench, PBMC samples, GRN ground truths, GO tables)
DATA_DIR = _first_present(
    _candidates("SCLONG_SHARED_DATA", SHARED / "data", TEST_DATA), "scrna/cellbench"
)
#: True where the tests read tests/data's subsets (no shared folder)
SUBSET = DATA_DIR == TEST_DATA
os.environ["SCLONG_SHARED_DATA"] = str(DATA_DIR)
os.environ["SCLONG_PARITY_DIR"] = str(PARITY_DIR)


def data_file(path: Path) -> Path:
    """``path``, or its gzip'd copy ``path.gz`` (how tests/data stores large text tables)."""
    compressed = path.with_name(path.name + ".gz")
    return compressed if not path.exists() and compressed.exists() else path


def pytest_report_header(config) -> list[str]:
    where = "tests/data subsets" if SUBSET else "shared folder"
    return [f"sclong data: {DATA_DIR} ({where}); parity release: {PARITY_DIR}"]


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY_DIR / "tiny_ckpt.pth").exists():
        pytest.skip(
            f"parity release not found in {PARITY_DIR} (set SCLONG_PARITY_DIR, or build "
            "tests/data with scripts/build_test_data.py)"
        )
    return PARITY_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "scrna" / "cellbench").is_dir():
        pytest.skip(
            f"real data not found in {DATA_DIR} (set SCLONG_SHARED_DATA, or build tests/data "
            "with scripts/build_test_data.py)"
        )
    return DATA_DIR


N_GENES = 2048  # the most frequently detected CellBench genes: keeps CI pretraining in a minute


@pytest.fixture(scope="module")
def two_torch_threads():
    """Torch on 2 threads for a module (``pytestmark = usefixtures(...)``), restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def most_detected(adata, n_genes: int = N_GENES):
    """``adata`` restricted to its ``n_genes`` genes detected in the most cells (ties: first)."""
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    # a stable sort: the same genes from the full data and from tests/data's subset
    return adata[:, np.sort(np.argsort(-detected, kind="stable")[:n_genes])].copy()


@pytest.fixture(scope="session")
def cellbench_top(data_dir):
    """CellBench (1,408 cells, 5 batches) on its 2,048 most detected genes, normalised."""
    adata = most_detected(scl.datasets.cellbench(data_dir))
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


def rewrite_saved_model(folder: Path, edit) -> None:
    """Edit a saved model's ``model.pt`` as a forger would, and re-sign its manifest.

    ``edit(content)`` changes the content (as :func:`torch.load` returns it; read here with
    ``weights_only=False`` because the tests wrote the file themselves) in place; the file is
    saved again and its sha256 in ``manifest.json`` updated, so that only the loaders' own
    checks of the content stand between the edit and the model.
    """
    import json

    from sclong_scverse.io import sha256_file

    path = Path(folder) / "model.pt"
    content = torch.load(path, weights_only=False)
    edit(content)
    torch.save(content, path)
    manifest_path = Path(folder) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.pt"]["sha256"] = sha256_file(path)
    manifest_path.write_text(json.dumps(manifest))
