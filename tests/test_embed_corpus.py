"""Embedding a corpus of stores: in order, the same over 1 and 2 processes, resumed after a kill.

Data: a corpus of three real stores with different genes, identifier types and formats (as in
``tests/test_pretrain.py``): CellBench (Ensembl ids, ``.h5ad``, raw counts), the CellTypist PBMC
sample (symbols, ``.h5ad``) and Papalexi's screen (symbols, zarr). The model is the tiny preset
on CellBench's 2,048 most detected genes, seeded (the same weights in every process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import sclong_scverse as scl
from conftest import REPO, TEST_DATA, most_detected
from sclong_scverse.data import ScLongCorpus
from sclong_scverse.model import SCLONG
from sclong_scverse.module._module import DEFAULT_POOLING

WORKER = REPO / "tests" / "helpers" / "embed_worker.py"
BATCH, BLOCK = 8, 32


@pytest.fixture(scope="module")
def stores(data_dir, tmp_path_factory):
    """cellbench.h5ad (96 cells), pbmc.h5ad (20), papalexi.zarr (40) and the model's genes."""
    folder = tmp_path_factory.mktemp("embed_corpus")
    cellbench = scl.datasets.cellbench(data_dir)
    genes = most_detected(cellbench).var_names
    cellbench[:96].copy().write_h5ad(folder / "cellbench.h5ad")
    pbmc_file = sorted((data_dir / "scrna" / "pbmc_celltypist_sample").glob("*.h5ad"))[0]
    ad.read_h5ad(pbmc_file)[:20].copy().write_h5ad(folder / "pbmc.h5ad")
    papalexi = scl.datasets.papalexi2021(TEST_DATA)[:40].copy()
    papalexi.obsm.clear()
    papalexi.uns.clear()
    with warnings.catch_warnings():  # zarr v2, anndata's default today
        warnings.simplefilter("ignore", UserWarning)
        papalexi.write_zarr(folder / "papalexi.zarr")
    (folder / "genes.txt").write_text("\n".join(genes))
    paths = [folder / "cellbench.h5ad", folder / "pbmc.h5ad", folder / "papalexi.zarr"]
    return paths, list(genes)


def _model(corpus, genes):
    torch.manual_seed(0)  # as the worker: the same weights
    return SCLONG.from_corpus(corpus, config="tiny", vocabulary=genes, gene_graph=False)


def _run_worker(stores, out, report, *extra, devices=1, timeout=600):
    paths, _ = stores
    command = [
        str(WORKER),
        *map(str, paths),
        "--genes",
        str(paths[0].parent / "genes.txt"),
        "--out",
        str(out),
        "--report",
        str(report),
        "--batch-size",
        str(BATCH),
        "--block-size",
        str(BLOCK),
        *map(str, extra),
    ]
    if devices > 1:
        command = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={devices}",
            *command,
            "--devices",
            str(devices),
            "--strategy",
            "ddp",
        ]
    python_path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    return subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=timeout
    )


def _reports(prefix: Path) -> list[dict]:
    files = sorted(prefix.parent.glob(f"{prefix.name}.rank*.json"))
    return [json.loads(path.read_text()) for path in files]


def _embeddings(out: Path) -> dict[str, np.ndarray]:
    return {
        name: ad.read_zarr(out / name).obsm["X_sclong"]
        for name in ("cellbench.zarr", "pbmc.zarr", "papalexi.zarr")
    }


@pytest.fixture(scope="module")
def one_process(stores, tmp_path_factory):
    """The corpus embedded by one process: (output folder, its report)."""
    folder = tmp_path_factory.mktemp("one_process")
    run = _run_worker(stores, folder / "out", folder / "report")
    assert run.returncode == 0, run.stderr[-3000:]
    return folder / "out", _reports(folder / "report")


