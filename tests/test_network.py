"""The scLong network: parity with the original, sizes, gradients, attention modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sclong_scverse.io import load_official
from sclong_scverse.nn import Performer, ScLongConfig, ScLongNetwork

OUTPUTS = {
    "prediction": "exp_out",
    "top_encodings": "top_encodings",
    "low_encodings": "left_encodings",
    "merged_encodings": "merged_encodings",
    "decodings": "merged_decodings",
}


@pytest.fixture(scope="module")
def parity(parity_dir):
    release = load_official(
        parity_dir / "tiny_ckpt.pth", parity_dir / "tiny_hparams.pkl", parity_dir / "tiny_genes.txt"
    )
    reference = dict(np.load(parity_dir / "reference_io.npz"))
    return release.network, reference


def run(network, x):
    with torch.no_grad():
        return {k: v.numpy() for k, v in network(torch.from_numpy(x)).items()}


def test_faithful_mode_reproduces_the_original_batch_of_six(parity):
    network, ref = parity
    assert network.attention_mode == "faithful"
    assert not network.training
    out = run(network, ref["x"])
    for ours, theirs in OUTPUTS.items():
        assert out[ours].shape == ref[theirs].shape, ours
        np.testing.assert_allclose(out[ours], ref[theirs], atol=1e-4, rtol=0, err_msg=ours)
    # masked cells 0-2 exercise the mask vector; the largest error is float32 round-off
    assert max(np.abs(out[o] - ref[t]).max() for o, t in OUTPUTS.items()) < 1e-5


def test_faithful_mode_reproduces_the_original_on_cells_3_4_alone(parity):
    network, ref = parity
    out = run(network, ref["x_cells_3_4"])
    np.testing.assert_allclose(out["decodings"], ref["merged_decodings_cells_3_4"], atol=1e-4)
    # and, as in the original, cells 3-4 move slightly with their batch-mates
    batch_effect = np.abs(ref["merged_decodings"][3:5] - ref["merged_decodings_cells_3_4"]).max()
    assert 1e-5 < batch_effect < 1e-2


def test_per_cell_mode_is_independent_of_batch_mates_and_close_to_faithful(parity, capsys):
    network, ref = parity
    per_cell = ScLongNetwork(network.config.replace(attention_mode="per_cell"))
    per_cell.load_state_dict(network.state_dict())
    per_cell.eval()
    batch6 = run(per_cell, ref["x"])
    batch2 = run(per_cell, ref["x_cells_3_4"])
    alone = run(per_cell, ref["x"][5:6])
    np.testing.assert_allclose(batch6["decodings"][3:5], batch2["decodings"], atol=1e-6)
    np.testing.assert_allclose(batch6["decodings"][5:6], alone["decodings"], atol=1e-6)
    # difference from the original, reported: cell 4 has a top-k tie, others differ by the key max
    diff = np.abs(batch6["decodings"] - ref["merged_decodings"]).reshape(6, -1).max(axis=1)
    with capsys.disabled():
        print("\nper-cell vs faithful, max |merged decodings| difference per cell:", diff)
    # cells without a top-k tie: only the key stabiliser differs (~1e-3)
    assert diff[[0, 1, 2, 3, 5]].max() < 2e-2
    # cell 4: the tied gene goes to the other encoder, so that cell's outputs change for real
    assert diff[4] > diff[[0, 1, 2, 3, 5]].max()


def test_per_cell_routing_breaks_ties_by_gene_order(parity):
    network, ref = parity
    per_cell = ScLongNetwork(network.config.replace(attention_mode="per_cell"))
    x = torch.from_numpy(ref["x"][4:5])
    top, low = per_cell.route(x)
    k = network.config.top_seq_len
    values = x[0]
    boundary = values[top[0, -1]]
    tied = torch.nonzero(values == boundary).flatten()
    assert len(tied) >= 2, "cell 4 of the parity data has a tie at the top-k boundary"
    chosen = set(top[0].tolist())
    picked = [int(i) for i in tied if int(i) in chosen]
    skipped = [int(i) for i in tied if int(i) not in chosen]
    assert picked and skipped and max(picked) < min(skipped)
    # the low set is everything else, in gene order
    assert top.shape == (1, k) and low.shape == (1, x.shape[1] - k)
    assert torch.equal(low[0], torch.sort(low[0]).values)
    assert sorted(top[0].tolist() + low[0].tolist()) == list(range(x.shape[1]))


def test_official_1b_configuration_has_exactly_the_published_size():
    config = ScLongConfig.preset("1b")
    with torch.device("meta"):
        network = ScLongNetwork(config)
    n_parameters = sum(p.numel() for p in network.parameters())
    assert n_parameters == 1_006_086_461
    n_buffers = sum(
        b.numel() for name, b in network.named_buffers() if not name.startswith("gene_embedding.")
    )
    assert n_buffers == 783_107  # 46 random-feature matrices 266 x 64 + 3 redraw counters
    large = sum(p.numel() for p in network.large_encoder.parameters())
    assert large == 42 * 23_605_760


def test_gradients_reach_every_parameter_including_the_go_table(parity):
    network, ref = parity
    model = ScLongNetwork(network.config)
    model.load_state_dict(network.state_dict())
    model.train()
    projections = {k: v.clone() for k, v in model.state_dict().items() if "projection" in k}
    x = torch.from_numpy(ref["x"])
    out = model(x)
    target = torch.from_numpy(ref["x"]).clamp(min=0)
    loss = ((out["prediction"] - target) ** 2).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert model.gene_embedding.go_table.weight.grad.abs().sum() > 0
    # a training step never redraws the random features by itself
    for key, value in model.state_dict().items():
        if key in projections:
            assert torch.equal(value, projections[key])


def test_gene_embedding_is_computed_once_per_forward(parity, monkeypatch):
    network, ref = parity
    calls = []
    original = network.gene_embedding.go_embedding
    monkeypatch.setattr(
        network.gene_embedding, "go_embedding", lambda: calls.append(1) or original()
    )
    run(network, ref["x"])
    assert len(calls) == 1


def test_go_gcn_matches_torch_geometric_sgconv_on_the_edge_list(parity):
    network, _ = parity
    embedding = network.gene_embedding
    conv = embedding.go_convs[0]
    with torch.no_grad():
        ours = embedding.go_embedding()
        theirs = conv(embedding.go_table.weight, embedding.edge_index, embedding.edge_weight)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_bf16_autocast_runs_and_stays_close(parity):
    network, ref = parity
    x = torch.from_numpy(ref["x"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = network(x)
    assert torch.isfinite(out["prediction"]).all()
    diff = (out["prediction"].float() - torch.from_numpy(ref["exp_out"])).abs().max()
    assert diff < 0.2


def test_random_features_change_only_when_redrawn(parity):
    network, _ = parity
    model = ScLongNetwork(network.config)
    model.load_state_dict(network.state_dict())
    before = model.decoder.layers[0].attention.projection_matrix.clone()
    model.redraw_projection_matrices(torch.Generator().manual_seed(0))
    after = model.decoder.layers[0].attention.projection_matrix
    assert after.shape == before.shape and not torch.equal(before, after)
    # orthogonal blocks: rows within a block are orthogonal
    rows = after[:16] / after[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(rows @ rows.T, torch.eye(16), atol=1e-5, rtol=0)


def test_per_cell_kernel_equals_performer_pytorch_release():
    performer_pytorch = pytest.importorskip("performer_pytorch")
    from sclong_scverse.io.official import official_to_ours

    torch.manual_seed(0)
    theirs = performer_pytorch.Performer(
        dim=32, depth=2, heads=2, dim_head=16, qkv_bias=False, auto_check_redraw=False
    ).eval()
    ours = Performer(32, 2, 2, 16, nb_features=44, key_max="cell").eval()
    state = {}
    for key, value in theirs.state_dict().items():
        if key.startswith("net."):
            state[official_to_ours("decoder." + key).removeprefix("decoder.")] = value
    state["calls_since_last_redraw"] = torch.tensor(0)
    ours.load_state_dict(state)
    x = torch.randn(3, 50, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_bad_input_shape_says_what_is_expected(parity):
    network, _ = parity
    with pytest.raises(ValueError, match=r"\(batch, 512\)"):
        network(torch.zeros(2, 511))


def test_config_validation_and_presets():
    assert {"1b", "tiny", "bench"} <= set(ScLongConfig.presets())
    with pytest.raises(ValueError, match="Unknown preset"):
        ScLongConfig.preset("huge")
    with pytest.raises(ValueError, match="attention_mode"):
        ScLongConfig(n_genes=10, attention_mode="global")
    config = ScLongConfig.preset("tiny", n_genes=1000)
    assert ScLongConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="n_genes is not set"):
        _ = ScLongConfig.preset("tiny").n_tokens


def test_adjacency_cached_under_inference_mode_still_trains(parity):
    network, ref = parity
    model = ScLongNetwork(network.config)
    model.load_state_dict(network.state_dict())
    x = torch.from_numpy(ref["x"])
    with torch.inference_mode():  # e.g. embeddings computed before fine-tuning
        model(x)
    model.train()
    model(x)["prediction"].sum().backward()
    assert model.gene_embedding.go_table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["faithful", "per_cell"])
def test_streamed_inference_matches_the_reference_path_and_the_original(parity, mode):
    network, ref = parity
    network = ScLongNetwork(network.config.replace(attention_mode=mode))
    network.load_state_dict(parity[0].state_dict())
    network.eval()
    streamed, reference = {}, {}
    for performer in network.performers:
        performer.chunk_size = 100  # several blocks per sequence, a short last block
    streamed = run(network, ref["x"])
    alone = run(network, ref["x"][5:6])
    for performer in network.performers:
        performer.chunk_size = None  # the reference computation (as under autograd)
    reference = run(network, ref["x"])
    for key in OUTPUTS:
        assert np.abs(streamed[key] - reference[key]).max() < 1e-5, key
    if mode == "faithful":  # the batch-wide key maximum stays exact: parity with the original
        for ours, theirs in OUTPUTS.items():
            np.testing.assert_allclose(streamed[ours], ref[theirs], atol=1e-4, rtol=0)
    else:  # per cell: still independent of the batch-mates (up to GEMM round-off)
        np.testing.assert_allclose(streamed["decodings"][5:6], alone["decodings"], atol=1e-5)
    with pytest.raises(ValueError, match="positive integer"):
        network.decoder.chunk_size = 0


@pytest.mark.parametrize("mode", ["faithful", "per_cell"])
def test_zero_token_cache_gives_the_streamed_numbers_and_follows_the_weights(parity, mode):
    """The mini encoder's first layer reads zero-valued tokens from a per-weights cache."""
    network, ref = parity
    network = ScLongNetwork(network.config.replace(attention_mode=mode))
    network.load_state_dict(parity[0].state_dict())
    network.eval()
    x = ref["x"].copy()
    # more expressed genes than the top set holds: expressed tokens in the low set too
    rng = np.random.default_rng(0)
    n_genes = network.config.n_genes
    crowded = rng.choice(n_genes, network.config.top_seq_len + 40, replace=False)
    x[0, crowded] = rng.uniform(0.5, 10.0, len(crowded)).astype(np.float32)
    network.zero_token_cache = False
    plain = run(network, x)
    network.zero_token_cache = True
    cached = run(network, x)
    for key in ("prediction", "decodings", "low_encodings"):
        np.testing.assert_allclose(cached[key], plain[key], atol=1e-5, rtol=0, err_msg=key)
    if mode == "faithful":  # and parity with the original on its inputs
        np.testing.assert_allclose(run(network, ref["x"])["prediction"], ref["exp_out"], atol=1e-4)
    first = network._zero_cache
    run(network, x)
    assert first is not None and network._zero_cache is first  # reused
    # new weights (an optimiser step, new random features): rebuilt, still the streamed numbers
    with torch.no_grad():
        network.mini_encoder.layers[0].attention.to_k.weight.mul_(1.1)
    network.mini_encoder.redraw_projection_matrices(torch.Generator().manual_seed(1))
    cached = run(network, x)
    assert network._zero_cache is not first
    network.zero_token_cache = False
    np.testing.assert_allclose(cached["prediction"], run(network, x)["prediction"], atol=1e-5)
    # not under autograd nor autocast (the reference / streamed paths run there)
    network.zero_token_cache = True
    network._zero_cache = None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        network(torch.from_numpy(x))
    assert network._zero_cache is None


