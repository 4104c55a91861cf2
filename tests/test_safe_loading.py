"""Safe loading: crafted files run nothing, corrupted files are refused, checks name the problem.

Every loader of the package gets a malicious file whose unpickling would create a marker file
(``os.system("touch ...")``): the loader must raise this package's error and the marker must not
exist afterwards. Byte-flipped, NaN-holding and inconsistent files must be refused too.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

import sclong_scverse as scl
from sclong_scverse import cli
from sclong_scverse.go import read_annotations, read_gene2go_pickle
from sclong_scverse.io import (
    OfficialFormatError,
    UnsafeFileError,
    load_official,
    read_checkpoint,
    read_hparams,
    save_official,
    sha256_file,
)
from sclong_scverse.model import SCLONG, ModelIntegrityError


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a crafted file ran code while being loaded"


def _flip_byte(path) -> None:
    """Flip one byte in the middle of the largest tensor stored in a torch zip file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    data = bytearray(path.read_bytes())
    start = entry.header_offset
    name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
    # a high-order byte of an element (float32 or float64, little-endian): the value changes
    position = start + 30 + name_length + extra_length + (entry.file_size // 16) * 8 + 6
    data[position] ^= 0x40
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------- official release
@pytest.fixture
def release_files(parity_dir, tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    for name in ("tiny_ckpt.pth", "tiny_hparams.pkl", "tiny_genes.txt"):
        shutil.copy(parity_dir / name, folder / name)
    return folder / "tiny_ckpt.pth", folder / "tiny_hparams.pkl", folder / "tiny_genes.txt"


def test_the_real_release_needs_only_allowed_globals(release_files):
    checkpoint, hparams, genes = release_files
    release = load_official(checkpoint, hparams, genes)
    assert release.network.gene_embedding.edge_index.shape == (2, 6662)
    assert read_hparams(hparams)["G_go"].dtype == torch.long


def test_malicious_hparams_pickle_runs_nothing(release_files, tmp_path, marker):
    checkpoint, hparams, genes = release_files
    params = read_hparams(hparams)
    params["device"] = _Payload(marker)
    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(pickle.dumps(params))
    with pytest.raises(OfficialFormatError, match=r"posix\.system|os\.system"):
        read_hparams(crafted)
    with pytest.raises(OfficialFormatError, match="not allowed"):
        load_official(checkpoint, crafted, genes)
    adata = _pbmc(8)
    SCLONG.setup_anndata(adata, layer="sclong")
    with pytest.raises(OfficialFormatError):
        SCLONG.from_official(adata, checkpoint, crafted, genes)


def test_malicious_tensor_bytes_inside_hparams_run_nothing(tmp_path, marker):
    class NestedPayload:
        # what an official pickle stores for a tensor: torch.storage._load_from_bytes(bytes)
        def __reduce__(self):
            import io

            buffer = io.BytesIO()
            torch.save({"x": _Payload(marker)}, buffer)
            return (torch.storage._load_from_bytes, (buffer.getvalue(),))

    crafted = tmp_path / "nested.pkl"
    crafted.write_bytes(
        pickle.dumps({"max_seq_len": 8, "top_seq_len": 2, "base_dim": 4, "G_go": NestedPayload()})
    )
    with pytest.raises(OfficialFormatError, match="system"):
        read_hparams(crafted)


def test_malicious_checkpoint_runs_nothing(release_files, tmp_path, marker):
    checkpoint, hparams, genes = release_files
    content = torch.load(checkpoint, weights_only=True)
    content["losses"] = [_Payload(marker)]
    crafted = tmp_path / "crafted.pth"
    torch.save(content, crafted)
    with pytest.raises(OfficialFormatError, match="system"):
        read_checkpoint(crafted)
    with pytest.raises(OfficialFormatError, match="nothing in it was run"):
        load_official(crafted, hparams, genes)
    code = cli.main(
        ["convert-official", "--checkpoint", str(crafted), "--hparams", str(hparams),
         "--genes", str(genes), "--out", str(tmp_path / "converted")]
    )  # fmt: skip
    assert code == 2


def test_malicious_go_pickle_runs_nothing(tmp_path, marker):
    crafted = tmp_path / "gene2go.pkl"
    crafted.write_bytes(pickle.dumps({"ENSG00000141510": {"GO:0006915"}, "x": _Payload(marker)}))
    with pytest.raises(UnsafeFileError, match="system"):
        read_gene2go_pickle(crafted)
    with pytest.raises(UnsafeFileError):
        read_annotations(crafted)


def test_real_go_pickle_still_reads(parity_dir):
    annotations = read_gene2go_pickle(parity_dir / "tiny_ens_gene2go.pkl")
    assert len(annotations) == 373
    assert all(isinstance(t, str) for terms in annotations.values() for t in terms)


def test_flipped_bytes_refused_by_checksum(release_files):
    checkpoint, hparams, genes = release_files
    expected = sha256_file(checkpoint)
    load_official(checkpoint, hparams, genes, expected_sha256=expected)  # intact: loads
    before = load_official(checkpoint, hparams, genes).network.state_dict()
    _flip_byte(checkpoint)
    # flipped bytes inside a tensor load without error and change the weights...
    after = load_official(checkpoint, hparams, genes).network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # ...which only the checksum reveals
    with pytest.raises(OfficialFormatError, match="sha256"):
        load_official(checkpoint, hparams, genes, expected_sha256=expected)
    with pytest.raises(OfficialFormatError, match="sha256"):
        load_official(checkpoint, hparams, genes, expected_sha256={"hparams": "0" * 64})


def test_nan_weights_and_nan_go_weights_refused(release_files, tmp_path):
    checkpoint, hparams, genes = release_files
    content = torch.load(checkpoint, weights_only=True)
    content["model_state_dict"]["exp_to_out.weight"][0, 0] = float("nan")
    nan_checkpoint = tmp_path / "nan.pth"
    torch.save(content, nan_checkpoint)
    with pytest.raises(OfficialFormatError, match="NaN or infinite"):
        load_official(nan_checkpoint, hparams, genes)
    params = read_hparams(hparams)
    params["G_go_weight"] = params["G_go_weight"].clone()
    params["G_go_weight"][5] = float("nan")
    nan_hparams = tmp_path / "nan.pkl"
    nan_hparams.write_bytes(pickle.dumps(params))
    with pytest.raises(OfficialFormatError, match="G_go_weight"):
        load_official(checkpoint, nan_hparams, genes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"top_seq_len": 600}, "top_seq_len"),
        ({"mask_token_thres": 0.5}, "mask_token_thres"),
        ({"large_enc_heads": 0}, "large_enc_heads"),
        ({"nb_features": 128}, "does not reproduce"),
        ({"g2v_position_emb": False}, "g2v_position_emb"),
    ],
)
def test_inconsistent_hparams_refused(release_files, tmp_path, change, message):
    checkpoint, hparams, genes = release_files
    params = {**read_hparams(hparams), **change}
    edited = tmp_path / "edited.pkl"
    edited.write_bytes(pickle.dumps(params))
    with pytest.raises(OfficialFormatError, match=message):
        load_official(checkpoint, edited, genes)