def test_one_process_embeds_every_cell_in_store_order(stores, one_process):
    paths, genes = stores
    out, (report,) = one_process
    assert report["forwarded"] == 96 + 20 + 40
    assert report["summary"]["n_embedded"] == [96, 20, 40]
    assert report["summary"]["n_done_before"] == [0, 0, 0]
    for path, name in zip(paths, ("cellbench.zarr", "pbmc.zarr", "papalexi.zarr"), strict=True):
        written = ad.read_zarr(out / name)
        source = ad.read_h5ad(path) if path.suffix == ".h5ad" else ad.read_zarr(path)
        assert list(written.obs_names) == list(source.obs_names)
        embedding = written.obsm["X_sclong"]
        # the default pooling: one value per gene of the model (docs/pooling.md)
        assert embedding.shape == (source.n_obs, len(genes)) and np.isfinite(embedding).all()
        assert written.uns["X_sclong"]["params"]["pooling"] == DEFAULT_POOLING == "feature_sum"
    assert json.loads((out / "run.json").read_text())["complete"] is True
    # the embeddings are get_latent_representation's on the store normalised in memory, in
    # batches of the same cells (a block of 32 cut in batches of 8)
    cellbench = ad.read_h5ad(paths[0])
    scl.pp.normalize(cellbench)
    model = _model(ScLongCorpus(paths), genes)
    query = ad.AnnData(cellbench.layers["sclong"], obs=cellbench.obs[[]], var=cellbench.var[[]])
    expected = model.get_latent_representation(query, batch_size=BATCH, progress_bar=False)
    np.testing.assert_allclose(_embeddings(out)["cellbench.zarr"], expected, atol=1e-5, rtol=0)


def test_two_processes_write_what_one_process_writes(stores, one_process, tmp_path):
    out, _ = one_process
    run = _run_worker(stores, tmp_path / "out", tmp_path / "report", devices=2)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = _reports(tmp_path / "report")
    assert len(reports) == 2
    # 7 blocks (3 + 1 + 2 of 32 cells or fewer) shared round robin: 4 and 3 blocks
    forwarded = sorted(report["forwarded"] for report in reports)
    assert sum(forwarded) == 156 and forwarded[0] > 0
    one, two = _embeddings(out), _embeddings(tmp_path / "out")
    for name in one:
        # the same batches of the same cells in either case: equal to float32 round-off
        np.testing.assert_allclose(two[name], one[name], atol=1e-6, rtol=0, err_msg=name)
    logs = sorted(p.name for p in (tmp_path / "out" / "progress").iterdir())
    assert logs == ["rank0.log", "rank1.log"]


