"""A corpus in store order, for embedding: blocks of consecutive cells spread over processes.

Pretraining reads a corpus shuffled (:class:`~sclong_scverse.data.ScLongCorpus`); embedding reads
every cell once, in order. Each distinct store is cut into blocks of ``block_size`` consecutive
rows (the last block of a store may be shorter; blocks never span stores), numbered through the
stores in order. A block is the unit of work and of resumption: the processes share the blocks
still to do round robin (process ``r`` of ``W`` takes the ``r``-th, ``r + W``-th, ...), read each
in mini-batches of ``batch_size`` consecutive rows, and record a block once its embeddings are
written. Mini-batches are cut inside blocks, so that a cell's batch-mates (which the faithful
attention's key stabiliser depends on) are the same whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ScLongInputError
from ._corpus import ScLongCorpus, _open_group, _reading_store

#: keys of an embedding mini-batch (besides the values under ``"X"``)
BLOCK_KEY = "block"  # (block id, store index, first row, end row of the batch, last in block)


def distinct_stores(corpus: ScLongCorpus) -> list[int]:
    """Indices (in ``corpus.stores``) of the first listing of each distinct store, in order."""
    return sorted(set(corpus._distinct))


def embedding_blocks(corpus: ScLongCorpus, block_size: int) -> np.ndarray:
    """``(n_blocks, 4)`` int64: store index, first row, end row, block id (store order).

    Parameters
    ----------
    corpus
        The corpus (a store listed twice is embedded once).
    block_size
        Rows per block.
    """
    if int(block_size) < 1:
        raise ScLongInputError(f"block_size must be at least 1, got {block_size}.")
    rows = []
    for index in distinct_stores(corpus):
        n_obs = corpus.stores[index].n_obs
        for start in range(0, n_obs, int(block_size)):
            rows.append((index, start, min(start + int(block_size), n_obs)))
    table = np.zeros((len(rows), 4), dtype=np.int64)
    if rows:
        table[:, :3] = np.asarray(rows, dtype=np.int64)
        table[:, 3] = np.arange(len(rows))
    return table


def rank_blocks(blocks: np.ndarray, done: set[int], rank: int, world_size: int) -> np.ndarray:
    """The blocks process ``rank`` of ``world_size`` embeds: those not ``done``, round robin."""
    remaining = blocks[~np.isin(blocks[:, 3], np.fromiter(done, dtype=np.int64, count=len(done)))]
    return remaining[int(rank) :: int(world_size)]


class CorpusEmbedBatches(torch.utils.data.IterableDataset):
    """The mini-batches of a process's blocks of a bound corpus, in order.

    Each item is a whole mini-batch (use ``DataLoader(batch_size=None)``): ``"X"`` the values
    ``(batch, n_vars)`` float32 on the model's genes (normalised as the corpus says) and
    :data:`BLOCK_KEY` ``[block id, store index, first row, end row, last]`` (``last`` = 1 for the
    block's final batch). Worker ``w`` of ``W`` reads batches ``w, w + W, ...``; the data loader
    yields them back in order.

    Parameters
    ----------
    corpus
        The corpus, bound to the model (:meth:`ScLongCorpus.bind`).
    blocks
        The process's blocks (rows of :func:`embedding_blocks`).
    batch_size
        Cells per mini-batch (a block's last batch may be smaller).
    """

    def __init__(self, corpus: ScLongCorpus, blocks: np.ndarray, batch_size: int):
        super().__init__()
        if int(batch_size) < 1:
            raise ScLongInputError(f"batch_size must be at least 1, got {batch_size}.")
        self.corpus = corpus
        self.batch_size = int(batch_size)
        self.batches = self._cut(np.asarray(blocks, dtype=np.int64).reshape(-1, 4))

    def _cut(self, blocks: np.ndarray) -> list[tuple[int, int, int, int, int]]:
        batches = []
        for store, start, stop, block in blocks.tolist():
            for first in range(start, stop, self.batch_size):
                end = min(first + self.batch_size, stop)
                batches.append((block, store, first, end, int(end == stop)))
        return batches

    def __len__(self) -> int:
        """Mini-batches of this process."""
        return len(self.batches)

    def cells(self) -> int:
        """Cells of this process."""
        return sum(end - first for _, _, first, end, _ in self.batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        open_stores: dict = {}
        offsets = self.corpus.offsets
        try:
            for batch in self.batches[worker::n_workers]:
                _, store, first, end, _ = batch
                cells = np.arange(first, end, dtype=np.int64) + offsets[store]
                values, _ = self.corpus.read_cells(cells, open_stores)
                yield {
                    "X": torch.from_numpy(values),
                    BLOCK_KEY: torch.tensor(batch, dtype=torch.long),
                }
        finally:
            for group, _ in open_stores.values():
                close = getattr(group, "close", None)
                if close is not None:
                    close()


def store_obs_names(path, element: str = "obs") -> Sequence[str]:
    """The ``obs_names`` of an on-disk AnnData store (its index only, not the columns)."""
    from anndata.io import read_elem

    path = Path(path)
    with _reading_store(path):
        group = _open_group(path)
        try:
            obs = group[element]
            index = obs.attrs.get("_index")
            if index is not None and index in obs:
                names = read_elem(obs[index])
            else:
                names = read_elem(obs).index
            # object first: zarr v3 stores give numpy's StringDType, which casts to object only
            return np.asarray(names).astype(object).astype(str)
        finally:
            close = getattr(group, "close", None)
            if close is not None:
                close()