def test_hparams_that_shapes_do_not_reveal_are_checked_against_the_record(release_files, tmp_path):
    checkpoint, hparams, genes = release_files
    release = load_official(checkpoint, hparams, genes)
    out = tmp_path / "ours"
    out.mkdir()
    files = out / "x.pth", out / "x.pkl", out / "x.txt"
    save_official(release.network, files[0], files[1], genes=release.genes, genes_path=files[2])
    load_official(*files)  # consistent: loads
    for change in ({"top_seq_len": 32}, {"mask_token_thres": -2}):
        params = {**read_hparams(files[1]), **change}
        edited = out / "edited.pkl"
        edited.write_bytes(pickle.dumps(params))
        with pytest.raises(OfficialFormatError, match="record in the checkpoint"):
            load_official(files[0], edited, files[2])
    params = read_hparams(files[1])
    params["G_go_weight"] = params["G_go_weight"] * 0.5  # same shapes, other graph
    edited.write_bytes(pickle.dumps(params))
    with pytest.raises(OfficialFormatError, match="go_graph_sha256"):
        load_official(files[0], edited, files[2])


# ---------------------------------------------------------------------- saved models
def _pbmc(n_cells: int):
    adata = scl.datasets.pbmc68k_counts(max_cells=n_cells, seed=0)
    scl.pp.normalize(adata, layer="counts")
    return adata


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    adata = _pbmc(48)
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config="tiny")
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save(str(folder), save_anndata=True)
    return model, adata, folder


