"""Pretraining on a corpus streamed from disk: the corpus, DDP over two processes, exact resume.

Data: a corpus of three real stores with different genes, identifier types and formats, written
from the test data: CellBench (Ensembl ids, ``.h5ad``), the CellTypist PBMC sample (symbols,
``.h5ad``) and Papalexi's screen (its 299 response genes, symbols, zarr). The model's genes are
CellBench's 2,048 most detected genes (Ensembl ids): PBMC and Papalexi symbols reach them
through the NCBI tables, as a user's query would.
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
import scipy.sparse as sp
import torch

import sclong_scverse as scl
from conftest import REPO, TEST_DATA, most_detected
from sclong_scverse.data import ScLongCorpus
from sclong_scverse.model import SCLONG
from sclong_scverse.pp import ScLongInputError

WORKER = REPO / "tests" / "helpers" / "pretrain_worker.py"


@pytest.fixture(scope="module")
def stores(data_dir, tmp_path_factory):
    """Three stores (cellbench.h5ad, pbmc.h5ad, papalexi.zarr) and the model's genes file."""
    folder = tmp_path_factory.mktemp("corpus")
    cellbench = scl.datasets.cellbench(data_dir)
    genes = most_detected(cellbench).var_names
    cellbench[:240].copy().write_h5ad(folder / "cellbench.h5ad")
    pbmc_file = sorted((data_dir / "scrna" / "pbmc_celltypist_sample").glob("*.h5ad"))[0]
    ad.read_h5ad(pbmc_file).write_h5ad(folder / "pbmc.h5ad")
    papalexi = scl.datasets.papalexi2021(TEST_DATA)[:160].copy()
    papalexi.obsm.clear()
    papalexi.uns.clear()
    with warnings.catch_warnings():  # zarr v2, anndata's default today
        warnings.simplefilter("ignore", UserWarning)
        papalexi.write_zarr(folder / "papalexi.zarr")
    (folder / "genes.txt").write_text("\n".join(genes))
    paths = [folder / "cellbench.h5ad", folder / "pbmc.h5ad", folder / "papalexi.zarr"]
    return paths, list(genes)


@pytest.fixture(scope="module")
def bound(stores):
    """The corpus bound to a model on CellBench's most detected genes."""
    paths, genes = stores
    corpus = ScLongCorpus(paths, block_size=16, shuffle_window=4, seed=3)
    vocabulary = scl.genes.GeneVocabulary(genes)
    report = corpus.bind(vocabulary, np.arange(len(genes)))
    return corpus, report


def test_stores_are_aligned_across_id_types_and_formats(stores, bound):
    paths, genes = stores
    corpus, report = bound
    assert corpus.n_obs == sum(s.n_obs for s in corpus.stores)
    assert [s.values for s in corpus.stores] == ["counts", "counts", "counts"]
    assert len(report) == 3 and "ensembl ids" in report[0] and "symbol ids" in report[1]
    # Ensembl ids match exactly; symbols through the NCBI tables: most model genes are found
    n_found = [len(s.columns) for s in corpus.stores]
    assert n_found[0] == len(genes)
    assert n_found[1] > 0.8 * len(genes)  # 86% (the rest: no NCBI match)
    assert 20 < n_found[2] <= 299  # Papalexi's response genes among CellBench's top genes


def test_values_equal_pp_normalize_on_the_model_genes(stores, bound):
    paths, genes = stores
    corpus, _ = bound
    store = corpus.stores[1]  # PBMC, symbols
    cells = np.array([5, 0, 17, 3]) + corpus.offsets[1]
    values, empty = corpus.read_cells(cells, {})
    pbmc = ad.read_h5ad(paths[1])
    expected = scl.pp.normalize(pbmc, copy=True).layers["sclong"][[5, 0, 17, 3]].toarray()
    np.testing.assert_allclose(values[:, store.targets], expected[:, store.columns], rtol=1e-6)
    others = np.setdiff1d(np.arange(len(genes)), store.targets)
    assert not empty.any() and np.all(values[:, others] == 0)
    # a store holding normalised values is read as it is, and detected as such
    normalized = scl.pp.normalize(pbmc, copy=True)
    normalized.X = normalized.layers["sclong"]
    del normalized.layers["sclong"]
    path = paths[1].with_name("pbmc_normalized.h5ad")
    normalized.write_h5ad(path)
    again = ScLongCorpus([path])
    again.bind(scl.genes.GeneVocabulary(genes), np.arange(len(genes)))
    assert again.stores[0].values == "normalized"
    np.testing.assert_allclose(again.read_cells(np.array([5, 0, 17, 3]), {})[0], values)


