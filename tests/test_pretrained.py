"""Pretrained models by name: hub-cache layout offline, pinned checksums, model cards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sclong_scverse as scl
from sclong_scverse.model import (
    SCLONG,
    ModelIntegrityError,
    PretrainedRelease,
    _pretrained,
    pretrained_models,
    register_pretrained,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny model trained one epoch on 64 pbmc68k cells, saved as a release folder."""
    adata = scl.datasets.pbmc68k_counts(max_cells=64, seed=0)
    scl.pp.normalize(adata, layer="counts")
    SCLONG.setup_anndata(adata, layer="sclong")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    model.train(max_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False)
    folder = tmp_path_factory.mktemp("release") / "pbmc-tiny"
    checksum = model.save_pretrained(
        folder,
        name="scLong tiny, pbmc68k_reduced",
        training_data="scanpy's pbmc68k_reduced (64 cells, 765 genes)",
        metrics={"epochs": 1},
    )
    return model, adata, folder, checksum


def _hub_cache(tmp_path, folder, repo_id="sclong-scverse/pbmc-tiny", ref="main"):
    """Lay ``folder`` out as huggingface_hub's cache does: snapshots/<commit>, refs/<ref>."""
    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(COMMIT)
    return tmp_path / "hub"


def test_model_card_and_checksum(released):
    model, _, folder, checksum = released
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sclong-scverse")
    assert "765 (the vocabulary" in card and "64 cells" in card and "epochs: 1" in card
    assert checksum == _pretrained.manifest_checksum(folder) and len(checksum) == 64
    assert json.loads((folder / "manifest.json").read_text())["files"]


def test_by_repo_id_and_by_registered_name_offline(released, tmp_path, monkeypatch):
    model, adata, folder, checksum = released
    expected = model.get_latent_representation(adata)
    cache = _hub_cache(tmp_path, folder)
    by_repo = SCLONG.from_pretrained(
        "sclong-scverse/pbmc-tiny", adata, cache_dir=cache, local_files_only=True
    )
    np.testing.assert_array_equal(by_repo.get_latent_representation(adata), expected)
    monkeypatch.setattr(_pretrained, "_REGISTRY", {})
    release = PretrainedRelease(
        name="pbmc-tiny",
        repo_id="sclong-scverse/pbmc-tiny",
        revision=COMMIT,
        manifest_sha256=checksum,
        description="tiny, 64 PBMCs",
    )
    register_pretrained(release)
    assert pretrained_models() == {"pbmc-tiny": release}
    by_name = SCLONG.from_pretrained("pbmc-tiny", adata, cache_dir=cache, local_files_only=True)
    np.testing.assert_array_equal(by_name.get_latent_representation(adata), expected)
    with pytest.raises(ValueError, match="pinned to revision"):
        SCLONG.from_pretrained("pbmc-tiny", adata, revision="main", cache_dir=cache)
    with pytest.raises(ValueError, match="registered already"):
        register_pretrained(release)


def test_corrupted_release_is_refused(released, tmp_path, monkeypatch):
    _, adata, folder, checksum = released
    cache = _hub_cache(tmp_path, folder)
    snapshot = cache / "models--sclong-scverse--pbmc-tiny" / "snapshots" / COMMIT
    # a flipped byte in the weights: the manifest catches it
    weights = snapshot / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        SCLONG.from_pretrained("sclong-scverse/pbmc-tiny", adata, cache_dir=cache)
    # weights and manifest both rewritten: the pinned manifest checksum catches it
    manifest = snapshot / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format"', '"format" ', 1))
    monkeypatch.setattr(_pretrained, "_REGISTRY", {})
    register_pretrained(
        PretrainedRelease("pbmc-tiny", "sclong-scverse/pbmc-tiny", COMMIT, checksum)
    )
    with pytest.raises(ModelIntegrityError, match="not the pinned"):
        SCLONG.from_pretrained("pbmc-tiny", adata, cache_dir=cache, local_files_only=True)


def test_missing_release_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(_pretrained, "_download", _no_hub)
    with pytest.raises(
        FileNotFoundError, match="place model.pt and manifest.json of the release in .*snapshots"
    ):
        SCLONG.from_pretrained("sclong-scverse/absent", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="local_files_only=True"):
        SCLONG.from_pretrained("sclong-scverse/absent", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(FileNotFoundError, match="not a folder, a registered model"):
        SCLONG.from_pretrained("no-such-model", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="full 40-digit commit"):
        register_pretrained(PretrainedRelease("x", "org/x", "main", "0" * 64))


def _no_hub(*args, **kwargs):
    raise ImportError("huggingface_hub is not installed")
