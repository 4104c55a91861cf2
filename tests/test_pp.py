"""scl.pp.normalize and the input validators, on real data.

Data: CellBench Drop-seq raw UMI counts (Tian et al. 2019, MIT) and scanpy's pbmc68k_reduced
(BSD-3), read from the shared data folder (``SCLONG_SHARED_DATA``); tests skip when it is absent.
"""

from __future__ import annotations

import dataclasses
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sclong_scverse.pp import (
    ScLongInputError,
    check_counts,
    check_log_normalized,
    check_nonempty_cells,
    check_not_view,
    check_unique_var_names,
    normalize,
    summarize_values,
)


@pytest.fixture(scope="module")
def cellbench(data_dir) -> ad.AnnData:
    """CellBench Drop-seq: 225 cells x 15,127 genes (Ensembl ids), raw UMI counts, CSR."""
    folder = data_dir / "scrna" / "cellbench"
    if not (folder / "sc_dropseq.count.csv.gz").exists():
        pytest.skip(f"CellBench counts not found in {folder}")
    counts = pd.read_csv(folder / "sc_dropseq.count.csv.gz", index_col=0)  # genes x cells
    meta = pd.read_csv(folder / "sc_dropseq.metadata.csv.gz", index_col=0)
    adata = ad.AnnData(
        sp.csr_matrix(counts.to_numpy(dtype=np.float32).T),
        obs=meta.loc[counts.columns],
        var=pd.DataFrame(index=counts.index.astype(str)),
    )
    return adata


@pytest.fixture(scope="module")
def pbmc68k(data_dir) -> ad.AnnData:
    path = data_dir / "scrna" / "pbmc68k_reduced" / "10x_pbmc68k_reduced.h5ad"
    if not path.exists():
        pytest.skip(f"pbmc68k_reduced not found at {path}")
    with warnings.catch_warnings():  # written by an old anndata: format warnings on read
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


def _hand_normalize(counts: np.ndarray, target_sum=1e4, max_value=10.0) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    logged = np.log1p(counts / counts.sum(axis=1, keepdims=True) * target_sum)
    return logged / logged.max(axis=1, keepdims=True) * max_value


# ---------------------------------------------------------------- normalize on real counts


def test_normalize_cellbench_sparse(cellbench):
    adata = cellbench.copy()
    X_before = adata.X.copy()
    assert adata.shape == (225, 15127)
    assert normalize(adata) is None
    out = adata.layers["sclong"]
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    assert out.nnz == X_before.nnz  # no zero became non-zero, no count was dropped
    dense = out.toarray()
    # every cell's maximum is exactly 10
    assert np.all(dense.max(axis=1) == np.float32(10.0))
    np.testing.assert_allclose(dense, _hand_normalize(X_before.toarray()), rtol=1e-6, atol=1e-6)
    # adata.X untouched, parameters recorded
    assert (adata.X != X_before).nnz == 0
    assert adata.uns["sclong"]["params"] == {
        "layer": None,
        "target_sum": 1e4,
        "max_value": 10.0,
        "empty_cells": "error",
        "n_empty_cells": 0,
        "output": "layers/sclong",
    }
    # the normalised layer is valid model input
    check_log_normalized(out, "adata.layers['sclong']")


