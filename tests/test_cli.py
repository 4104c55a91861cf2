"""The `sclong` command line: help, demo, pretrain -> embed -> grn, convert-official, errors,
interruptions (SIGTERM / SIGINT in a real subprocess) and outputs written only on success."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sclong_scverse import cli
from sclong_scverse.datasets import pbmc68k_counts
from sclong_scverse.genes import map_gene_ids
from sclong_scverse.module._module import DEFAULT_POOLING, POOLINGS

SUBCOMMANDS = ["demo", "pretrain", "embed", "grn", "convert-official"]
HEAVY = ("torch", "scanpy", "scvi", "anndata", "lightning")


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, *texts: str) -> None:
    lines = err.strip().split("\n")
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in err, err
    for text in texts:
        assert text in err, (text, err)


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if ".partial-" in path.name)


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out
    assert "143" in out and "130" in out  # the exit codes are documented


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: sclong {command}" in out
    assert "(default: " in out and "(default: None)" not in out


def test_embed_poolings_are_the_modules(capsys):
    # read from module/_module.py without importing it (--help needs no torch)
    assert cli._embed._poolings() == (tuple(POOLINGS), DEFAULT_POOLING)
    with pytest.raises(SystemExit):
        cli.main(["embed", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(POOLINGS) + "}" in out


def test_help_shows_defaults_and_advised_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--epochs N training epochs (default: 10)", "(default: tiny)", "(default: 16)"):
        assert text in out
    for option in ("--allow-non-integer", "--gene-id-key"):
        assert option in out
    for command in ("embed", "grn"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        for option in ("--allow-non-integer", "--gene-id-key", "--overwrite", "(default: 64)"):
            assert option in out
    with pytest.raises(SystemExit):
        cli.main(["convert-official", "--help"])
    assert "--sha256" in capsys.readouterr().out


def test_cli_module_imports_nothing_heavy(tmp_path):
    """The cli package imports only the standard library for --help and path errors.

    Imported in a fresh interpreter through the package, whose ``__init__`` imports its
    subpackages lazily, and whose error vocabulary (``sclong_scverse.errors``, which the command
    line reports) needs only the standard library (see benchmarks/bench_cli.py for the
    installed ``sclong`` command's start-up time).
    """
    script = f"""
import sys
import sclong_scverse.cli as module
try:
    module.main(["embed", "--help"])
except SystemExit:
    pass
code = module.main(["embed", {str(tmp_path / "missing.h5ad")!r}, "--model", {str(tmp_path)!r},
                    "--out", {str(tmp_path / "o.h5ad")!r}])
assert code == 2, code
print("HEAVY:", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY: []" in result.stdout, result.stdout
    assert "input file not found" in result.stderr


def test_pbmc68k_counts_are_integers():
    adata = pbmc68k_counts()
    assert adata.shape == (700, 765)
    values = adata.X.data
    np.testing.assert_array_equal(values, np.round(values))
    assert values.min() >= 1
    assert "bulk_labels" in adata.obs


def test_missing_file_is_a_one_line_error(capsys, tmp_path):
    missing = tmp_path / "nope.h5ad"
    code, _, err = _run(capsys, "pretrain", missing, "--out", tmp_path / "m")
    assert code == 2
    _one_line_error(err, str(missing), "not found")
    code, _, err = _run(capsys, "embed", missing, "--model", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and str(missing) in err
    code, _, err = _run(
        capsys, "convert-official", "--checkpoint", missing, "--hparams", missing,
        "--genes", missing, "--out", tmp_path / "c",
    )  # fmt: skip
    assert code == 2 and str(missing) in err


def test_path_errors_are_one_line(capsys, tmp_path):
    source = tmp_path / "cells.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(source)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    fake_model = tmp_path / "fake_model"
    fake_model.mkdir()
    (fake_model / "model.pt").write_bytes(b"not read: the paths are checked first")
    cases = [
        # a folder where a file is needed, and the reverse
        (["pretrain", a_folder, "--out", tmp_path / "m"], "holds no .h5ad file or .zarr store"),
        (["pretrain", source, "--out", a_file], "is a file"),
        (["embed", source, "--model", fake_model, "--out", a_folder], "is a folder"),
        (["embed", source, "--model", a_file, "--out", tmp_path / "o.h5ad"], "is a file"),
        (["grn", source, "--model", fake_model, "--out", tmp_path / "o.h5ad",
          "--edges", a_folder], "is a folder"),
        (["convert-official", "--checkpoint", source, "--hparams", source, "--genes", source,
          "--out", a_file], "is a file"),
        # a parent that is a file, not a folder
        (["embed", source, "--model", fake_model, "--out", a_file / "o.h5ad"], "not a folder"),
        (["pretrain", source, "--out", a_file / "model"], "not a folder"),
        # a model folder without a model
        (["embed", source, "--model", a_folder, "--out", tmp_path / "o.h5ad"],
         "not a saved scLong model"),
        # an existing, non-empty model folder
        (["pretrain", source, "--out", fake_model], "--overwrite"),
        # an output equal to an input
        (["embed", source, "--model", fake_model, "--out", source], "--overwrite"),
        (["embed", source, "--model", fake_model, "--out", tmp_path / "." / ".." /
          tmp_path.name / "cells.h5ad"], "is the input file"),
        (["grn", source, "--model", fake_model, "--out", tmp_path / "o.h5ad",
          "--edges", source], "is the input file"),
        (["grn", source, "--model", fake_model, "--out", tmp_path / "o.h5ad",
          "--edges", tmp_path / "o.h5ad"], "same file"),
        (["convert-official", "--checkpoint", tmp_path / "sclong.pth", "--hparams", source,
          "--genes", source, "--out", tmp_path], "not found"),
        (["convert-official", "--checkpoint", source, "--hparams", source, "--genes", source,
          "--out", tmp_path, "--sha256", "abc"], "64 hexadecimal digits"),
    ]  # fmt: skip
    for argv, text in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        _one_line_error(err, text)
    assert source.read_bytes()[:4] == b"\x89HDF"  # the input was not touched
    (tmp_path / "sclong.pth").write_bytes(b"x")
    code, _, err = _run(
        capsys, "convert-official", "--checkpoint", tmp_path / "sclong.pth", "--hparams", source,
        "--genes", source, "--out", tmp_path,
    )  # fmt: skip
    assert code == 2
    _one_line_error(err, "would replace the input", "--overwrite")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_output_folder_is_a_one_line_error(capsys, tmp_path):
    source = tmp_path / "cells.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(source)
    # /proc refuses new files even for root (a chmod'ed folder would not stop root)
    code, _, err = _run(capsys, "pretrain", source, "--out", "/proc/sclong_test/model")
    assert code == 2
    _one_line_error(err, "cannot write in /proc")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = _run(capsys, "pretrain", source, "--out", locked / "model")
        assert code == 2
        _one_line_error(err, "cannot write in")


def test_bad_input_gives_command_line_advice(capsys, tmp_path):
    path = tmp_path / "logged.h5ad"
    adata = ad.AnnData(np.log1p(np.random.default_rng(0).poisson(2, (20, 10))).astype("f4"))
    adata.write_h5ad(path)
    code, _, err = _run(capsys, "pretrain", path, "--out", tmp_path / "m", "--epochs", 1)
    assert code == 2
    _one_line_error(err, "looks log-normalised", "--counts-layer", "--allow-non-integer")
    assert "allow_non_integer=True" not in err and "adata" not in err
    code, _, err = _run(capsys, "pretrain", path, "--out", tmp_path / "m", "--layer", "nope")
    assert code == 2 and "'nope'" in err
    code, _, err = _run(capsys, "pretrain", path, "--out", tmp_path / "m", "--gene-id-key", "id")
    assert code == 2
    _one_line_error(err, "--gene-id-key 'id' is not a var column")
    assert not (tmp_path / "m").exists()


def test_staged_outputs_appear_only_on_success(tmp_path):
    target, folder = tmp_path / "result.h5ad", tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("previous model")
    with pytest.raises(cli.Interrupted):
        with cli._staged() as staging:
            staging.path(target).write_text("partial")
            temporary = staging.path(folder)
            temporary.mkdir()
            (temporary / "model.pt").write_text("partial")
            assert ".partial-" in temporary.name and temporary.name.startswith(".")
            raise cli.Interrupted(signal.SIGTERM)
    assert not target.exists() and not _leftovers(tmp_path)
    assert (folder / "old.txt").read_text() == "previous model"  # kept until a success
    with cli._staged() as staging:
        staging.path(target).write_text("done")
        temporary = staging.path(folder)
        temporary.mkdir()
        (temporary / "model.pt").write_text("new")
        assert not target.exists()
    assert target.read_text() == "done"
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]
    assert not _leftovers(tmp_path) and not list(tmp_path.glob(".*"))


def test_signal_while_renaming_waits_until_every_output_is_in_place(tmp_path, monkeypatch):
    rename = cli._replace

    def signalled_rename(temporary, target):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the renames
        rename(temporary, target)

    monkeypatch.setattr(cli._staging, "_replace", signalled_rename)
    with pytest.raises(cli.Interrupted) as interrupt:
        with cli._raise_on_signals(), cli._staged() as staging:
            staging.path(tmp_path / "a.h5ad").write_text("a")
            staging.path(tmp_path / "edges.csv").write_text("b")
    assert interrupt.value.signal_name == "SIGTERM"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "edges.csv"]
    assert signal.getsignal(signal.SIGTERM) is not cli._on_signal  # handlers restored


def test_demo_writes_every_file(capsys, caplog, tmp_path):
    out = tmp_path / "demo"
    caplog.set_level(logging.INFO)
    code, stdout, err = _run(
        capsys, "demo", "--out", out, "--epochs", 1, "--max-cells", 32, "--no-progress"
    )
    assert code == 0, err
    # no Lightning accelerator lines or third-party tips ("Tip: ... litlogger")
    assert "Tip" not in caplog.text and "GPU available" not in caplog.text, caplog.text
    assert "was not computed from the current" not in err  # its own UMAP is drawn, not redone
    for name in (
        "demo.h5ad", "umap.png", "training.png", "grn_heatmap.png", "grn_network.png",
        "grn_edges.csv", "summary.txt",
    ):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert not _leftovers(tmp_path)
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


def _ensembl_counts(max_cells: int, seed: int) -> ad.AnnData:
    """pbmc68k counts with Ensembl ids as var_names and the symbols in var['gene_symbols']."""
    adata = pbmc68k_counts(max_cells=max_cells, seed=seed)
    del adata.layers["counts"]
    ensembl = map_gene_ids(adata.var_names, to="ensembl")
    keep = ensembl.notna().to_numpy() & ~ensembl.duplicated(keep=False).to_numpy()
    adata = adata[:, keep].copy()
    adata.var["gene_symbols"] = adata.var_names.to_numpy()
    adata.var_names = ensembl[keep].to_numpy()
    return adata


@pytest.fixture(scope="module")
def counts_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "pbmc_counts.h5ad"
    _ensembl_counts(max_cells=48, seed=1).write_h5ad(path)
    return path


def test_pretrain_embed_grn_round_trip(capsys, tmp_path, counts_h5ad):
    n_genes = ad.read_h5ad(counts_h5ad, backed="r").n_vars
    model_dir = tmp_path / "model"
    code, out, err = _run(
        capsys, "pretrain", counts_h5ad, "--out", model_dir, "--epochs", 1,
        "--batch-size", 16, "--labels-key", "bulk_labels", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    # no third-party tips or accelerator lines; warnings (if any) one line each
    assert all(line.startswith("sclong: warning: ") for line in err.splitlines()), err
    assert "Tip" not in err and "GPU available" not in err and "\x1b[" not in err
    assert "normalising raw counts from X" in out
    # the result next to its baseline: the per-gene mean on the same held-out masks
    assert re.search(r"held-out masked MSE [\d.]+ vs [\d.]+ for the per-gene mean", out), out
    assert (model_dir / "model.pt").exists() and not _leftovers(tmp_path)
    code, _, err = _run(capsys, "pretrain", counts_h5ad, "--out", model_dir, "--epochs", 1)
    assert code == 2 and "--overwrite" in err

    embedded = tmp_path / "embedded.h5ad"
    code, out, err = _run(capsys, "embed", counts_h5ad, "--model", model_dir, "--out", embedded)
    assert code == 0, err
    assert "\x1b[" not in out + err and "already downloaded" not in out + err
    result = ad.read_h5ad(embedded)
    # the default pooling: one value per gene of the model (feature_sum, docs/pooling.md)
    assert result.obsm["X_sclong"].shape == (48, n_genes)
    assert result.uns["X_sclong"]["params"]["pooling"] == DEFAULT_POOLING == "feature_sum"
    assert np.isfinite(result.obsm["X_sclong"]).all()

    # genes named by symbols, the model's Ensembl ids in a var column: --gene-id-key
    query = ad.read_h5ad(counts_h5ad)
    query.var["ensembl"] = query.var_names.to_numpy()
    query.var_names = query.var["gene_symbols"].to_numpy()
    query_path = tmp_path / "by_symbol.h5ad"
    query.write_h5ad(query_path)
    code, _, err = _run(capsys, "embed", query_path, "--model", model_dir, "--out", embedded)
    assert code == 2
    _one_line_error(err, "--gene-id-key")
    code, _, err = _run(
        capsys, "embed", query_path, "--model", model_dir, "--out", embedded,
        "--gene-id-key", "ensembl",
    )  # fmt: skip
    assert code == 0, err
    by_symbol = ad.read_h5ad(embedded)
    np.testing.assert_allclose(by_symbol.obsm["X_sclong"], result.obsm["X_sclong"], rtol=1e-5)
    assert list(by_symbol.var_names) == list(query.var_names)  # the input's names are kept

    # --out equal to the input: refused, then allowed with --overwrite (written via a temp)
    copy = tmp_path / "copy.h5ad"
    copy.write_bytes(counts_h5ad.read_bytes())
    code, _, err = _run(capsys, "embed", copy, "--model", model_dir, "--out", copy)
    assert code == 2
    _one_line_error(err, "is the input file", "--overwrite")
    assert "X_sclong" not in ad.read_h5ad(copy).obsm
    code, _, err = _run(capsys, "embed", copy, "--model", model_dir, "--out", copy, "--overwrite")
    assert code == 0, err
    assert "X_sclong" in ad.read_h5ad(copy).obsm and not _leftovers(tmp_path)

    # a query holding 2% of the model's genes: refused in one line; --min-coverage lowers the bar
    few = ad.read_h5ad(counts_h5ad)
    keep = max(1, n_genes // 50)
    detected = np.asarray((few.X > 0).sum(axis=0)).ravel()
    few = few[:, np.sort(np.argsort(-detected)[:keep])].copy()
    few = few[np.asarray(few.X.sum(axis=1)).ravel() > 0].copy()
    few_path = tmp_path / "two_percent.h5ad"
    few.write_h5ad(few_path)
    code, _, err = _run(capsys, "embed", few_path, "--model", model_dir, "--out", embedded)
    assert code == 2
    _one_line_error(err, f"Only {keep} of the model's {n_genes} genes", "--min-coverage")
    code, _, err = _run(
        capsys, "embed", few_path, "--model", model_dir, "--out", embedded, "--min-coverage", 0
    )
    assert code == 0, err

    network, edges = tmp_path / "grn.h5ad", tmp_path / "edges.csv"
    code, out, err = _run(
        capsys, "grn", counts_h5ad, "--model", model_dir, "--out", network,
        "--top-k", 5, "--edges", edges, "--n-edges", 40,
    )  # fmt: skip
    assert code == 0, err
    result = ad.read_h5ad(network)
    assert result.varp["sclong_grn"].shape == (n_genes, n_genes)
    assert (result.varp["sclong_grn"] != 0).sum(axis=1).max() <= 5
    table = pd.read_csv(edges)
    assert list(table.columns) == [
        "source", "target", "weight", "score", "source_symbol", "target_symbol"
    ]  # fmt: skip
    assert len(table) == 40  # 40 gene pairs, each once
    pairs = {frozenset(pair) for pair in zip(table["source"], table["target"], strict=True)}
    assert len(pairs) == 40
    assert (np.diff(table["score"]) <= 0).all()
    symbols = dict(zip(result.var_names, result.var["gene_symbols"], strict=True))
    assert table["source"].str.startswith("ENSG").all()
    assert list(table["source_symbol"]) == [symbols[g] for g in table["source"]]
    assert list(table["target_symbol"]) == [symbols[g] for g in table["target"]]
    assert "unique gene pairs" in out

    code, _, err = _run(capsys, "embed", counts_h5ad, "--model", tmp_path, "--out", embedded)
    assert code == 2 and "not a saved scLong model" in err


def test_grn_symbols_from_the_gene_table_without_a_symbol_column():
    genes = ["ENSG00000141510", "ENSG00000012048.23", "ENSG00000000000"]
    assert cli._gene_symbols(genes, pd.DataFrame(index=genes)) == ["TP53", "BRCA1", ""]
    var = pd.DataFrame({"feature_name": ["p53", None, "X"]}, index=genes)
    assert cli._gene_symbols(genes, var) == ["p53", "BRCA1", "X"]
    assert cli._gene_symbols(["TP53", "CD74"], None) is None  # symbols already


def _start_pretrain(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    source = tmp_path / "cells.h5ad"
    adata = pbmc68k_counts(max_cells=160, seed=2)
    del adata.layers["counts"]
    adata.write_h5ad(source)
    out = tmp_path / "model"
    command = [
        sys.executable, "-c", "import sys; from sclong_scverse.cli import main; sys.exit(main())",
        "pretrain", str(source), "--out", str(out), "--epochs", "1000", "--no-progress", *extra,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    return process, out


def _wait_for_line(process: subprocess.Popen, start: str, timeout: float = 120) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if line.startswith(start):
            return seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the command ended before printing {start!r}: {seen}")


def _assert_interrupted(process, out: Path, tmp_path: Path, name: str, code: int) -> None:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, (process.returncode, stderr)
    lines = stderr.strip().split("\n")
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"sclong pretrain: interrupted by {name}")
    assert "Traceback" not in stderr and "Exception raised during training" not in stdout
    assert not (out / "model.pt").exists() and not out.exists()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize(
    ("name", "after", "delay"),
    [
        # in Lightning's fit loop, where Lightning has its own SIGTERM handler and turns
        # KeyboardInterrupt into sys.exit(1)
        ("SIGTERM", "pretraining:", 6.0),
        ("SIGINT", "pretraining:", 6.0),
        # while normalising and building the model (the default SIGTERM action would kill)
        ("SIGTERM", "normalising raw counts", 0.0),
    ],
)
def test_interrupted_pretrain_fails_with_one_line(tmp_path, name, after, delay):
    signum = getattr(signal, name)
    process, out = _start_pretrain(tmp_path)
    try:
        _wait_for_line(process, after)
        time.sleep(delay)
        assert process.poll() is None
        process.send_signal(signum)
        _assert_interrupted(process, out, tmp_path, name, 128 + signum)
    finally:
        process.kill()


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
    assert not _leftovers(tmp_path)

    # --sha256: the checkpoint's checksum, checked before anything is written
    checkpoint = parity_dir / "tiny_ckpt.pth"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    files = ["--checkpoint", checkpoint, "--hparams", parity_dir / "tiny_hparams.pkl"]
    files += ["--genes", parity_dir / "tiny_genes.txt"]
    code, _, err = _run(
        capsys, "convert-official", *files, "--out", tmp_path / "bad", "--sha256", "0" * 64
    )
    assert code == 2
    _one_line_error(err, "sha256")
    assert not (tmp_path / "bad").exists()
    code, _, err = _run(
        capsys, "convert-official", *files, "--out", tmp_path / "good", "--sha256", digest
    )
    assert code == 0, err
    assert (tmp_path / "good" / "sclong.pth").exists()


def test_demo_in_a_fresh_process_prints_no_lightning_lines(tmp_path):
    # Lightning sets its loggers to INFO when first imported (here: inside the command), so the
    # quieting must come after that import; a fresh interpreter is the user's case
    command = [
        sys.executable, "-c", "import sys; from sclong_scverse.cli import main; sys.exit(main())",
        "demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--max-cells", "32",
        "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for line in ("Tip:", "GPU available", "Seed set to", "LOCAL_RANK"):
        assert line not in output, output


@pytest.mark.parametrize(
    "argv, text",
    [
        (["pretrain", "IN", "--out", "M", "--batch-size", "0"], "--batch-size: '0'"),
        (["pretrain", "IN", "--out", "M", "--max-steps", "-5"], "--max-steps: '-5'"),
        (["pretrain", "IN", "--out", "M", "--lr", "nan"], "--lr: 'nan'"),
        (["pretrain", "IN", "--out", "M", "--epochs", "two"], "--epochs: 'two'"),
        (["embed", "IN", "--model", "M", "--min-coverage", "2"], "a number from 0 to 1"),
        (["grn", "IN", "--model", "M", "--top-k", "-1"], "--top-k: '-1'"),
        (["embed", "IN", "--model", "M", "--out", "O", "--bogus"], "unrecognized arguments"),
    ],
)
def test_impossible_option_values_are_one_line_before_any_work(capsys, tmp_path, argv, text):
    # issue 23: --batch-size 0 ended in ZeroDivisionError, --max-steps -5 in Lightning's
    # exception, both with a traceback
    argv = [str(tmp_path / a) if a in ("IN", "M") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    _one_line_error(err, text, "--help")
    assert not (tmp_path / "M").exists()
