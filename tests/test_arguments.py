"""Bad arguments to the ``tl`` verbs get the package's one-line errors (issue 23, item 11).

Before: ``tf_activities`` with an empty network raised "cannot convert float NaN to integer",
with ``tmin=-1`` decoupler's AssertionError, and scored a network with NaN weights silently;
``in_silico_perturb`` with ``n_null=0`` raised numpy's "need at least one array to stack", with
no genes pandas' KeyError; ``genie3_grn(n_estimators=0)`` scikit-learn's parameter error;
``read_ground_truth`` on an empty, binary or missing file UnicodeDecodeError / IsADirectoryError /
FileNotFoundError without the package's words; ``grn_edges(n_top=-1)`` returned a table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sclong_scverse as scl
from sclong_scverse.errors import ScLongError, ScLongFileError, ScLongFileNotFound
from sclong_scverse.model import SCLONG


@pytest.fixture(scope="module")
def pbmc():
    """48 real PBMC cells, normalised, a co-expression GRN and an untrained tiny scLong."""
    adata = scl.datasets.pbmc68k_counts(max_cells=48, seed=0)
    scl.pp.normalize(adata, layer="counts")
    scl.tl.coexpression_grn(adata, layer="sclong", key_added="sclong_grn")
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    return adata, SCLONG(adata, config="tiny")


def _one_line_error(call, match: str) -> ScLongError:
    with pytest.raises(ScLongError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value


def test_tf_activities_refuses_empty_nan_and_negative_settings(pbmc):
    pytest.importorskip("decoupler")
    adata, _ = pbmc
    net = scl.tl.tf_network(adata, list(adata.var_names[:30]), n_targets=10)
    broken = net.copy()
    broken.loc[0, "weight"] = np.nan
    _one_line_error(lambda: scl.tl.tf_activities(adata.copy(), broken, tmin=3), "weight column")
    _one_line_error(lambda: scl.tl.tf_activities(adata.copy(), net.iloc[:0]), "no edges")
    _one_line_error(lambda: scl.tl.tf_activities(adata.copy(), net, tmin=-1), "tmin")
    for bad in (0, "x", float("nan"), 2.5):
        _one_line_error(lambda bad=bad: scl.tl.tf_network(adata, ["HES4"], n_targets=bad), "n_t")
    scl.tl.tf_activities(adata.copy(), net, tmin=3)  # the good call still works


def test_in_silico_perturb_refuses_empty_nulls_and_no_genes(pbmc):
    adata, model = pbmc
    gene = adata.var_names[0]
    perturb = scl.tl.in_silico_perturb
    _one_line_error(lambda: perturb(adata.copy(), model, [gene], n_null=0), "n_null")
    _one_line_error(lambda: perturb(adata.copy(), model, [gene], n_null=-1), "n_null")
    _one_line_error(lambda: perturb(adata.copy(), model, [gene], n_bins=0), "n_bins")
    _one_line_error(lambda: perturb(adata.copy(), model, []), "non-empty list")
    _one_line_error(lambda: perturb(adata.copy(), model, gene), "non-empty list")
    _one_line_error(lambda: perturb(adata.copy(), model, [gene], batch_size=0), "batch_size")


def test_grn_tools_refuse_impossible_settings(pbmc):
    adata, model = pbmc
    _one_line_error(lambda: scl.tl.grn_edges(adata, n_top=-1), "n_top")
    _one_line_error(lambda: scl.tl.grn_edges(adata, min_score=float("nan")), "min_score")
    _one_line_error(lambda: scl.tl.grn_edges(adata, key="absent"), "not found")
    small = adata[:, :20].copy()
    _one_line_error(lambda: scl.tl.genie3_grn(small, layer="sclong", n_estimators=0), "n_est")
    _one_line_error(lambda: model.get_latent_representation(batch_size=0), "batch_size")
    assert len(scl.tl.grn_edges(adata, n_top=5)) == 5


def test_read_ground_truth_names_the_file_it_cannot_read(tmp_path):
    empty, binary = tmp_path / "empty.csv", tmp_path / "binary.tsv"
    empty.write_text("")
    binary.write_bytes(bytes(range(256)))
    for path in (empty, binary, tmp_path):
        error = _one_line_error(lambda path=path: scl.tl.read_ground_truth(path), str(path))
        assert isinstance(error, ScLongFileError | scl.pp.ScLongInputError)
    with pytest.raises(ScLongFileNotFound, match="absent.csv"):
        scl.tl.read_ground_truth(tmp_path / "absent.csv")
    _one_line_error(lambda: scl.tl.read_ground_truth([1, 2]), "file path")
