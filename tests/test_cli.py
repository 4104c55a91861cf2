"""The `sclong` command line: help, demo, pretrain -> embed -> grn, convert-official, errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pytest

from sclong_scverse import cli

SUBCOMMANDS = ["demo", "pretrain", "embed", "grn", "convert-official"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: sclong {command}" in capsys.readouterr().out


def test_pbmc68k_counts_are_integers():
    adata = cli.pbmc68k_counts()
    assert adata.shape == (700, 765)
    values = adata.X.data
    np.testing.assert_array_equal(values, np.round(values))
    assert values.min() >= 1
    assert "bulk_labels" in adata.obs


def test_missing_file_is_a_one_line_error(capsys, tmp_path):
    missing = tmp_path / "nope.h5ad"
    code, _, err = _run(capsys, "pretrain", missing, "--out", tmp_path / "m")
    assert code == 2
    assert str(missing) in err and "not found" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = _run(capsys, "embed", missing, "--model", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and str(missing) in err
    code, _, err = _run(
        capsys, "convert-official", "--checkpoint", missing, "--hparams", missing,
        "--genes", missing, "--out", tmp_path / "c",
    )  # fmt: skip
    assert code == 2 and str(missing) in err


def test_bad_input_is_a_one_line_error(capsys, tmp_path):
    path = tmp_path / "logged.h5ad"
    adata = ad.AnnData(np.log1p(np.random.default_rng(0).poisson(2, (20, 10))).astype("f4"))
    adata.write_h5ad(path)
    code, _, err = _run(capsys, "pretrain", path, "--out", tmp_path / "m", "--epochs", 1)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = _run(capsys, "pretrain", path, "--out", tmp_path / "m", "--layer", "nope")
    assert code == 2 and "'nope'" in err


def test_demo_writes_every_file(capsys, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = _run(
        capsys, "demo", "--out", out, "--epochs", 1, "--max-cells", 32, "--no-progress"
    )
    assert code == 0, err
    for name in (
        "demo.h5ad", "umap.png", "training.png", "grn_heatmap.png", "grn_network.png",
        "grn_edges.csv", "summary.txt",
    ):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    for name in ("umap.png", "training.png", "grn_heatmap.png", "grn_network.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.txt").read_text()
    for section in ("[data]", "[training]", "[clustering]", "[GRN]", "[runtime]"):
        assert section in summary
    for text in ("cells: 32", "genes: 765", "validation masked MSE", "ARI", "NMI", "total:"):
        assert text in summary
    assert summary.split("top 10 edges:\n")[1].count(" - ") == 10
    result = ad.read_h5ad(out / "demo.h5ad")
    assert result.obsm["X_sclong"].shape[0] == 32
    assert {"X_sclong_umap"} <= set(result.obsm) and "sclong_grn" in result.varp
    assert "leiden" in result.obs


@pytest.fixture(scope="module")
def counts_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "pbmc_counts.h5ad"
    adata = cli.pbmc68k_counts(max_cells=48, seed=1)
    del adata.layers["counts"]
    adata.write_h5ad(path)
    return path


def test_pretrain_embed_grn_round_trip(capsys, tmp_path, counts_h5ad):
    model_dir = tmp_path / "model"
    code, out, err = _run(
        capsys, "pretrain", counts_h5ad, "--out", model_dir, "--epochs", 1,
        "--batch-size", 16, "--labels-key", "bulk_labels", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "normalising raw counts from X" in out
    assert (model_dir / "model.pt").exists()
    code, _, err = _run(capsys, "pretrain", counts_h5ad, "--out", model_dir, "--epochs", 1)
    assert code == 2 and "--overwrite" in err

    embedded = tmp_path / "embedded.h5ad"
    code, _, err = _run(capsys, "embed", counts_h5ad, "--model", model_dir, "--out", embedded)
    assert code == 0, err
    result = ad.read_h5ad(embedded)
    assert result.obsm["X_sclong"].shape == (48, 32)
    assert result.uns["X_sclong"]["params"]["pooling"] == "max"
    assert np.isfinite(result.obsm["X_sclong"]).all()

    network, edges = tmp_path / "grn.h5ad", tmp_path / "edges.csv"
    code, out, err = _run(
        capsys, "grn", counts_h5ad, "--model", model_dir, "--out", network,
        "--top-k", 5, "--edges", edges, "--n-edges", 40,
    )  # fmt: skip
    assert code == 0, err
    result = ad.read_h5ad(network)
    assert result.varp["sclong_grn"].shape == (765, 765)
    assert (result.varp["sclong_grn"] != 0).sum(axis=1).max() <= 5
    table = edges.read_text().splitlines()
    assert table[0] == "source,target,score" and len(table) == 41

    code, _, err = _run(capsys, "embed", counts_h5ad, "--model", tmp_path, "--out", embedded)
    assert code == 2 and "not a saved scLong model" in err


def test_convert_official_round_trip(capsys, tmp_path, parity_dir):
    out = tmp_path / "official"
    code, stdout, err = _run(
        capsys, "convert-official", "--checkpoint", parity_dir / "tiny_ckpt.pth",
        "--hparams", parity_dir / "tiny_hparams.pkl", "--genes", parity_dir / "tiny_genes.txt",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "round trip (write, read back): identical tensors" in stdout
    assert "parameters:" in stdout
    for name in ("sclong.pth", "sclong.pkl", "sclong_genes.txt", "sclong_config.json"):
        assert (out / name).stat().st_size > 0