def test_order_is_a_function_of_seed_and_epoch(bound):
    corpus, _ = bound
    n = corpus.n_obs

    def epoch_cells(epoch, rank=0, world=1, start=0, stride=1, first=0, size=8):
        batches = corpus.batch_cells(epoch, size, rank, world, start, stride, first)
        return [(index, cells) for index, cells in batches]

    one = epoch_cells(0)
    flat = np.concatenate([cells for _, cells in one])
    assert len(one) == n // 8 and len(np.unique(flat)) == len(flat)  # no cell twice
    assert np.array_equal(flat, np.concatenate([c for _, c in epoch_cells(0)]))
    assert not np.array_equal(flat, np.concatenate([c for _, c in epoch_cells(1)]))
    # cells of different stores are mixed within batches
    store_of = np.searchsorted(corpus.offsets, flat, side="right") - 1
    assert len(np.unique(store_of[:64])) > 1
    # two ranks of batch 4: their slices make up the global batches of 8 of one process
    ranks = [epoch_cells(0, rank=r, world=2, size=4) for r in (0, 1)]
    for (_index, cells), (_, a), (_, b) in zip(one, *ranks, strict=True):
        assert np.array_equal(cells, np.concatenate([a, b]))
    # three readers (workers) striding over the batches read them all, each once
    workers = [epoch_cells(0, start=w, stride=3, first=w) for w in range(3)]
    merged = sorted((i, tuple(c)) for w in workers for i, c in w)
    assert merged == [(i, tuple(c)) for i, c in one]


