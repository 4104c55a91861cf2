"""Property-based tests (hypothesis) over the public API.

Every property draws its input from real data where it exists -- slices of scanpy's bundled
pbmc68k_reduced counts (``scl.datasets.pbmc68k_counts``, offline; BSD-3) -- with hypothesis
choosing the cells and genes (0 and 1 included), the storage (dense / CSR / CSC, int and float
dtypes, views, backed h5ad), perturbations (NaN, inf, negative values, non-integer values, empty
cells and genes), gene ids (duplicated, mixed types) and categorical keys (missing values,
unused categories). Each call either works or raises this package's own error (an exception
raised inside ``sclong_scverse`` with a message, :class:`~sclong_scverse.pp.ScLongInputError`
for bad data); bad values are always refused; and the input AnnData is unchanged except for the
keys the function documents.

Profiles (environment variable ``SCLONG_HYPOTHESIS_PROFILE``):

- ``ci`` (default): derandomized (the same examples on every run), few examples per property;
  about 2 minutes on 2 busy cores.
- ``long``: random, 10-20 times more examples (about 30-60 minutes)::

      SCLONG_HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import sclong_scverse as scl
from conftest import HYPOTHESIS_PROFILE
from sclong_scverse.go import read_gaf, read_gene2go, read_gmt
from sclong_scverse.model import SCLONG
from sclong_scverse.model._anndata import MIN_QUERY_COVERAGE
from sclong_scverse.module._module import DEFAULT_POOLING, POOLINGS, pooled_dim
from sclong_scverse.pp import ScLongInputError
from sclong_scverse.validation import to_memory

PROFILE = HYPOTHESIS_PROFILE  # registered and loaded in conftest.py

#: examples per property: (ci, long)
EXAMPLES = {
    "normalize": (60, 600),
    "validate": (60, 600),
    "setup": (40, 400),
    "construct": (6, 100),
    "embed": (20, 250),
    "grn": (20, 250),
    "train": (3, 40),
    "evaluate_grn": (60, 600),
    "gmt": (40, 400),
    "gaf": (40, 400),
    "gene2go": (30, 300),
}


def examples(name: str) -> int:
    return EXAMPLES[name][0 if PROFILE == "ci" else 1]


for _name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)

# ---------------------------------------------------------------- real data, drawn from


@functools.lru_cache(maxsize=1)
def _pbmc() -> ad.AnnData:
    """pbmc68k_reduced counts on the 200 most detected genes (700 cells, dense float64)."""
    adata = scl.datasets.pbmc68k_counts()
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected)[:200])].copy()
    adata.X = adata.X.toarray().astype(np.float64)
    return adata


def _subset(data, n_all: int, n: int, label: str) -> np.ndarray:
    """``n`` distinct positions out of ``n_all``, in random order (hypothesis draws the seed)."""
    seed = data.draw(st.integers(0, 2**16 - 1), label=f"{label} seed")
    return np.random.default_rng(seed).choice(n_all, size=n, replace=False)


def draw_cells_genes(data, *, min_cells=0, max_cells=10, min_genes=0, max_genes=14):
    base = _pbmc()
    n_cells = data.draw(st.integers(min_cells, max_cells), label="n_cells")
    n_genes = data.draw(st.integers(min_genes, max_genes), label="n_genes")
    return _subset(data, base.n_obs, n_cells, "cells"), _subset(data, base.n_vars, n_genes, "genes")


PERTURBATIONS = ["nan", "inf", "negative", "fraction", "empty_cell", "empty_gene", "scale"]


def perturb(data, X: np.ndarray, choices=PERTURBATIONS, max_size=2) -> np.ndarray:
    X = np.array(X, dtype=np.float64)
    ops = data.draw(st.lists(st.sampled_from(choices), max_size=max_size), label="perturb")
    for op in ops:
        if X.size == 0:
            break
        i = data.draw(st.integers(0, X.shape[0] - 1), label="row")
        j = data.draw(st.integers(0, X.shape[1] - 1), label="col")
        if op == "nan":
            X[i, j] = np.nan
        elif op == "inf":
            X[i, j] = np.inf
        elif op == "negative":
            X[i, j] = -data.draw(st.sampled_from([0.5, 1.0, 3.0]))
        elif op == "fraction":
            X[i, j] += 0.37
        elif op == "empty_cell":
            X[i] = 0
        elif op == "empty_gene":
            X[:, j] = 0
        elif op == "scale":
            X *= 2.5
    return X


def as_storage(data, X: np.ndarray, *, allow_int=True):
    """``X`` as dense / CSR / CSC / csr_array, int or float (ints only for whole numbers)."""
    whole = bool(np.isfinite(X).all() and (X == np.round(X)).all())
    dtypes = ["float32", "float64"] + (["int32", "int64"] if whole and allow_int else [])
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    fmt = data.draw(st.sampled_from(["dense", "csr", "csc", "csr_array"]), label="format")
    X = X.astype(dtype)
    if fmt == "dense":
        return X
    if fmt == "csr_array":
        return sp.csr_array(X)
    return sp.csr_matrix(X) if fmt == "csr" else sp.csc_matrix(X)


@contextlib.contextmanager
def container(data, adata: ad.AnnData, *, kinds=("plain", "view", "backed")) -> Iterator:
    """``adata`` itself, a view of a larger AnnData, or a backed AnnData read from h5ad."""
    kind = data.draw(st.sampled_from(kinds), label="container")
    if kind == "plain":
        yield adata, kind
    elif kind == "view":
        extra = adata[:1].copy() if adata.n_obs else adata.copy()
        extra.obs_names = [f"extra_{i}" for i in range(extra.n_obs)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicated var_names
            big = ad.AnnData(
                X=_vstack(adata.X, extra.X),
                obs=pd.concat([adata.obs, extra.obs]),
                var=adata.var.copy(),
                layers={k: _vstack(adata.layers[k], extra.layers[k]) for k in adata.layers},
                uns=copy.deepcopy(dict(adata.uns)),
            )
        yield big[: adata.n_obs], kind
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "adata.h5ad"
            adata = adata.copy()
            for frame in (adata.obs, adata.var):  # h5ad stores mixed-type columns as text
                for column in frame.select_dtypes("object").columns:
                    frame[column] = frame[column].astype(str)
            adata.write_h5ad(path)
            backed = ad.read_h5ad(path, backed="r")
            try:
                yield backed, kind
            finally:
                backed.file.close()


def _vstack(a, b):
    if sp.issparse(a):
        return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)]).asformat(a.format)
    return np.vstack([np.asarray(a), np.asarray(b)])


# ---------------------------------------------------------------- snapshots and outcomes


def _matrix(M) -> Any:
    if M is None:
        return None
    if not (isinstance(M, np.ndarray) or sp.issparse(M)):
        M = to_memory(M)
    if sp.issparse(M):
        return ("sparse", M.format, str(M.dtype), M.toarray())
    return ("dense", str(np.asarray(M).dtype), np.array(M, copy=True))


def _same(a, b, what: str) -> None:
    if isinstance(a, tuple) and isinstance(b, tuple):
        assert a[:-1] == b[:-1], f"{what} changed storage: {a[:-1]} -> {b[:-1]}"
        np.testing.assert_array_equal(a[-1], b[-1], err_msg=f"{what} changed")
    else:
        assert (a is None) == (b is None), f"{what} changed"


def _same_uns(a, b, what: str) -> None:
    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict), what
        assert set(a) == set(b), f"{what}: keys {set(a)} -> {set(b)}"
        for key in a:
            _same_uns(a[key], b[key], f"{what}[{key!r}]")
    elif isinstance(a, np.ndarray | list | tuple):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), what
    else:
        assert a == b, f"{what}: {a!r} -> {b!r}"


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "X": _matrix(adata.X),
        "layers": {k: _matrix(v) for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "varm": {k: np.array(v, copy=True) for k, v in adata.varm.items()},
        "varp": {k: _matrix(v) for k, v in adata.varp.items()},
        "uns": copy.deepcopy(dict(adata.uns)),
    }


def assert_unchanged(adata: ad.AnnData, before: dict, **allowed) -> None:
    """Only the keys named in ``allowed`` (``layers=[...]``, ``X=True``, ...) may differ."""
    after = snapshot(adata)
    if not allowed.get("X"):
        _same(after["X"], before["X"], "X")
    for slot in ("layers", "varp"):
        keys = (set(after[slot]) | set(before[slot])) - set(allowed.get(slot, ()))
        for key in keys:
            assert key in after[slot] and key in before[slot], f"{slot}[{key!r}] added/removed"
            _same(after[slot][key], before[slot][key], f"{slot}[{key!r}]")
    for slot in ("obsm", "varm"):
        keys = (set(after[slot]) | set(before[slot])) - set(allowed.get(slot, ()))
        for key in keys:
            assert key in after[slot] and key in before[slot], f"{slot}[{key!r}] added/removed"
            np.testing.assert_array_equal(after[slot][key], before[slot][key])
    for slot in ("obs", "var"):
        drop = list(allowed.get(slot, ()))
        pd.testing.assert_frame_equal(
            after[slot].drop(columns=drop, errors="ignore"),
            before[slot].drop(columns=drop, errors="ignore"),
        )
    skip = set(allowed.get("uns", ()))
    _same_uns(
        {k: v for k, v in after["uns"].items() if k not in skip},
        {k: v for k, v in before["uns"].items() if k not in skip},
        "uns",
    )


def own_error(error: BaseException) -> None:
    """The error was raised by this package, with a message (not numpy / scvi internals)."""
    if isinstance(error, ScLongInputError):
        assert str(error)
        return
    assert isinstance(error, ValueError | KeyError | TypeError | FileNotFoundError), repr(error)
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = frame.tb_frame.f_code.co_filename if frame is not None else "?"
    assert f"sclong_scverse{os.sep}" in where, (
        f"{type(error).__name__} raised outside the package ({where}): {error}"
    )
    assert str(error), "an error without a message"


def outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, error)`` after checking it is one of the package's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return True, call()
    except Exception as error:  # every error is inspected
        own_error(error)
        return False, error


def bad_values(X) -> dict[str, bool]:
    dense = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    finite = np.isfinite(dense)
    values = dense[finite]
    return {
        "nonfinite": bool((~finite).any()),
        "negative": bool((values < 0).any()),
        "non_integer": bool((values != np.round(values)).any()),
        "empty_cell": bool(dense.shape[0] and (np.nan_to_num(dense).sum(axis=1) == 0).any()),
    }


# ---------------------------------------------------------------- pp.normalize


@settings(max_examples=examples("normalize"))
@given(data=st.data())
def test_normalize(data):
    base = _pbmc()
    cells, genes = draw_cells_genes(data)
    X = perturb(data, base.X[np.ix_(cells, genes)])
    stored = as_storage(data, X)
    layer = data.draw(st.sampled_from([None, "counts"]), label="layer")
    adata = ad.AnnData(
        X=stored if layer is None else np.zeros(stored.shape, dtype=np.float32),
        obs=base.obs.iloc[cells][["bulk_labels"]].copy(),
        var=pd.DataFrame(index=base.var_names[genes]),
        layers={} if layer is None else {"counts": stored},
    )
    options = dict(
        layer=layer,
        key_added=data.draw(st.sampled_from(["sclong", "counts", "other"]), label="key_added"),
        target_sum=data.draw(st.sampled_from([1e4, 1e6, 1.0, 0.0, -1.0, np.inf, np.nan])),
        max_value=data.draw(st.sampled_from([10.0, 5.0, 0.5, 0.0, np.inf, np.nan])),
        copy=data.draw(st.booleans(), label="copy"),
        inplace_X=data.draw(st.booleans(), label="inplace_X"),
        empty_cells=data.draw(st.sampled_from(["error", "zero"]), label="empty_cells"),
        allow_non_integer=data.draw(st.booleans(), label="allow_non_integer"),
    )
    bad = bad_values(X)
    with container(data, adata) as (target, kind):
        before = snapshot(target)
        ok, result = outcome(lambda: scl.pp.normalize(target, **options))
        valid_options = all(
            np.isfinite(options[name]) and options[name] > 0 for name in ("target_sum", "max_value")
        )
        must_fail = (
            bad["nonfinite"]
            or bad["negative"]
            or (bad["non_integer"] and not options["allow_non_integer"])
            or (bad["empty_cell"] and options["empty_cells"] == "error")
            or (kind == "view" and not options["copy"])
            or (kind == "backed" and options["inplace_X"] and not options["copy"])
            or not valid_options
        )
        assert ok != must_fail, f"{'accepted' if ok else 'refused'}: {bad}, {kind}, {options}"
        if not ok:
            assert_unchanged(target, before)
            return
        out_adata = result if options["copy"] else target
        key = options["key_added"]
        if options["copy"]:
            assert_unchanged(target, before)
        elif options["inplace_X"]:
            assert_unchanged(target, before, X=True, uns=[key])
        else:
            assert_unchanged(target, before, layers=[key], uns=[key])
        out = out_adata.X if options["inplace_X"] else out_adata.layers[key]
        assert out.dtype == np.float32 and out.shape == X.shape
        assert sp.issparse(out) == sp.issparse(stored)
        out = out.toarray() if sp.issparse(out) else np.asarray(out)
        sums = X.sum(axis=1)
        expressed = sums > 0
        assert not out[~expressed].any()
        if expressed.any():
            logged = np.log1p(X[expressed] / sums[expressed, None] * options["target_sum"])
            expected = logged / logged.max(axis=1, keepdims=True) * options["max_value"]
            np.testing.assert_allclose(out[expressed], expected, rtol=1e-5, atol=1e-5)
            assert (out[expressed].max(axis=1) == np.float32(options["max_value"])).all()
            assert ((out > 0) == (X > 0)).all()
        assert out_adata.uns[key]["params"]["max_value"] == options["max_value"]


# ---------------------------------------------------------------- the validator


def draw_model_values(data, X_counts: np.ndarray) -> tuple[np.ndarray, str]:
    """Values shaped like model input: scl.pp.normalize output, or something else."""
    kind = data.draw(
        st.sampled_from(["normalized", "normalized", "counts", "log1p", "halved", "flat"]),
        label="values",
    )
    X = np.asarray(X_counts, dtype=np.float64)
    sums = X.sum(axis=1, keepdims=True)
    if kind == "counts":
        return X, kind
    if kind == "flat":
        return (X > 0) * 10.0, kind
    logged = np.log1p(np.divide(X * 1e4, sums, out=np.zeros_like(X), where=sums > 0))
    if kind == "log1p":
        return logged, kind
    top = logged.max(axis=1, keepdims=True) if X.shape[1] else np.ones((X.shape[0], 1))
    normalized = np.divide(logged * 10.0, top, out=np.zeros_like(X), where=top > 0)
    return (normalized * 0.5 if kind == "halved" else normalized), kind


@settings(max_examples=examples("validate"))
@given(data=st.data())
def test_validate_model_input(data):
    cells, genes = draw_cells_genes(data)
    X, kind = draw_model_values(data, _pbmc().X[np.ix_(cells, genes)])
    X = perturb(data, X)
    stored = as_storage(data, X)
    check = data.draw(st.booleans(), label="check_normalization")
    ok, _ = outcome(
        lambda: scl.pp.validate_model_input(
            stored, obs_names=_pbmc().obs_names[cells], check_normalization=check
        )
    )
    bad = bad_values(X)
    nothing = X.size == 0 or not np.nan_to_num(X).any()
    flat = np.isin(X[X != 0], [10.0]).all()
    must_fail = bad["nonfinite"] or bad["negative"] or nothing
    if check and not must_fail:
        # whole numbers are counts (unless all expressed values are 10); log1p(normalize_total)
        # and halved values never reach 10, or exceed it after perturbation
        must_fail = (kind == "counts" and not bad["non_integer"] and not flat) or kind in (
            "log1p",
            "halved",
        )
    if must_fail:
        assert not ok, f"accepted {kind} values: {bad}"
    elif not check:
        assert ok  # finite, non-negative, not all zero: enough without the normalisation tests


# ---------------------------------------------------------------- setup_anndata


def registered_anndata(data, *, min_cells=0, max_cells=10, min_genes=0, max_genes=14):
    """An AnnData with a 'sclong' layer, batch / label columns and gene ids, as drawn."""
    base = _pbmc()
    cells, genes = draw_cells_genes(
        data, min_cells=min_cells, max_cells=max_cells, min_genes=min_genes, max_genes=max_genes
    )
    counts = base.X[np.ix_(cells, genes)]
    values, kind = draw_model_values(data, counts)
    values = perturb(data, values, ["nan", "inf", "negative", "empty_cell", "empty_gene"], 1)
    names = list(base.var_names[genes])
    if names and data.draw(st.booleans(), label="duplicate var_names"):
        names[-1] = names[0]
    obs = pd.DataFrame(index=base.obs_names[cells].copy())
    batches = data.draw(st.sampled_from(["clean", "missing", "unused"]), label="batches")
    labels = np.asarray(base.obs["bulk_labels"].iloc[cells].astype(str), dtype=object)
    if batches == "missing" and len(labels):
        labels[0] = None
    categories = sorted({x for x in labels if x is not None}) + (
        ["never_seen"] if batches == "unused" else []
    )
    obs["batch"] = pd.Categorical(labels, categories=categories)
    obs["phase"] = base.obs["phase"].iloc[cells].to_numpy()
    var = pd.DataFrame(index=pd.Index(names, dtype=object))
    var["gene_id"] = [int(i) if i % 2 else f"G{i}" for i in genes]  # mixed types
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicated var_names
        adata = ad.AnnData(
            X=as_storage(data, counts),
            obs=obs,
            var=var,
            layers={"sclong": as_storage(data, values)},
        )
    if kind != "counts" and data.draw(st.booleans(), label="pp.normalize record"):
        adata.uns["sclong"] = {"params": {"output": "layers/sclong", "max_value": 10.0}}
    return adata, values, kind, batches, len(set(names)) < len(names)


REGISTRATION = dict(obs=["_scvi_batch", "_scvi_labels"], uns=["_scvi_uuid", "_scvi_manager_uuid"])


@settings(max_examples=examples("setup"))
@given(data=st.data())
def test_setup_anndata(data):
    adata, values, kind, batches, duplicated = registered_anndata(data)
    options = dict(
        layer=data.draw(st.sampled_from(["sclong", "sclong", None, "missing"]), label="layer"),
        batch_key=data.draw(st.sampled_from([None, "batch", "phase", "absent"]), label="batch"),
        labels_key=data.draw(st.sampled_from([None, "batch"]), label="labels_key"),
        gene_id_key=data.draw(st.sampled_from([None, None, "gene_id"]), label="gene_id_key"),
        check_normalization=data.draw(st.booleans(), label="check_normalization"),
    )
    bad = bad_values(values)
    with container(data, adata) as (target, kind_of_container):
        before = snapshot(target)
        ok, _ = outcome(lambda: SCLONG.setup_anndata(target, **options))
        if not ok:
            assert_unchanged(target, before)
            return
        assert_unchanged(target, before, **REGISTRATION)
    assert kind_of_container != "view"
    assert values.size and not duplicated
    assert options["layer"] != "missing" and options["batch_key"] != "absent"
    if "batch" in (options["batch_key"], options["labels_key"]):
        assert batches != "missing"
    if options["layer"] == "sclong":
        assert not bad["nonfinite"] and not bad["negative"]
        if options["check_normalization"]:
            assert kind != "counts" or np.isin(values[values != 0], [10.0]).all()
    elif options["check_normalization"]:
        raise AssertionError("adata.X holds counts: must be refused")


# ---------------------------------------------------------------- SCLONG(...), embed, grn


def _valid_registered(data, **bounds) -> ad.AnnData:
    base = _pbmc()
    cells, genes = draw_cells_genes(data, **bounds)
    counts = base.X[np.ix_(cells, genes)]
    keep = counts.sum(axis=1) > 0
    adata = ad.AnnData(
        X=as_storage(data, counts[keep]),
        obs=base.obs.iloc[cells[keep]][["bulk_labels", "phase"]].copy(),
        var=pd.DataFrame(index=base.var_names[genes].copy()),
    )
    if adata.n_obs == 0:
        return adata
    scl.pp.normalize(adata)
    return adata


@settings(max_examples=examples("construct"))
@given(data=st.data())
def test_model_construction(data):
    adata = _valid_registered(data, min_cells=1, max_cells=8, min_genes=1, max_genes=12)
    if adata.n_obs == 0:
        return
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="phase", labels_key="bulk_labels")
    before = snapshot(adata)
    config = data.draw(st.sampled_from(["tiny", "per_cell"]), label="config")
    if config == "per_cell":
        config = scl.ScLongConfig.preset("tiny", attention_mode="per_cell")
    gene_graph = data.draw(st.sampled_from([False, False, None]), label="gene_graph")
    ok, model = outcome(lambda: SCLONG(adata, config=config, gene_graph=gene_graph))
    assert ok, model
    assert_unchanged(adata, before)
    latent = model.get_latent_representation()
    width = pooled_dim(DEFAULT_POOLING, model.module.config.dim, model.module.config.n_genes)
    assert latent.shape == (adata.n_obs, width) and np.isfinite(latent).all()
    assert_unchanged(adata, before)


@functools.lru_cache(maxsize=4)
def _model(n_genes: int) -> SCLONG:
    """A tiny model registered on 12 pbmc cells x the ``n_genes`` most detected genes."""
    base = _pbmc()
    adata = ad.AnnData(
        X=sp.csr_matrix(base.X[:12, :n_genes]),
        obs=base.obs.iloc[:12][["bulk_labels", "phase"]].copy(),
        var=pd.DataFrame(index=base.var_names[:n_genes].copy()),
    )
    adata = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()
    scl.pp.normalize(adata)
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="phase")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SCLONG(adata, config="tiny", gene_graph=False)


def query_anndata(data, model: SCLONG, *, same_genes: bool = False) -> tuple[ad.AnnData, dict]:
    """A query: pbmc cells on the model's genes (or reordered / partly missing ones)."""
    base = _pbmc()
    model_genes = model.adata.var_names
    n_cells = data.draw(st.integers(0, 6), label="query cells")
    cells = np.asarray(
        data.draw(st.lists(st.integers(12, base.n_obs - 1), min_size=n_cells, max_size=n_cells)),
        dtype=int,
    )
    genes = (
        "same"
        if same_genes
        else data.draw(
            st.sampled_from(["same", "same", "shuffled", "subset", "extra", "none"]), label="genes"
        )
    )
    positions = base.var_names.get_indexer(model_genes)
    if genes == "shuffled":
        positions = np.asarray(data.draw(st.permutations(list(positions))), dtype=int)
    elif genes == "subset":
        positions = positions[: max(1, len(positions) // 2)]
    elif genes == "extra":
        positions = np.concatenate([positions, [199, 198]])
    elif genes == "none":
        positions = np.asarray([150, 151])
    counts = base.X[np.ix_(cells, positions)]
    values, kind = draw_model_values(data, counts)
    values = perturb(data, values, ["nan", "inf", "negative", "empty_cell"], 1)
    query = ad.AnnData(
        X=as_storage(data, counts),
        obs=base.obs.iloc[cells][["phase"]].copy(),
        var=pd.DataFrame(index=base.var_names[positions].copy()),
        layers={"sclong": as_storage(data, values)},
    )
    query.obs_names_make_unique()
    if data.draw(st.booleans(), label="unseen batches"):
        query.obs["phase"] = query.obs["phase"].astype(str) + "_new"
    # the fraction of the model's genes the query holds (queries need half: check_query_coverage)
    coverage = float(np.isin(model_genes, base.var_names[positions]).mean())
    return query, {"values": values, "kind": kind, "genes": genes, "coverage": coverage}


def _query_must_fail(info: dict, model: SCLONG) -> bool:
    values = info["values"]
    bad = bad_values(values)
    kind = info["kind"]
    counts = kind == "counts" and not np.isin(values[values != 0], [10.0]).all()
    nothing = values.shape[0] == 0 or not np.nan_to_num(values).any()
    unscaled = kind in ("log1p", "halved")  # no cell at the model's maximum 10
    return bool(
        bad["nonfinite"]
        or bad["negative"]
        or counts
        or nothing
        or unscaled
        or info["genes"] == "none"
        or info["coverage"] < MIN_QUERY_COVERAGE
    )


@settings(max_examples=examples("embed"))
@given(data=st.data())
def test_embed(data):
    model = _model(data.draw(st.sampled_from([1, 7, 25]), label="model genes"))
    query, info = query_anndata(data, model)
    options = dict(
        pooling=data.draw(st.sampled_from(list(POOLINGS)), label="pooling"),
        copy=data.draw(st.booleans(), label="copy"),
        key_added=data.draw(st.sampled_from(["X_sclong", "X_pca"]), label="key_added"),
        batch_size=data.draw(st.sampled_from([None, 1, 4]), label="batch_size"),
    )
    if data.draw(st.booleans(), label="existing obsm"):
        query.obsm[options["key_added"]] = np.zeros((query.n_obs, 2))
    with container(data, query) as (target, kind):
        before = snapshot(target)
        ok, result = outcome(lambda: scl.tl.embed(target, model, **options))
        must_fail = _query_must_fail(info, model) or (kind == "view" and not options["copy"])
        if must_fail:
            assert not ok, f"accepted: {info['kind']}, {bad_values(info['values'])}, {kind}"
        if not ok:
            assert_unchanged(target, before)
            return
        key = options["key_added"]
        if options["copy"]:
            assert_unchanged(target, before)
            written = result
        else:
            assert_unchanged(target, before, obsm=[key], uns=[key])
            written = target
        latent = written.obsm[key]
        config = model.module.config
        width = pooled_dim(options["pooling"], config.dim, config.n_genes)
        assert latent.shape == (query.n_obs, width)
        assert latent.dtype == np.float32 and np.isfinite(latent).all()


@settings(max_examples=examples("grn"))
@given(data=st.data())
def test_grn(data):
    model = _model(data.draw(st.sampled_from([1, 7, 25]), label="model genes"))
    query, info = query_anndata(data, model, same_genes=True)
    options = dict(
        kind=data.draw(st.sampled_from(["contextual", "static"]), label="kind"),
        top_k=data.draw(st.sampled_from([None, 1, 3, 100, 0, -2]), label="top_k"),
        center=data.draw(st.booleans(), label="center"),
        copy=data.draw(st.booleans(), label="copy"),
    )
    with container(data, query, kinds=("plain", "view")) as (target, kind):
        before = snapshot(target)
        ok, result = outcome(lambda: scl.tl.grn(target, model, **options))
        bad_top_k = options["top_k"] is not None and options["top_k"] < 1
        must_fail = bad_top_k or (kind == "view" and not options["copy"])
        if options["kind"] == "contextual":
            must_fail = must_fail or _query_must_fail(info, model)
        if must_fail:
            assert not ok, f"accepted: {options}, {info['kind']}, {kind}"
        if not ok:
            assert_unchanged(target, before)
            return
        if options["copy"]:
            assert_unchanged(target, before)
            written = result
        else:
            assert_unchanged(target, before, varp=["sclong_grn"], uns=["sclong_grn"])
            written = target
    network = written.varp["sclong_grn"]
    n = model.adata.n_vars
    assert network.shape == (n, n)
    dense = network.toarray() if sp.issparse(network) else np.asarray(network)
    assert np.isfinite(dense).all() and not np.diag(dense).any()
    assert (np.abs(dense) <= 1 + 1e-5).all()
    if options["top_k"] is not None:
        assert ((dense != 0).sum(axis=1) <= min(options["top_k"], n - 1)).all()


# ---------------------------------------------------------------- train for one step


@settings(max_examples=examples("train"))
@given(data=st.data())
def test_train_one_step(data):
    adata = _valid_registered(data, min_cells=1, max_cells=12, min_genes=2, max_genes=10)
    if adata.n_obs == 0:
        return
    SCLONG.setup_anndata(adata, layer="sclong", batch_key="phase")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SCLONG(adata, config="tiny", gene_graph=False)
    before = snapshot(adata)
    options = dict(
        train_size=data.draw(st.sampled_from([0.9, 0.5, 1.0, 1.5]), label="train_size"),
        batch_size=data.draw(st.sampled_from([1, 4, 16]), label="batch_size"),
        early_stopping=data.draw(st.booleans(), label="early_stopping"),
    )
    ok, _ = outcome(
        lambda: model.train(
            max_epochs=1,
            max_steps=1,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            **options,
        )
    )
    n_validation = adata.n_obs - int(np.ceil(min(options["train_size"], 1.0) * adata.n_obs))
    # early stopping needs validation cells, and refuses max_steps (found by this property:
    # Lightning's EarlyStopping crashed when max_steps ended an epoch before its validation)
    if options["train_size"] > 1 or options["early_stopping"]:
        assert not ok
    else:
        assert ok
        assert "train_loss" in model.history
        if n_validation == 0:  # too few cells to hold one out: trained without validation
            assert "validation_loss" not in model.history
        assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    assert_unchanged(adata, before)


# ---------------------------------------------------------------- evaluate_grn

GENE_NAMES = ["TP53", "MYC", "GATA1", "SPI1", "CEBPA", 7, 11, "7", "foxp3", "FOXP3", "CD4 "]


@settings(max_examples=examples("evaluate_grn"))
@given(data=st.data())
def test_evaluate_grn(data):
    names = data.draw(st.lists(st.sampled_from(GENE_NAMES), min_size=0, max_size=8), label="genes")
    n = len(names)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    scores = rng.random((n, n))
    special = data.draw(st.sampled_from(["none", "nan", "inf", "negative", "zeros", "one_row"]))
    if n and special == "one_row":  # only the first row scored (as a TF-only GENIE3)
        scores[1:] = 0
    if n and special == "nan":
        scores[0, -1] = np.nan
    elif n and special == "inf":
        scores[0, -1] = np.inf
    elif special == "negative":
        scores -= 0.5
    elif special == "zeros":
        scores[:] = 0
    truth = pd.DataFrame(
        data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from([*GENE_NAMES, None]), st.sampled_from([*GENE_NAMES, None])
                ),
                max_size=8,
            ),
            label="truth",
        ),
        columns=["source", "target"],
    )
    options = dict(
        directed=data.draw(st.booleans(), label="directed"),
        self_pairs=data.draw(st.booleans(), label="self_pairs"),
        tfs=data.draw(st.sampled_from([None, ["TP53", "MYC"], ["absent"]]), label="tfs"),
        candidates=data.draw(st.sampled_from(["tf_rows", "truth_genes"]), label="candidates"),
    )
    form = data.draw(st.sampled_from(["dense", "csr", "edges"]), label="prediction")
    if form == "edges":
        rows, cols = np.nonzero(np.ones((n, n)))
        prediction: Any = pd.DataFrame(
            {
                "source": [names[i] for i in rows],
                "target": [names[j] for j in cols],
                "score": scores[rows, cols],
            }
        )
        before = prediction.copy()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed-type / duplicated var_names
            prediction = ad.AnnData(
                X=np.zeros((1, n), dtype=np.float32),
                var=pd.DataFrame(index=pd.Index([str(x) for x in names], dtype=object)),
            )
        prediction.varp["sclong_grn"] = scores if form == "dense" else sp.csr_matrix(scores)
        before = snapshot(prediction)
    ok, result = outcome(lambda: scl.tl.evaluate_grn(prediction, truth, **options))
    clean = truth.dropna()
    truth_genes = set(clean["source"].astype(str).str.strip()) | set(
        clean["target"].astype(str).str.strip()
    )
    if n and special in ("nan", "inf") and {str(names[0]), str(names[-1])} <= truth_genes:
        assert not ok, "a NaN / infinite score between evaluated genes was ranked"
    universe = {str(x) for x in names} & truth_genes
    if (
        special == "one_row"
        and form == "csr"  # zeros are not stored: only the first gene's row is scored
        and options["tfs"] is None
        and options["candidates"] == "truth_genes"  # TF rows x all genes takes it as it is
        and str(names[0]) in universe
        and len(universe) >= 2
    ):
        assert not ok and "as sources" in str(result), "a row-restricted prediction was scored"
    if form == "edges":
        pd.testing.assert_frame_equal(prediction, before)
    else:
        assert_unchanged(prediction, before)
    if not ok:
        return
    assert 0 < result["n_positives"] <= result["n_candidates"]
    assert 0.0 <= result["aupr"] <= 1.0 + 1e-12
    assert np.isclose(result["positive_rate"], result["n_positives"] / result["n_candidates"])
    assert result["epr"] >= 0 and result["aupr_ratio"] >= 0
    assert result["n_scored"] <= result["n_candidates"]
    assert result["n_genes"] >= 2


