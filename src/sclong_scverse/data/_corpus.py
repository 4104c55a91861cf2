"""A pretraining corpus streamed from many AnnData stores (``.h5ad`` and zarr) on disk.

Nothing is loaded whole: each store's ``var`` and shape are read when the corpus is opened; cells
are read a mini-batch at a time through anndata's on-disk element readers
(:func:`anndata.io.sparse_dataset` for CSR/CSC matrices, the h5py / zarr array for dense ones),
normalised as :func:`sclong_scverse.pp.normalize` does when the store holds counts, aligned to
the model's genes and densified per batch only.

Order: the cells of every store are cut into blocks of ``block_size`` consecutive rows (reads
stay contiguous on disk); the blocks of all stores are shuffled together, consecutive shuffled
blocks are grouped in windows of ``shuffle_window`` blocks, and the cells of each window are
shuffled again. The order is a function of ``(seed, epoch)`` only, computed window by window
(memory grows with the number of blocks, not cells). Global mini-batches of
``batch_size * world_size`` cells are cut from that order; rank ``r`` takes the ``r``-th slice of
each one, and data-loader worker ``w`` of a rank reads the rank's batches ``w, w + W, ...`` (the
:class:`torch.utils.data.DataLoader` yields them back in order). The masked-expression masks are
drawn per cell from ``(seed, epoch, cell)``, so a cell's mask does not depend on the batch, the
rank or the worker that reads it: one process with batch ``2B`` and two with ``B`` each see the
same cells with the same masks.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._batch_keys import CHOSEN_KEY, POSITION_KEY, REPLACED_KEY, X_KEY
from ..errors import ScLongFileError, ScLongFileNotFound, _reason, reading
from ..pp._normalize import normalize_matrix
from ..validation import ScLongInputError, ValueSummary, check_counts, summarize_values

ValueKind = Literal["auto", "counts", "normalized"]
_SAMPLE_ROWS = 64  # rows read to tell counts from normalised values
#: what to give instead of a file or folder that is not a readable AnnData store
_STORE_HINT = (
    "give an AnnData store written by anndata (adata.write_h5ad or adata.write_zarr); if it was "
    "copied or downloaded, copy it again"
)


class _MissingElement(ScLongInputError, KeyError):
    """A layer or ``var`` column a store lacks (also a :class:`KeyError`, as before)."""

    __str__ = BaseException.__str__  # the message as it is, without KeyError's quotes


@contextlib.contextmanager
def _reading_store(path: Path) -> Iterator[None]:
    """Report any failure to open or read the store ``path`` as one line that names it.

    :func:`sclong_scverse.errors.reading` for AnnData stores, and more: a path that exists but
    cannot be read (zarr's "no group found", a part of the store missing) is a
    :class:`~sclong_scverse.errors.ScLongFileError`, never "not found"; what h5py reports as
    ``RuntimeError`` and anndata's own read errors are converted too. The package's own errors
    pass through unchanged.
    """
    what = "zarr store" if path.suffix == ".zarr" else "AnnData file"
    try:  # any exception: h5py's RuntimeError, anndata's IORegistryError, zarr's ...
        with reading(path, what, _STORE_HINT, also=(Exception,)):
            yield
    except ScLongFileNotFound as error:
        if not path.exists():
            raise
        cause = error.__cause__ or error
        raise ScLongFileError(
            f"cannot read {what} {path}: {_reason(cause)}; {_STORE_HINT}"
        ) from cause


def _check_not_negative(summary: ValueSummary, where: str) -> None:
    """Refuse NaN, infinite and negative values (neither counts nor scLong-normalised)."""
    if summary.n_nan or summary.n_inf or summary.n_negative:
        raise ScLongInputError(
            f"{where} holds {summary.n_nan} NaN, {summary.n_inf} infinite and "
            f"{summary.n_negative} negative values; a corpus needs raw counts or "
            "scLong-normalised values."
        )


def expand_corpus_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The AnnData stores named by ``paths``: files, folders (their stores) and glob patterns.

    Parameters
    ----------
    paths
        One or several of: an ``.h5ad`` file, a zarr store (a folder ending in ``.zarr``), a
        folder (every ``*.h5ad`` and ``*.zarr`` directly inside it, sorted), a glob pattern
        (``"atlas/*.h5ad"``, ``"**"`` allowed). Listing a store twice reads it twice.

    Returns
    -------
    The stores, in the order given (folders and patterns expanded in sorted order).

    Raises
    ------
    ScLongFileNotFound
        A path does not exist, or a folder / pattern names no store (a
        :class:`FileNotFoundError`).
    ScLongFileError
        A path is a file that is not a store (another format, or a ``.zarr`` that is a file).
    ScLongInputError
        ``paths`` is not a path or a list of them.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not isinstance(paths, Sequence) or not paths:
        raise ScLongInputError(
            f"paths must be a path, a glob pattern or a non-empty list of them, not {paths!r}."
        )
    stores: list[Path] = []
    for entry in paths:
        if not isinstance(entry, str | os.PathLike):
            raise ScLongInputError(
                f"paths holds {entry!r} ({type(entry).__name__}); give each store as a path."
            )
        text = os.fspath(entry)
        path = Path(text)
        if any(char in text for char in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True))
            found = [p for p in found if _is_store(p)]
            if not found:
                raise ScLongFileNotFound(
                    f"no .h5ad file or .zarr store matches {text!r}; check the pattern (a "
                    "store is a file ending in .h5ad or a folder ending in .zarr)."
                )
            stores.extend(found)
        elif _is_store(path):
            stores.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_store(p))
            if not found:
                raise ScLongFileNotFound(
                    f"the folder {path} holds no .h5ad file or .zarr store (looked directly "
                    "inside it; pass a glob such as 'folder/**/*.h5ad' for subfolders)."
                )
            stores.extend(found)
        elif path.exists():
            raise ScLongFileError(_not_a_store(path))
        else:
            raise ScLongFileNotFound(
                f"{path} does not exist (expected an .h5ad file, a .zarr store, a folder of "
                "them or a glob pattern)."
            )
    return stores


def _not_a_store(path: Path) -> str:
    """Why an existing file that is not a store cannot be read, and what to give instead."""
    if path.suffix == ".zarr":
        return (
            f"{path} is a file, but a zarr store is a folder: give the .zarr folder that "
            "adata.write_zarr wrote."
        )
    return (
        f"{path} is not an AnnData store (the corpus reads .h5ad files and .zarr folders): read "
        "it with anndata or scanpy and write it with adata.write_h5ad, then give that file."
    )


def _is_store(path: Path) -> bool:
    if path.suffix == ".h5ad" and path.is_file():
        return True
    return path.suffix == ".zarr" and path.is_dir()


def _open_group(path: Path):
    """The root group of an AnnData store (h5py file or zarr group), read-only.

    Raises
    ------
    ScLongFileError
        ``path`` is an empty file, not an HDF5 file, a truncated one, a folder that is not a
        zarr store, or a store without ``var`` (not AnnData).
    """
    if path.suffix == ".zarr":
        import zarr

        if path.is_dir() and not any((path / name).is_file() for name in ("zarr.json", ".zgroup")):
            state = "it is empty" if not any(path.iterdir()) else "no zarr.json or .zgroup in it"
            raise ScLongFileError(
                f"{path} is not a zarr store ({state}): give the .zarr folder that "
                "adata.write_zarr wrote."
            )
        group = zarr.open(str(path), mode="r")
        if not hasattr(group, "keys"):
            raise ScLongFileError(
                f"{path} is a zarr array, not an AnnData store: give the .zarr folder that "
                "adata.write_zarr wrote."
            )
    else:
        import h5py

        if path.is_file() and path.stat().st_size == 0:
            raise ScLongFileError(f"{path} is empty (0 bytes), not an .h5ad file; {_STORE_HINT}.")
        try:
            group = h5py.File(path, "r")
        except OSError as error:
            text = str(error)
            if "file signature not found" in text:
                reason = "it is not an HDF5 file"
            elif "truncated file" in text:
                reason = "it is truncated (shorter than its header says)"
            else:
                raise
            message = f"{path} is not a readable .h5ad file: {reason}; {_STORE_HINT}."
            raise ScLongFileError(message) from error
    if "var" not in group:
        getattr(group, "close", lambda: None)()
        raise ScLongFileError(
            f"{path} is not an AnnData store (it has no var, the genes); {_STORE_HINT}."
        )
    return group


def _matrix_element(group, element: str, path: Path):
    """The on-disk matrix (sparse dataset or array) at ``element`` of the store ``path``."""
    from anndata.io import sparse_dataset

    if element not in group:
        where = "adata.X" if element == "X" else f"adata.{element.replace('/', '[')}]"
        layers = _layer_names(group)
        raise _MissingElement(
            f"{path}: {where} is not in this store (layers: {layers})"
            + ("; pass layer= with one of them." if layers else ".")
        )
    node = group[element]
    encoding = node.attrs.get("encoding-type", "")
    if encoding in ("csr_matrix", "csc_matrix"):
        return sparse_dataset(node)
    if hasattr(node, "shape") and len(node.shape) == 2:
        return node
    raise ScLongFileError(
        f"{path}: {element} has encoding {encoding!r}; the corpus reads CSR/CSC sparse or dense "
        "2-d matrices (write the store again with anndata)."
    )


def _layer_names(group) -> list[str]:
    return sorted(group["layers"].keys()) if "layers" in group else []


def _read_rows(matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` (sorted, unique) of an on-disk matrix as CSR float32."""
    if len(rows) == 0:
        return sp.csr_matrix((0, matrix.shape[1]), dtype=np.float32)
    start, stop = int(rows[0]), int(rows[-1]) + 1
    if stop - start == len(rows):  # contiguous: one slice
        block = matrix[start:stop]
    else:
        block = matrix[rows]
    if sp.issparse(block):
        # a damaged store's pointers or indices out of range would crash scipy's C++ code
        pointers = np.asarray(block.indptr)
        if (
            pointers[0] != 0
            or (np.diff(pointers) < 0).any()
            or pointers[-1] != len(block.indices)
            or len(block.indices) != len(block.data)
        ):
            raise ValueError("its sparse matrix is damaged (indptr out of order or out of range)")
        try:
            block.check_format(full_check=True)
        except ValueError as error:
            raise ValueError(f"its sparse matrix is damaged ({error})") from error
        return sp.csr_matrix(block, dtype=np.float32)
    return sp.csr_matrix(np.asarray(block, dtype=np.float32))


@dataclass(eq=False)
class CorpusStore:
    """One AnnData store of a corpus, as opened (shape, genes, value kind; no cells read).

    Attributes
    ----------
    path
        The ``.h5ad`` file or ``.zarr`` store.
    element
        The matrix read: ``"X"`` or ``"layers/<name>"``.
    n_obs, n_vars
        Its shape.
    gene_ids
        Its gene ids (``var_names`` or the ``gene_id_key`` column).
    values
        ``"counts"`` (normalised per batch as :func:`~sclong_scverse.pp.normalize` does) or
        ``"normalized"`` (read as they are).
    """

    path: Path
    element: str
    n_obs: int
    n_vars: int
    gene_ids: pd.Index
    values: str
    columns: np.ndarray = field(default=None, repr=False)  # store columns read
    targets: np.ndarray = field(default=None, repr=False)  # their model var index
    alignment_summary: str = ""


class ScLongCorpus:
    """Many AnnData stores on disk as one pretraining corpus for :meth:`SCLONG.pretrain`.

    Opening reads each store's ``var`` and shape only. The stores may have different genes and
    identifier types (symbols, Ensembl ids): when bound to a model (:meth:`bind`, done by
    :meth:`~sclong_scverse.model.SCLONG.pretrain`) each store's genes are aligned to the model's
    vocabulary as :meth:`GeneVocabulary.align <sclong_scverse.genes.GeneVocabulary.align>`
    aligns queries (same id, version-less Ensembl, case-insensitive symbol, NCBI tables, aliases)
    and the coverage of every store is reported.

    Parameters
    ----------
    paths
        Stores, folders of stores or glob patterns (:func:`expand_corpus_paths`).
    layer
        Read ``layers[layer]`` instead of ``X`` (in every store).
    gene_id_key
        ``var`` column holding the gene ids (``None``: ``var_names``); one name for every store
        or a dict store path -> column (missing stores: ``var_names``).
    values
        ``"counts"``: the stores hold raw counts, normalised per batch exactly as
        :func:`~sclong_scverse.pp.normalize` (``target_sum``, ``max_value``) normalises them;
        ``"normalized"``: they already hold scLong-normalised values; ``"auto"`` (default):
        decided per store from its first rows (integers: counts; each cell's maximum equal to
        ``max_value``: normalised; anything else is refused, naming the store).
    allow_non_integer
        Accept non-integer counts (``values="counts"`` only, e.g. ambient-corrected counts).
    block_size
        Consecutive rows of a store read together (the unit of the shuffle across stores).
    shuffle_window
        Shuffled blocks whose cells are shuffled again together (``1``: cells of a batch come
        from one block at a time, fastest reads, least mixing).
    seed
        Seed of the order and of the masks.
    target_sum, max_value
        The normalisation (scLong: ``1e4`` and ``10``).
    empty_cells
        Cells without counts: ``"skip"`` (default, they carry no signal and are read as zeros
        that enter no loss) or ``"error"``.

    Raises
    ------
    ScLongFileNotFound
        A path does not exist, or a folder / pattern names no store (a
        :class:`FileNotFoundError`).
    ScLongFileError
        A path exists but is not a readable AnnData store: another format, empty, truncated,
        corrupted, a folder that is not a zarr store (one line naming it; a :class:`ValueError`).
    ScLongInputError
        The matrix (``layer``) or the ``gene_id_key`` column is not in a store (also a
        :class:`KeyError`); a store's gene ids are duplicated (named, with a few of the names),
        do not match its matrix, or its values are neither counts nor scLong-normalised; an
        argument is out of range.

    Examples
    --------
    >>> corpus = scl.data.ScLongCorpus("atlas/*.h5ad")  # doctest: +SKIP
    >>> model.pretrain(corpus, max_epochs=1, batch_size=8)  # doctest: +SKIP
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        layer: str | None = None,
        gene_id_key: str | dict[str, str] | None = None,
        values: ValueKind = "auto",
        allow_non_integer: bool = False,
        block_size: int = 64,
        shuffle_window: int = 8,
        seed: int = 0,
        target_sum: float = 1e4,
        max_value: float = 10.0,
        empty_cells: Literal["skip", "error"] = "skip",
    ):
        if values not in ("auto", "counts", "normalized"):
            raise ScLongInputError(
                f"values must be 'auto', 'counts' or 'normalized', not {values!r}."
            )
        if empty_cells not in ("skip", "error"):
            raise ScLongInputError(f"empty_cells must be 'skip' or 'error', not {empty_cells!r}.")
        if int(block_size) < 1 or int(shuffle_window) < 1:
            raise ScLongInputError(
                f"block_size and shuffle_window must be at least 1, not {block_size} and "
                f"{shuffle_window}."
            )
        self.paths = expand_corpus_paths(paths)
        self.layer = layer
        self.gene_id_key = gene_id_key
        self.allow_non_integer = bool(allow_non_integer)
        self.block_size = int(block_size)
        self.shuffle_window = int(shuffle_window)
        self.seed = int(seed)
        self.target_sum = float(target_sum)
        self.max_value = float(max_value)
        self.empty_cells = empty_cells
        opened: dict[Path, CorpusStore] = {}
        self.stores: list[CorpusStore] = []
        for path in self.paths:  # a store listed twice is opened once
            if path not in opened:
                opened[path] = self._open(path, values)
            self.stores.append(opened[path])
        # each entry's first entry with the same store (a store listed twice is read as one)
        first: dict[int, int] = {}
        self._distinct = [first.setdefault(id(s), i) for i, s in enumerate(self.stores)]
        sizes = np.array([store.n_obs for store in self.stores], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._blocks = self._block_table()
        self._bound = False

    # ------------------------------------------------------------------ opening
    def _key_for(self, path: Path) -> str | None:
        if isinstance(self.gene_id_key, dict):
            return self.gene_id_key.get(str(path), self.gene_id_key.get(path.name))
        return self.gene_id_key

    def _open(self, path: Path, values: ValueKind) -> CorpusStore:
        element = "X" if self.layer is None else f"layers/{self.layer}"
        with _reading_store(path):
            group = _open_group(path)
            try:
                return self._read_store(group, path, element, values)
            finally:
                close = getattr(group, "close", None)
                if close is not None:
                    close()

    def _read_store(self, group, path: Path, element: str, values: ValueKind) -> CorpusStore:
        """The :class:`CorpusStore` of an open store: shape, genes, value kind."""
        from anndata.io import read_elem

        matrix = _matrix_element(group, element, path)
        n_obs, n_vars = (int(n) for n in matrix.shape)
        var = read_elem(group["var"])
        if not isinstance(var, pd.DataFrame):
            raise ScLongFileError(
                f"{path}: var is a {type(var).__name__}, not a table of genes; {_STORE_HINT}."
            )
        key = self._key_for(path)
        if key is None:
            ids = pd.Index(var.index.astype(str))
        elif key in var.columns:
            ids = pd.Index(var[key].astype(str))
        else:
            raise _MissingElement(
                f"{path}: gene_id_key {key!r} is not a var column (columns: "
                f"{list(var.columns)}; None = var_names)."
            )
        if len(ids) != n_vars:
            raise ScLongFileError(
                f"{path}: var has {len(ids)} genes but {element} {n_vars}; {_STORE_HINT}."
            )
        if ids.has_duplicates:
            counts = ids.value_counts()
            duplicated = counts[counts > 1]
            examples = ", ".join(f"{g!r} x{n}" for g, n in duplicated.head(5).items())
            where = "var_names" if key is None else f"var[{key!r}]"
            raise ScLongInputError(
                f"{path}: {where} has {len(duplicated)} duplicated gene names (e.g. "
                f"{examples}); only one of each would be read (setup_anndata refuses them "
                "too). Make them unique in the store, e.g. sum the duplicated genes or use "
                "unique ids (Ensembl) with gene_id_key=, and write it again."
            )
        sample = _read_rows(matrix, np.arange(min(n_obs, _SAMPLE_ROWS)))
        kind = self._value_kind(path, element, sample, values)
        return CorpusStore(path, element, n_obs, n_vars, ids, kind)

    def _value_kind(self, path: Path, element: str, sample: sp.csr_matrix, values: str) -> str:
        """``"counts"`` or ``"normalized"`` for a store, from its first rows (see ``values``)."""
        where = f"{path} ({element})"
        if values == "counts":
            check_counts(sample, where, allow_non_integer=self.allow_non_integer)
            return "counts"
        summary = summarize_values(sample)
        _check_not_negative(summary, where)
        if values == "normalized":
            return "normalized"  # the maximum is checked batch by batch
        if summary.n_values == 0 or summary.n_non_integer == 0:
            return "counts"  # integers (or only empty cells so far: nothing tells)
        top = np.asarray(sample.max(axis=1).todense()).ravel()
        nonempty = top > 0
        if nonempty.any() and np.allclose(top[nonempty], self.max_value, rtol=1e-4):
            return "normalized"
        if self.allow_non_integer:
            check_counts(sample, where, allow_non_integer=True, summary=summary)
            return "counts"
        raise ScLongInputError(
            f"{where} holds neither raw counts (non-integer values) nor scLong-normalised values "
            f"(each cell's largest value is {self.max_value:g} after scl.pp.normalize; here "
            f"{np.round(top[:3], 3).tolist()} ...). Point layer= at the counts, or pass "
            "allow_non_integer=True for corrected counts."
        )

    def _block_table(self) -> np.ndarray:
        """``(n_blocks, 2)`` global start and stop of each block (blocks never span stores)."""
        blocks = []
        for index, store in enumerate(self.stores):
            starts = np.arange(0, store.n_obs, self.block_size, dtype=np.int64)
            stops = np.minimum(starts + self.block_size, store.n_obs)
            blocks.append(np.stack([starts, stops], axis=1) + self.offsets[index])
        return np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)

    # ------------------------------------------------------------------ binding to a model
    def bind(self, vocabulary, var_positions: np.ndarray, min_coverage: float = 0.0) -> list[str]:
        """Align every store to a model's genes; return one coverage line per distinct store.

        Parameters
        ----------
        vocabulary
            The model's :class:`~sclong_scverse.genes.GeneVocabulary`.
        var_positions
            ``(n_vars,)`` vocabulary position of each of the model's registered genes (``-1``:
            not in the vocabulary); the corpus yields values in this order.
        min_coverage
            Refuse a store when fewer than this fraction of its genes map.

        Returns
        -------
        The coverage report, one line per store.

        Raises
        ------
        ScLongInputError
            A store has no gene of the model, or fewer than ``min_coverage`` mapped.
        """
        var_positions = np.asarray(var_positions, dtype=np.int64)
        inverse = np.full(len(vocabulary) + 1, -1, dtype=np.int64)
        registered = var_positions >= 0
        inverse[var_positions[registered]] = np.flatnonzero(registered)
        self.n_vars = len(var_positions)
        self.maskable = registered
        report = []
        done: set[int] = set()
        for store in self.stores:
            if id(store) in done:
                continue
            done.add(id(store))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # reported below instead
                try:
                    alignment = vocabulary.align(store.gene_ids, min_coverage=0.0)
                except ValueError as error:
                    raise ScLongInputError(f"{store.path}: {error}") from None
            positions = np.asarray(alignment.var_positions, dtype=np.int64)
            target = np.where(positions >= 0, inverse[np.maximum(positions, 0)], -1)
            used = target >= 0
            store.columns = np.flatnonzero(used)
            store.targets = target[used]
            coverage = used.mean()
            store.alignment_summary = (
                f"{store.path.name}: {store.n_obs:,} cells, {int(used.sum()):,} of "
                f"{store.n_vars:,} genes ({alignment.id_type} ids) on the model's genes "
                f"({coverage:.1%}), values: {store.values}"
            )
            if not used.any():
                raise ScLongInputError(
                    f"{store.path}: none of its genes is among the model's genes (genes like "
                    f"{list(store.gene_ids[:3])}). If the ids are in a var column, pass "
                    "gene_id_key=."
                )
            if coverage < min_coverage:
                raise ScLongInputError(
                    f"{store.path}: only {coverage:.1%} of its genes map to the model "
                    f"(min_coverage={min_coverage:.0%}).\n" + alignment.summary()
                )
            report.append(store.alignment_summary)
        self._bound = True
        return report

    # ------------------------------------------------------------------ order
    @property
    def n_obs(self) -> int:
        """Cells in the corpus (a store listed twice counts twice)."""
        return int(self.offsets[-1])

    def n_batches(self, batch_size: int, world_size: int = 1) -> int:
        """Mini-batches per epoch and rank (the incomplete last global batch is dropped)."""
        return self.n_obs // (int(batch_size) * int(world_size))

    def _block_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(epoch), 0])
        return rng.permutation(len(self._blocks))

    def epoch_order(self, epoch: int) -> Iterator[np.ndarray]:
        """The global cell ids of an epoch, one shuffled window at a time."""
        order = self._block_order(epoch)
        for window, start in enumerate(range(0, len(order), self.shuffle_window)):
            blocks = self._blocks[order[start : start + self.shuffle_window]]
            cells = np.concatenate([np.arange(a, b) for a, b in blocks])
            rng = np.random.default_rng([self.seed, int(epoch), 1, window])
            yield cells[rng.permutation(len(cells))]

    def batch_cells(
        self,
        epoch: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        stride: int = 1,
        first: int = 0,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(batch index, global cell ids)`` of a rank's batches, in order.

        The batches ``first, first + stride, ...`` that are at least ``start``; the windows of
        the epoch order are computed as they are reached.
        """
        global_size = int(batch_size) * int(world_size)
        n_batches = self.n_batches(batch_size, world_size)
        buffer = np.zeros(0, dtype=np.int64)
        consumed = 0  # global positions before buffer[0]
        windows = self.epoch_order(epoch)
        index = first
        while index < start:
            index += stride
        while index < n_batches:
            lo = index * global_size + rank * batch_size
            hi = lo + batch_size
            while consumed + len(buffer) < hi:
                buffer = np.concatenate([buffer, next(windows)])
            if lo > consumed:  # drop what no later batch of this reader needs
                buffer = buffer[lo - consumed :]
                consumed = lo
            yield index, buffer[lo - consumed : hi - consumed]
            index += stride

    # ------------------------------------------------------------------ reading
    def read_cells(self, cells: np.ndarray, open_stores: dict) -> tuple[np.ndarray, np.ndarray]:
        """Values of global cells on the model's genes: ``(len(cells), n_vars)`` float32.

        Also returns a bool array telling the empty cells (no counts, ``empty_cells="skip"``).
        ``open_stores`` caches open store handles (one per store path and reader process).
        """
        if not self._bound:
            raise RuntimeError("bind the corpus to a model first (SCLONG.pretrain does).")
        out = np.zeros((len(cells), self.n_vars), dtype=np.float32)
        empty = np.zeros(len(cells), dtype=bool)
        which = np.searchsorted(self.offsets, cells, side="right") - 1
        rows = cells - self.offsets[which]
        # one read per distinct store, also when a store is listed more than once
        distinct = np.array([self._distinct[index] for index in which], dtype=np.int64)
        for index in np.unique(distinct):
            store = self.stores[index]
            here = np.flatnonzero(distinct == index)
            order = np.argsort(rows[here], kind="stable")
            unique_rows, inverse = np.unique(rows[here][order], return_inverse=True)
            with _reading_store(store.path):
                if store.path not in open_stores:
                    group = _open_group(store.path)
                    try:
                        matrix = _matrix_element(group, store.element, store.path)
                    except BaseException:
                        getattr(group, "close", lambda: None)()
                        raise
                    open_stores[store.path] = (group, matrix)
                block = _read_rows(open_stores[store.path][1], unique_rows)
            block = self._checked(block, store, unique_rows)
            sums = np.asarray(block.sum(axis=1)).ravel()
            if store.values == "counts":
                block = normalize_matrix(
                    block, target_sum=self.target_sum, max_value=self.max_value, sums=sums
                )
            dense = block[:, store.columns].toarray()
            out_rows = here[order]
            out[out_rows[:, None], store.targets[None, :]] = dense[inverse]
            empty[out_rows] = (sums == 0)[inverse]
        return out, empty

    def _checked(self, block: sp.csr_matrix, store: CorpusStore, rows: np.ndarray):
        """Refuse a batch's rows that are not what the store was detected to hold."""
        where = f"{store.path} rows {rows[:5].tolist()}..."
        if store.values == "counts":
            check_counts(block, where, allow_non_integer=self.allow_non_integer)
        else:
            summary = summarize_values(block)
            _check_not_negative(summary, where)
            if summary.n_values and summary.max > self.max_value * (1 + 1e-4):
                raise ScLongInputError(
                    f"{where}: values up to {summary.max:.4g}, above max_value="
                    f"{self.max_value:g}: not scLong-normalised. Pass values='counts' with the "
                    "counts."
                )
        if self.empty_cells == "error":
            sums = np.asarray(block.sum(axis=1)).ravel()
            if (sums == 0).any():
                raise ScLongInputError(
                    f"{store.path}: rows {rows[sums == 0][:5].tolist()} have no counts; drop "
                    "them or pass empty_cells='skip'."
                )
        return block

    def masks(
        self,
        values: np.ndarray,
        cells: np.ndarray,
        epoch: int,
        mask_fraction: float,
        replace_fraction: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell masked-expression masks drawn from ``(seed, epoch, cell)``.

        As :func:`~sclong_scverse.module.choose_masked_positions`: ``ceil(mask_fraction * k)``
        of the cell's ``k`` non-zero values (on genes in the vocabulary) are chosen, each
        replaced with probability ``replace_fraction``.
        """
        chosen = np.zeros(values.shape, dtype=bool)
        replaced = np.zeros(values.shape, dtype=bool)
        maskable = self.maskable
        for row, cell in enumerate(cells):
            nonzero = np.flatnonzero((values[row] > 0) & maskable)
            n_choose = math.ceil(len(nonzero) * mask_fraction)
            if n_choose == 0:
                continue
            rng = np.random.default_rng([self.seed, int(epoch), 2, int(cell)])
            picked = rng.choice(nonzero, n_choose, replace=False)
            chosen[row, picked] = True
            replaced[row, picked[rng.random(n_choose) < replace_fraction]] = True
        return chosen, replaced

    def default_vocabulary(self):
        """A vocabulary for a new model: the union of the stores' genes, in order of appearance.

        Genes of the stores whose id type (symbols or Ensembl ids) is that of the first store
        are united; stores of the other type are aligned to them (through the NCBI tables) when
        the model reads them, as any query is.

        Returns
        -------
        A :class:`~sclong_scverse.genes.GeneVocabulary`.
        """
        from ..genes import GeneVocabulary, detect_id_type

        kind = detect_id_type(list(self.stores[0].gene_ids[:1000]))
        genes: dict[str, None] = {}
        seen: set[int] = set()
        for store in self.stores:
            if id(store) in seen:
                continue
            seen.add(id(store))
            if detect_id_type(list(store.gene_ids[:1000])) == kind:
                genes.update(dict.fromkeys(store.gene_ids))
        return GeneVocabulary(list(genes))

    def first_cells(self, n_cells: int) -> np.ndarray:
        """Values of the first ``n_cells`` non-empty cells of the corpus (bound), in order."""
        out, open_stores, start = [], {}, 0
        try:
            while sum(len(part) for part in out) < n_cells and start < self.n_obs:
                cells = np.arange(start, min(start + 4 * n_cells, self.n_obs))
                values, empty = self.read_cells(cells, open_stores)
                out.append(values[~empty])
                start = int(cells[-1]) + 1
        finally:
            for group, _ in open_stores.values():
                getattr(group, "close", lambda: None)()
        return np.concatenate(out)[:n_cells] if out else np.zeros((0, self.n_vars), np.float32)

    def summary(self) -> str:
        """One line per distinct store: cells, genes, values (and coverage once bound)."""
        lines, seen = [], set()
        for store in self.stores:
            if id(store) in seen:
                continue
            seen.add(id(store))
            lines.append(
                store.alignment_summary
                or f"{store.path.name}: {store.n_obs:,} cells x {store.n_vars:,} genes, "
                f"values: {store.values}"
            )
        repeats = len(self.stores) - len(seen)
        head = f"ScLongCorpus: {self.n_obs:,} cells in {len(self.stores)} stores"
        if repeats:
            head += f" ({repeats} listed more than once)"
        return "\n".join([head, *("  " + line for line in lines)])

    def __repr__(self) -> str:
        return self.summary()


class CorpusBatches(torch.utils.data.IterableDataset):
    """The mini-batches of one rank and epoch of a bound :class:`ScLongCorpus`.

    Each item is a whole mini-batch (use ``DataLoader(batch_size=None)``): ``"X"`` the values
    ``(batch, n_vars)`` float32, the masks (:data:`CHOSEN_KEY`, :data:`REPLACED_KEY`) and the
    batch's position (:data:`POSITION_KEY`: epoch, batch index). Worker ``w`` of ``W`` reads
    batches ``w, w + W, ...``; the loader yields them back in order.
    """

    def __init__(
        self,
        corpus: ScLongCorpus,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        mask_fraction: float = 0.15,
        replace_fraction: float = 0.9,
    ):
        super().__init__()
        self.corpus = corpus
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.mask_fraction = float(mask_fraction)
        self.replace_fraction = float(replace_fraction)
        self.epoch = 0
        self.start = 0  # first batch of the epoch (resuming mid-epoch)

    def __len__(self) -> int:
        """Batches of a whole epoch (also when resuming within one: Lightning counts them)."""
        return self.corpus.n_batches(self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        open_stores: dict = {}
        # batch `start + k` goes to worker k % n_workers: the DataLoader's round robin
        first = self.start + worker
        try:
            for index, cells in self.corpus.batch_cells(
                self.epoch,
                self.batch_size,
                self.rank,
                self.world_size,
                start=first,
                stride=n_workers,
                first=first,
            ):
                values, _ = self.corpus.read_cells(cells, open_stores)
                chosen, replaced = self.corpus.masks(
                    values, cells, self.epoch, self.mask_fraction, self.replace_fraction
                )
                yield {
                    X_KEY: torch.from_numpy(values),
                    CHOSEN_KEY: torch.from_numpy(chosen),
                    REPLACED_KEY: torch.from_numpy(replaced),
                    POSITION_KEY: torch.tensor([self.epoch, index], dtype=torch.long),
                }
        finally:
            for group, _ in open_stores.values():
                close = getattr(group, "close", None)
                if close is not None:
                    close()