def test_gradient_checkpointing_gives_the_same_gradients(parity):
    network, ref = parity
    x = torch.from_numpy(ref["x"])
    target = x.clamp(min=0)
    gradients = []
    for checkpointing in (False, True):
        model = ScLongNetwork(network.config)
        model.load_state_dict(network.state_dict())
        model.train()
        for performer in model.performers:
            performer.gradient_checkpointing = checkpointing
        loss = ((model(x)["prediction"] - target) ** 2).mean()
        loss.backward()
        gradients.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- ablation: no low branch
def _without_low_branch(network: ScLongNetwork) -> ScLongNetwork:
    """The parity network's weights in the ablation without the low-expression branch."""
    ablated = ScLongNetwork(network.config.replace(low_expression_branch=False))
    state = {k: v for k, v in network.state_dict().items() if not k.startswith("mini_encoder.")}
    ablated.load_state_dict(state)  # strict: every other weight has its place
    return ablated.eval()


def test_without_low_branch_the_decoder_sees_the_top_set_alone(parity):
    network, ref = parity
    ablated = _without_low_branch(network)
    assert ablated.mini_encoder is None and len(ablated.performers) == 2
    assert not any(k.startswith("mini_encoder.") for k in ablated.state_dict())
    n_mini = sum(p.numel() for p in network.mini_encoder.parameters())
    assert sum(p.numel() for p in ablated.parameters()) == (
        sum(p.numel() for p in network.parameters()) - n_mini
    )
    lengths = []
    hook = ablated.decoder.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape))
    x = torch.from_numpy(ref["x"])
    with torch.no_grad():
        out = ablated(x)
        full = network(x)
    hook.remove()
    k, n_tokens, dim = network.config.top_seq_len, network.config.n_tokens, network.config.dim
    assert lengths == [torch.Size([6, k, dim])]  # the decoder's sequence: the top set only
    assert "low_encodings" not in out and out["merged_encodings"].shape == (6, k, dim)
    assert out["prediction"].shape == (6, n_tokens)
    assert out["decodings"].shape == (6, n_tokens, dim)
    # the routing and the large encoder are the full network's
    assert torch.equal(out["top_indices"], full["top_indices"])
    torch.testing.assert_close(out["top_encodings"], full["top_encodings"], atol=1e-6, rtol=0)
    gene_embedding = network.gene_embedding()
    expected = full["top_encodings"] + gene_embedding[full["top_indices"]]
    torch.testing.assert_close(out["merged_encodings"], expected, atol=1e-6, rtol=0)
    # predictions and decodings exist at the top positions only; exact zeros elsewhere
    predicted = out["predicted"]
    assert predicted.dtype == torch.bool and (predicted.sum(dim=1) == k).all()
    assert torch.equal(predicted, torch.zeros_like(predicted).scatter_(1, out["top_indices"], True))
    assert (out["prediction"][~predicted] == 0).all() and (out["decodings"][~predicted] == 0).all()
    assert (out["decodings"][predicted].abs().sum(dim=-1) > 0).all()
    # the decoder output is not the full network's: it no longer sees the low set
    assert not torch.allclose(out["decodings"][predicted], full["decodings"][predicted])
    # the published network reports every position as predicted
    assert full["predicted"].all()