# ---------------------------------------------------------------- GO readers

_ID = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz0123456789-_.:", min_size=1, max_size=8)
_GO = st.integers(0, 9_999_999).map(lambda i: f"GO:{i:07d}")


def _write(folder: str, name: str, text: str, gz: bool) -> Path:
    path = Path(folder) / (name + (".gz" if gz else ""))
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _check_annotations(result) -> None:
    assert isinstance(result, dict)
    for gene, terms in result.items():
        assert isinstance(gene, str) and gene == gene.strip() and gene, repr(gene)
        assert isinstance(terms, set) and terms
        assert all(isinstance(t, str) and t for t in terms)


@settings(max_examples=examples("gmt"))
@given(data=st.data())
def test_read_gmt(data):
    sets = data.draw(
        st.dictionaries(_ID, st.lists(_ID | st.just(""), max_size=5), max_size=6), label="sets"
    )
    junk = data.draw(st.sampled_from(["", "\n", "\n\n", "only_a_name\n", " \t \n"]), label="junk")
    lines = [f"{name}\tdescription\t" + "\t".join(genes) for name, genes in sets.items()]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "sets.gmt", "\n".join(lines) + "\n" + junk, data.draw(st.booleans()))
        ok, result = outcome(lambda: read_gmt(path))
    if junk.strip():
        assert not ok  # a line with a name but no description column
        return
    assert ok, result
    _check_annotations(result)
    expected: dict[str, set[str]] = {}
    for name, genes in sets.items():
        for gene in genes:
            if gene.strip():
                expected.setdefault(gene.strip(), set()).add(name.strip())
    assert result == expected