def test_save_writes_plain_data_and_a_manifest(saved_model, tmp_path):
    model, adata, folder = saved_model
    assert sorted(os.listdir(folder)) == ["adata.h5ad", "manifest.json", "model.pt"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["model.pt"]["sha256"] == sha256_file(folder / "model.pt")
    assert manifest["files"]["adata.h5ad"]["sha256"] == sha256_file(folder / "adata.h5ad")
    assert manifest["versions"]["sclong-scverse"] == scl.__version__
    assert manifest["config"] == model.module.config.to_dict()
    # readable with torch's own weights_only loader plus numpy's array reconstructors only
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(folder / "model.pt")
    assert all(name.startswith(("numpy.", "builtins.bytes")) for name in unsafe), unsafe
    loaded = SCLONG.load(str(folder), adata=adata.copy())
    np.testing.assert_array_equal(
        model.get_latent_representation(), loaded.get_latent_representation()
    )
    assert SCLONG.load(str(folder)).adata.n_obs == adata.n_obs  # with the saved AnnData


def test_saving_again_needs_overwrite(saved_model):
    model, _, folder = saved_model
    with pytest.raises(ValueError, match="overwrite=True"):
        model.save(str(folder))


def test_malicious_saved_model_runs_nothing(saved_model, tmp_path, marker):
    model, adata, folder = saved_model
    crafted = tmp_path / "crafted"
    shutil.copytree(folder, crafted)
    content = torch.load(folder / "model.pt", weights_only=False)
    content["attr_dict"]["run_name_"] = _Payload(marker)
    torch.save(content, crafted / "model.pt")
    # a forger can also write a matching manifest: safety must not depend on the checksum
    manifest = json.loads((crafted / "manifest.json").read_text())
    manifest["files"]["model.pt"]["sha256"] = sha256_file(crafted / "model.pt")
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(UnsafeFileError, match="system"):
            SCLONG.load(str(crafted), adata=adata.copy(), verify=verify)
    source = tmp_path / "query.h5ad"
    adata.write_h5ad(source)
    code = cli.main(["embed", str(source), "--model", str(crafted), "--out", str(tmp_path / "o")])
    assert code == 2


def test_flipped_byte_in_saved_model_refused(saved_model, tmp_path):
    model, adata, folder = saved_model
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    _flip_byte(damaged / "model.pt")
    with pytest.raises(ModelIntegrityError, match="checksum"):
        SCLONG.load(str(damaged), adata=adata.copy())
    # without the checksum only impossible content is noticed: the largest tensor of this
    # model is the GO graph's edge list, and the flipped byte sends an edge outside the genes
    with pytest.raises(ModelIntegrityError, match="gene graph .* outside"):
        SCLONG.load(str(damaged), adata=adata.copy(), verify=False)


def test_missing_manifest_refused_unless_verify_false(saved_model, tmp_path):
    _, adata, folder = saved_model
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "manifest.json").unlink()
    with pytest.raises(ModelIntegrityError, match="verify=False"):
        SCLONG.load(str(bare), adata=adata.copy())
    SCLONG.load(str(bare), adata=adata.copy(), verify=False)


def test_nan_weights_in_saved_model_refused(saved_model, tmp_path):
    model, adata, _ = saved_model
    broken = tmp_path / "nan"
    with torch.no_grad():
        weight = model.module.network.expression_head.weight
        kept = weight.clone()
        weight[0, 0] = float("nan")
        try:
            model.save(str(broken))
        finally:
            weight.copy_(kept)
    with pytest.raises(ModelIntegrityError, match="NaN or infinite"):
        SCLONG.load(str(broken), adata=adata.copy())


def test_load_aligns_other_gene_orders_and_missing_genes(saved_model):
    model, adata, folder = saved_model
    order = np.random.default_rng(0).permutation(adata.n_vars)[: adata.n_vars - 5]
    shuffled = adata[:, order].copy()
    with pytest.warns(UserWarning, match=f"5 of the model's {adata.n_vars} genes are absent"):
        other = SCLONG.load(str(folder), adata=shuffled)
    assert other.adata.n_vars == adata.n_vars
    assert shuffled.n_vars == adata.n_vars - 5  # the user's AnnData is left as it was


def test_mudata_model_round_trip(tmp_path):
    from mudata import MuData

    rna = _pbmc(24)
    mdata = MuData({"rna": rna})
    SCLONG.setup_mudata(mdata, rna_layer="sclong", modalities={"rna_layer": "rna"})
    model = SCLONG(mdata, config="tiny", gene_graph=False)
    model.save(str(tmp_path / "mu"), save_anndata=True)
    assert (tmp_path / "mu" / "mdata.h5mu").exists()
    again = SCLONG.load(str(tmp_path / "mu"))
    np.testing.assert_array_equal(
        model.get_latent_representation(), again.get_latent_representation()
    )


def test_gene_id_key_model_loads_on_other_genes_and_files_are_readable(tmp_path):
    adata = _pbmc(24)
    adata.var["gene_ids"] = [f"id_{name}" for name in adata.var_names]
    SCLONG.setup_anndata(adata, layer="sclong", gene_id_key="gene_ids")
    model = SCLONG(adata, config="tiny", gene_graph=False)
    model.save(str(tmp_path / "m"))
    for name in ("model.pt", "manifest.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o044  # not private to the writer
    subset = adata[:, adata.var_names[:-3]].copy()
    with pytest.warns(UserWarning, match="absent"):
        loaded = SCLONG.load(str(tmp_path / "m"), adata=subset)
    assert list(loaded.adata.var["gene_ids"]) == list(adata.var["gene_ids"])