def test_masks_depend_on_the_cell_only(bound):
    corpus, _ = bound
    cells = np.array([3, corpus.n_obs // 2, 7, corpus.n_obs - 1])
    values, _ = corpus.read_cells(cells, {})
    chosen, replaced = corpus.masks(values, cells, 0, 0.15, 0.9)
    alone = corpus.read_cells(cells[2:3], {})[0]
    chosen_alone, replaced_alone = corpus.masks(alone, cells[2:3], 0, 0.15, 0.9)
    assert np.array_equal(chosen[2:3], chosen_alone)
    assert np.array_equal(replaced[2:3], replaced_alone)
    nonzero = (values > 0).sum(axis=1)
    assert np.array_equal(chosen.sum(axis=1), np.ceil(nonzero * 0.15).astype(int))
    assert not (chosen & (values == 0)).any() and not (replaced & ~chosen).any()
    assert 0.75 < replaced.sum() / chosen.sum() <= 1.0
    other_epoch, _ = corpus.masks(values, cells, 1, 0.15, 0.9)
    assert not np.array_equal(chosen, other_epoch)


def test_paths_folders_globs_and_bad_stores(stores, tmp_path):
    paths, genes = stores
    folder = paths[0].parent
    assert ScLongCorpus(str(folder / "*.h5ad")).paths[0].name == "cellbench.h5ad"
    assert {p.name for p in ScLongCorpus(folder).paths} >= {"papalexi.zarr", "pbmc.h5ad"}
    assert len(ScLongCorpus([paths[2]] * 10).stores) == 10  # listed ten times: read ten times
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ScLongCorpus(tmp_path / "missing.h5ad")
    with pytest.raises(FileNotFoundError, match="no .h5ad file or .zarr store matches"):
        ScLongCorpus(str(tmp_path / "*.h5ad"))
    logged = ad.read_h5ad(paths[1])
    logged.X = logged.X.log1p()  # log-normalised by another method: neither counts nor scLong's
    logged.write_h5ad(tmp_path / "logged.h5ad")
    with pytest.raises(ScLongInputError, match="neither raw counts"):
        ScLongCorpus(tmp_path / "logged.h5ad")
    with pytest.raises(KeyError, match="gene_id_key 'symbol' is not a var column"):
        ScLongCorpus(paths[1], gene_id_key="symbol")
    with pytest.raises(KeyError, match="not in this store"):
        ScLongCorpus(paths[1], layer="counts")
    corpus = ScLongCorpus([paths[2]])
    with pytest.raises(ScLongInputError, match="papalexi.zarr: none of the data's genes maps"):
        corpus.bind(scl.genes.GeneVocabulary(["ENSG00000000003"]), np.array([0]))


def _run_worker(stores, out, *extra, devices=1, timeout=600):
    paths, _ = stores
    command = [
        str(WORKER),
        *map(str, paths),
        "--genes",
        str(paths[0].parent / "genes.txt"),
        "--out",
        str(out),
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


def _losses(path: Path) -> dict[int, float]:
    table = json.loads(path.read_text())
    return dict(zip(table["step"], table["masked_mse"], strict=True))


def test_two_ddp_processes_follow_the_one_process_loss_curve(stores, tmp_path):
    """Same global batch (1 x 8 cells, 2 x 4 cells): same masked MSE at every step.

    Tolerance: 1e-3 relative. The step-wide loss normalisation makes the gradient averaged by
    DDP that of one process seeing all the cells; what remains is the faithful attention's
    key stabiliser, one maximum over the whole batch as in the original (4 cells per process
    vs 8: a slightly different epsilon term), and float32 sum order. Measured: at most 1.1e-4
    over the 12 steps (8e-5 at step 0, before any update).
    """
    one = _run_worker(stores, tmp_path / "one.json", "--batch-size", 8, "--max-steps", 12)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run_worker(
        stores, tmp_path / "two.json", "--batch-size", 4, "--max-steps", 12, devices=2
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one.json"), _losses(tmp_path / "two.json")
    assert sorted(a) == sorted(b) == list(range(12))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-3), step
    assert a[11] < a[0]  # and it learns (redrawing features at steps 5 and 10)


def test_killed_run_resumes_exactly(stores, tmp_path):
    """Killed (SIGKILL) after step 9 with checkpoints every 4 steps; resumed from step 8."""
    common = ["--batch-size", 8, "--max-steps", 16, "--every", 4, "--num-workers", 1]
    full = _run_worker(stores, tmp_path / "full.json", *common, "--checkpoint-dir", tmp_path / "a")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run_worker(
        stores,
        tmp_path / "killed.json",
        *common,
        "--checkpoint-dir",
        tmp_path / "b",
        "--kill-at-step",
        9,
    )
    assert killed.returncode == -9 and not (tmp_path / "killed.json").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "last.ckpt",
        "step00000004.ckpt",
        "step00000008.ckpt",
    ]
    resumed = _run_worker(
        stores,
        tmp_path / "resumed.json",
        *common,
        "--checkpoint-dir",
        tmp_path / "b",
        "--resume",
        "last",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _losses(tmp_path / "full.json"), _losses(tmp_path / "resumed.json")
    assert sorted(b) == list(range(8, 16))
    assert [b[step] for step in b] == [a[step] for step in b]  # exactly equal
    # a checkpoint resumed with another batch size is refused with the reason
    other = _run_worker(
        stores,
        tmp_path / "other.json",
        "--batch-size",
        4,
        "--max-steps",
        16,
        "--checkpoint-dir",
        tmp_path / "b",
        "--resume",
        "last",
    )
    assert other.returncode != 0 and "corpus batch_size 8" in other.stderr


def test_pretrain_in_process_writes_history_and_refuses_fsdp_on_cpu(stores, tmp_path):
    paths, genes = stores
    corpus = ScLongCorpus(paths, block_size=16, seed=1)
    torch.manual_seed(0)
    model = SCLONG.from_corpus(corpus, vocabulary=genes, gene_graph=False)
    assert model.adata.n_vars == len(genes) and model.adata.n_obs == 16
    losses = model.pretrain(
        corpus, max_steps=3, batch_size=4, accelerator="cpu", enable_progress_bar=False
    )
    assert list(losses["step"]) == [0, 1, 2] and np.isfinite(losses["masked_mse"]).all()
    assert list(model.history["pretrain_masked_mse_step"].index) == [0, 1, 2]
    assert model.is_trained and not model.module.training
    # the pretrained model reads AnnData as before
    cellbench = ad.read_h5ad(paths[0])[:8].copy()
    scl.pp.normalize(cellbench)
    embedding = model.get_latent_representation(
        ad.AnnData(cellbench.layers["sclong"], var=cellbench.var), progress_bar=False
    )
    assert embedding.shape[0] == 8 and np.isfinite(embedding).all()
    with pytest.raises(ValueError, match="FSDP on CUDA devices only"):
        model.pretrain(corpus, max_steps=1, accelerator="cpu", strategy="fsdp")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        model.pretrain(ScLongCorpus([paths[1]]), batch_size=10_000, accelerator="cpu")


def test_template_needs_cells_with_counts(stores, tmp_path):
    paths, genes = stores
    empty = ad.AnnData(sp.csr_matrix((4, 3), dtype=np.float32))
    empty.var_names = genes[:3]
    empty.write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(ValueError, match="no cell with counts"):
        SCLONG.from_corpus(ScLongCorpus(tmp_path / "empty.h5ad"), vocabulary=genes)


def test_command_line_pretrains_a_corpus_and_resumes(stores, tmp_path, capsys):
    from sclong_scverse import cli

    paths, _ = stores
    argv = [
        "pretrain",
        *map(str, paths[1:]),  # PBMC (symbols, h5ad) and Papalexi (zarr): vocabulary = union
        "--out",
        str(tmp_path / "model"),
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
        "--no-progress",
    ]
    assert cli.main([*argv, "--resume", "auto"]) == 0  # no checkpoint yet: a new run
    out = capsys.readouterr().out
    assert "ScLongCorpus: " in out and "papalexi.zarr: 160 cells" in out
    assert "final masked MSE (last step)" in out
    model = SCLONG.load(str(tmp_path / "model"), adata=SCLONG.from_corpus(paths[1:]).adata)
    assert model.module.config.n_genes == 32_786  # PBMC's genes; Papalexi's are among them
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    # resumed to step 4: the same checkpoint folder, a longer run
    argv[argv.index("2")] = "4"
    assert cli.main([*argv, "--overwrite", "--resume", "last"]) == 0
    assert cli.main(["pretrain", str(paths[1]), "--out", str(tmp_path / "m2"),
                     "--counts-layer", "counts", "--num-workers", "1"]) == 2  # fmt: skip
    assert "--counts-layer applies to one in-memory .h5ad" in capsys.readouterr().err