_ASPECTS = {"P": "BP", "F": "MF", "C": "CC"}


@settings(max_examples=examples("gaf"))
@given(data=st.data())
def test_read_gaf(data):
    rows = data.draw(
        st.lists(
            st.tuples(
                _ID,  # db object id
                _ID,  # symbol (empty symbols: test_read_gaf_skips_rows_without_a_symbol)
                st.sampled_from(["", "NOT", "enables", "NOT|contributes_to"]),
                _GO,
                st.sampled_from(["IEA", "IDA", "ND"]),
                st.sampled_from(["P", "F", "C", "X"]),
                st.sampled_from(["taxon:9606", "taxon:10090", "taxon:9606|taxon:11676"]),
            ),
            max_size=8,
        ),
        label="rows",
    )
    columns = data.draw(st.sampled_from([17, 15, 12]), label="columns")
    options = dict(
        exclude_evidence=data.draw(st.sampled_from([(), ("IEA",)]), label="exclude"),
        taxon=data.draw(st.sampled_from([None, 9606]), label="taxon"),
        ontologies=data.draw(st.sampled_from([("BP", "MF", "CC"), ("BP",)]), label="ontologies"),
    )
    text = "!gaf-version: 2.2\n"
    for object_id, symbol, qualifier, go, evidence, aspect, taxon in rows:
        fields = ["UniProtKB", object_id, symbol, qualifier, go, "PMID:1", evidence, "", aspect]
        fields += ["name", "", "protein", taxon, "20240101", "GO_Central", "", ""]
        text += "\t".join(fields[:columns]) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "goa.gaf", text, data.draw(st.booleans(), label="gz"))
        ok, result = outcome(lambda: read_gaf(path, **options))
    if rows and columns < 15:
        assert not ok
        return
    if any(row[5] not in _ASPECTS for row in rows):  # an unknown aspect: refused (issue 23)
        assert not ok and isinstance(result, ScLongInputError), result
        assert "unknown aspect" in str(result) and "line " in str(result)
        return
    assert ok, result
    _check_annotations(result)
    expected: dict[str, set[str]] = {}
    for _, symbol, qualifier, go, evidence, aspect, taxon in rows:
        if (
            _ASPECTS.get(aspect) in options["ontologies"]
            and evidence not in options["exclude_evidence"]
            and "NOT" not in qualifier.split("|")
            and (options["taxon"] is None or taxon.split("|")[0] == "taxon:9606")
            and symbol.strip()
        ):
            expected.setdefault(symbol.strip(), set()).add(go)
    assert result == expected