def test_without_low_branch_trains_only_through_what_it_predicts(parity):
    network, ref = parity
    ablated = _without_low_branch(network).train()
    x = torch.from_numpy(ref["x"][3:]).clamp(min=0)  # cells without masks
    masked = x.scatter(1, ablated.route(x)[0][:, :5], network.config.mask_value)
    out = ablated(masked, route_values=x)  # masked genes stay in the top set
    loss = ((out["prediction"] - x) ** 2)[out["predicted"]].mean()
    loss.backward()
    for name, parameter in ablated.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # the zeros outside the top set carry no gradient
    ablated.zero_grad()
    out = ablated(masked, route_values=x)
    out["prediction"][~out["predicted"]].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ablated.parameters())


def test_route_values_keep_masked_genes_in_the_top_set(parity):
    network, ref = parity
    ablated = _without_low_branch(network)
    x = torch.from_numpy(ref["x"][3:5]).clamp(min=0)
    top = ablated.route(x)[0]
    masked = x.clone()
    masked[0, top[0, :5]] = network.config.mask_value
    with torch.no_grad():
        own = ablated(masked)
        kept = ablated(masked, route_values=x)
    # routed by the masked values, the masked genes fall out of the top set (as in the original)
    assert not own["predicted"][0, top[0, :5]].any()
    assert kept["predicted"][0, top[0, :5]].all() and torch.equal(kept["top_indices"], top)
    with pytest.raises(ValueError, match="route_values"):
        ablated(masked, route_values=x[:, :-1])


def test_low_expression_branch_option_in_the_config():
    config = ScLongConfig.preset("tiny", n_genes=1000, low_expression_branch=False)
    assert ScLongConfig.from_dict(config.to_dict()) == config
    # configs saved before the option existed load as the published network
    old = {k: v for k, v in config.to_dict().items() if k != "low_expression_branch"}
    assert ScLongConfig.from_dict(old).low_expression_branch is True
    assert ScLongConfig.preset("tiny").low_expression_branch is True
    with pytest.raises(ValueError, match="low_expression_branch"):
        ScLongConfig(n_genes=10, low_expression_branch="no")
