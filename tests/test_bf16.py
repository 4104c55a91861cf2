"""Lean loading: memory-mapped checkpoints read tensor by tensor, weights held in bfloat16.

On the parity release (a miniature official release) and real CellBench cells: memory-mapped
loading gives the weights and outputs of whole-file loading bit for bit; a model held in
bfloat16 keeps its matrices in bfloat16, embeds within cosine 0.99 per cell of float32 (what
``precision="bf16"`` on the float32 model computes), and refuses training. Peak-memory figures
are measured by ``benchmarks/bench_1b.py``, not here.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import sclong_scverse as scl
from conftest import most_detected
from sclong_scverse.io import OfficialFormatError, load_official, read_checkpoint
from sclong_scverse.io._lean import held_dtype, resolve_dtype
from sclong_scverse.model import SCLONG
from sclong_scverse.nn._precision import widened_weights

# the parity release's 511 genes cover a quarter of CellBench's 2,048: expected, not a problem
pytestmark = pytest.mark.filterwarnings("ignore:only .* genes of the data:UserWarning")


def _files(parity_dir: Path) -> tuple[Path, Path, Path]:
    return (
        parity_dir / "tiny_ckpt.pth",
        parity_dir / "tiny_hparams.pkl",
        parity_dir / "tiny_genes.txt",
    )


@pytest.fixture(scope="module")
def cells(data_dir):
    """48 CellBench cells on its 2,048 most detected genes, normalised, registered."""
    adata = most_detected(scl.datasets.cellbench(data_dir))[:48].copy()
    scl.pp.normalize(adata)
    SCLONG.setup_anndata(adata, layer="sclong")
    return adata


@pytest.fixture(scope="module")
def models(parity_dir, cells):
    """The parity release on the cells, held in float32 and in bfloat16."""
    fp32 = SCLONG.from_official(cells, *_files(parity_dir))
    bf16 = SCLONG.from_official(cells, *_files(parity_dir), dtype=torch.bfloat16)
    return fp32, bf16


def _mapped(path: Path) -> bool:
    """Whether this process still maps ``path`` (Linux)."""
    target = str(path.resolve())
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(target) for line in maps)


def test_mapped_loading_equals_whole_file_loading_bit_for_bit(parity_dir):
    mapped = load_official(*_files(parity_dir))  # the default: memory-mapped, tensor by tensor
    whole = load_official(*_files(parity_dir), mmap=False)  # read whole, then converted
    ours, theirs = mapped.network.state_dict(), whole.network.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    # the float64 identity table of the file is held in float32, as before
    assert ours["gene_embedding.identity.weight"].dtype == torch.float32
    reference = np.load(parity_dir / "reference_io.npz")
    x = torch.from_numpy(reference["x"])
    with torch.no_grad():
        a, b = mapped.network(x), whole.network(x)
    for key in ("decodings", "prediction", "top_encodings", "low_encodings"):
        assert torch.equal(a[key], b[key]), key
    # and both reproduce the original implementation (parity within 1e-4)
    np.testing.assert_allclose(
        a["decodings"].numpy(), reference["merged_decodings"], atol=1e-4, rtol=0
    )
    # the weights were copied out of the mapping, which is gone once loading returns
    if sys.platform.startswith("linux"):
        assert not _mapped(parity_dir / "tiny_ckpt.pth")


def test_bf16_holds_the_matrices_in_bf16_and_the_rest_in_float32(parity_dir, models):
    fp32, bf16 = models
    assert fp32.weights_dtype == torch.float32 and bf16.weights_dtype == torch.bfloat16
    held = {name: p.dtype for name, p in bf16.module.network.named_parameters()}
    assert held["large_encoder.layers.0.attention.to_q.weight"] == torch.bfloat16
    assert held["decoder.layers.1.feed_forward.w2.weight"] == torch.bfloat16
    assert held["mask_embedding.weight"] == torch.bfloat16
    buffers = dict(bf16.module.network.named_buffers())
    assert buffers["mini_encoder.layers.0.attention.projection_matrix"].dtype == torch.bfloat16
    # float32: the gene tables and GO convolution (run in float32 by design), norms, biases
    for name in (
        "gene_embedding.identity.weight",
        "gene_embedding.go_convs.0.lin.weight",
        "token_norm.weight",
        "large_encoder.layers.0.attention.to_out.bias",
    ):
        assert held[name] == torch.float32, name
    # the bfloat16 values are the float32 weights rounded, nothing else
    weights = dict(fp32.module.network.named_parameters())
    for name, value in bf16.module.network.named_parameters():
        assert torch.equal(value, weights[name].to(value.dtype)), name
    n_bf16 = sum(p.numel() for p in bf16.module.parameters() if p.dtype == torch.bfloat16)
    n_all = sum(p.numel() for p in bf16.module.parameters())
    # the parity network is small: its gene tables are a fifth of it (in the 1B network, 1%)
    assert n_bf16 / n_all == pytest.approx(0.76, abs=0.01)


def test_bf16_embeddings_are_within_cosine_099_of_float32(models):
    fp32, bf16 = models
    reference = fp32.get_latent_representation(batch_size=16)
    for pooling in ("max", "mean"):
        expected = fp32.get_latent_representation(batch_size=16, pooling=pooling)
        embedding = bf16.get_latent_representation(batch_size=16, pooling=pooling)
        assert embedding.dtype == np.float32 and embedding.shape == expected.shape
        cosine = (embedding * expected).sum(1) / (
            np.linalg.norm(embedding, axis=1) * np.linalg.norm(expected, axis=1)
        )
        assert cosine.min() > 0.99, (pooling, cosine.min())  # measured: 0.99999 (max, mean)
        # at precision="bf16" a bfloat16-held model computes what bfloat16 autocast computes
        # with float32 weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "emulated" on CPUs without bfloat16 instructions
            autocast = fp32.get_latent_representation(
                batch_size=16, pooling=pooling, precision="bf16"
            )
            held = bf16.get_latent_representation(batch_size=16, pooling=pooling, precision="bf16")
        np.testing.assert_array_equal(held, autocast)
    assert not np.array_equal(bf16.get_latent_representation(batch_size=16), reference)
    predicted = bf16.predict(batch_size=16)
    covered = ~np.isnan(predicted[0])
    error = np.abs(predicted[:, covered] - fp32.predict(batch_size=16)[:, covered]).max()
    assert error < 0.05  # measured 0.018 on values up to 10
    with pytest.raises(ValueError, match="held in bfloat16"):
        bf16.get_latent_representation(precision="16")
    # static gene embeddings come from the gene tables and GO convolution, held in float32
    static = bf16.get_gene_embeddings()
    np.testing.assert_array_equal(static.to_numpy(), fp32.get_gene_embeddings().to_numpy())


def _rounded_float32_network(fp32_network, bf16_network):
    """A float32 copy of the network whose weights are the bfloat16-held ones, widened."""
    rounded = copy.deepcopy(fp32_network)
    held = dict(bf16_network.named_parameters()) | dict(bf16_network.named_buffers())
    with torch.no_grad():
        for name, tensor in [*rounded.named_parameters(), *rounded.named_buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(held[name].float())
    return rounded


@pytest.mark.parametrize("budget", [256 * 2**20, 100_000])
def test_widened_weights_compute_float32_at_the_held_weights(parity_dir, budget):
    """Widening block by block = the float32 network at the bfloat16-rounded weights."""
    fp32 = load_official(*_files(parity_dir)).network.eval()
    bf16 = load_official(*_files(parity_dir), dtype=torch.bfloat16).network.eval()
    rounded = _rounded_float32_network(fp32, bf16)
    rounded.zero_token_cache = False  # the widened run skips the first layer's cache
    x = torch.from_numpy(np.load(parity_dir / "reference_io.npz")["x"])
    before = {k: (v, v.dtype) for k, v in bf16.state_dict(keep_vars=True).items()}
    with torch.inference_mode():
        with widened_weights(bf16, budget=budget):
            widened = bf16(x)
        expected, float32 = rounded(x), fp32(x)
    for key in ("decodings", "prediction", "top_encodings"):
        assert widened[key].dtype == torch.float32
        torch.testing.assert_close(widened[key], expected[key], atol=1e-5, rtol=0)
    # rounding the weights moves the outputs by ~1e-2; widening adds nothing to that
    assert (widened["decodings"] - float32["decodings"]).abs().max() > 1e-3
    # the held tensors are back, the very same objects, and no hook is left
    after = bf16.state_dict(keep_vars=True)
    for key, (tensor, dtype) in before.items():
        assert after[key].dtype == dtype, key
        if isinstance(tensor, torch.nn.Parameter):
            assert after[key] is tensor and after[key].data.dtype == dtype, key
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in bf16.modules())
    # a weight read outside its block's forward fails loudly, never silently in bfloat16
    with torch.inference_mode(), widened_weights(bf16, budget=1):
        with pytest.raises(RuntimeError, match="dtype"):
            bf16(x)


def test_bf16_held_model_runs_widened_float32_where_the_cpu_emulates_bf16(models, monkeypatch):
    import sclong_scverse.model._anndata as queries

    fp32, bf16 = models
    reference = fp32.get_latent_representation(batch_size=16, pooling="mean")
    widened = bf16.get_latent_representation(batch_size=16, pooling="mean", precision="32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        autocast = bf16.get_latent_representation(batch_size=16, pooling="mean", precision="bf16")

    def error(a):
        return np.abs(a - reference).max()

    # float32 arithmetic on the rounded weights: closer to float32 than bfloat16 autocast
    assert error(widened) < error(autocast), (error(widened), error(autocast))
    assert bf16.weights_dtype == torch.bfloat16  # still held in bfloat16 afterwards
    # the default, "auto": float32 widened on a CPU without bfloat16 instructions ...
    monkeypatch.setattr(queries, "native_bf16", lambda device: False)
    np.testing.assert_array_equal(
        bf16.get_latent_representation(batch_size=16, pooling="mean"), widened
    )
    with pytest.warns(UserWarning, match="emulated"):
        fp32.get_latent_representation(batch_size=16, indices=[0], precision="bf16")
    # ... and bfloat16 autocast on one that has them
    monkeypatch.setattr(queries, "native_bf16", lambda device: True)
    np.testing.assert_array_equal(
        bf16.get_latent_representation(batch_size=16, pooling="mean"), autocast
    )
    with pytest.raises(ValueError, match="'auto'"):
        fp32.get_latent_representation(batch_size=16, precision="64")


def test_bf16_weights_are_refused_for_training(models, tmp_path):
    _, bf16 = models
    with pytest.raises(RuntimeError, match="Load the weights in float32"):
        bf16.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    assert not bf16.module.training
    with pytest.raises(RuntimeError, match="held in bfloat16"):
        bf16.pretrain(tmp_path / "no_corpus_needed.h5ad", max_steps=1)


def test_saved_model_loads_in_bf16(models, cells, tmp_path):
    fp32, bf16 = models
    fp32.save(tmp_path / "model")
    loaded = SCLONG.load(tmp_path / "model", adata=cells, dtype=torch.bfloat16)
    assert loaded.weights_dtype == torch.bfloat16
    expected = dict(bf16.module.named_parameters())
    for name, value in loaded.module.named_parameters():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    np.testing.assert_array_equal(
        loaded.get_latent_representation(batch_size=16),
        bf16.get_latent_representation(batch_size=16),
    )
    # no dtype: as before (float32), and from_pretrained passes dtype on
    assert SCLONG.load(tmp_path / "model", adata=cells).weights_dtype == torch.float32
    again = SCLONG.from_pretrained(tmp_path / "model", adata=cells, dtype="bf16")
    assert again.weights_dtype == torch.bfloat16
    # a corrupted file is still refused (checksum streamed over the file)
    with open(tmp_path / "model" / "model.pt", "r+b") as handle:
        handle.seek(-100, 2)
        handle.write(b"\x00" * 8)
    with pytest.raises(ValueError, match="does not match its checksum"):
        SCLONG.load(tmp_path / "model", adata=cells, dtype=torch.bfloat16)


def test_dtype_names_and_non_finite_weights(parity_dir, tmp_path):
    assert resolve_dtype(None) == resolve_dtype("float32") == torch.float32
    assert resolve_dtype("bf16") == resolve_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="use bfloat16"):
        resolve_dtype(torch.float16)
    with pytest.raises(ValueError, match="torch.float32 or torch.bfloat16"):
        resolve_dtype("int8")
    assert held_dtype("x.weight", torch.zeros(2, 2), torch.bfloat16) == torch.bfloat16
    assert held_dtype("gene_embedding.go_table.weight", torch.zeros(2, 2), torch.bfloat16) == (
        torch.float32
    )
    assert held_dtype("x.bias", torch.zeros(2), torch.bfloat16) == torch.float32
    # NaN weights are found while the tensors are converted one by one, in either dtype
    state = read_checkpoint(parity_dir / "tiny_ckpt.pth")
    state["large_encoder.net.layers.0.1.fn.fn.w1.weight"][0, 0] = float("nan")
    broken = tmp_path / "nan.pth"
    torch.save({"model_state_dict": state}, broken)
    for dtype in (None, torch.bfloat16):
        with pytest.raises(OfficialFormatError, match="NaN or infinite values"):
            load_official(broken, parity_dir / "tiny_hparams.pkl", dtype=dtype)
    # a file in torch's legacy format cannot be mapped: it is read whole, the same weights
    legacy = tmp_path / "legacy.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(
            {"model_state_dict": read_checkpoint(parity_dir / "tiny_ckpt.pth")},
            legacy,
            _use_new_zipfile_serialization=False,
        )
    old = load_official(legacy, parity_dir / "tiny_hparams.pkl", dtype="bf16").network
    new = load_official(*_files(parity_dir)[:2], dtype="bf16").network
    for key, value in new.state_dict().items():
        assert torch.equal(value, old.state_dict()[key]), key
