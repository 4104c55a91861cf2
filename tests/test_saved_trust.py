"""Saved model folders that are damaged or edited are refused in one line, before anything is built.

Issue 23 (trust, round three), items 4 and 5 for saved models: ``manifest.json`` and ``model.pt``
are checked against a schema (:mod:`sclong_scverse.model._saved_schema`): a manifest whose
``files`` is a list, a string or nested ten thousand deep, a saved attribute that would replace a
method, an ``init_params_`` naming arguments the class does not take, a configuration asking for
layers no real model has: each raises :class:`~sclong_scverse.errors.ModelIntegrityError` naming
the file, in the Python API and as ``sclong embed``'s one line with exit code 2. Before this,
they surfaced as TypeError, AttributeError, RecursionError, KeyError or a failed allocation.

A property (hypothesis) draws manifests and model files at random (JSON values of any shape,
truncations, flipped bytes, replaced entries) and asserts that loading either works or raises
one of the package's errors, and that nothing is written into the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sclong_scverse as scl
from conftest import rewrite_saved_model
from sclong_scverse import cli
from sclong_scverse.errors import ModelIntegrityError, ScLongError, ScLongFileNotFound
from sclong_scverse.model import SCLONG
from sclong_scverse.pp import ScLongInputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny SCLONG on 48 real PBMC cells, saved: (folder, adata, query .h5ad)."""
    adata = scl.datasets.pbmc68k_counts(max_cells=48, seed=0)
    scl.pp.normalize(adata, layer="counts")
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("saved_trust")
    SCLONG(adata, config="tiny").save(str(root / "model"))
    query = root / "query.h5ad"
    adata.write_h5ad(query)
    return root / "model", adata, query


def _copy(saved, tmp_path: Path, name: str = "copy") -> Path:
    folder = tmp_path / name
    shutil.copytree(saved[0], folder)
    return folder


def _refused(folder: Path, adata, match: str, error=ModelIntegrityError) -> str:
    with pytest.raises(error, match=match) as info:
        SCLONG.load(str(folder), adata=adata.copy())
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    return message


def _config(content) -> dict:
    return content["attr_dict"]["init_params_"]["non_kwargs"]["config"]


MANIFESTS = {
    "a list": ([1, 2], "JSON object is expected"),
    "files as a list": ({"files": ["model.pt"]}, "'files' must map"),
    "files as a string": ({"files": "model.pt"}, "'files' must map"),
    "an entry as a string": ({"files": {"model.pt": "abc"}}, "has no sha256"),
    "a number as the checksum": ({"files": {"model.pt": {"sha256": 5}}}, "has no sha256"),
    "a path outside the folder": (
        {"files": {"../model.pt": {"sha256": "0" * 64}}},
        "not a plain file name",
    ),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_malformed_manifests_are_refused_in_one_line(saved, tmp_path, case):
    folder = _copy(saved, tmp_path)
    value, match = MANIFESTS[case]
    (folder / "manifest.json").write_text(json.dumps(value))
    _refused(folder, saved[1], match)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError before
        (b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (bytes(range(256)), "not a readable model manifest"),
        (b"", "not a readable model manifest"),
        (b" " * (2 << 20), "bytes, not a model manifest"),
    ],
    ids=["deep list", "deep files", "binary", "empty", "too large"],
)
def test_unreadable_manifests_are_refused_in_one_line(saved, tmp_path, text, match):
    folder = _copy(saved, tmp_path)
    (folder / "manifest.json").write_bytes(text)
    _refused(folder, saved[1], match)


CONTENT_EDITS = {
    # (edit of the content, what the message says)
    "content is a list": (lambda c: c.clear() or c.update({"x": 1}), "expected a dict"),
    "attr_dict is a list": (lambda c: c.update(attr_dict=[1]), "attr_dict must be a dict"),
    "weights are not a dict": (lambda c: c.update(model_state_dict=[1]), "parameter names"),
    "a weight is a string": (
        lambda c: c["model_state_dict"].update({next(iter(c["model_state_dict"])): "x"}),
        "parameter names to tensors",
    ),
    "var_names is a number": (lambda c: c.update(var_names=5), "var_names must be"),
    "an attribute replaces a method": (
        lambda c: c["attr_dict"].update(get_latent_representation=1),
        "not a saved attribute",
    ),
    "an attribute replaces __class__": (
        lambda c: c["attr_dict"].update(__class__=1),
        "not a saved attribute",
    ),
    "an attribute replaces the module": (
        lambda c: c["attr_dict"].update(module=1),
        "not a saved attribute",
    ),
    "an attribute name is a number": (
        lambda c: c["attr_dict"].update({5: 1}),
        "is not an identifier",
    ),
    "registry_ is a list": (lambda c: c["attr_dict"].update(registry_=[1]), "registry_ .* must"),
    "setup_args missing": (
        lambda c: c["attr_dict"]["registry_"].pop("setup_args"),
        "setup_args",
    ),
    "init_params_ is a list": (
        lambda c: c["attr_dict"].update(init_params_=[1]),
        "init_params_ must be a dict",
    ),
    "init_params_ names an unknown argument": (
        lambda c: c["attr_dict"]["init_params_"]["non_kwargs"].update(run_this=1),
        "does not take",
    ),
    "no configuration": (
        lambda c: c["attr_dict"]["init_params_"]["non_kwargs"].pop("config"),
        "records no network configuration",
    ),
    "a configuration of 10^7 genes": (
        lambda c: _config(c).update(n_genes=10**7),
        "n_genes must be a whole number",
    ),
    "a negative depth": (
        lambda c: _config(c).update(large_depth=-1),
        "large_depth must be a whole number",
    ),
    "a text width": (lambda c: _config(c).update(dim="wide"), "dim must be a whole number"),
    # within the bounds, but 1,000 layers 60,000 wide (14 TB): refused from the shapes, on
    # the meta device, before anything is allocated
    "a configuration its weights do not fit": (
        lambda c: _config(c).update(large_dim=60_000, large_depth=1_000),
        "the configuration needs",
    ),
    "a weight of another shape": (
        lambda c: c["model_state_dict"].update(
            {
                "network.expression_head.weight": torch.zeros(
                    3, *c["model_state_dict"]["network.expression_head.weight"].shape[1:]
                )
            }
        ),
        "do not fit the configuration",
    ),
}