def test_normalize_dense_layer_and_options(cellbench):
    counts = cellbench.X[:60].toarray().astype(np.int64)  # integer dense counts in a layer
    adata = ad.AnnData(
        X=np.zeros(counts.shape, dtype=np.float32),
        obs=cellbench.obs.iloc[:60],
        var=cellbench.var,
        layers={"counts": counts},
    )
    normalize(adata, layer="counts", key_added="scl_in", target_sum=1e6, max_value=5.0)
    out = adata.layers["scl_in"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.all(out.max(axis=1) == np.float32(5.0))
    np.testing.assert_allclose(out, _hand_normalize(counts, 1e6, 5.0), rtol=1e-6, atol=1e-6)
    assert not adata.X.any()  # X untouched
    assert adata.uns["scl_in"]["params"]["layer"] == "counts"
    # sparse and dense inputs agree
    sparse = ad.AnnData(sp.csc_matrix(counts))
    normalize(sparse, target_sum=1e6, max_value=5.0)
    np.testing.assert_array_equal(sparse.layers["sclong"].toarray(), out)
    with pytest.raises(KeyError, match="available"):
        normalize(adata, layer="raw_counts")


def test_normalize_copy_and_inplace_x(cellbench, tmp_path):
    original = cellbench.copy()
    result = normalize(cellbench, copy=True)
    assert isinstance(result, ad.AnnData) and result is not cellbench
    assert "sclong" in result.layers and "sclong" in result.uns
    assert "sclong" not in cellbench.layers and "sclong" not in cellbench.uns
    assert (cellbench.X != original.X).nnz == 0
    # the parameter record survives an h5ad round trip (layer=None included)
    result.write_h5ad(tmp_path / "n.h5ad")
    assert ad.read_h5ad(tmp_path / "n.h5ad").uns["sclong"]["params"]["layer"] is None

    inplace = cellbench.copy()
    normalize(inplace, inplace_X=True)
    assert "sclong" not in inplace.layers
    assert inplace.uns["sclong"]["params"]["output"] == "X"
    assert (inplace.X != result.layers["sclong"]).nnz == 0

    view = cellbench[:10]
    with pytest.raises(ScLongInputError, match=r"view.*\.copy\(\)"):
        normalize(view)
    assert normalize(view, copy=True).layers["sclong"].shape == (10, 15127)


def test_empty_cells(cellbench):
    adata = cellbench[:20].copy()
    keep = np.ones(20, dtype=np.float32)
    keep[[3, 7]] = 0  # two cells without counts
    adata.X = sp.csr_matrix(sp.diags(keep) @ adata.X)
    adata.X.eliminate_zeros()
    with pytest.raises(
        ScLongInputError, match=r"2 of 20 cells.*filter_cells\(adata, min_counts=1\)"
    ):
        normalize(adata)
    assert "sclong" not in adata.layers
    normalize(adata, empty_cells="zero")
    out = adata.layers["sclong"].toarray()
    assert not out[[3, 7]].any()
    keep = np.setdiff1d(np.arange(20), [3, 7])
    assert np.all(out[keep].max(axis=1) == np.float32(10.0))
    assert adata.uns["sclong"]["params"]["n_empty_cells"] == 2
    with pytest.raises(ScLongInputError, match="2 of 20 cells"):
        check_nonempty_cells(adata.X, obs_names=adata.obs_names)
    sums = check_nonempty_cells(cellbench.X)
    np.testing.assert_allclose(sums, np.asarray(cellbench.X.sum(axis=1)).ravel())


# ---------------------------------------------------------------- bad input, real cases


def test_pbmc68k_scaled_x_is_refused(pbmc68k):
    assert pbmc68k.X.min() < 0  # sc.pp.scale output
    with pytest.raises(ScLongInputError, match=r"negative values.*scaled.*sc\.pp\.scale"):
        normalize(pbmc68k, copy=True)
    with pytest.raises(ScLongInputError, match=r"negative values.*scl\.pp\.normalize"):
        check_log_normalized(pbmc68k.X)


def test_pbmc68k_raw_is_log_normalised(pbmc68k):
    raw = pbmc68k.raw.to_adata()
    with pytest.raises(ScLongInputError, match=r"log-normalised already.*layer='counts'"):
        normalize(raw)
    check_log_normalized(raw.X)  # fine as model input (non-negative, non-integer, max 6.5)
    # the hinted way out: expm1 of normalize_total + log1p output, as non-integer counts
    recovered = ad.AnnData(raw.X.expm1())
    normalize(recovered, allow_non_integer=True)
    assert np.all(recovered.layers["sclong"].max(axis=1).toarray() == np.float32(10.0))
    with pytest.warns(UserWarning, match="log-normalised"):
        check_counts(raw.X, allow_non_integer=True)


def test_counts_where_log_values_are_needed(cellbench):
    with pytest.raises(ScLongInputError, match=r"looks like raw counts.*scl\.pp\.normalize"):
        check_log_normalized(cellbench.X, "adata.layers['counts']")
    summary = check_counts(cellbench.X)
    assert summary.n_non_integer == 0 and summary.min == 0 and summary.max > 50


def test_nan_inf_and_non_integer_counts(cellbench):
    X = cellbench.X[:30].copy()
    for bad in (np.nan, np.inf):
        Y = X.copy()
        Y.data[5] = bad
        for M in (Y, Y.toarray()):
            with pytest.raises(ScLongInputError, match="NaN.*infinite"):
                check_counts(M)
            with pytest.raises(ScLongInputError, match="NaN.*infinite"):
                check_log_normalized(M)
    # ambient-corrected counts: non-integer with count-like range
    corrected = X.copy()
    corrected.data = corrected.data * np.float32(0.93)
    with pytest.raises(ScLongInputError, match="allow_non_integer=True"):
        normalize(ad.AnnData(corrected))
    adata = ad.AnnData(corrected)
    normalize(adata, allow_non_integer=True)
    np.testing.assert_allclose(
        adata.layers["sclong"].toarray(), _hand_normalize(corrected.toarray()), atol=1e-6
    )


def test_views_and_duplicated_genes(cellbench):
    check_not_view(cellbench)
    with pytest.raises(ScLongInputError, match="view"):
        check_not_view(cellbench[:5])
    check_unique_var_names(cellbench)
    adata = cellbench[:, :6].copy()
    adata.var_names = ["A", "B", "A", "C", "C", "C"]
    with pytest.raises(ScLongInputError, match=r"2 duplicated.*'C' x3.*var_names_make_unique"):
        check_unique_var_names(adata)


# ---------------------------------------------------------------- scale and storage formats


def test_million_cells_sparse_is_never_densified():
    # 1,000,000 x 30,000 (2.4e11 dense values): only works if nothing is densified
    rng = np.random.default_rng(0)
    n_cells, n_genes = 1_000_000, 30_000
    indptr = np.arange(0, 3 * n_cells + 1, 3)
    indices = rng.integers(0, n_genes, 3 * n_cells).astype(np.int32)
    data = rng.integers(1, 20, 3 * n_cells).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    X.sum_duplicates()
    summary = summarize_values(X)
    assert summary.n_non_integer == 0 and summary.min == 0 and summary.max == X.data.max()
    adata = ad.AnnData(X)
    normalize(adata)
    out = adata.layers["sclong"]
    assert out.shape == (n_cells, n_genes) and out.nnz == X.nnz
    assert np.all(out.max(axis=1).toarray() == np.float32(10.0))


def test_dense_blocks_and_backed_data(cellbench, tmp_path):
    from sclong_scverse.validation import _values as _checks  # where the block size lives

    sparse_summary = summarize_values(cellbench.X)
    dense = cellbench.X.toarray()
    old = _checks._BLOCK_VALUES
    _checks._BLOCK_VALUES = 50_000  # force many row blocks
    try:
        dense_summary = summarize_values(dense)
        assert dense_summary.n_values == dense.size  # dense: every value; sparse: stored ones
        assert dense_summary == dataclasses.replace(sparse_summary, n_values=dense.size)
        np.testing.assert_allclose(
            _checks.row_sums(dense), np.asarray(cellbench.X.sum(axis=1)).ravel()
        )
        # backed h5ad: the matrix is read block by block from disk
        for name, X in (("dense", dense), ("sparse", cellbench.X)):
            path = tmp_path / f"{name}.h5ad"
            ad.AnnData(X).write_h5ad(path)
            backed = ad.read_h5ad(path, backed="r")
            assert summarize_values(backed.X).max == sparse_summary.max
            backed.file.close()
    finally:
        _checks._BLOCK_VALUES = old


def test_normalize_parameters_backed_data_and_overwrites(cellbench, tmp_path, caplog):
    # found by the property tests: infinite parameters gave NaN layers, backed data crashed
    adata = cellbench[:20].copy()
    for bad in (np.inf, np.nan, 0.0, -1.0, "10"):
        with pytest.raises(ValueError, match="max_value must be a positive finite number"):
            normalize(adata, max_value=bad)
        with pytest.raises(ValueError, match="target_sum must be a positive finite number"):
            normalize(adata, target_sum=bad)
    assert "sclong" not in adata.layers
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    with pytest.raises(ScLongInputError, match=r"backed.*inplace_X=True.*to_memory"):
        normalize(backed, inplace_X=True)
    result = normalize(backed, copy=True)  # an in-memory copy
    assert not result.isbacked and result.layers["sclong"].shape == (20, 15127)
    normalize(backed)  # the layer is kept in memory, the file is untouched
    assert (backed.layers["sclong"] != result.layers["sclong"]).nnz == 0
    backed.file.close()
    # an existing layer is replaced, and the replacement logged
    with caplog.at_level("WARNING", logger="sclong_scverse.pp._normalize"):
        normalize(adata)
        assert not caplog.records
        normalize(adata)
    assert "replacing the existing adata.layers['sclong']" in caplog.records[0].getMessage()
