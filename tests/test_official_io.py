"""Official release files: loading on CPU, round trip, clear errors on wrong files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sclong_scverse.io import (
    OfficialFormatError,
    load_official,
    read_checkpoint,
    read_hparams,
    save_official,
)


@pytest.fixture(scope="module")
def release(parity_dir):
    return load_official(
        parity_dir / "tiny_ckpt.pth", parity_dir / "tiny_hparams.pkl", parity_dir / "tiny_genes.txt"
    )


def test_load_reads_config_graph_genes_and_buffers(release, parity_dir):
    config = release.network.config
    assert config.n_genes == 511 and config.n_tokens == 512
    assert (config.dim, config.top_seq_len, config.large_dim) == (32, 64, 48)
    assert (config.large_depth, config.large_heads, config.large_dim_head) == (2, 4, 16)
    assert release.genes[0] == "ENSG00000210082" and len(release.genes) == 511
    assert release.hparams["device"] == "cuda"  # baked into the official file, loads on CPU anyway
    assert release.network.gene_embedding.edge_index.shape == (2, 6662)
    n_parameters = sum(p.numel() for p in release.network.parameters())
    assert n_parameters == 151_893
    official = read_checkpoint(parity_dir / "tiny_ckpt.pth")
    ours = release.network.decoder.layers[1].attention.projection_matrix
    assert torch.equal(ours, official["decoder.net.layers.1.0.fn.fast_attention.projection_matrix"])
    # the float64 identity table is cast to float32
    assert release.network.gene_embedding.identity.weight.dtype == torch.float32


def test_bare_state_dict_loads_too(release, parity_dir, tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(read_checkpoint(parity_dir / "tiny_ckpt.pth"), bare)
    network = load_official(bare, parity_dir / "tiny_hparams.pkl").network
    for key, value in release.network.state_dict().items():
        assert torch.equal(value, network.state_dict()[key]), key


def test_save_official_round_trip_is_exact(release, parity_dir, tmp_path):
    paths = tmp_path / "ckpt.pth", tmp_path / "hparams.pkl", tmp_path / "genes.txt"
    save_official(release.network, paths[0], paths[1], genes=release.genes, genes_path=paths[2])
    again = load_official(*paths)
    assert again.genes == release.genes
    for key, value in release.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key
    # same key set, dtypes and shapes as the official file: the original scripts can read it
    official = read_checkpoint(parity_dir / "tiny_ckpt.pth")
    written = read_checkpoint(paths[0])
    assert set(written) == set(official)
    for key, value in official.items():
        assert written[key].dtype == value.dtype and written[key].shape == value.shape, key
    hparams = read_hparams(paths[1])
    theirs = read_hparams(parity_dir / "tiny_hparams.pkl")
    assert set(theirs) - {"gene2vec_file"} <= set(hparams)
    assert torch.equal(hparams["G_go"], theirs["G_go"])
    x = torch.from_numpy(np.load(parity_dir / "reference_io.npz")["x"])
    with torch.no_grad():
        assert torch.equal(release.network(x)["decodings"], again.network(x)["decodings"])


def test_missing_and_unexpected_keys_are_named(parity_dir, tmp_path):
    state = read_checkpoint(parity_dir / "tiny_ckpt.pth")
    del state["decoder.net.layers.1.1.fn.fn.w2.bias"]
    state["decoder.net.layers.7.0.norm.weight"] = torch.zeros(32)
    path = tmp_path / "broken.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(OfficialFormatError) as error:
        load_official(path, parity_dir / "tiny_hparams.pkl")
    message = str(error.value)
    assert "decoder.net.layers.1.1.fn.fn.w2.bias" in message
    assert "decoder.net.layers.7.0.norm.weight" in message


def test_hparams_from_another_release_give_shape_errors(parity_dir, tmp_path):
    hparams = read_hparams(parity_dir / "tiny_hparams.pkl")
    hparams["large_dim"] = 64
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(hparams))
    with pytest.raises(OfficialFormatError, match=r"base_to_large\.weight: checkpoint \(48, 32\)"):
        load_official(parity_dir / "tiny_ckpt.pth", path)


def test_wrong_files_give_clear_errors(parity_dir, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(OfficialFormatError, match="not a torch checkpoint"):
        load_official(text, parity_dir / "tiny_hparams.pkl")
    with pytest.raises(OfficialFormatError, match="hyper-parameter"):
        load_official(parity_dir / "tiny_ckpt.pth", text)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(OfficialFormatError, match="expected the dict"):
        read_hparams(listed)
    short = tmp_path / "genes.txt"
    short.write_text("ENSG00000210082\nENSG00000198712\n")
    with pytest.raises(OfficialFormatError, match="lists 2 genes"):
        load_official(parity_dir / "tiny_ckpt.pth", parity_dir / "tiny_hparams.pkl", short)
    # swapping the checkpoint and the hyper-parameters is caught too
    with pytest.raises(OfficialFormatError):
        load_official(parity_dir / "tiny_hparams.pkl", parity_dir / "tiny_ckpt.pth")