@pytest.mark.parametrize("case", list(CONTENT_EDITS))
def test_edited_model_files_are_refused_before_anything_is_built(saved, tmp_path, case):
    folder = _copy(saved, tmp_path)
    edit, match = CONTENT_EDITS[case]
    rewrite_saved_model(folder, edit)  # with a matching manifest: a forger can write one
    _refused(folder, saved[1], match)
    # also with bfloat16 weights: the memory-mapped path checks the same schema
    with pytest.raises(ModelIntegrityError):
        SCLONG.load(str(folder), adata=saved[1].copy(), dtype=torch.bfloat16)


def test_wrong_folders_and_arguments_get_the_package_errors(saved, tmp_path):
    adata = saved[1]
    with pytest.raises(ScLongFileNotFound, match="not found"):
        SCLONG.load(str(tmp_path / "absent"), adata=adata.copy())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ModelIntegrityError, match="is a file"):
        SCLONG.load(str(tmp_path / "a_file"), adata=adata.copy())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScLongFileNotFound, match="model.pt not found"):
        SCLONG.load(str(tmp_path / "empty"), adata=adata.copy())
    with pytest.raises(ScLongInputError, match="as a path"):
        SCLONG.load(5, adata=adata.copy())


def test_sclong_embed_refuses_edited_folders_in_one_line(saved, tmp_path, capsys):
    folder = _copy(saved, tmp_path)
    (folder / "manifest.json").write_text(json.dumps({"files": "model.pt"}))
    out = tmp_path / "out.h5ad"
    code = cli.main(["embed", str(saved[2]), "--model", str(folder), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not a valid model manifest" in err
    assert not out.exists()


# ---------------------------------------------------------------------- property
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_ENTRY = st.sampled_from(["model_state_dict", "var_names", "attr_dict"])


def _listing(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@settings(
    max_examples=int(os.environ.get("SCLONG_SAVED_EXAMPLES", "40")),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_damage_to_a_saved_folder_gives_only_the_package_errors(saved, tmp_path, data):
    folder = Path(tempfile.mkdtemp(dir=tmp_path)) / "model"
    shutil.copytree(saved[0], folder)
    kind = data.draw(st.sampled_from(["manifest", "truncate", "flip", "entry", "attribute"]))
    model_file = folder / "model.pt"
    if kind == "manifest":
        manifest = json.loads((folder / "manifest.json").read_text())
        key = data.draw(st.sampled_from(["files", "model", "config", "format"]))
        manifest[key] = data.draw(_JSON, label="value")
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif kind in ("truncate", "flip"):
        raw = bytearray(model_file.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1), label="offset")
        if kind == "truncate":
            raw = raw[:at]
        else:
            raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        model_file.write_bytes(bytes(raw))
    else:
        value = data.draw(_JSON, label="value")
        if kind == "entry":
            entry = data.draw(_ENTRY, label="entry")
            rewrite_saved_model(folder, lambda c: c.update({entry: value}))
        else:
            name = data.draw(
                st.sampled_from(["registry_", "init_params_", "history_", "is_trained_"])
            )
            rewrite_saved_model(folder, lambda c: c["attr_dict"].update({name: value}))
    before = _listing(folder)
    verify = data.draw(st.booleans(), label="verify")
    try:
        model = SCLONG.load(str(folder), adata=saved[1].copy(), verify=verify)
    except ScLongError as error:
        assert "\n" not in str(error)
    else:  # what loads must still be a working model (finite: unless unverified bytes changed)
        latent = model.get_latent_representation(batch_size=48)
        assert np.isfinite(latent).all() or (kind == "flip" and not verify)
    assert _listing(folder) == before  # nothing written, nothing changed
