"""Corpus loader: memory stays flat when the corpus grows, and read speed, per configuration.

Writes a corpus of three real stores (CellBench counts as ``.h5ad`` with Ensembl ids, the
CellTypist PBMC sample as ``.h5ad`` with symbols, Papalexi's screen as zarr with symbols; from
``scl.datasets.shared_data_dir()``), binds it to a model's genes (CellBench's 2,048 most
detected, or the whole union vocabulary with ``--genes all``) and reads mini-batches of 8 cells
with their masks, in a fresh process per configuration:

- the corpus listed once, and the same stores listed ten times (10x the cells);
- 0 and 2 reader worker processes.

Reported: memory taken by opening and binding the corpus; the peak memory added while reading
in the main process; the largest peak resident memory of a worker (a forked worker counts the
pages it touches, its own and those it shares with the main process); the first batch's
latency; and cells/s after it. The loader's memory must not grow with the corpus: the order
is built one shuffle window at a time and no store is loaded whole.

Run: ``python benchmarks/bench_corpus.py [--batches 300] [--genes top|all]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import in_fresh_process, peak_mb, reset_peak, rss_mb


def write_stores(folder: Path) -> tuple[list[Path], list[str]]:
    """The three real stores of the benchmark corpus and the model's genes."""
    import anndata as ad
    import numpy as np

    import sclong_scverse as scl

    cellbench = scl.datasets.cellbench()
    detected = np.asarray((cellbench.X > 0).sum(axis=0)).ravel()
    genes = list(cellbench.var_names[np.sort(np.argsort(-detected, kind="stable")[:2048])])
    cellbench.write_h5ad(folder / "cellbench.h5ad")
    data = scl.datasets.shared_data_dir()
    pbmc = sorted((data / "scrna" / "pbmc_celltypist_sample").glob("*.h5ad"))[0]
    ad.read_h5ad(pbmc).write_h5ad(folder / "pbmc.h5ad")
    papalexi = scl.datasets.papalexi2021()
    papalexi.obsm.clear()
    papalexi.uns.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        papalexi.write_zarr(folder / "papalexi.zarr")
    return [folder / "cellbench.h5ad", folder / "pbmc.h5ad", folder / "papalexi.zarr"], genes


def _children(pid: int) -> list[int]:
    """Process ids of the children of ``pid`` (Linux /proc)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            children.extend(int(child) for child in handle.read().split())
    return children


def _read(queue, paths, genes, repeat, n_workers, n_batches, batch_size):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch

    from sclong_scverse.data import CorpusBatches, ScLongCorpus
    from sclong_scverse.genes import GeneVocabulary

    torch.set_num_threads(1)
    before = rss_mb()
    corpus = ScLongCorpus(paths * repeat, seed=0)
    vocabulary = corpus.default_vocabulary() if genes is None else GeneVocabulary(genes)
    corpus.bind(vocabulary, np.arange(len(vocabulary)))
    opened = rss_mb()
    reset_peak()
    dataset = CorpusBatches(corpus, batch_size)
    # workers forked, as from a training script (this benchmark's process itself is spawned)
    context = "fork" if n_workers else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=n_workers, multiprocessing_context=context
    )
    worker_peaks = []
    start = time.perf_counter()
    cells = 0
    for index, batch in enumerate(loader):
        if index == 0:
            first = time.perf_counter() - start
            start = time.perf_counter()  # the rate excludes the first batch (worker start-up)
        else:
            cells += int(batch["X"].shape[0])
        if index + 1 >= n_batches:
            # the workers stop when the loop is left: their peaks are read now
            worker_peaks = [_peak_of(child) for child in _children(os.getpid())]
            break
    seconds = time.perf_counter() - start
    queue.put(
        {
            "stores": len(corpus.stores),
            "cells in corpus": corpus.n_obs,
            "genes": len(vocabulary),
            "workers": n_workers,
            "corpus opened (MB)": opened - before,
            "reading, main (MB)": peak_mb() - opened,
            "worker peak RSS (MB)": max(worker_peaks, default=float("nan")),
            "first batch (s)": first,
            "cells/s": cells / seconds,
        }
    )


def _peak_of(pid: int) -> float:
    """Peak resident memory (MB) of process ``pid`` (a forked worker: shared pages count)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="batches read per config")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--genes", choices=("top", "all"), default="top", help="model genes: 2,048 or the union"
    )
    args = parser.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        paths, genes = write_stores(Path(tmp))
        genes = None if args.genes == "all" else genes
        rows = []
        for repeat in (1, 10):
            for workers in (0, 2):
                result = in_fresh_process(
                    _read, paths, genes, repeat, workers, args.batches, args.batch_size
                )
                rows.append({"corpus": f"{repeat}x", **result})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
