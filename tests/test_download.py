"""Public data sets for a ``pip install``: downloaded once, verified by sha256 (issue 24)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sclong_scverse as scl
from sclong_scverse.datasets import _cellbench
from sclong_scverse.datasets._download import DatasetDownloadError, fetch_file
from sclong_scverse.io._safe import sha256_file as file_sha256

TEST_DATA = Path(__file__).parent / "data"
MIRROR = TEST_DATA / "scrna" / "cellbench"  # served as file:// URLs: no network in CI
DROPSEQ = ("sc_dropseq.count.csv.gz", "sc_dropseq.metadata.csv.gz")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """No local copy anywhere (as after ``pip install``), the cache in ``tmp_path``."""
    for name in ("SCLONG_SHARED_DATA", "SCLONG_SHARED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCLONG_DATA_DIR", str(tmp_path / "cache"))
    nowhere = tmp_path / "nowhere"
    monkeypatch.setattr(
        _cellbench, "shared_data_dir", lambda path=None: nowhere if path is None else Path(path)
    )
    # the mirror holds the tests' subset: its own checksums stand for the published ones
    sums = {name: file_sha256(MIRROR / name) for name in DROPSEQ}
    monkeypatch.setattr(_cellbench, "CELLBENCH_SHA256", {**_cellbench.CELLBENCH_SHA256, **sums})
    monkeypatch.setattr(_cellbench, "CELLBENCH_URL", MIRROR.as_uri())
    return tmp_path / "cache" / "cellbench"


def test_cellbench_downloads_once_and_reads_the_verified_files(installed, monkeypatch):
    adata = scl.datasets.cellbench(batches=("sc_dropseq",))
    reference = scl.datasets.cellbench(TEST_DATA, batches=("sc_dropseq",))
    assert adata.n_obs == reference.n_obs == 225
    np.testing.assert_array_equal(adata.X.toarray(), reference.X.toarray())
    assert sorted(p.name for p in installed.iterdir()) == sorted(DROPSEQ)  # no .partial left
    # the second call reads the cache: it no longer needs the source
    monkeypatch.setattr(_cellbench, "CELLBENCH_URL", (installed.parent / "gone").as_uri())
    again = scl.datasets.cellbench(batches=("sc_dropseq",))
    assert again.n_obs == 225
    # download=False keeps the former behaviour: a clear FileNotFoundError
    with pytest.raises(FileNotFoundError, match="without data_dir to download"):
        scl.datasets.cellbench(batches=("sc_celseq2",), download=False)


def test_a_file_that_does_not_match_its_checksum_is_refused_and_not_kept(tmp_path):
    source = (MIRROR / DROPSEQ[1]).as_uri()
    target = tmp_path / "kept" / DROPSEQ[1]
    with pytest.raises(DatasetDownloadError, match="does not match its published sha256"):
        fetch_file(source, target, "0" * 64)
    assert not target.exists() and not list(target.parent.iterdir())
    with pytest.raises(DatasetDownloadError, match=r"Could not download .* by hand into"):
        fetch_file((tmp_path / "missing.csv.gz").as_uri(), target, "0" * 64)
    # a corrupted cached copy is downloaded again, not read
    target.write_bytes(b"corrupted")
    fetch_file(source, target, file_sha256(MIRROR / DROPSEQ[1]))
    assert file_sha256(target) == file_sha256(MIRROR / DROPSEQ[1])


def test_published_checksums_cover_every_batch_and_match_the_shared_copies():
    """Every batch's two files are pinned; where the project's copies of the authors' files
    are present (``../shared``), the pins are their checksums."""
    expected = {
        f"{batch}.{part}.csv.gz"
        for batch in scl.datasets.CELLBENCH_BATCHES
        for part in ("count", "metadata")
    }
    assert set(_cellbench.CELLBENCH_SHA256) == expected
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in _cellbench.CELLBENCH_SHA256.values())
    assert "/19667e111aac52abbfcaa6fff07da2fd05984709/" in _cellbench.CELLBENCH_URL  # a commit
    shared = Path(__file__).parents[2] / "shared" / "data" / "scrna" / "cellbench"
    for name, sha256 in _cellbench.CELLBENCH_SHA256.items():
        if (shared / name).is_file():
            assert file_sha256(shared / name) == sha256, name


def readme_ten_lines() -> str:
    """The Python block under the README's "Ten lines" heading, as a user copies it."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("\n## Ten lines\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_ten_lines_run_unchanged_after_pip_install(installed, monkeypatch):
    """The README's example, copied as it stands, on a machine without any local data: the
    CellBench files come from the (file://) download route, every documented field is written,
    and the embedding keeps the five cell lines apart."""
    monkeypatch.setattr(
        _cellbench,
        "CELLBENCH_SHA256",
        {name: file_sha256(MIRROR / name) for name in _cellbench.CELLBENCH_SHA256},
    )
    code = readme_ten_lines()
    assert "scl.datasets.cellbench()" in code  # the download route, no path given
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    adata, edges = namespace["adata"], namespace["edges"]
    assert sorted(p.name for p in installed.iterdir()) == sorted(_cellbench.CELLBENCH_SHA256)
    assert adata.n_vars == 2048 and adata.n_obs > 1000
    assert adata.obsm["X_sclong"].shape[0] == adata.n_obs
    assert np.isfinite(adata.obsm["X_sclong"]).all()
    assert adata.varp["sclong_grn"].shape == (2048, 2048)
    assert len(edges) == 100 and edges["score"].is_monotonic_decreasing
    # cell identity: a cell's 10 nearest neighbours in X_sclong mostly share its cell line
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = adata.obs["cell_line"].astype(str).to_numpy()
    accuracy = cross_val_score(KNeighborsClassifier(10), adata.obsm["X_sclong"], labels, cv=3)
    majority = max(np.mean(labels == label) for label in set(labels))
    assert accuracy.mean() > majority + 0.3, (accuracy.mean(), majority)