def test_killed_run_resumes_without_recomputing_written_blocks(stores, one_process, tmp_path):
    """Killed (SIGKILL) after its 3rd block; resumed over 2 processes, the 4 others only."""
    out, _ = one_process
    killed = _run_worker(stores, tmp_path / "out", tmp_path / "killed", "--kill-after-blocks", 3)
    assert killed.returncode == -9 and not _reports(tmp_path / "killed")
    done = (tmp_path / "out" / "progress" / "rank0.log").read_text().split()
    assert done == ["0", "1", "2"]  # the CellBench blocks: 96 cells written
    assert "complete" not in json.loads((tmp_path / "out" / "run.json").read_text())
    resumed = _run_worker(stores, tmp_path / "out", tmp_path / "resumed", devices=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reports = _reports(tmp_path / "resumed")
    # nothing written before the kill is computed again: 20 + 40 cells, not 156
    assert sum(report["forwarded"] for report in reports) == 60
    assert reports[0]["summary"]["n_done_before"] == [96, 0, 0]
    assert reports[0]["summary"]["n_embedded"] == [0, 20, 40]
    one, again = _embeddings(out), _embeddings(tmp_path / "out")
    for name in one:
        np.testing.assert_allclose(again[name], one[name], atol=1e-6, rtol=0, err_msg=name)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["complete"] is True


def test_resume_checks_and_refusals_in_process(stores, tmp_path):
    paths, genes = stores
    corpus = ScLongCorpus(paths[1:])  # PBMC (20 cells) and Papalexi (40)
    model = _model(corpus, genes)
    kwargs = {"batch_size": 8, "block_size": 16, "accelerator": "cpu", "devices": 1}
    kwargs["enable_progress_bar"] = False
    first = model.embed_corpus(corpus, tmp_path / "out", pooling="max", **kwargs)
    assert list(first["n_embedded"]) == [20, 40]
    # a complete run: nothing to do, nothing forwarded
    again = model.embed_corpus(corpus, tmp_path / "out", pooling="max", **kwargs)
    assert list(again["n_embedded"]) == [0, 0] and list(again["n_done_before"]) == [20, 40]
    with pytest.raises(ValueError, match="other settings.*pooling"):
        model.embed_corpus(corpus, tmp_path / "out", pooling="mean", **kwargs)
    with pytest.raises(ValueError, match="pass resume=True to continue it"):
        model.embed_corpus(corpus, tmp_path / "out", pooling="max", resume=False, **kwargs)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no embed_corpus run"):
        model.embed_corpus(corpus, tmp_path / "other", **kwargs)
    with pytest.raises(ValueError, match="pooling must be one of"):
        model.embed_corpus(corpus, tmp_path / "x", pooling="median", **kwargs)
    # mean pooling into a new folder: a store listed twice is embedded once
    table = model.embed_corpus([paths[1], paths[1]], tmp_path / "mean", pooling="mean", **kwargs)
    assert len(table) == 1 and table["n_embedded"][0] == 20
    written = ad.read_zarr(tmp_path / "mean" / "pbmc.zarr").obsm["X_sclong"]
    maximum = ad.read_zarr(tmp_path / "out" / "pbmc.zarr").obsm["X_sclong"]
    assert written.shape == maximum.shape and np.isfinite(written).all()
    assert (written <= maximum + 1e-6).all()  # the mean over genes never exceeds the max


def test_bf16_held_model_embeds_a_corpus_as_its_queries_do(stores, tmp_path):
    """A model held in bfloat16 embeds a corpus in its queries' default precision ("auto")."""
    paths, genes = stores
    corpus = ScLongCorpus(paths[:1])  # CellBench, 96 cells
    _model(corpus, genes).save(tmp_path / "model")
    cellbench = ad.read_h5ad(paths[0])
    scl.pp.normalize(cellbench)
    query = ad.AnnData(cellbench.layers["sclong"], obs=cellbench.obs[[]], var=cellbench.var[[]])
    held = SCLONG.load(tmp_path / "model", adata=query, dtype=torch.bfloat16)
    kwargs = {"batch_size": 8, "block_size": 32, "accelerator": "cpu", "devices": 1}
    held.embed_corpus(corpus, tmp_path / "out", pooling="mean", enable_progress_bar=False, **kwargs)
    written = ad.read_zarr(tmp_path / "out" / "cellbench.zarr").obsm["X_sclong"]
    expected = held.get_latent_representation(query, batch_size=8, pooling="mean")
    np.testing.assert_allclose(written, expected, atol=1e-5, rtol=0)
    assert held.weights_dtype == torch.bfloat16  # still held in bfloat16


def test_command_line_embeds_a_corpus(stores, one_process, tmp_path, capsys):
    from sclong_scverse import cli

    paths, genes = stores
    out, _ = one_process
    model = _model(ScLongCorpus(paths), genes)
    model.save(tmp_path / "model")
    argv = ["embed", *map(str, paths), "--model", str(tmp_path / "model")]
    argv += ["--out", str(tmp_path / "atlas"), "--batch-size", str(BATCH)]
    argv += ["--block-size", str(BLOCK), "--accelerator", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "cellbench.zarr: 96 cells" in printed and "papalexi.zarr: 40 cells" in printed
    one, mine = _embeddings(out), _embeddings(tmp_path / "atlas")
    for name in one:
        np.testing.assert_allclose(mine[name], one[name], atol=1e-6, rtol=0, err_msg=name)
    # a glob of the stores in the same folder, resumed: nothing left to do
    assert cli.main([*argv[:1], str(paths[0].parent / "*.h5ad"), str(paths[2]), *argv[4:]]) == 0
    assert "0 cells embedded" in capsys.readouterr().out