def test_read_gaf_skips_rows_without_a_symbol(tmp_path):
    # found by test_read_gaf: a GAF row with an empty DB Object Symbol (column 3)
    fields = [
        "UniProtKB",
        "P1",
        "",
        "",
        "GO:0000001",
        "PMID:1",
        "IDA",
        "",
        "P",
        "name",
        "",
        "protein",
        "taxon:9606",
        "20240101",
        "GO_Central",
        "",
        "",
    ]
    path = tmp_path / "goa.gaf"
    path.write_text("!gaf-version: 2.2\n" + "\t".join(fields) + "\n")
    assert "" not in read_gaf(path)


@settings(max_examples=examples("gene2go"))
@given(data=st.data())
def test_read_gene2go(data):
    categories = {"Process": "BP", "Function": "MF", "Component": "CC", "Other": None}
    rows = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["9606", "10090"]),
                st.integers(1, 10**6).map(str),
                _GO,
                st.sampled_from(["IEA", "EXP"]),
                st.sampled_from(["-", "NOT enables", "enables"]),
                st.sampled_from(list(categories)),
            ),
            max_size=8,
        ),
        label="rows",
    )
    header = data.draw(st.sampled_from(["full", "missing column"]), label="header")
    columns = ["#tax_id", "GeneID", "GO_ID", "Evidence", "Qualifier", "GO_term", "PubMed"]
    columns += ["Category"] if header == "full" else []
    text = "\t".join(columns) + "\n"
    for tax, gene, go, evidence, qualifier, category in rows:
        fields = [tax, gene, go, evidence, qualifier, "a term", "-", category]
        text += "\t".join(fields[: len(columns)]) + "\n"
    taxon = data.draw(st.sampled_from([9606, None]), label="taxon")
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "gene2go", text, data.draw(st.booleans(), label="gz"))
        ok, result = outcome(lambda: read_gene2go(path, taxon=taxon))
    if header != "full":
        assert not ok
        return
    assert ok, result
    _check_annotations(result)
    expected: dict[str, set[str]] = {}
    for tax, gene, go, _, qualifier, category in rows:
        if categories[category] and "NOT" not in qualifier and (taxon is None or tax == "9606"):
            expected.setdefault(gene, set()).add(go)
    assert result == expected


def test_profiles_are_registered():
    assert PROFILE in ("ci", "long")
    assert settings.get_profile("ci").derandomize
    assert settings.get_profile("long").max_examples > settings.get_profile("ci").max_examples
    with pytest.raises(KeyError):
        examples("no such property")
